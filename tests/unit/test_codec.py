"""Readings, topics and line protocol: pure, no broker or database."""

from __future__ import annotations

import json
import re

import pytest

from foursave.core.reading import PayloadError, Reading, decode_reading, reading_line, to_line
from foursave.core.topics import TopicError, parse_device_topic, reading_topic


def test_reading_round_trip():
    r = Reading(
        1_790_000_000_000, 7, "meter", {"active_power_w": 1.5, "import_energy_wh": 10}, "main"
    )
    assert decode_reading(r.to_json()) == r
    assert json.loads(r.to_json())["role"] == "main"


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (b'{"ts": 1790000000000, "seq": 1, "kind": "meter"}', "missing key(s) ['fields']"),
        (
            b'{"ts": 1790000000, "seq": 1, "kind": "meter", "fields": {"a": 1}}',
            "ts: expected epoch milliseconds",
        ),
        (
            b'{"ts": 1790000000000, "seq": -1, "kind": "meter", "fields": {"a": 1}}',
            "seq: expected an integer from 0 to 2**63 - 1",
        ),
        (
            b'{"ts": 1790000000000, "seq": 1, "kind": "boiler", "fields": {"a": 1}}',
            "kind: expected one of",
        ),
        (
            b'{"ts": 1790000000000, "seq": 1, "kind": "meter", "fields": {}}',
            "fields: none the glossary knows for a meter (0 unknown)",
        ),
        (
            b'{"ts": 1790000000000, "seq": 1, "kind": "meter", "fields": {"active_power_w": "1"}}',
            "fields.active_power_w: expected a finite number",
        ),
        (
            b'{"ts": 1790000000000, "seq": 1, "kind": "meter", "fields": {"active_power_w": NaN}}',
            "NaN is not a number JSON allows",
        ),
        (
            b'{"ts": 1790000000000, "seq": 1, "kind": "meter", "fields": {"A b": 1}}',
            "fields: none the glossary knows for a meter (1 unknown)",
        ),
        (
            b'{"ts": 1790000000000, "seq": 1, "kind": "meter", "role": "Main", "fields": {"a": 1}}',
            "role:",
        ),
    ],
)
def test_bad_payloads_are_named(payload, error):
    with pytest.raises(PayloadError, match=None) as exc:
        decode_reading(payload)
    assert error in str(exc.value)


def test_line_protocol_types_follow_the_glossary():
    r = Reading(1_790_000_000_123, 1, "inverter", {"ac_power_w": 4200, "state": 4, "events": 0})
    line = reading_line("yonghua", "inv-01", r)
    # power is a float even when the device sent an integer; St and Evt1 are integers
    assert (
        line
        == "inverter,device=inv-01,site=yonghua ac_power_w=4200.0,state=4i,events=0i 1790000000123"
    )
    with pytest.raises(PayloadError, match=r"fields\.state: expected an integer"):
        reading_line("s", "d", Reading(1_790_000_000_000, 1, "inverter", {"state": 4.5}))


def test_line_protocol_escapes_tags():
    assert to_line("m", {"site": "a b,c=d"}, {"x": True}, 1) == r"m,site=a\ b\,c\=d x=true 1"


def test_topics():
    t = parse_device_topic(reading_topic("yonghua", "inv-01"))
    assert (t.site, t.device, t.kind) == ("yonghua", "inv-01", "reading")
    for bad in (
        "foursave/v1/yonghua/inv-01",
        "foursave/v2/a/b/reading",
        "foursave/v1/A/b/reading",
        "foursave/v1/a/b/alarm",
    ):
        with pytest.raises(TopicError):
            parse_device_topic(bad)


# ------------------------------------------------------------------ parts and info


def _reading(**extra) -> bytes:
    body = {"ts": 1_790_000_000_000, "seq": 1, "kind": "inverter", "fields": {"ac_power_w": 5.0}}
    return json.dumps({**body, **extra}).encode()


def test_parts_become_points_of_their_own_measurement_with_their_tags():
    from foursave.core.reading import reading_lines

    r = decode_reading(
        _reading(
            parts=[
                {
                    "measurement": "inverter_string",
                    "tags": {"string": "1"},
                    "fields": {"dc_power_w": 1960.0},
                },
                {"measurement": "battery", "fields": {"soc_pct": 100, "nonsense": 1}},
            ]
        )
    )
    assert r.dropped == ("parts[1].nonsense",)
    assert reading_lines("s", "inv", r) == [
        "inverter,device=inv,site=s ac_power_w=5.0 1790000000000",
        "inverter_string,device=inv,site=s,string=1 dc_power_w=1960.0 1790000000000",
        "battery,device=inv,site=s soc_pct=100.0 1790000000000",
    ]


@pytest.mark.parametrize(
    ("parts", "message"),
    [
        (
            [{"measurement": "meter", "fields": {"x": 1}}],
            "parts[0].measurement: inverter readings carry ['battery', 'inverter_string']",
        ),
        (
            [{"measurement": "inverter_string", "fields": {"dc_power_w": 1}}],
            "parts[0].tags: expected exactly ['string']",
        ),
        (
            [{"measurement": "inverter_string", "tags": {"string": "A 1"}, "fields": {}}],
            "parts[0].tags.string: expected a lower-case slug",
        ),
        (
            [{"measurement": "battery", "fields": {"soc_pct": "full"}}],
            "parts[0].soc_pct: expected a finite number",
        ),
        ("strings", "parts: expected a list"),
        ([{"measurement": "battery", "fields": {"soc_pct": 1}}] * 2, "parts[1]: a second battery"),
    ],
)
def test_bad_parts_are_named(parts, message):
    with pytest.raises(PayloadError, match=re.escape(message)):
        decode_reading(_reading(parts=parts))


def test_a_part_value_out_of_bounds_is_left_out_and_named():
    r = decode_reading(
        _reading(parts=[{"measurement": "battery", "fields": {"soc_pct": 140, "soh_pct": 90}}])
    )
    assert r.out_of_bounds == ("parts[0].soc_pct",)
    assert r.parts[0].fields == {"soh_pct": 90}


def test_device_info_keeps_known_printable_text_and_positive_ratings():
    from foursave.core.reading import decode_info, to_line

    status = {
        "ts": 1_790_000_000_000,
        "online": True,
        "info": {
            "manufacturer": 'SMA "Solar"',
            "serial": "bad\nline",
            "rated_power_w": 50000.0,
            "x": 1,
        },
    }
    info = decode_info(json.dumps(status).encode())
    assert info == {"manufacturer": 'SMA "Solar"', "rated_power_w": 50000.0}
    assert to_line("device_info", {"device": "i"}, info, 1) == (
        'device_info,device=i manufacturer="SMA \\"Solar\\"",rated_power_w=50000.0 1'
    )
    assert decode_info(json.dumps({"ts": 1, "online": True}).encode()) is None
