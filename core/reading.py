"""The reading that travels from collector to ingester, its JSON codec and its line
protocol.  Pure functions: no broker, no database.

Payload (docs/design.md): ``{"ts": <epoch ms>, "seq": <per-device counter>, "kind": ...,
"fields": {...}}``; foursave adds ``"role"`` for meters so the ingester needs no copy
of the device list (several collectors and ingesters may run), and ``"collector"``, the
id of the collector that took it, so the ingester knows where to send its
acknowledgement (``collector/ack.py``).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from foursave.core.glossary import FIELDS, INFO_FIELDS, KINDS, PARTS, SLUG, FieldDef

_FIELD = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_SLUG = SLUG
TS_MIN_MS = 946_684_800_000  # 2000-01-01
TS_MAX_MS = 4_102_444_800_000  # 2100-01-01
# what a payload may be: a reading is a few hundred bytes; beyond these it is refused
MAX_PAYLOAD_BYTES = 65_536
INT_MAX = 2**63 - 1  # InfluxDB integers and SQLite INTEGER are signed 64-bit
_INT_DIGITS = len(str(INT_MAX))

Value = float | int | bool
MAX_TEXT = 64  # characters of a text field (device_info): a SunSpec string is at most 32
MAX_PARTS = 64  # parts of one reading: more MPPT inputs than any inverter has


class PayloadError(ValueError):
    """A payload that cannot be stored; the message says what and where."""


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > _INT_DIGITS:
        raise PayloadError(f"an integer of {len(text.lstrip('-'))} digits (at most {_INT_DIGITS})")
    return int(text)


def _no_constant(name: str) -> float:
    raise PayloadError(f"{name} is not a number JSON allows")


# one decoder with the hooks: json.loads builds a new one at each call that passes them
_DECODER = json.JSONDecoder(parse_int=_bounded_int, parse_constant=_no_constant)
# and one encoder (json.dumps builds one at each call with options)
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def _loads(payload: bytes) -> Any:
    """``json.loads(payload, parse_int=_bounded_int, parse_constant=_no_constant)``,
    step for step (the encoding detected as json.loads does), with the one decoder."""
    if not isinstance(payload, (bytes, bytearray)):
        return json.loads(payload, parse_int=_bounded_int, parse_constant=_no_constant)
    return _DECODER.decode(payload.decode(json.detect_encoding(payload), "surrogatepass"))


def load_json(payload: bytes, what: str) -> Any:
    """A payload's JSON, or ``PayloadError`` saying why not: larger than
    ``MAX_PAYLOAD_BYTES``, not UTF-8, not JSON, an integer beyond 64 bits, ``NaN`` or
    ``Infinity``, or nested deeper than the parser goes.  Nothing else escapes, so one
    message can never end the service that reads it."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise PayloadError(f"{what}: {len(payload):,} bytes, more than {MAX_PAYLOAD_BYTES:,}")
    try:
        return _loads(payload)
    except PayloadError as exc:
        raise PayloadError(f"{what}: {exc}") from None
    except RecursionError:
        raise PayloadError(f"{what}: nested too deep") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise PayloadError(f"{what}: not JSON: {str(exc)[:200]}") from None


def _int_in_range(v: object, lo: int, hi: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


@dataclass(frozen=True)
class Part:
    """One point of another measurement that a reading carries (``PARTS``): a string of
    the inverter (tag ``string``), its battery."""

    measurement: str
    tags: tuple[tuple[str, str], ...]
    fields: dict[str, Value]

    def to_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"measurement": self.measurement}
        if self.tags:
            body["tags"] = dict(self.tags)
        body["fields"] = self.fields
        return body


