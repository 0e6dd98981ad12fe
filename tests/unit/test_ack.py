"""The acknowledgement an ingester sends a collector (collector/ack.py): ranges, the size
budget, refusal of malformed ones; and the ingester's clock check on readings' dates."""

from __future__ import annotations

import json

import pytest
import yaml

from foursave.cli import _duration
from foursave.collector.ack import ack_key, decode_ack, encode_acks, ranges
from foursave.collector.ingest import Ingester, Message
from foursave.collector.spool import lasts_s
from foursave.core.clock import ManualClock
from foursave.core.config import Config
from foursave.core.influx import InfluxClient
from foursave.core.reading import MAX_PAYLOAD_BYTES, PayloadError
from tests.helpers import YONGHUA_CONFIG


def test_ranges_are_sorted_inclusive_runs():
    assert ranges([7, 1, 3, 2, 2, 9, 8]) == [(1, 3), (7, 9)]
    assert ranges([]) == []
    assert ranges([2**63 - 1]) == [(2**63 - 1, 2**63 - 1)]


def test_an_acknowledgement_round_trips():
    [payload] = encode_acks("ingester-1", 1_790_000_000_000, {"inv-01": [5, 3, 4], "m": [0]})
    assert json.loads(payload)["ingester"] == "ingester-1"
    assert decode_ack(payload) == {"inv-01": [(3, 5)], "m": [(0, 0)]}


def test_a_batch_with_broken_runs_is_split_within_the_payload_limit():
    """Every other seq of 20,000 on 30 devices: 300,000 ranges, no payload over half
    the limit every receiver applies, and together they name every seq once."""
    seqs = {f"dev-{i:02d}": range(0, 20_000, 2) for i in range(30)}
    payloads = encode_acks("ingester-1", 1_790_000_000_000, seqs)
    assert len(payloads) > 1
    assert max(len(p) for p in payloads) <= MAX_PAYLOAD_BYTES // 2
    seen: dict[str, list[int]] = {}
    for p in payloads:
        for device, rs in decode_ack(p).items():
            seen.setdefault(device, []).extend(s for lo, hi in rs for s in range(lo, hi + 1))
    assert seen == {d: list(r) for d, r in seqs.items()}


@pytest.mark.parametrize(
    "payload, reason",
    [
        (b"[]", "expected an object with 'seqs'"),
        (b'{"seqs": {"Inv 01": [[1, 2]]}}', "is not a slug"),
        (b'{"seqs": {"inv-01": [[3, 2]]}}', "is not [lo, hi]"),
        (b'{"seqs": {"inv-01": [[-1, 2]]}}', "is not [lo, hi]"),
        (b'{"seqs": {"inv-01": [[1, true]]}}', "is not [lo, hi]"),
        (b'{"seqs": {"inv-01": [[1, 9223372036854775808]]}}', "is not [lo, hi]"),
        (b'{"seqs": {"inv-01": {"1": 2}}}', "expected a list"),
        (b'{"seqs": ' + b"[" * 30_000 + b"]" * 30_000 + b"}", "nested too deep"),
    ],
)
def test_a_malformed_acknowledgement_is_refused_with_its_reason(payload, reason):
    with pytest.raises(PayloadError) as err:
        decode_ack(payload)
    assert reason in str(err.value)


def test_a_dead_lettered_reading_still_names_its_collector_and_seq():
    assert ack_key(b'{"collector": "c-1", "seq": 4, "fields": "nonsense"}') == ("c-1", 4)
    assert ack_key(b'{"collector": "C 1", "seq": 4}') is None
    assert ack_key(b'{"collector": "c-1", "seq": -1}') is None
    assert ack_key(b"\xff") is None


def test_how_long_the_spool_lasts_worked_by_hand():
    """1,000 devices every 5 s take 200 readings/s: 500,000 rows last 2,500 s."""
    assert lasts_s(500_000, [5.0] * 1000) == pytest.approx(2_500)
    assert lasts_s(500_000, []) is None
    assert _duration(2_500) == "41 min"
    assert _duration(500_000 / 1.2) == "4 d 19 h"


NOW_MS = 1_790_000_000_000


def reading(ts_ms: int) -> bytes:
    return json.dumps(
        {"ts": ts_ms, "seq": 1, "kind": "meter", "collector": "c-1", "fields": {"voltage_v": 1.0}}
    ).encode()


@pytest.fixture
def ingester(tmp_path):
    raw = yaml.safe_load(YONGHUA_CONFIG)
    raw["services"]["ingester"] = {"dead_letter_path": str(tmp_path / "dead.sqlite")}
    cfg = Config.model_validate(raw)
    ing = Ingester(cfg, InfluxClient("http://127.0.0.1:9", "unused"), ManualClock(NOW_MS / 1000))
    yield ing
    ing.dead.close()
    ing.influx.close()


def test_a_reading_dated_beyond_the_tolerance_is_refused(ingester):
    tol_ms = int(ingester.cfg.future_tolerance_s * 1000)

    def decode(ts_ms: int, topic: str = "foursave/v1/s/m1/reading"):
        return ingester._to_lines(Message(1, 1, topic, reading(ts_ms), NOW_MS / 1000))

    lines, error = decode(NOW_MS + tol_ms)
    assert error is None and lines[0].endswith(str(NOW_MS + tol_ms))
    assert ingester._batch_acks == {"c-1": {"m1": [1]}}  # confirmed to the collector
    lines, error = decode(NOW_MS + tol_ms + 1)
    assert lines == [] and "more than the tolerance ahead of the ingester's clock" in error
    lines, error = decode(3_786_912_000_000)  # 2090-01-01
    assert lines == [] and "ahead" in error
    status = json.dumps({"online": True, "ts": 3_786_912_000_000}).encode()
    lines, error = ingester._to_lines(
        Message(2, 1, "foursave/v1/s/m1/status", status, NOW_MS / 1000)
    )
    assert lines == [] and error.startswith("status.ts")
