"""Alert rules (YAML), their lifecycle and their notifications.

Rules are data (``config/alerts.yaml``).  Each pass evaluates every rule for every
device it matches against InfluxDB, at the engine's clock (real or simulated):

- ``threshold``: a field above/below a value for ``for_s``; it clears only past
  ``clear_value`` (hysteresis);
- ``state``: SunSpec ``St`` in given states or ``Evt1`` bits set (inverter faults);
- ``stale``: no reading for ``stale_s`` (a dead device), with its real age however long
  ago it was last heard from; a device never heard from at all is stale only once the
  engine has run ``stale_s`` (no alert storm at start-up);
- any rule may be ``daylight_only`` (no "zero output" at night: the sun is computed for
  the site with pvlib) or limited to ``hours`` (night water flow = leak);
- maintenance windows silence chosen rules and devices.

Lifecycle per rule and device: pending -> firing -> resolved, one incident and one
notification per incident (repeats only if asked for, never once acknowledged),
acknowledgement with who, when and a comment; incidents live in SQLite and survive a
restart.  Notifications: an MQTT event on ``foursave/v1/{site}/alert/{rule_id}``, a
webhook (HTTP POST, JSON) and e-mail over SMTP.  Every transition is also written to
InfluxDB (``alert_events``).
"""

from __future__ import annotations

import json
import logging
import smtplib
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

import httpx
import pandas as pd
import pvlib
import yaml
from foursave.core.clock import Clock
from foursave.core.config import Config, Device
from foursave.core.glossary import SLUG_PATTERN
from foursave.core.influx import InfluxClient, InfluxRejected, InfluxUnavailable
from foursave.core.influxql import Cond, agg, select, tag_in, time_range
from foursave.core.reading import to_line
from foursave.core.store import open_db
from foursave.core.topics import alert_topic
from pydantic import BaseModel, ConfigDict, Field, ValidationError

log = logging.getLogger("foursave.alerts")

# stale rules look at the last day first; a device silent for longer is looked up once
STALE_LOOKBACK_MS = 86_400_000
# a field every reading of the kind carries (stale rules look at its last time)
LATEST_WINDOW_S = 120  # a threshold rule without for_s looks at the last value in this window


def _epoch(t: datetime, tz) -> float:
    """Maintenance times without a UTC offset are the site's local time, not the host's."""
    return (t if t.tzinfo else t.replace(tzinfo=tz)).timestamp()


STALE_FIELDS = {
    "inverter": "state",
    "meter": "active_power_w",
    "weather": "ambient_temp_c",
    "water": "volume_m3",
}


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
    kind: Literal[
        "threshold", "state", "stale", "demand_forecast", "rate_of_change", "peer_deviation"
    ]
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
    window_s: float = Field(900, gt=0, description="rate_of_change / peer_deviation window")
    min_peer_w_per_kwp: float = Field(100, ge=0, description="peer_deviation: ignore dim skies")
    daylight_only: bool = False
    hours: tuple[int, int] | None = Field(None, description="local [from, to) hours, e.g. [0, 5]")
    repeat_s: float | None = Field(
        None, gt=0, description="notify again while firing, unacknowledged"
    )


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


# ------------------------------------------------------------------ incidents

SCHEMA = """
CREATE TABLE IF NOT EXISTS incidents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    rule_id TEXT NOT NULL, site TEXT NOT NULL, device TEXT NOT NULL,
    state TEXT NOT NULL, value REAL,
    pending_since REAL NOT NULL, fired_at REAL, resolved_at REAL,
    acked_by TEXT, acked_at REAL, ack_comment TEXT,
    last_notified_at REAL, notifications INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS open_incidents ON incidents (rule_id, device, state);
"""


@dataclass
class Incident:
    id: int
    rule_id: str
    site: str
    device: str
    state: str  # pending | firing | resolved | cancelled
    value: float | None
    pending_since: float
    fired_at: float | None
    resolved_at: float | None
    acked_by: str | None
    acked_at: float | None
    ack_comment: str | None
    last_notified_at: float | None
    notifications: int


