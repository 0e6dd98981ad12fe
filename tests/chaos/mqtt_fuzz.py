"""Hostile MQTT payloads for the readings, status and collector topics.

Each generated message says whether the ingester should refuse it (dead-letter it) or
may store it: the ones that may be stored are well-formed readings and statuses with
hostile but legal content (tiny floats, unknown extra fields, odd statuses) and go only to
fuzz devices (``fz-*``), so the real devices' counts stay exact.  The named poison
cases of tests/unit/test_poison.py are among the kinds (a test module is not imported
from another: tests/unit/test_tests_import_rules.py); here they are generated with
random sizes and mixed with random bytes.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

PREFIX = "foursave/v1"
NOW_MS = 1_790_000_000_000
Y2090_MS = 3_786_000_000_000

BAD_LEVELS = ["Demo Site", "M-1!", "ÄÖ", "a.b", "-x", "", "x" * 70, "UPPER", "日本", "a b"]


@dataclass
class Hostile:
    topic: str
    payload: bytes
    kind: str
    refused: bool  # the ingester must dead-letter it


@dataclass
class FuzzCounts:
    sent: int = 0
    expect_refused: int = 0
    expect_stored: int = 0
    kinds: Counter = field(default_factory=Counter)


def _reading(seq: int, fields: dict, kind: str = "meter", **extra) -> dict:
    return {"ts": NOW_MS + seq, "seq": seq, "kind": kind, "role": "main", "fields": fields, **extra}


def hostile(rng: random.Random, i: int, real_devices: list[str]) -> Hostile:
    """One hostile message; ``i`` makes fuzz devices' timestamps distinct."""
    fz = f"fz-{i % 50:02d}"
    real = rng.choice(real_devices) if real_devices else fz
    dev = rng.choice([fz, real])  # refused payloads may go to a real device's topic too
    rtopic = f"{PREFIX}/demo/{dev}/reading"
    stopic = f"{PREFIX}/demo/{dev}/status"
    ctopic = f"{PREFIX}/_collector/fz-{i % 7}/status"
    any_topic = rng.choice([rtopic, stopic, ctopic])
    k = rng.randrange(26)
    r = _reading(i, {"active_power_w": 1.0})
    if k == 0:
        return Hostile(any_topic, b"", "empty", True)
    if k == 1:
        return Hostile(any_topic, rng.randbytes(rng.randint(1, 300)), "random bytes", True)
    if k == 2:
        # past the 64 KiB limit now and then (each one is kept as a dead letter)
        n = rng.randint(65_537, 70_000) if rng.random() < 0.1 else rng.randint(2000, 10_000)
        return Hostile(any_topic, b'{"pad":"' + b"x" * n + b'"}', "oversized", True)
    if k == 3:
        d = rng.choice([1000, 1000, 5000, 5000, 5000, 30_000])
        return Hostile(any_topic, b"[" * d + b"]" * d, "deep nesting", True)
    if k == 4:
        digits = "9" * rng.randint(20, 5000)
        text = json.dumps(_reading(i, {"active_power_w": 1.0})).replace(
            f'"seq": {i}', f'"seq": {digits}'
        )
        return Hostile(rtopic, text.encode(), "huge int", True)
    if k == 5:
        seq = rng.choice([2**63, 2**64, 2**63 + rng.randrange(1000), -1, -(2**63)])
        return Hostile(rtopic, json.dumps({**r, "seq": seq}).encode(), "seq out of range", True)
    if k == 6:
        lit = rng.choice(["NaN", "Infinity", "-Infinity"])
        text = json.dumps(r).replace("1.0", lit)
        return Hostile(rtopic, text.encode(), "NaN/Infinity", True)
    if k == 7:
        fields = {f"made_up_{j}": 1.0 for j in range(rng.randint(1, 30))}
        return Hostile(rtopic, json.dumps({**r, "fields": fields}).encode(), "unknown only", True)
    if k == 8:
        # a good reading with unknown extra fields: stored without them
        fields = {"active_power_w": 2.0, "made_up_w": 1.0, "Bad Name": 3, "x" * 100: 1}
        topic = f"{PREFIX}/demo/{fz}/reading"
        return Hostile(topic, json.dumps({**r, "fields": fields}).encode(), "unknown extra", False)
    if k == 9:
        site = rng.choice(BAD_LEVELS)
        device = rng.choice([*BAD_LEVELS, fz])
        if site == "" and device == "":
            device = "X"
        leaf = rng.choice(["reading", "status"])
        body = r if leaf == "reading" else {"online": True, "ts": NOW_MS}
        return Hostile(f"{PREFIX}/{site}/{device}/{leaf}", json.dumps(body).encode(), "topic", True)
    if k == 10:
        wrong = rng.choice(
            [
                {**r, "ts": str(NOW_MS)},
                {**r, "ts": NOW_MS + 0.5},
                {**r, "ts": True},
                {**r, "seq": "1"},
                {**r, "seq": 1.5},
                {**r, "fields": [1, 2]},
                {**r, "fields": {}},
                {**r, "fields": {"active_power_w": "10"}},
                {**r, "fields": {"active_power_w": True}},
                {**r, "fields": {"active_power_w": None}},
                {**r, "fields": {"active_power_w": {"v": 1}}},
                {**r, "kind": "toaster"},
                {**r, "kind": 7},
                {**r, "role": "Main Hall"},
                {**r, "role": 5},
                _reading(i, {"state": 1.5}, kind="inverter"),
                _reading(i, {"state": 2**63}, kind="inverter"),
                [r],
                "reading",
                42,
                None,
            ]
        )
        return Hostile(rtopic, json.dumps(wrong).encode(), "wrong types", True)
    if k == 11:
        ts = rng.choice([0, -1, 946_684_799_999, 4_102_444_800_000, 10**15, 2**62])
        return Hostile(rtopic, json.dumps({**r, "ts": ts}).encode(), "ts out of range", True)
    if k == 12:
        # a date in 2090: beyond the ingester's future tolerance, refused
        body = {**r, "ts": Y2090_MS + i}
        topic = f"{PREFIX}/demo/{fz}/reading"
        return Hostile(topic, json.dumps(body).encode(), "2090", True)
    if k == 13:
        v = rng.choice([1e308, -1e308, 1.7976931348623157e308, 5e-324, -0.0, 1e-300])
        body = _reading(i, {"active_power_w": v, "voltage_v": v, "frequency_hz": -v})
        topic = f"{PREFIX}/demo/{fz}/reading"
        # +-1e308 is outside every one of these fields' physical bounds: nothing is left
        # and the reading is refused; the tiny ones keep power and voltage (docs/bounds.md)
        return Hostile(topic, json.dumps(body).encode(), "+-1e308", abs(v) > 1e9)
    if k == 14:
        return Hostile(any_topic, b"\x00\xff\xfe" + rng.randbytes(50), "binary", True)
    if k == 15:
        return Hostile(any_topic, "\udcff".encode("utf-8", "surrogateescape"), "not UTF-8", True)
    if k == 16:
        bad = rng.choice(
            [
                b"{not json",
                b'{"ts": 1',
                b"}",
                b"null",
                b"[]",
                b'"str"',
                b"1e400",
                b'{"a":1}' * 3,
                b'{"ts":1790000000000,"ts":2}',
                b"\xef\xbb\xbf{}",
            ]
        )
        return Hostile(any_topic, bad, "broken JSON", True)
    if k == 17:
        status = rng.choice(
            [
                {"online": "yes", "ts": NOW_MS},
                {"online": True},
                {"online": True, "ts": 10**30},
                {"online": True, "ts": "now"},
                {"online": 1, "ts": NOW_MS},
                [True],
                {"ts": NOW_MS},
            ]
        )
        return Hostile(stopic, json.dumps(status).encode(), "bad status", True)
    if k == 18:
        # legal status with odd extra fields: stored as device_status
        status = {
            "online": True,
            "ts": NOW_MS + i,
            "poll_ms": rng.choice([1e308, -5.0, 0.0]),
            "errors": rng.choice([-1, 2**63 - 1, 0]),
            "extra": {"deep": [1] * 10},
        }
        return Hostile(
            f"{PREFIX}/demo/{fz}/status", json.dumps(status).encode(), "odd status", False
        )
    if k == 19:
        pres = rng.choice(
            [
                {"state": "dancing", "ts": NOW_MS},
                {"state": "online"},
                {"state": "online", "ts": -5},
                {"state": ["online"], "ts": NOW_MS},
                {"online": True},
            ]
        )
        return Hostile(ctopic, json.dumps(pres).encode(), "bad presence", True)
    if k == 20:
        pres = {
            "state": "online",
            "ts": NOW_MS + i,
            "spool_depth": rng.choice([-1, 2**63 - 1, 2**70 % (2**63), 5]),
            "readings": 1.5,
            "junk": "x",
        }
        return Hostile(ctopic, json.dumps(pres).encode(), "odd presence", False)
    if k == 21:
        fields = {f"f{j}": 1.0 for j in range(rng.randint(100, 2000))}
        fields["active_power_w"] = 3.0
        body = _reading(i, fields)
        topic = f"{PREFIX}/demo/{fz}/reading"
        payload = json.dumps(body).encode()
        return Hostile(topic, payload, "many unknown", len(payload) > 65_536)
    if k == 22:
        text = json.dumps(r)
        cut = rng.randrange(1, len(text))
        return Hostile(rtopic, text[:cut].encode(), "truncated JSON", True)
    if k == 23:
        body = {**r, "fields": {"active_power_w": 1.0}, "kind": "meter", "role": "x" * 70}
        return Hostile(rtopic, json.dumps(body).encode(), "long role", True)
    if k == 24:
        # 64-bit extremes are valid integers but no SunSpec St or Evt1: both out of bounds
        body = _reading(i, {"events": -(2**63), "state": 2**63 - 1}, kind="inverter")
        topic = f"{PREFIX}/demo/{fz}/reading"
        return Hostile(topic, json.dumps(body).encode(), "int extremes", True)
    nested = {"fields": {"active_power_w": {"a": {"b": {"c": [1] * 100}}}}}
    return Hostile(rtopic, json.dumps({**r, **nested}).encode(), "nested value", True)


def payloads(n: int, seed: int, real_devices: list[str]) -> Iterator[Hostile]:
    rng = random.Random(seed)
    for i in range(n):
        yield hostile(rng, i, real_devices)


def hostile_status() -> list[tuple[str, bytes]]:
    """Status messages against the API's live-status subscriber (api/live.py)."""
    t = f"{PREFIX}/demo/bad/status"
    return [
        (t, b"[" * 100_000),
        (t, b"[" * 30_000 + b"]" * 30_000),
        (t, b'{"online": true, "ts": 1' + b"0" * 5000 + b"}"),
        (t, b"\xff\xfe\x00garbage"),
        (t, b'{"online": NaN}'),
        (t, b"[1, 2, 3]"),
        (t, b""),
        (f"{PREFIX}/_collector/bad/status", b'{"state": "online", "ts": ' + b"9" * 400 + b"}"),
        (f"{PREFIX}/_ingester/bad/status", b"x" * 200_000),
    ]
