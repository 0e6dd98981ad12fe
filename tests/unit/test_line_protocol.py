"""The pre-formatted line protocol (core/reading.py: names escaped and glossary types
looked up once per field name and series) gives exactly the bytes of formatting each
value on its own, the formatter it replaced, kept here verbatim as the reference."""

from __future__ import annotations

import json
import math
import random

import pytest

from foursave.core import reading as rd
from foursave.core.glossary import FIELDS, PARTS
from foursave.core.reading import (
    Part,
    PayloadError,
    Reading,
    decode_info,
    decode_reading,
    format_value,
    reading_line,
    reading_lines,
    to_line,
)

# ------------------------------------------------- the reference: the old formatter


def _old_escape_key(s):
    return s.replace("\\", "\\\\").replace(",", r"\,").replace("=", r"\=").replace(" ", r"\ ")


def _old_format_value(measurement, name, value):
    fdef = FIELDS.get(measurement, {}).get(name)
    ftype = fdef.type if fdef else ("bool" if isinstance(value, bool) else "float")
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


def _old_to_line(measurement, tags, fields, ts_ms):
    tag_part = "".join(
        f",{_old_escape_key(k)}={_old_escape_key(v)}" for k, v in sorted(tags.items()) if v
    )
    field_part = ",".join(
        f"{_old_escape_key(k)}={_old_format_value(measurement, k, v)}" for k, v in fields.items()
    )
    return f"{_old_escape_key(measurement)}{tag_part} {field_part} {ts_ms}"


def _old_reading_line(site, device, r):
    tags = {"site": site, "device": device}
    if r.role:
        tags["role"] = r.role
    return _old_to_line(r.kind, tags, r.fields, r.ts_ms)


def _old_reading_lines(site, device, r):
    lines = [_old_reading_line(site, device, r)] if r.fields else []
    for p in r.parts:
        tags = {"site": site, "device": device, **dict(p.tags)}
        lines.append(_old_to_line(p.measurement, tags, p.fields, r.ts_ms))
    return lines


def outcome(fn, *args):
    """What a call gives: its result, or its exception's type and message."""
    try:
        return ("ok", fn(*args))
    except Exception as exc:
        return ("raises", type(exc), str(exc))


# ------------------------------------------------- a wide sample

AWKWARD = ["a b", "a,b", "a=b", "a\\b", 'a"b', "a\nb", " ", ",=\\ ", "ü中", ""]
VALUES = [
    0.0,
    -0.0,
    4200.0,
    1e-300,
    1.5e300,
    123.456,
    2.0**53,
    math.nan,
    math.inf,
    -math.inf,
    4.5,
    0,
    4,
    -7,
    2**63 - 1,
    -(2**63),
    10**30,
    True,
    False,
    "plain",
    'with "quotes"',
    "back\\slash\\",
    "new\nline",
    "tab\tand\rreturn",
    "comma,equals= space",
    "",
    "12",
    "ünicode 中文",
    None,
]
MEASUREMENTS = [*FIELDS, "ingest_stats", "bill month", "m,x=y", "back\\slash"]


def field_names(measurement: str) -> list[str]:
    return [*FIELDS.get(measurement, {}), "unknown_w", *(f"odd{a}name" for a in AWKWARD)]


def random_tags(rng: random.Random) -> dict:
    keys = ["site", "device", "role", "string", "ingester", "a b", "k,=", "z"]
    tags = {}
    for k in rng.sample(keys, rng.randint(0, len(keys))):
        tags[k] = rng.choice([f"v{rng.randint(0, 3)}", *AWKWARD, None])
    return tags


def random_fields(rng: random.Random, measurement: str) -> dict:
    names = field_names(measurement)
    return {n: rng.choice(VALUES) for n in rng.sample(names, rng.randint(0, min(8, len(names))))}


