"""Alert rules as data: the schema of the rules file (``config/alerts.yaml``), the
notification channels and maintenance windows, and the loader that names every
problem with its file and path."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from foursave.core.config import Device
from foursave.core.glossary import FIELDS, SLUG_PATTERN
from foursave.rules.alerts.observers import NEEDS, Kind


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Match(_Strict):
    kind: str | None = None
    role: str | None = None
    site: str | None = None
    device: str | None = None

    def __call__(self, d: Device) -> bool:
        return all(
            want is None or want == have
            for want, have in (
                (self.kind, d.kind),
                (self.role, d.role),
                (self.site, d.site),
                (self.device, d.id),
            )
        )


class RuleSpec(_Strict):
    id: str = Field(pattern=SLUG_PATTERN)
    kind: Kind
    title: str
    title_zh: str | None = None
    severity: Literal["info", "warning", "critical"] = "warning"
    match: Match = Match()
    measurement: str | None = None
    field: str | None = None
    op: Literal[">", "<"] = ">"
    value: float | None = None
    clear_value: float | None = Field(None, description="hysteresis: clears only past this")
    relative_to: Literal["contract_capacity_w"] | None = Field(
        None, description="value and clear_value are shares of the site's contract capacity"
    )
    for_s: float = Field(0, ge=0)
    states: tuple[int, ...] = ()
    event_mask: int = 0
    stale_s: float = Field(300, gt=0)
    window_s: float = Field(
        900, gt=0, description="rate_of_change / peer_deviation window, identity_change look-back"
    )
    min_peer_w_per_kwp: float = Field(100, ge=0, description="peer_deviation: ignore dim skies")
    fields: tuple[str, ...] = Field(
        ("version", "serial"),
        min_length=1,
        description="identity_change: the device_info fields whose change is reported",
    )
    daylight_only: bool = False
    hours: tuple[int, int] | None = Field(None, description="local [from, to) hours, e.g. [0, 5]")
    repeat_s: float | None = Field(
        None, gt=0, description="notify again while firing, unacknowledged"
    )

    @field_validator("fields")
    @classmethod
    def _device_info_fields(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [f for f in v if f not in FIELDS["device_info"]]
        if unknown:
            raise ValueError(
                f"not device_info fields: {', '.join(unknown)}; "
                f"known: {', '.join(FIELDS['device_info'])}"
            )
        return v

    @model_validator(mode="after")
    def _needs(self) -> RuleSpec:
        """What the rule's kind reads must be given (``observers.NEEDS``), so a rules
        file missing it is refused when loaded, naming the rule, instead of failing at
        every evaluation."""
        missing = [f for f in NEEDS[self.kind] if getattr(self, f) is None]
        if missing:
            raise ValueError(f"a {self.kind} rule needs {' and '.join(missing)}")
        return self


class SmtpSettings(_Strict):
    host: str = "127.0.0.1"
    port: int = 25
    sender: str = "foursave@localhost"
    to: tuple[str, ...] = ()
    username: str | None = None
    password_env: str | None = None
    starttls: bool = False


class Maintenance(_Strict):
    start: datetime
    end: datetime
    rules: tuple[str, ...] = ()  # empty: every rule
    devices: tuple[str, ...] = ()  # empty: every device
    reason: str


class AlertSettings(_Strict):
    rules: tuple[RuleSpec, ...] = ()
    webhook_url: str | None = None
    smtp: SmtpSettings | None = None
    mqtt: bool = True
    maintenance: tuple[Maintenance, ...] = ()


def load_alert_settings(path: str | Path) -> AlertSettings:
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        return AlertSettings.model_validate(raw)
    except FileNotFoundError:
        raise ValueError(f"{p}: file not found") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{p}: not valid YAML: {exc}") from None
    except ValidationError as exc:
        msgs = [f"{p}: {'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise ValueError("\n".join(msgs)) from None
