"""The disk spool: bounded (oldest dropped, counted), ordered, survives restarts."""

from __future__ import annotations

import sqlite3

import pytest

from foursave.collector.spool import Spool, Spooled
from foursave.simulators.server import SimulatorThread
from tests.helpers import CollectorThread, IngesterThread, make_config, wait_for


def rows(n, start=0, device="d"):
    return [Spooled(f"t/{i}", f"p{i}".encode(), device, i) for i in range(start, start + n)]


def payloads(sp):
    return [r.payload for r in sp.after(0, 100)]


def test_bound_drops_the_oldest_and_counts_them(tmp_path):
    sp = Spool(tmp_path / "s.sqlite", max_rows=10)
    assert sp.append(rows(8), {"d": 7}) == 0
    assert sp.append(rows(7, 8), {"d": 14}) == 5
    assert sp.depth == 10 and sp.dropped == 5 and sp.released == 0
    assert payloads(sp) == [f"p{i}".encode() for i in range(5, 15)]


def test_rows_the_broker_took_are_released_not_dropped(tmp_path):
    """Past the bound the oldest go first; those the broker accepted are still in its
    hands (counted as released), the others are lost (dropped)."""
    sp = Spool(tmp_path / "s.sqlite", max_rows=4)
    sp.append(rows(4), {})
    sp.accept([r.id for r in sp.after(0, 2)])
    assert sp.append(rows(3, 4), {}) == 1
    assert (sp.released, sp.dropped, sp.depth) == (2, 1, 4)
    assert payloads(sp) == [b"p3", b"p4", b"p5", b"p6"]


def test_a_confirmation_deletes_what_it_names_and_nothing_else(tmp_path):
    sp = Spool(tmp_path / "s.sqlite", max_rows=100)
    sp.append(rows(6, device="inv-01") + rows(6, device="inv-02"), {})
    gone = sp.confirm({"inv-01": [(0, 2), (4, 4)], "inv-02": [(5, 9)]})
    assert len(gone) == 5 and sp.depth == 7
    left = [(r.device, r.payload) for r in sp.after(0, 100)]
    assert left == [("inv-01", b"p3"), ("inv-01", b"p5")] + [
        ("inv-02", f"p{i}".encode()) for i in range(5)
    ]
    assert sp.confirm({"inv-01": [(0, 2)]}) == []  # confirmed twice: nothing more goes
    assert sp.depth == 7


def test_spool_and_sequence_survive_a_restart(tmp_path):
    sp = Spool(tmp_path / "s.sqlite", max_rows=3)
    sp.append(rows(5), {"inv-01": 4})
    sp.delete([sp.after(0, 1)[0].id])
    sp.close()
    again = Spool(tmp_path / "s.sqlite", max_rows=3)
    assert again.depth == 2 and again.dropped == 2
    assert again.last_seqs() == {"inv-01": 4}
    assert payloads(again) == [b"p3", b"p4"]


def test_a_spool_from_before_acknowledgements_opens_with_its_rows(tmp_path):
    """Rows spooled by the previous version keep their place; with no device they
    leave on the broker's PUBACK, as they did then."""
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE spool (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, "
        "payload BLOB NOT NULL);"
        "CREATE TABLE device_seq (device TEXT PRIMARY KEY, seq INTEGER NOT NULL);"
        "INSERT INTO spool (topic, payload) VALUES ('t/0', x'7030'), ('t/1', x'7031');"
        "INSERT INTO device_seq VALUES ('inv-01', 1);"
    )
    db.commit()
    db.close()
    sp = Spool(path, max_rows=10)
    assert sp.depth == 2 and sp.last_seqs() == {"inv-01": 1}
    assert [(r.device, r.payload) for r in sp.after(0, 10)] == [(None, b"p0"), (None, b"p1")]
    sp.append(rows(1, 2, device="inv-01"), {"inv-01": 2})
    assert [r.device for r in sp.after(0, 10)] == [None, None, "inv-01"]


@pytest.mark.integration
def test_readings_spooled_before_a_collector_restart_arrive_in_order(
    tmp_path, broker, influx_url, database, influx
):
    devices = [d for d in make_config(tmp_path, 1, influx_url, database).model_dump()["devices"]][
        :1
    ]
    cfg = make_config(
        tmp_path,
        broker,
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


def test_a_full_disk_keeps_readings_in_memory_bounded_and_loses_nothing_else(tmp_path):
    """The spool's SQLite refusing writes (SQLITE_FULL, provoked with max_page_count on
    a real database) must not end the forwarder: readings wait in memory up to a bound,
    the oldest beyond it are counted as dropped, and all is written once it can be."""
    import asyncio

    from foursave.collector.publisher import Publisher

    cfg = make_config(tmp_path, 1, "http://127.0.0.1:9", "unused", devices=[])

    async def main():
        sp = Spool(tmp_path / "full.sqlite", max_rows=1_000)
        pub = Publisher(cfg, sp)
        pub.max_pending = 50
        pages = sp.db.execute("PRAGMA page_count").fetchone()[0]
        sp.db.execute(f"PRAGMA max_page_count = {pages}")
        big = b"x" * 3000
        for i in range(80):
            pub.enqueue("foursave/v1/demo/inv-01/reading", big, "inv-01", i)
            pub.step()
        assert pub.spool_errors > 0 and sp.depth < 80
        assert len(pub._pending) <= 50
        sp.db.execute("PRAGMA max_page_count = 1073741823")  # the disk has room again
        pub.step()
        assert pub._pending == []
        kept = sp.depth
        assert kept + sp.dropped == 80  # every reading either spooled or counted
        assert sp.dropped == 80 - kept > 0
        assert sp.last_seqs() == {"inv-01": 79}
        seqs = sp.db.execute("SELECT seq FROM spool ORDER BY id").fetchall()
        assert [s for (s,) in seqs] == sorted(s for (s,) in seqs)  # in the order taken
        pub.client.loop_stop()
        sp.close()

    asyncio.run(main())