def test_every_glossary_field_of_every_type_formats_as_before():
    """Each field the glossary knows (float, int, bool, str), and unknown ones, with
    every kind of value: the same text, or the same error."""
    checked = 0
    for measurement in MEASUREMENTS:
        for name in field_names(measurement):
            for value in VALUES:
                for _ in range(2):  # the first call fills the caches, the second reads them
                    new = outcome(to_line, measurement, {"site": "s"}, {name: value}, 1)
                    assert new == outcome(
                        _old_to_line, measurement, {"site": "s"}, {name: value}, 1
                    )
                    assert outcome(format_value, measurement, name, value) == outcome(
                        _old_format_value, measurement, name, value
                    )
                checked += 1
    types = {f.type for fields in FIELDS.values() for f in fields.values()}
    assert types == {"float", "int", "bool", "str"} and checked > 5000


def test_random_lines_are_byte_identical():
    rng = random.Random(17)
    errors = 0
    for i in range(20_000):
        measurement = rng.choice(MEASUREMENTS)
        tags, fields = random_tags(rng), random_fields(rng, measurement)
        ts = rng.choice([1, 1_790_000_000_123, i])
        new = outcome(to_line, measurement, tags, fields, ts)
        assert new == outcome(_old_to_line, measurement, tags, fields, ts), (tags, fields)
        errors += new[0] == "raises"
    assert 0 < errors < 20_000  # both paths were taken: lines, and refusals (4.5 as an int)


def random_reading(rng: random.Random) -> Reading:
    kind = rng.choice(list(PARTS))
    parts = []
    for measurement, tag_names in PARTS[kind].items():
        for n in range(rng.randint(0, 2)):
            tags = tuple((t, str(n + 1)) for t in tag_names)
            if rng.random() < 0.2:  # a part's tag that overrides the device's, or an odd one
                tags += ((rng.choice(["site", "device", "x y"]), rng.choice(AWKWARD)),)
            parts.append(Part(measurement, tags, random_fields(rng, measurement)))
    return Reading(
        1_790_000_000_000 + rng.randint(0, 10**6),
        rng.randint(0, 100),
        kind,
        random_fields(rng, kind),
        role=rng.choice([None, "", "main", "hvac", "a b"]),
        parts=tuple(parts),
    )


def test_readings_and_their_parts_give_the_same_lines():
    rng = random.Random(1)
    lines = 0
    for _ in range(10_000):
        r = random_reading(rng)
        site, device = rng.choice(["s", "yonghua", "a b"]), rng.choice(["inv-01", "m=1", ""])
        new = outcome(reading_lines, site, device, r)
        assert new == outcome(_old_reading_lines, site, device, r), r
        if r.fields:
            assert outcome(reading_line, site, device, r) == outcome(
                _old_reading_line, site, device, r
            )
        lines += len(new[1]) if new[0] == "ok" else 0
    assert lines > 1_000  # many readings hold a value its field refuses: compared too


def test_a_decoded_reading_gives_the_same_lines():
    payload = {
        "ts": 1_790_000_000_000,
        "seq": 3,
        "kind": "inverter",
        "role": "main",
        "fields": {"ac_power_w": 4200, "state": 4, "events": 0, "ac_frequency_hz": 60.01},
        "parts": [
            {"measurement": "inverter_string", "tags": {"string": "2"}, "fields": {"state": 4}},
            {"measurement": "battery", "fields": {"soc_pct": 55.5}},
        ],
    }
    r = decode_reading(json.dumps(payload).encode())
    assert (
        reading_lines("s", "inv", r)
        == _old_reading_lines("s", "inv", r)
        == [
            "inverter,device=inv,role=main,site=s "
            "ac_power_w=4200.0,state=4i,events=0i,ac_frequency_hz=60.01 1790000000000",
            "inverter_string,device=inv,site=s,string=2 state=4i 1790000000000",
            "battery,device=inv,site=s soc_pct=55.5 1790000000000",
        ]
    )


