"""End-to-end acknowledged delivery: a reading leaves the collector's spool only once an
ingester stored it, so a broker that crashes and comes back from its last snapshot loses
nothing (collector/ack.py, collector/publisher.py).  Real mosquitto, killed with
SIGKILL; real influxd; real simulators over Modbus TCP.  The broker killed repeatedly
with InfluxDB stalled is tests/chaos (broker-kill)."""

from __future__ import annotations

import signal

import pytest

from foursave.core.config import Config
from foursave.core.influx import InfluxClient
from foursave.simulators.server import SimulatorThread
from tests.helpers import (
    CollectorThread,
    IngesterThread,
    demo_raw,
    make_config,
    wait_for,
)

pytestmark = pytest.mark.integration

# what each kind always reports, day or night
ALWAYS = {"inverter": "ac_energy_wh", "meter": "import_energy_wh"}


def two_devices() -> list[dict]:
    raw = demo_raw()["devices"]
    return [next(d for d in raw if d["kind"] == kind) for kind in ALWAYS]


def stored(influx: InfluxClient, cfg: Config) -> dict[str, int]:
    out = {}
    for d in cfg.devices:
        rows = influx.rows(
            f'SELECT count("{ALWAYS[d.kind]}") AS n FROM "{d.kind}" WHERE "device" = \'{d.id}\''
        )
        out[d.id] = rows[0]["n"] if rows else 0
    return out


def test_readings_the_broker_forgot_in_a_crash_are_published_again(
    tmp_path, broker, influx_url, database, influx
):
    """The broker took readings (PUBACK) for an ingester that is away, then crashed:
    restarted from its snapshot it has the ingester's session but not those readings.
    A PUBACK used to end a reading's life in the spool, so they were lost; now the
    collector publishes them again after the reconnect and all are stored once."""
    cfg = make_config(
        tmp_path,
        broker,
        influx_url,
        database,
        devices=two_devices(),
        extra_services={"collector": {"ack_timeout_s": 1.0}},
    )
    with SimulatorThread(cfg):
        first = IngesterThread(cfg).start()
        broker.stop()  # SIGTERM: mosquitto saves its snapshot, the ingester's session in it
        broker.start()
        wait_for(first.ingester.connected.is_set, 30, "ingester back")
        first.stop()  # away: the broker queues for its session, in memory
        col = CollectorThread(cfg).start()
        try:
            pub = col.collector.publisher
            wait_for(lambda: pub.acked >= 30, 30, "30 readings taken by the broker")
            broker.stop(signal.SIGKILL)
            broker.start()
            with IngesterThread(cfg) as ing:
                wait_for(lambda: pub.connected, 30, "collector back on the broker")
                wait_for(lambda: pub.confirmed >= 40, 60, "readings confirmed again")
                col.stop()
                taken = col.published_counts()
                wait_for(lambda: stored(influx, cfg) == taken, 60, f"all of {taken} stored")
                gaps = [s.gaps for s in ing.ingester.seq.devices.values()]
        finally:
            col.stop()
    assert pub.republished > 0
    assert gaps == [0, 0]
    assert col.collector.spool.depth == 0


def test_nothing_leaves_the_spool_before_an_ingester_stored_it(
    tmp_path, broker, influx_url, database
):
    """With no ingester, the broker takes every reading (PUBACK) but the spool keeps
    them all; the collector's presence reports them as unconfirmed."""
    cfg = make_config(tmp_path, broker, influx_url, database, devices=two_devices()[:1])
    with SimulatorThread(cfg):
        # an ingester's session must exist, or the broker refuses with "no subscribers"
        IngesterThread(cfg).start().stop()
        with CollectorThread(cfg) as col:
            pub = col.collector.publisher
            wait_for(lambda: pub.acked >= 10, 30, "10 readings taken by the broker")
            assert pub.confirmed == 0
            assert col.collector.spool.depth >= pub.acked
            assert pub.unconfirmed >= 10
        spooled = col.collector.spool
    assert spooled.depth == sum(col.published_counts().values())


def test_two_ingesters_sharing_the_readings_each_confirm_what_they_stored(
    tmp_path, broker, influx_url, database, influx
):
    """Scale-out: two ingesters in one shared subscription group get part of the readings
    each; each confirms its part, and the collector's spool empties with nothing lost."""

    def config(n: int) -> Config:
        (tmp_path / f"i{n}").mkdir()
        return make_config(
            tmp_path / f"i{n}",
            broker,
            influx_url,
            database,
            devices=two_devices(),
            extra_services={
                "ingester": {
                    "id": f"ingester-{n}",
                    "client_id": f"ingest-{n}-{database}",
                    "shared_group": "ingest",
                }
            },
        )

    cfg1, cfg2 = config(1), config(2)
    with SimulatorThread(cfg1), IngesterThread(cfg1) as one, IngesterThread(cfg2) as two:
        with CollectorThread(cfg1) as col:
            wait_for(
                lambda: one.ingester.written >= 10 and two.ingester.written >= 10,
                60,
                "both ingesters writing",
            )
        taken = col.published_counts()
        wait_for(lambda: stored(influx, cfg1) == taken, 60, f"all of {taken} stored")
        ones = sum(s.received for s in one.ingester.seq.devices.values())
        twos = sum(s.received for s in two.ingester.seq.devices.values())
        confirmations = (one.ingester.confirmations, two.ingester.confirmations)
    assert ones + twos == sum(taken.values())  # each reading went to one of them
    assert min(confirmations) > 0
    assert col.collector.spool.depth == 0  # every reading confirmed by the one that stored it
    assert col.collector.publisher.confirmed == sum(taken.values())
