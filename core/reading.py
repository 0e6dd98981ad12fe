"""The reading that travels from collector to ingester, its JSON codec and its line
protocol.  Pure functions: no broker, no database.

Payload (docs/design.md): ``{"ts": <epoch ms>, "seq": <per-device counter>, "kind": ...,
"fields": {...}}``; foursave adds ``"role"`` for meters so the ingester needs no copy
of the device list (several collectors and ingesters may run).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from foursave.core.glossary import FIELDS, KINDS, SLUG

_FIELD = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_SLUG = SLUG
TS_MIN_MS = 946_684_800_000  # 2000-01-01
TS_MAX_MS = 4_102_444_800_000  # 2100-01-01

Value = float | int | bool


class PayloadError(ValueError):
    """A payload that cannot be stored; the message says what and where."""


@dataclass(frozen=True)
class Reading:
    ts_ms: int
    seq: int
    kind: str
    fields: dict[str, Value]
    role: str | None = None

    def to_json(self) -> bytes:
        body: dict[str, Any] = {"ts": self.ts_ms, "seq": self.seq, "kind": self.kind}
        if self.role:
            body["role"] = self.role
        body["fields"] = self.fields
        return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()


def decode_reading(payload: bytes) -> Reading:
    try:
        body = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PayloadError(f"not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise PayloadError("expected a JSON object")
    missing = [k for k in ("ts", "seq", "kind", "fields") if k not in body]
    if missing:
        raise PayloadError(f"missing key(s) {missing}")
    ts, seq, kind, fields = body["ts"], body["seq"], body["kind"], body["fields"]
    if not isinstance(ts, int) or isinstance(ts, bool) or not TS_MIN_MS <= ts < TS_MAX_MS:
        raise PayloadError(f"ts: expected epoch milliseconds between 2000 and 2100, got {ts!r}")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise PayloadError(f"seq: expected a non-negative integer, got {seq!r}")
    if kind not in KINDS:
        raise PayloadError(f"kind: expected one of {list(KINDS)}, got {kind!r}")
    role = body.get("role")
    if role is not None and (not isinstance(role, str) or not _SLUG.match(role)):
        raise PayloadError(f"role: expected a lower-case slug, got {role!r}")
    if not isinstance(fields, dict) or not fields:
        raise PayloadError("fields: expected a non-empty object")
    clean: dict[str, Value] = {}
    for name, value in fields.items():
        if not _FIELD.match(name):
            raise PayloadError(f"fields.{name}: not a valid field name")
        if isinstance(value, bool) or (isinstance(value, (int, float)) and math.isfinite(value)):
            clean[name] = value
        else:
            raise PayloadError(f"fields.{name}: expected a finite number, got {value!r}")
    return Reading(ts, seq, kind, clean, role)


def _escape_key(s: str) -> str:
    return s.replace("\\", "\\\\").replace(",", r"\,").replace("=", r"\=").replace(" ", r"\ ")


def format_value(measurement: str, name: str, value: Value) -> str:
    """Line-protocol field value with the glossary's type (floats stay floats)."""
    fdef = FIELDS.get(measurement, {}).get(name)
    ftype = fdef.type if fdef else ("bool" if isinstance(value, bool) else "float")
    if ftype == "bool":
        return "true" if value else "false"
    if ftype == "int":
        if isinstance(value, float) and not value.is_integer():
            raise PayloadError(f"fields.{name}: expected an integer, got {value!r}")
        return f"{int(value)}i"
    return repr(float(value))


def to_line(measurement: str, tags: dict[str, str], fields: dict[str, Value], ts_ms: int) -> str:
    tag_part = "".join(f",{_escape_key(k)}={_escape_key(v)}" for k, v in sorted(tags.items()) if v)
    field_part = ",".join(
        f"{_escape_key(k)}={format_value(measurement, k, v)}" for k, v in fields.items()
    )
    return f"{_escape_key(measurement)}{tag_part} {field_part} {ts_ms}"


def reading_line(site: str, device: str, r: Reading) -> str:
    tags = {"site": site, "device": device}
    if r.role:
        tags["role"] = r.role
    return to_line(r.kind, tags, r.fields, r.ts_ms)


def decode_status(payload: bytes) -> dict[str, Value]:
    """Device status payload -> device_status fields (online, poll_ms, errors) and ts."""
    try:
        body = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PayloadError(f"not JSON: {exc}") from None
    if not isinstance(body, dict) or not isinstance(body.get("online"), bool):
        raise PayloadError("status: expected an object with boolean 'online'")
    ts = body.get("ts")
    if not isinstance(ts, int) or isinstance(ts, bool) or not TS_MIN_MS <= ts < TS_MAX_MS:
        raise PayloadError(f"status.ts: expected epoch milliseconds, got {ts!r}")
    out: dict[str, Value] = {"ts": ts, "online": body["online"]}
    for key in ("poll_ms", "errors"):
        v = body.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out[key] = v
    return out