def test_text_with_quotes_and_backslashes_is_escaped_and_control_characters_refused():
    status = {"online": True, "ts": 1, "info": {"model": 'SG "10" \\ RT', "serial": "a\nb"}}
    info = decode_info(json.dumps(status).encode())
    assert info == {"model": 'SG "10" \\ RT'}  # the serial with a newline is left out
    assert to_line("device_info", {"device": "i"}, info, 1) == (
        'device_info,device=i model="SG \\"10\\" \\\\ RT" 1'
    )
    with pytest.raises(PayloadError, match=r"info\.serial: expected a printable text"):
        rd._check_fields("device_info", {"serial": "a\nb"}, "info", [], [])


def test_the_caches_stay_bounded_and_right(monkeypatch):
    monkeypatch.setattr(rd, "_CACHE_MAX", 10)
    rd._SERIES.clear()
    rd._FIELD_SPECS.clear()
    for i in range(200):
        tags = {"site": "s", "device": f"d{i}"}
        fields = {f"f{i}": float(i), "ac_power_w": 1.0}
        assert to_line("inverter", tags, fields, i) == _old_to_line("inverter", tags, fields, i)
        r = Reading(1, 1, "meter", {"active_power_w": float(i)}, role=f"r{i % 13}")
        assert reading_lines("s", f"d{i}", r) == _old_reading_lines("s", f"d{i}", r)
        assert len(rd._SERIES) <= 10
        assert all(
            len(specs) <= max(10, len(FIELDS.get(m, {}))) for m, specs in rd._FIELD_SPECS.items()
        )
    rd._SERIES.clear()
    rd._FIELD_SPECS.clear()


# ------------------------------------------------- the checks, unchanged


def _old_check_fields(measurement, fields, where, dropped, out_of_bounds):
    known = FIELDS[measurement]
    prefix = "" if where == "fields" else f"{where}."
    clean = {}
    for name, value in fields.items():
        fdef = known.get(name)
        if fdef is None:
            dropped.append(prefix + (name if rd._FIELD.match(name) else repr(name)[:70]))
            continue
        if fdef.type == "bool":
            ok = isinstance(value, bool)
        elif fdef.type == "int":
            ok = rd._int_in_range(value, -rd.INT_MAX - 1, rd.INT_MAX)
        elif fdef.type == "str":
            ok = isinstance(value, str) and len(value) <= rd.MAX_TEXT and value.isprintable()
        else:
            ok = (
                isinstance(value, (int, float))
                and not isinstance(value, bool)
                and math.isfinite(value)
            )
        if not ok:
            raise PayloadError(
                f"{where}.{name}: expected {rd._EXPECTED[fdef.type]}, got {value!r}"[:200]
            )
        if not isinstance(value, str) and not fdef.bounds.admits(value):
            out_of_bounds.append(prefix + name)
            continue
        clean[name] = value
    return clean


def checked(check, measurement, fields, where):
    dropped: list[str] = []
    out_of_bounds: list[str] = []
    return check(measurement, fields, where, dropped, out_of_bounds), dropped, out_of_bounds


def test_field_checks_keep_every_verdict():
    """Types, bounds (plain ranges, enumerations such as St, 0 Hz), unknown names:
    the same clean fields, the same lists of left-out names, the same errors."""
    rng = random.Random(3)
    extra = [-1e9, 1e9 + 1, 2e15, 59.9, 0.0, 39.0, 3, 9, 101.0, -0.5, 1.0, 2**63, -(2**63) - 1]
    kept = refused = left_out = 0
    for _ in range(20_000):
        measurement = rng.choice(list(FIELDS))
        names = field_names(measurement)
        fields = {
            n: rng.choice(VALUES + extra) for n in rng.sample(names, rng.randint(1, len(names)))
        }
        where = rng.choice(["fields", "parts[0]"])
        got = outcome(checked, rd._check_fields, measurement, fields, where)
        want = outcome(checked, _old_check_fields, measurement, fields, where)
        assert got == want, (measurement, fields)
        kept += got[0] == "ok" and bool(got[1][0])
        refused += got[0] == "raises"
        left_out += got[0] == "ok" and bool(got[1][2])
    assert kept > 100 and refused > 100 and left_out > 100
