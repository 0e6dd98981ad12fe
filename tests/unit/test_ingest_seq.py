"""The ingester's per-device ``seq`` state (collector/ingest.py) is written for the
devices a batch saw, not all of them each time, and what is written is all there is
after a restart."""

from __future__ import annotations

import json
import sqlite3

import pytest
import yaml

from foursave.collector.ingest import Ingester, Message
from foursave.core.clock import ManualClock
from foursave.core.config import Config
from foursave.core.influx import InfluxClient
from tests.helpers import YONGHUA_CONFIG

NOW_MS = 1_790_000_000_000


def make(tmp_path) -> Ingester:
    raw = yaml.safe_load(YONGHUA_CONFIG)
    raw["services"]["ingester"] = {"dead_letter_path": str(tmp_path / "dead.sqlite")}
    cfg = Config.model_validate(raw)
    return Ingester(cfg, InfluxClient("http://127.0.0.1:9", "unused"), ManualClock(NOW_MS / 1000))


@pytest.fixture
def ingester(tmp_path):
    ing = make(tmp_path)
    yield ing
    ing.dead.close()
    ing.influx.close()


def see(ing: Ingester, device: str, seq: int) -> None:
    body = {"ts": NOW_MS, "seq": seq, "kind": "meter", "fields": {"voltage_v": 230.0}}
    msg = Message(seq, 1, f"foursave/v1/s/{device}/reading", json.dumps(body).encode(), 0.0)
    lines, error = ing._to_lines(msg)
    assert error is None and lines


def rows_written(ing: Ingester) -> list[str]:
    written: list[str] = []
    ing.dead.db.set_trace_callback(written.append)
    ing._save_seq_state()
    ing.dead.db.set_trace_callback(None)
    return [s for s in written if s.startswith("INSERT INTO seq_state")]


def test_only_the_devices_a_batch_saw_are_written(ingester, tmp_path):
    for n in range(50):
        see(ingester, f"m{n}", 1)
    assert len(rows_written(ingester)) == 50
    see(ingester, "m7", 2)
    see(ingester, "m9", 5)  # 3 and 4 missing
    assert len(rows_written(ingester)) == 2
    assert rows_written(ingester) == []  # nothing seen since
    ingester.dead.close()
    again = make(tmp_path)  # a restart reads back every device, as last written
    try:
        state = again.seq.devices
        assert len(state) == 50
        assert (state["s/m7"].last_seq, state["s/m7"].received) == (2, 2)
        assert (state["s/m9"].last_seq, state["s/m9"].gaps) == (5, 3)
        assert (state["s/m0"].last_seq, state["s/m0"].received) == (1, 1)
    finally:
        again.dead.close()
        again.influx.close()


def test_a_failed_save_keeps_the_devices_to_write(ingester):
    see(ingester, "m1", 1)
    ingester.dead.db.close()
    with pytest.raises(sqlite3.Error):
        ingester._save_seq_state()
    assert ingester.seq.changed == {"s/m1"}  # written at the next try (the batch is retried)