class IncidentStore:
    def __init__(self, path: str | Path):
        self.db = open_db(path, SCHEMA)

    def close(self) -> None:
        self.db.close()

    def open_for(self, rule_id: str, device: str) -> Incident | None:
        row = self.db.execute(
            "SELECT * FROM incidents WHERE rule_id=? AND device=? AND state IN ('pending','firing') "
            "ORDER BY id DESC LIMIT 1",
            (rule_id, device),
        ).fetchone()
        return Incident(*row) if row else None

    def create(
        self, rule_id: str, site: str, device: str, now: float, value: float | None
    ) -> Incident:
        cur = self.db.execute(
            "INSERT INTO incidents (rule_id, site, device, state, value, pending_since) VALUES (?,?,?,?,?,?)",
            (rule_id, site, device, "pending", value, now),
        )
        return self.get(int(cur.lastrowid))

    def get(self, incident_id: int) -> Incident | None:
        row = self.db.execute("SELECT * FROM incidents WHERE id=?", (incident_id,)).fetchone()
        return Incident(*row) if row else None

    def update(self, inc: Incident) -> None:
        self.db.execute(
            "UPDATE incidents SET state=?, value=?, fired_at=?, resolved_at=?, acked_by=?, acked_at=?, "
            "ack_comment=?, last_notified_at=?, notifications=? WHERE id=?",
            (
                inc.state,
                inc.value,
                inc.fired_at,
                inc.resolved_at,
                inc.acked_by,
                inc.acked_at,
                inc.ack_comment,
                inc.last_notified_at,
                inc.notifications,
                inc.id,
            ),
        )

    def all(self, state: str | None = None) -> list[Incident]:
        q = "SELECT * FROM incidents" + (" WHERE state=?" if state else "") + " ORDER BY id"
        return [Incident(*r) for r in self.db.execute(q, (state,) if state else ())]

    def acknowledge(self, incident_id: int, by: str, comment: str, now: float) -> Incident:
        inc = self.get(incident_id)
        if inc is None:
            raise LookupError(f"no incident {incident_id}")
        if inc.state not in ("pending", "firing", "resolved"):
            raise ValueError(f"incident {incident_id} is {inc.state}; nothing to acknowledge")
        inc.acked_by, inc.acked_at, inc.ack_comment = by, now, comment
        self.update(inc)
        return inc


def ack_line(inc: Incident) -> str:
    """An acknowledgement as an ``alert_events`` point (who, when, why)."""
    line = to_line(
        "alert_events",
        {"site": inc.site, "device": inc.device, "rule": inc.rule_id, "event": "acknowledged"},
        {"incident": inc.id},
        int((inc.acked_at or 0) * 1000),
    )
    by = (inc.acked_by or "").replace("\\", "\\\\").replace('"', '\\"')
    comment = (inc.ack_comment or "").replace("\\", "\\\\").replace('"', '\\"')
    return line.replace(" incident=", f' by="{by}",comment="{comment}",incident=', 1)


@dataclass(frozen=True)
class Acknowledged:
    incident: Incident
    history_error: str | None  # why alert history did not get the event (None: it did)


def acknowledge_incident(
    store: IncidentStore,
    influx: InfluxClient,
    incident_id: int,
    by: str,
    comment: str,
    at: float,
    lock: AbstractContextManager[object] | None = None,
) -> Acknowledged:
    """Acknowledge an incident (the CLI's ``alerts ack`` and the API's
    ``POST /alerts/{id}/ack``): stored first, under ``lock`` when the store is shared,
    then written to alert history (dashboards show who and why).  The store's
    ``LookupError`` (no such incident) and ``ValueError`` (not acknowledgeable) pass
    through; a history write that fails leaves the stored acknowledgement in place."""
    with lock if lock is not None else nullcontext():
        inc = store.acknowledge(incident_id, by, comment, at)
    try:
        influx.write([ack_line(inc)])
    except (InfluxUnavailable, InfluxRejected) as exc:
        return Acknowledged(inc, str(exc))
    return Acknowledged(inc, None)


# ------------------------------------------------------------------ notifications


class Notifier:
    """Delivers incident events; a failing channel is logged, never fatal."""

    def __init__(self, settings: AlertSettings, mqtt_client=None, smtp_password: str | None = None):
        self.s = settings
        self.mqtt = mqtt_client
        self.smtp_password = smtp_password
        self.failures = 0

    def send(self, event: dict) -> None:
        if self.s.mqtt and self.mqtt is not None and not self.mqtt.is_connected():
            self._failed("mqtt", ConnectionError("not connected to the broker"))
        elif self.s.mqtt and self.mqtt is not None:
            try:
                info = self.mqtt.publish(
                    alert_topic(event["site"], event["rule"]),
                    json.dumps(event, ensure_ascii=False),
                    qos=1,
                )
                info.wait_for_publish(5)
            except Exception as exc:
                self._failed("mqtt", exc)
        if self.s.webhook_url:
            try:
                r = httpx.post(self.s.webhook_url, json=event, timeout=5)
                r.raise_for_status()
            except httpx.HTTPError as exc:
                self._failed("webhook", exc)
        if self.s.smtp and self.s.smtp.to:
            try:
                self._email(event)
            except (OSError, smtplib.SMTPException) as exc:
                self._failed("email", exc)

    def _failed(self, channel: str, exc: Exception) -> None:
        self.failures += 1
        log.warning("alert notification over %s failed: %s", channel, exc)

    def _email(self, event: dict) -> None:
        smtp = self.s.smtp
        msg = EmailMessage()
        state = {
            "firing": "告警 FIRING",
            "resolved": "解除 RESOLVED",
            "repeat": "告警 STILL FIRING",
        }[event["event"]]
        msg["Subject"] = f"[foursave] {state}: {event['title']} — {event['site']}/{event['device']}"
        msg["From"] = smtp.sender
        msg["To"] = ", ".join(smtp.to)
        msg.set_content(json.dumps(event, ensure_ascii=False, indent=2))
        with smtplib.SMTP(smtp.host, smtp.port, timeout=10) as s:
            if smtp.starttls:
                s.starttls()
            if smtp.username:
                s.login(smtp.username, self.smtp_password or "")
            s.send_message(msg)