@dataclass(frozen=True)
class Reading:
    ts_ms: int
    seq: int
    kind: str
    fields: dict[str, Value]
    role: str | None = None
    collector: str | None = None  # who took it: its spool waits for the acknowledgement
    # fields of the payload the glossary does not know for its kind: left out, counted
    dropped: tuple[str, ...] = ()
    # fields whose value is outside the glossary's physical bounds: left out, counted
    out_of_bounds: tuple[str, ...] = ()
    parts: tuple[Part, ...] = ()

    def to_json(self) -> bytes:
        body: dict[str, Any] = {"ts": self.ts_ms, "seq": self.seq, "kind": self.kind}
        if self.role:
            body["role"] = self.role
        if self.collector:
            body["collector"] = self.collector
        body["fields"] = self.fields
        if self.parts:
            body["parts"] = [p.to_body() for p in self.parts]
        return _ENCODER.encode(body).encode()


def decode_reading(payload: bytes) -> Reading:
    """A reading payload, checked against the glossary: only the kind's known fields,
    each of its type (an ``int`` field an integer within 64 bits, a ``float`` field a
    finite number); unknown field names are left out and listed in ``dropped``, never
    stored as new fields; a value outside the field's physical bounds (the glossary's:
    a device's own narrower ones are the collector's to apply) is left out and listed
    in ``out_of_bounds``.  ``PayloadError`` names the first problem, or says that no
    field is left."""
    body = load_json(payload, "reading")
    if not isinstance(body, dict):
        raise PayloadError("expected a JSON object")
    missing = [k for k in ("ts", "seq", "kind", "fields") if k not in body]
    if missing:
        raise PayloadError(f"missing key(s) {missing}")
    ts, seq, kind, fields = body["ts"], body["seq"], body["kind"], body["fields"]
    if not _int_in_range(ts, TS_MIN_MS, TS_MAX_MS - 1):
        raise PayloadError(f"ts: expected epoch milliseconds between 2000 and 2100, got {ts!r}")
    if not _int_in_range(seq, 0, INT_MAX):
        raise PayloadError(f"seq: expected an integer from 0 to 2**63 - 1, got {seq!r}")
    if kind not in KINDS:
        raise PayloadError(f"kind: expected one of {list(KINDS)}, got {kind!r}")
    role, collector = body.get("role"), body.get("collector")
    for name, tag in (("role", role), ("collector", collector)):
        if tag is not None and (not isinstance(tag, str) or not _SLUG.match(tag)):
            raise PayloadError(f"{name}: expected a lower-case slug, got {tag!r}"[:200])
    if not isinstance(fields, dict):
        raise PayloadError("fields: expected an object")
    dropped: list[str] = []
    out_of_bounds: list[str] = []
    clean = _check_fields(kind, fields, "fields", dropped, out_of_bounds)
    parts = _check_parts(kind, body.get("parts"), dropped, out_of_bounds)
    if not clean and not parts:
        if not out_of_bounds:
            raise PayloadError(
                f"fields: none the glossary knows for a {kind} ({len(dropped)} unknown)"
            )
        raise PayloadError(
            f"fields: none within the glossary's bounds for a {kind} ({len(dropped)} unknown, "
            f"out of bounds: {', '.join(out_of_bounds)})"
        )
    return Reading(
        ts, seq, kind, clean, role, collector, tuple(dropped), tuple(out_of_bounds), parts
    )


def _check_fields(
    measurement: str,
    fields: dict[Any, Any],
    where: str,
    dropped: list[str],
    out_of_bounds: list[str],
) -> dict[str, Value]:
    """The fields of ``measurement`` the glossary knows, each of its type and within its
    bounds; unknown names go to ``dropped``, values out of bounds to ``out_of_bounds``
    (prefixed with ``where`` beyond the reading's own fields); a value of the wrong type
    is a ``PayloadError`` naming ``where``."""
    specs = _check_specs(measurement)
    prefix = "" if where == "fields" else f"{where}."
    clean: dict[str, Value] = {}
    for name, value in fields.items():
        spec = specs.get(name)
        if spec is None:
            dropped.append(prefix + (name if _FIELD.match(name) else repr(name)[:70]))
            continue
        ftype, lo, hi, fdef = spec
        cls = value.__class__
        # the common cases first (a JSON number is exactly an int or a float), then
        # the checks as written
        if ftype == "float" and (cls is float or cls is int):
            ok = math.isfinite(value)
        elif ftype == "int" and cls is int:
            ok = -INT_MAX - 1 <= value <= INT_MAX
        else:
            ok = _of_type(ftype, value)
        if not ok:
            raise PayloadError(f"{where}.{name}: expected {_EXPECTED[ftype]}, got {value!r}"[:200])
        if lo is not None:  # a plain range: Bounds.admits, inlined
            if not lo <= value <= hi:
                out_of_bounds.append(prefix + name)
                continue
        elif not isinstance(value, str) and not fdef.bounds.admits(value):
            out_of_bounds.append(prefix + name)
            continue
        clean[name] = value
    return clean


