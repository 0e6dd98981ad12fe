"""Payloads that once stopped a service (issue 12), each by name: decoding refuses them
with a reason, and nothing but ``PayloadError`` ever leaves the decoder."""

from __future__ import annotations

import json

import pytest

from foursave.api.live import LiveStatus
from foursave.collector.ingest import collector_status_line
from foursave.core.reading import PayloadError, decode_reading, decode_status

HEAD = '{"ts": 1700000001000, "kind": "meter", "role": "main", '
FIELDS = '"fields": {"active_power_w": 10.0}'

POISON = {
    "seq 2**64": (f'{HEAD}"seq": {2**64}, {FIELDS}}}', "an integer of 20 digits (at most 19)"),
    "seq 2**63": (f'{HEAD}"seq": {2**63}, {FIELDS}}}', "seq: expected an integer from 0"),
    "400-digit number": (
        f'{HEAD}"seq": 0, "fields": {{"active_power_w": {"9" * 400}}}}}',
        "an integer of 400 digits",
    ),
    "5,000-digit integer": (f'{HEAD}"seq": {"7" * 5000}, {FIELDS}}}', "an integer of 5000 digits"),
    "1e400 (infinite float)": (
        f'{HEAD}"seq": 0, "fields": {{"active_power_w": 1e400}}}}',
        "expected a finite number",
    ),
    "100,000-deep nesting": (
        '{"fields": ' + "[" * 100_000 + "]" * 100_000 + "}",
        "more than 65,536",  # refused before it is parsed
    ),
    "30,000-deep nesting": ('{"fields": ' + "[" * 30_000 + "]" * 30_000 + "}", "nested too deep"),
    "1 MB payload": (f'{HEAD}"seq": 0, "pad": "{"x" * 1_000_000}", {FIELDS}}}', "more than 65,536"),
    "Infinity": (f'{HEAD}"seq": 0, "fields": {{"active_power_w": Infinity}}}}', "Infinity is not"),
    "not UTF-8": ('{"ts": "\udcff"}', "not JSON"),
    "integer field too large": (
        '{"ts": 1700000001000, "kind": "inverter", "seq": 0, "fields": {"state": 9223372036854775808}}',
        "expected an integer within 64 bits",
    ),
    "unknown fields only": (f'{HEAD}"seq": 0, "fields": {{"made_up": 1}}}}', "none the glossary"),
    "role not a slug": (
        '{"ts": 1700000001000, "kind": "meter", "role": "Main Hall", "seq": 0, ' + FIELDS + "}",
        "role: expected a lower-case slug",
    ),
}


@pytest.mark.parametrize("name", list(POISON))
def test_a_poison_reading_is_refused_with_its_reason(name):
    text, reason = POISON[name]
    payload = text.encode("utf-8", "surrogateescape")
    with pytest.raises(PayloadError) as exc:
        decode_reading(payload)
    assert reason in str(exc.value)
    assert len(str(exc.value)) < 400  # the reason, not the payload echoed back


def test_unknown_fields_are_left_out_and_named_known_ones_kept():
    r = decode_reading(
        (
            HEAD + '"seq": 3, "fields": {"active_power_w": 1.5, "made_up_w": 2, "Bad Name": 3}}'
        ).encode()
    )
    assert r.fields == {"active_power_w": 1.5}
    assert r.dropped == ("made_up_w", "'Bad Name'")


@pytest.mark.parametrize(
    "name", ["30,000-deep nesting", "100,000-deep nesting", "5,000-digit integer", "1 MB payload"]
)
def test_status_and_presence_decoders_refuse_the_same(name):
    payload = POISON[name][0].encode()
    with pytest.raises(PayloadError):
        decode_status(payload)
    with pytest.raises(PayloadError):
        collector_status_line("foursave/v1/_collector/c1/status", payload)


def test_the_live_status_keeps_taking_after_any_message():
    live = LiveStatus()
    for text, _ in POISON.values():
        live.take("foursave/v1/demo/m1/status", text.encode("utf-8", "surrogateescape"))
    live.take("foursave/v1/demo/m1/status", json.dumps({"online": True, "ts": 1}).encode())
    assert live.device("demo", "m1")["online"] is True
    assert live.received + live.rejected == len(POISON) + 1  # each one filed or counted
    assert live.rejected >= 7  # what is no JSON object at all


def test_a_status_with_a_negative_poll_duration_keeps_the_rest():
    """Found by the MQTT fuzzer: a poll_ms of -5 was stored; a duration is never
    negative (the glossary's bounds), so it is left out and the status kept."""
    st = decode_status(b'{"online": true, "ts": 1700000001000, "poll_ms": -5, "errors": 2}')
    assert st == {"ts": 1700000001000, "online": True, "errors": 2}
    st = decode_status(b'{"online": true, "ts": 1700000001000, "poll_ms": 12.5}')
    assert st["poll_ms"] == 12.5