# ------------------------------------------------------------------ evaluation


@dataclass(frozen=True)
class Observation:
    active: bool  # the condition holds now
    sustained: bool  # ... and for the whole for_s window
    clear: bool  # the clear (hysteresis) condition holds
    value: float | None


class AlertEngine:
    def __init__(
        self,
        config: Config,
        settings: AlertSettings,
        influx: InfluxClient,
        store: IncidentStore,
        notifier: Notifier,
        clock: Clock,
    ):
        self.config = config
        self.s = settings
        self.influx = influx
        self.store = store
        self.notifier = notifier
        self.clock = clock
        self.sites = {s.id: s for s in config.sites}
        self.started = clock.time()  # a device never heard from is stale only after stale_s
        # (measurement, field, device) -> last reading time before the look-back window
        self._heard: dict[tuple[str, str, str], int | None] = {}

    # -------------------------------------------------------------- conditions
    def _daylight(self, site_id: str, now: float) -> bool:
        site = self.sites[site_id]
        t = pd.DatetimeIndex([pd.Timestamp(now, unit="s", tz="UTC")])
        elev = pvlib.solarposition.get_solarposition(t, site.lat, site.lon)[
            "apparent_elevation"
        ].iloc[0]
        return bool(elev > 5.0)

    def _in_hours(self, rule: RuleSpec, site_id: str, now: float) -> bool:
        if rule.hours is None:
            return True
        h = datetime.fromtimestamp(now, ZoneInfo(self.sites[site_id].timezone)).hour
        a, b = rule.hours
        return a <= h < b if a <= b else (h >= a or h < b)

    def _maintained(self, rule: RuleSpec, device: str, now: float, site_id: str = "") -> str | None:
        tz = ZoneInfo(self.sites[site_id].timezone) if site_id in self.sites else UTC
        for m in self.s.maintenance:
            if (
                _epoch(m.start, tz) <= now < _epoch(m.end, tz)
                and (not m.rules or rule.id in m.rules)
                and (not m.devices or device in m.devices)
            ):
                return m.reason
        return None

    def _observe(self, rule: RuleSpec, devices: list[Device], now: float) -> dict[str, Observation]:
        now_ms = int(now * 1000)
        match = tag_in("device", [d.id for d in devices])

        def since(window_ms: int) -> list[Cond]:
            """The devices' readings in (now - window, now]."""
            return [
                match,
                time_range(now_ms - window_ms, now_ms, include_start=False, include_end=True),
            ]

        out: dict[str, Observation] = {}
        if rule.kind == "stale":
            last: dict[str, int | None] = {}
            for m in sorted({rule.measurement or d.kind for d in devices}):  # each kind its own
                # one selector, so the row's time is the reading's time
                fld = rule.field or STALE_FIELDS.get(m, "online")
                kind_devices = [d for d in devices if (rule.measurement or d.kind) == m]
                rows = self.influx.rows(
                    select(agg("last", fld), m, where=since(STALE_LOOKBACK_MS), group_by=["device"])
                )
                for r in rows:
                    last[r["device"]] = r["time"]
                    self._heard[(m, fld, r["device"])] = r["time"]  # the latest known
                last.update(
                    self._heard_before(
                        m, fld, [d for d in kind_devices if d.id not in last], now_ms
                    )
                )
            for d in devices:
                t = last.get(d.id)
                age = None if t is None else (now_ms - t) / 1000
                if age is None:  # never heard from at all: a fresh start gets stale_s
                    age = now - self.started if now - self.started > rule.stale_s else None
                    stale = age is not None
                else:  # heard from, however long ago: its real age
                    stale = age > rule.stale_s
                out[d.id] = Observation(stale, stale, not stale, age)
            return out
        if rule.kind == "demand_forecast":
            from foursave.rules.demand import forecast

            for d in devices:
                site = self.sites[d.site]
                fc = forecast(self.config, self.influx, site, now)
                if fc is None or not site.contract_capacity_kw:
                    continue
                cap = site.contract_capacity_kw
                clear_share = rule.clear_value if rule.clear_value is not None else rule.value
                active = fc.forecast_kw > rule.value * cap
                out[d.id] = Observation(
                    active, active, fc.forecast_kw < clear_share * cap, fc.forecast_kw
                )
            return out
        if rule.kind == "rate_of_change":
            w = int(rule.window_s * 1000)
            m = rule.measurement or devices[0].kind
            rows = self.influx.rows(
                select(
                    [agg("first", rule.field, "a"), agg("last", rule.field, "b")],
                    m,
                    where=since(w),
                    group_by=["device"],
                )
            )
            clear_value = rule.clear_value if rule.clear_value is not None else rule.value
            for r in rows:
                if r["a"] is None or r["b"] is None:
                    continue
                per_h = (r["b"] - r["a"]) / (rule.window_s / 3600)
                mag = abs(per_h)
                out[r["device"]] = Observation(
                    mag > rule.value, mag > rule.value, mag < clear_value, per_h
                )
            return out
        if rule.kind == "peer_deviation":
            from foursave.rules.pv import array_of

            w = int(rule.window_s * 1000)
            rows = self.influx.rows(
                select(
                    agg("mean", "ac_power_w", "p"), "inverter", where=since(w), group_by=["device"]
                )
            )
            by_dev = {d.id: d for d in devices}
            specific: dict[str, tuple[str, float]] = {}
            for r in rows:
                d = by_dev.get(r["device"])
                site_invs = [x for x in devices if x.site == d.site] if d else []
                arr = array_of(d, self.sites[d.site], len(site_invs)) if d else None
                if arr and r["p"] is not None:
                    specific[d.id] = (d.site, r["p"] / arr[0])  # W per kWp
            clear_value = rule.clear_value if rule.clear_value is not None else rule.value
            for dev, (site, wkwp) in specific.items():
                peers = [v for k, (s2, v) in specific.items() if s2 == site and k != dev]
                if not peers:
                    continue
                med = (
                    sorted(peers)[len(peers) // 2]
                    if len(peers) % 2
                    else sum(sorted(peers)[len(peers) // 2 - 1 : len(peers) // 2 + 1]) / 2
                )
                if med < rule.min_peer_w_per_kwp:
                    out[dev] = Observation(False, False, True, None)  # too dim to judge
                    continue
                ratio = wkwp / med
                out[dev] = Observation(
                    ratio < rule.value, ratio < rule.value, ratio > clear_value, ratio
                )
            return out
        if rule.kind == "state":
            rows = self.influx.rows(
                select(
                    [agg("last", "state", "st"), agg("last", "events", "ev")],
                    "inverter",
                    where=since(int(max(rule.stale_s, 600) * 1000)),
                    group_by=["device"],
                )
            )
            for r in rows:
                st, ev = r.get("st"), r.get("ev") or 0
                bad = (st in rule.states) or bool(rule.event_mask and (int(ev) & rule.event_mask))
                out[r["device"]] = Observation(
                    bad, bad, not bad, float(st) if st is not None else None
                )
            return out
        # threshold
        # the last value within a few poll intervals; the whole for_s window if longer
        window_ms = int(max(rule.for_s, LATEST_WINDOW_S) * 1000)
        fld, m = rule.field, rule.measurement or devices[0].kind
        rows = self.influx.rows(
            select(
                [
                    agg("last", fld, "v"),
                    agg("min", fld, "lo"),
                    agg("max", fld, "hi"),
                    agg("first", fld, "f"),
                    agg("count", fld, "n"),
                ],
                m,
                where=since(window_ms),
                group_by=["device"],
            )
        )
        site_of = {d.id: d.site for d in devices}
        for r in rows:
            v = r["v"]
            if v is None:
                continue
            limit = rule.value
            clear_value = rule.clear_value if rule.clear_value is not None else rule.value
            if rule.relative_to == "contract_capacity_w":
                cap = self.sites[site_of[r["device"]]].contract_capacity_kw
                if not cap:
                    continue  # no contract capacity configured: nothing to compare with
                limit, clear_value = limit * cap * 1000, clear_value * cap * 1000
            if rule.op == ">":
                active, sustained, clear = v > limit, r["lo"] > limit, v < clear_value
            else:
                active, sustained, clear = v < limit, r["hi"] < limit, v > clear_value
            sustained = sustained and (rule.for_s == 0 or r["n"] >= 2)
            out[r["device"]] = Observation(active, sustained, clear, float(v))
        return out

    def _heard_before(
        self, measurement: str, fld: str, devices: list[Device], now_ms: int
    ) -> dict[str, int | None]:
        """Last reading time of devices silent for the whole look-back window, found once
        per engine run without a lower time bound (None: never heard from at all).

        A device that was last heard from a week ago is stale at once with its real
        age; only one never heard from gets the start-up grace period.  Later readings
        fall inside the look-back window, so one unbounded query per device suffices.
        """
        key = lambda d: (measurement, fld, d.id)  # noqa: E731
        todo = [d for d in devices if key(d) not in self._heard]
        if todo:
            rows = self.influx.rows(
                select(
                    agg("last", fld),
                    measurement,
                    where=[
                        tag_in("device", [d.id for d in todo]),
                        time_range(None, now_ms, include_end=True),
                    ],
                    group_by=["device"],
                )
            )
            found = {r["device"]: r["time"] for r in rows}
            for d in todo:
                self._heard[key(d)] = found.get(d.id)
        return {d.id: self._heard[key(d)] for d in devices}

    # -------------------------------------------------------------- lifecycle
    def evaluate(self) -> list[dict]:
        """One pass over every rule; returns the events it sent."""
        now = self.clock.time()
        events: list[dict] = []
        for rule in self.s.rules:
            devices = [d for d in self.config.devices if rule.match(d)]
            if not devices:
                continue
            try:
                obs = self._observe(rule, devices, now)
            except Exception:
                log.exception("rule %s: evaluation failed", rule.id)
                continue
            for d in devices:
                events.extend(self._step(rule, d, obs.get(d.id), now))
        if events:
            self._history(events)
        return events

    def _step(self, rule: RuleSpec, d: Device, o: Observation | None, now: float) -> list[dict]:
        inc = self.store.open_for(rule.id, d.id)
        silenced = self._maintained(rule, d.id, now, d.site)
        applicable = (
            self._in_hours(rule, d.site, now)
            and not silenced
            and (not rule.daylight_only or self._daylight(d.site, now))
        )
        active = bool(o and o.active and applicable)
        events = []
        if inc is None:
            if not active:
                return []
            inc = self.store.create(rule.id, d.site, d.id, now, o.value)
        inc.value = o.value if o else inc.value
        if inc.state == "pending":
            if not active:
                inc.state = "cancelled"
            elif rule.for_s == 0 or (o.sustained and now - inc.pending_since >= rule.for_s):
                # held for the whole for_s: since the incident opened and, in InfluxDB,
                # across the window (no dip in between)
                inc.state, inc.fired_at = "firing", now
                events.append(self._event("firing", rule, inc, now))
        elif inc.state == "firing":
            if o is not None and o.clear:
                inc.state, inc.resolved_at = "resolved", now
                events.append(self._event("resolved", rule, inc, now))
            elif (
                rule.repeat_s
                and not inc.acked_by
                and not silenced
                and applicable
                and now - (inc.last_notified_at or 0) >= rule.repeat_s
            ):
                events.append(self._event("repeat", rule, inc, now))
        self.store.update(inc)
        return events

    def _event(self, kind: str, rule: RuleSpec, inc: Incident, now: float) -> dict:
        event = {
            "event": kind,
            "incident": inc.id,
            "rule": rule.id,
            "title": rule.title,
            "title_zh": rule.title_zh,
            "severity": rule.severity,
            "site": inc.site,
            "device": inc.device,
            "value": inc.value,
            "ts": int(now * 1000),
            "since": datetime.fromtimestamp(inc.pending_since, UTC).isoformat(),
        }
        self.notifier.send(event)
        inc.last_notified_at = now
        inc.notifications += 1
        log.info("alert %s %s on %s/%s (incident %d)", kind, rule.id, inc.site, inc.device, inc.id)
        return event

    def _history(self, events: list[dict]) -> None:
        lines = [
            to_line(
                "alert_events",
                {
                    "site": e["site"],
                    "device": e["device"],
                    "rule": e["rule"],
                    "event": e["event"],
                    "severity": e["severity"],
                },
                {
                    "incident": e["incident"],
                    **({"value": float(e["value"])} if e["value"] is not None else {}),
                },
                e["ts"],
            )
            for e in events
        ]
        try:
            self.influx.write(lines)
        except Exception as exc:
            log.warning("alert history not written: %s", exc)