def _of_type(ftype: str, value: object) -> bool:
    if ftype == "bool":
        return isinstance(value, bool)
    if ftype == "int":
        return _int_in_range(value, -INT_MAX - 1, INT_MAX)
    if ftype == "str":
        return isinstance(value, str) and len(value) <= MAX_TEXT and value.isprintable()
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# measurement -> field -> (type, lo, hi, definition): lo .. hi when its bounds are a
# plain range of a number field (no enumerated values, no exceptions), else None
_CHECKS: dict[str, dict[str, tuple[str, float | None, float | None, FieldDef]]] = {}


def _check_specs(measurement: str) -> dict[str, tuple[str, float | None, float | None, FieldDef]]:
    specs = _CHECKS.get(measurement)
    if specs is None:
        specs = {}
        for name, fdef in FIELDS[measurement].items():
            b = fdef.bounds
            lo = hi = None
            if fdef.type in ("float", "int") and b.values is None and not b.also:
                lo = -math.inf if b.min is None else b.min
                hi = math.inf if b.max is None else b.max
            specs[name] = (fdef.type, lo, hi, fdef)
        _CHECKS[measurement] = specs
    return specs


def _check_parts(
    kind: str, raw: object, dropped: list[str], out_of_bounds: list[str]
) -> tuple[Part, ...]:
    """A reading's ``parts``: each a measurement its kind may carry (``PARTS``) with
    exactly that measurement's tags, slugs; a part left with no field is left out."""
    if raw is None:
        return ()
    if not isinstance(raw, list) or len(raw) > MAX_PARTS:
        raise PayloadError(f"parts: expected a list of at most {MAX_PARTS} objects")
    allowed = PARTS[kind]
    parts: list[Part] = []
    seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    for i, item in enumerate(raw):
        where = f"parts[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("fields"), dict):
            raise PayloadError(f"{where}: expected an object with 'fields'")
        measurement = item.get("measurement")
        if measurement not in allowed:
            raise PayloadError(
                f"{where}.measurement: {kind} readings carry {sorted(allowed) or 'none'}, "
                f"got {measurement!r}"[:200]
            )
        tags = item.get("tags", {})
        want = allowed[measurement]
        if not isinstance(tags, dict) or sorted(tags) != sorted(want):
            raise PayloadError(f"{where}.tags: expected exactly {list(want)}, got {tags!r}"[:200])
        for k, v in tags.items():
            if not isinstance(v, str) or not _SLUG.match(v):
                raise PayloadError(f"{where}.tags.{k}: expected a lower-case slug, got {v!r}"[:200])
        key = (measurement, tuple(sorted(tags.items())))
        if key in seen:
            raise PayloadError(f"{where}: a second {measurement} {dict(key[1])}")
        seen.add(key)
        clean = _check_fields(measurement, item["fields"], where, dropped, out_of_bounds)
        if clean:
            parts.append(Part(measurement, key[1], clean))
    return tuple(parts)


_EXPECTED = {
    "bool": "true or false",
    "str": f"a printable text of at most {MAX_TEXT} characters",
    "int": "an integer within 64 bits",
    "float": "a finite number",
}


