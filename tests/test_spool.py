"""The disk spool: bounded (oldest dropped, counted), ordered, survives restarts."""

from __future__ import annotations

import pytest

from foursave.collector.spool import Spool
from foursave.simulators.server import SimulatorThread
from tests.helpers import CollectorThread, IngesterThread, make_config, wait_for


def rows(n, start=0):
    return [(f"t/{i}", f"p{i}".encode()) for i in range(start, start + n)]


def test_bound_drops_the_oldest_and_counts_them(tmp_path):
    sp = Spool(tmp_path / "s.sqlite", max_rows=10)
    assert sp.append(rows(8), {"d": 7}) == 0
    assert sp.append(rows(7, 8), {"d": 14}) == 5
    assert sp.depth == 10 and sp.dropped == 5
    assert [p for _, _, p in sp.after(0, 100)] == [f"p{i}".encode() for i in range(5, 15)]


def test_rows_handed_to_the_broker_are_not_dropped(tmp_path):
    sp = Spool(tmp_path / "s.sqlite", max_rows=4)
    sp.append(rows(4), {})
    first_two = [sid for sid, _, _ in sp.after(0, 2)]
    sp.append(rows(2, 4), {}, protect_upto=first_two[-1])
    assert [p for _, _, p in sp.after(0, 100)] == [b"p0", b"p1", b"p4", b"p5"]


def test_spool_and_sequence_survive_a_restart(tmp_path):
    sp = Spool(tmp_path / "s.sqlite", max_rows=3)
    sp.append(rows(5), {"inv-01": 4})
    sp.delete([sp.after(0, 1)[0][0]])
    sp.close()
    again = Spool(tmp_path / "s.sqlite", max_rows=3)
    assert again.depth == 2 and again.dropped == 2
    assert again.last_seqs() == {"inv-01": 4}
    assert [p for _, _, p in again.after(0, 10)] == [b"p3", b"p4"]


@pytest.mark.integration
def test_readings_spooled_before_a_collector_restart_arrive_in_order(
    tmp_path, broker, influx_url, database, influx
):
    devices = [d for d in make_config(tmp_path, 1, influx_url, database).model_dump()["devices"]][
        :1
    ]
    cfg = make_config(
        tmp_path,
        broker.port,
        influx_url,
        database,
        devices=[{k: v for k, v in devices[0].items() if v is not None}],
    )
    broker.stop()  # the collector starts while the broker is away
    with SimulatorThread(cfg):
        first = CollectorThread(cfg).start()
        wait_for(lambda: first.published_counts()["inv-01"] >= 8, 30, "8 spooled readings")
        first.stop()
        spooled = first.collector.spool.depth
        taken_first = first.published_counts()["inv-01"]
        assert spooled == taken_first  # nothing reached a broker
        broker.start()
        with IngesterThread(cfg) as ing:
            second = CollectorThread(cfg).start()
            wait_for(
                lambda: second.published_counts()["inv-01"] >= taken_first + 5, 30, "more readings"
            )
            second.stop()
            total = second.published_counts()["inv-01"]  # seq continued across the restart
            wait_for(
                lambda: (
                    (influx.rows("SELECT count(ac_power_w) FROM inverter") or [{"count": 0}])[0][
                        "count"
                    ]
                    == total
                ),
                30,
                f"{total} stored",
            )
            stats = ing.ingester.seq.devices["demo/inv-01"]
    assert total > taken_first
    assert stats.gaps == 0 and stats.duplicates == 0 and stats.received == total