def _escape_key(s: str) -> str:
    return s.replace("\\", "\\\\").replace(",", r"\,").replace("=", r"\=").replace(" ", r"\ ")


# Line protocol, pre-formatted: the glossary lookup and the escaping of a field name
# happen once per (measurement, name), those of a measurement and its tag set once per
# series; per value only the value is formatted.  The output is byte for byte what
# formatting each value on its own gave (tests/unit/test_line_protocol.py keeps that
# formatter as the reference).  The caches are bounded: past _CACHE_MAX entries one is
# emptied and fills again, so odd names sent by the thousand cost time, never memory.
_CACHE_MAX = 100_000
# measurement -> field name -> ("<escaped name>=", glossary type, None: not in it)
_FIELD_SPECS: dict[str, dict[str, tuple[str, str | None]]] = {}
# (measurement, tags...) -> "<measurement>,<tag>=<value>..." (escaped, sorted)
_SERIES: dict[tuple[Any, ...], str] = {}


def _field_specs(measurement: str) -> dict[str, tuple[str, str | None]]:
    specs = _FIELD_SPECS.get(measurement)
    if specs is None:
        known = FIELDS.get(measurement, {})
        specs = {name: (_escape_key(name) + "=", fdef.type) for name, fdef in known.items()}
        if len(_FIELD_SPECS) >= _CACHE_MAX:
            _FIELD_SPECS.clear()
        _FIELD_SPECS[measurement] = specs
    return specs


def _unknown_field_spec(
    specs: dict[str, tuple[str, str | None]], name: str
) -> tuple[str, str | None]:
    spec = (_escape_key(name) + "=", None)  # its type follows each value
    if len(specs) < _CACHE_MAX:
        specs[name] = spec
    return spec


def _typed_value(ftype: str, name: str, value: Value) -> str:
    if ftype == "float":
        return repr(float(value))
    if ftype == "str":
        text = str(value).replace("\\", "\\\\").replace('"', '\\"')
        return f'"{text}"'
    if ftype == "bool":
        return "true" if value else "false"
    if ftype == "int":
        if isinstance(value, float) and not value.is_integer():
            raise PayloadError(f"fields.{name}: expected an integer, got {value!r}")
        return f"{int(value)}i"
    return repr(float(value))


def format_value(measurement: str, name: str, value: Value) -> str:
    """Line-protocol field value with the glossary's type (floats stay floats)."""
    fdef = FIELDS.get(measurement, {}).get(name)
    ftype = fdef.type if fdef else ("bool" if isinstance(value, bool) else "float")
    return _typed_value(ftype, name, value)


def _field_part(measurement: str, fields: dict[str, Value]) -> str:
    specs = _field_specs(measurement)
    out = []
    for name, value in fields.items():
        spec = specs.get(name)
        if spec is None:
            spec = _unknown_field_spec(specs, name)
        prefix, ftype = spec
        if ftype is None:
            ftype = "bool" if isinstance(value, bool) else "float"
        if ftype == "float":
            out.append(prefix + repr(float(value)))
        else:
            out.append(prefix + _typed_value(ftype, name, value))
    return ",".join(out)


def _series_text(measurement: str, tags: dict[str, str]) -> str:
    tag_part = "".join(f",{_escape_key(k)}={_escape_key(v)}" for k, v in sorted(tags.items()) if v)
    return _escape_key(measurement) + tag_part


def _series(key: tuple[Any, ...], measurement: str, tags: dict[str, str]) -> str:
    """The escaped measurement and sorted tags of ``tags``, kept under ``key`` (which
    must say everything ``tags`` holds)."""
    try:
        text = _SERIES.get(key)
    except TypeError:  # a tag value that cannot be a key: formatted as it comes
        return _series_text(measurement, tags)
    if text is None:
        text = _series_text(measurement, tags)
        if len(_SERIES) >= _CACHE_MAX:
            _SERIES.clear()
        _SERIES[key] = text
    return text


def to_line(measurement: str, tags: dict[str, str], fields: dict[str, Value], ts_ms: int) -> str:
    series = _series((measurement, *tags.items()), measurement, tags)
    return f"{series} {_field_part(measurement, fields)} {ts_ms}"


def _reading_series(kind: str, site: str, device: str, role: str | None) -> str:
    key = (0, kind, site, device, role)
    try:
        text = _SERIES.get(key)
    except TypeError:
        text = None
    if text is None:
        tags = {"site": site, "device": device}
        if role:
            tags["role"] = role
        text = _series(key, kind, tags)
    return text


SEQ_FIELD = "seq"  # the reading's seq, stored with its own point by the ingester


def reading_line(site: str, device: str, r: Reading, seq: bool = False) -> str:
    """The reading's own point; with ``seq`` its ``seq`` too, as the integer field
    ``seq`` (no glossary field has that name: theirs carry a unit)."""
    series = _reading_series(r.kind, site, device, r.role)
    fields = _field_part(r.kind, r.fields)
    if seq:
        fields = f"{fields},{SEQ_FIELD}={r.seq}i" if fields else f"{SEQ_FIELD}={r.seq}i"
    return f"{series} {fields} {r.ts_ms}"


def reading_lines(site: str, device: str, r: Reading, seq: bool = False) -> list[str]:
    """The reading's own point (when it has fields, or ``seq`` is asked for: then it
    always has one, holding the seq) and one point per part, tagged with the site, the
    device and the part's own tags."""
    lines = [reading_line(site, device, r, seq)] if r.fields or seq else []
    for p in r.parts:
        key = (1, p.measurement, site, device, p.tags)
        try:
            series = _SERIES.get(key)
        except TypeError:
            series = None
        if series is None:
            series = _series(key, p.measurement, {"site": site, "device": device, **dict(p.tags)})
        lines.append(f"{series} {_field_part(p.measurement, p.fields)} {r.ts_ms}")
    return lines


def decode_info(payload: bytes) -> dict[str, Value] | None:
    """The ``info`` object of a device status (nameplate and identity, the
    ``device_info`` measurement): its known fields of the right type, or ``None`` when
    the status has none.  Unknown or ill-typed entries are left out."""
    body = load_json(payload, "status")
    info = body.get("info") if isinstance(body, dict) else None
    if not isinstance(info, dict):
        return None
    dropped: list[str] = []
    oob: list[str] = []
    ok = {}
    for name, value in info.items():
        if name not in INFO_FIELDS:
            continue
        try:
            ok.update(_check_fields("device_info", {name: value}, "info", dropped, oob))
        except PayloadError:
            continue
    return ok or None


def decode_status(payload: bytes) -> dict[str, Value]:
    """Device status payload -> device_status fields (online, poll_ms, errors,
    out_of_bounds: the sum of the per-field counts) and ts."""
    body = load_json(payload, "status")
    if not isinstance(body, dict) or not isinstance(body.get("online"), bool):
        raise PayloadError("status: expected an object with boolean 'online'")
    ts = body.get("ts")
    if not isinstance(ts, int) or isinstance(ts, bool) or not TS_MIN_MS <= ts < TS_MAX_MS:
        raise PayloadError(f"status.ts: expected epoch milliseconds, got {ts!r}")
    out: dict[str, Value] = {"ts": ts, "online": body["online"]}
    v = body.get("poll_ms")
    if (
        isinstance(v, (int, float))
        and not isinstance(v, bool)
        and FIELDS["device_status"]["poll_ms"].bounds.admits(v)
    ):
        out["poll_ms"] = v  # a negative or absurd duration is left out, like any value
    if _int_in_range(body.get("errors"), 0, INT_MAX):
        out["errors"] = body["errors"]
    counts = body.get("out_of_bounds")
    if isinstance(counts, dict) and all(_int_in_range(n, 0, INT_MAX) for n in counts.values()):
        out["out_of_bounds"] = min(sum(counts.values()), INT_MAX)
    return out
