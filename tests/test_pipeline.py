"""A reading travels from a simulated device over Modbus and MQTT into InfluxDB.

Real mosquitto, real influxd, the simulators over real Modbus TCP; nothing mocked.

The tests marked :data:`BOTH_INFLUXES` run twice: against an influxd that checks no
credentials, and against one with authentication on (``-m influx_auth``), where the
ingester logs in as the writer user with its password from a secrets file, as in
production; the results must be the same.  The slow fault tests run once.
"""

from __future__ import annotations

import json
import time
from datetime import date

import pytest

from foursave.core.influx import InfluxClient
from foursave.core.reading import SEQ_FIELD
from foursave.core.secrets import env_name, read_file
from foursave.localstack import free_port, influxd
from foursave.simulators.server import SimulatorThread
from tests.helpers import (
    CollectorThread,
    IngesterThread,
    demo_raw,
    make_config,
    mqtt_anyone,
    wait_for,
)

pytestmark = pytest.mark.integration

MEASUREMENTS = ("inverter", "meter", "weather", "water")

# open: no credentials checked; auth: users and passwords (tests/helpers.py AuthInflux)
BOTH_INFLUXES = pytest.mark.parametrize(
    "influx_users", ["open", pytest.param("auth", marks=pytest.mark.influx_auth)], indirect=True
)


@pytest.fixture
def influx_users(request) -> str:
    return getattr(request, "param", "open")


@pytest.fixture
def influx_url(influx_users, request, monkeypatch) -> str:
    """This module's InfluxDB: the session's open one, or the one with authentication
    on, whose passwords every service of the test reads from its secrets file."""
    if influx_users == "open":
        return f"http://127.0.0.1:{request.getfixturevalue('influx_server').port}"
    auth = request.getfixturevalue("influx_auth")
    # in the environment, which comes before any secrets file: the broker's file keeps
    # the MQTT accounts' passwords
    for user, password in read_file(auth.secrets_file)["influxdb"].items():
        monkeypatch.setenv(env_name("influxdb", user), password)
    return auth.url


@pytest.fixture
def influx(influx_users, influx_url, database, request) -> InfluxClient:
    """The test's own client: with authentication the writer's (the database is made
    and granted first, as ``foursave influx-setup`` does)."""
    if influx_users == "open":
        client = InfluxClient(influx_url, database)
        client.create_database()
    else:
        auth = request.getfixturevalue("influx_auth")
        auth.grant(database)
        client = auth.client(database, "writer")
    yield client
    client.close()


def stored_counts(influx: InfluxClient) -> dict[str, int]:
    """Points per device: the largest per-field count (every reading has fields)."""
    out: dict[str, int] = {}
    for m in MEASUREMENTS:
        for row in influx.rows(f'SELECT count(*) FROM "{m}" GROUP BY "device"'):
            out[row["device"]] = max(v or 0 for k, v in row.items() if k.startswith("count_"))
    return out


def run_until(collector: CollectorThread, n: int, timeout_s: float = 30) -> None:
    wait_for(
        lambda: min(collector.published_counts().values(), default=0) >= n,
        timeout_s,
        f"{n} readings from every device",
    )


def drain(influx: InfluxClient, published: dict[str, int], timeout_s: float = 30) -> None:
    seen: list[dict[str, int]] = [{}]

    def done() -> bool:
        seen[0] = stored_counts(influx)
        return seen[0] == published

    try:
        wait_for(done, timeout_s, f"InfluxDB to hold {published}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; stored {seen[0]}") from None


@BOTH_INFLUXES
def test_every_reading_arrives_with_the_simulators_values(
    tmp_path, broker, influx_url, database, influx
):
    cfg = make_config(tmp_path, broker, influx_url, database)
    with SimulatorThread(cfg) as sim, IngesterThread(cfg) as ing:
        collector = CollectorThread(cfg).start()
        run_until(collector, 10)
        collector.stop()
        published = collector.published_counts()
        assert set(published) == {d.id for d in cfg.devices}
        drain(influx, published)
        stats = ing.ingester.seq.devices
    assert all(s.gaps == 0 and s.duplicates == 0 for s in stats.values()), stats
    # the collector's own health (spool depth and drops) is stored beside the readings
    cs = influx.rows("SELECT last(spool_depth), last(spool_dropped) FROM collector_status")
    assert cs and cs[0]["last"] is not None
    assert {k.split("/")[1]: s.received for k, s in stats.items()} == published

    # stored values equal what the simulator served, within register resolution
    for d in cfg.devices:
        sd = sim.devices[d.id]
        served = list(sd.served)
        rows = influx.rows(f'SELECT * FROM "{d.kind}" WHERE "device" = \'{d.id}\'')
        assert len(rows) == published[d.id]
        for row in rows:
            ts = row["time"] / 1000
            fields = {
                k: v
                for k, v in row.items()
                if k not in ("time", "site", "device", "role", SEQ_FIELD) and v is not None
            }
            # the simulator tick served during the poll (ts is taken when the poll starts)
            candidates = [vals for t, vals in served if ts - 3.0 <= t <= ts + 3.0]
            assert candidates, f"{d.id}: no simulator tick near {ts}"

            def matches(truth, fields=fields, sd=sd):
                for name, value in fields.items():
                    if name not in truth:
                        return False
                    res = sd.image.resolution(name, truth[name])
                    if abs(value - truth[name]) > res * 1.0001 + 1e-9:
                        return False
                return True

            assert any(matches(c) for c in candidates), (d.id, fields, candidates[-1])
            # no field went missing on the way (an acc32 counter at 0 is "not implemented")
            missing = set(candidates[-1]) - set(fields)
            assert missing <= {"export_energy_wh"}, (d.id, missing)
        assert rows[-1]["site"] == "demo"
        if d.kind == "meter":
            assert rows[-1]["role"] == d.role


@BOTH_INFLUXES
def test_exception_02_leaves_that_field_absent_and_stores_the_others(
    tmp_path, broker, influx_url, database, influx
):
    cfg = make_config(tmp_path, broker, influx_url, database)
    with SimulatorThread(cfg) as sim, IngesterThread(cfg):
        # the SDM630 refuses its "total export kWh" register (0x004A) with exception 02
        sim.call(lambda: sim.devices["meter-hvac"].faults.exceptions.update({0x4A: 2}))
        collector = CollectorThread(cfg).start()
        run_until(collector, 5)
        collector.stop()
        drain(influx, collector.published_counts())
        status = collector.collector.pollers[3].health
    rows = influx.rows("SELECT * FROM meter WHERE \"device\" = 'meter-hvac'")
    assert rows and all(r.get("export_energy_wh") is None for r in rows)
    assert all(r["import_energy_wh"] is not None and r["active_power_w"] is not None for r in rows)
    assert status.online and any("exception 02" in e for e in status.field_errors)
    # the other meter is untouched
    main = influx.rows("SELECT * FROM meter WHERE \"device\" = 'meter-main'")
    assert main and all(r["active_power_w"] is not None for r in main)
    # the device status reached InfluxDB too
    st = influx.rows(
        "SELECT last(online), last(errors) FROM device_status WHERE \"device\" = 'meter-hvac'"
    )
    assert st and st[0]["last"] is True


@pytest.mark.slow
def test_broker_down_for_10_s_loses_and_duplicates_nothing(
    tmp_path, broker, influx_url, database, influx
):
    cfg = make_config(tmp_path, broker, influx_url, database)
    with SimulatorThread(cfg), IngesterThread(cfg) as ing:
        collector = CollectorThread(cfg).start()
        run_until(collector, 5)
        broker.stop()
        down_at = time.monotonic()
        wait_for(lambda: time.monotonic() - down_at >= 10, 15, "10 s without a broker")
        spooled = collector.collector.spool.depth
        assert spooled > 0, "readings taken while the broker was away must wait in the spool"
        broker.start()
        wait_for(
            lambda: collector.collector.publisher.connected, 30, "collector back on the broker"
        )
        wait_for(lambda: collector.collector.spool.depth < 30, 30, "the spool replayed")
        before = collector.published_counts()
        wait_for(
            lambda: min(collector.published_counts()[k] - before[k] for k in before) >= 5,
            30,
            "readings after the broker came back",
        )
        collector.stop()
        published = collector.published_counts()
        drain(influx, published, timeout_s=60)
    assert collector.collector.spool.depth == 0
    assert sum(published.values()) > 6 * 50  # 10 s at 5 readings/s per device were in the outage
    stats = ing.ingester.seq.devices
    assert all(s.gaps == 0 for s in stats.values()), stats
    # a redelivered message (PUBACK lost in the outage) is counted, and InfluxDB keeps
    # one point per device and time: stored == published proves no duplicate points


@pytest.mark.slow
def test_influxd_down_and_restarted_loses_nothing(tmp_path, broker, database):
    own = influxd(free_port(), tmp_path / "influxd-own")
    own.start(timeout_s=60)
    try:
        url = f"http://127.0.0.1:{own.port}"
        influx = InfluxClient(url, database)
        cfg = make_config(tmp_path, broker, url, database)
        with SimulatorThread(cfg), IngesterThread(cfg) as ing:
            collector = CollectorThread(cfg).start()
            run_until(collector, 5)
            own.stop()
            down_at = time.monotonic()
            wait_for(lambda: time.monotonic() - down_at >= 5, 10, "5 s without InfluxDB")
            assert ing.ingester.write_retries > 0
            own.start(timeout_s=60)
            before = collector.published_counts()
            wait_for(
                lambda: min(collector.published_counts()[k] - before[k] for k in before) >= 5,
                30,
                "readings after InfluxDB came back",
            )
            collector.stop()
            drain(influx, collector.published_counts(), timeout_s=60)
            assert all(s.gaps == 0 for s in ing.ingester.seq.devices.values())
        influx.close()
    finally:
        own.stop()


@BOTH_INFLUXES
def test_bad_payloads_go_to_dead_letters_and_ingestion_continues(
    tmp_path, broker, influx_url, database, influx
):
    cfg = make_config(tmp_path, broker, influx_url, database, devices=[])
    # a field InfluxDB already holds as a string: a number for it makes /write answer 400
    influx.write(['meter,site=demo,device=m1,role=main voltage_v="x" 1700000000000'])
    client = mqtt_anyone(broker, "test-publisher")
    try:
        with IngesterThread(cfg) as ing:

            def pub(topic, payload):
                client.publish(topic, payload, qos=1).wait_for_publish(5)

            good = {
                "ts": 1700000001000,
                "kind": "meter",
                "role": "main",
                "fields": {"active_power_w": 10.0},
            }
            pub("foursave/v1/demo/m1/reading", b"{not json")
            pub(
                "foursave/v1/demo/m1/reading",
                json.dumps({"ts": 5, "seq": 0, "kind": "meter", "fields": {}}),
            )
            pub("foursave/v1/Demo Site/m1/reading", json.dumps({**good, "seq": 0}))
            pub(
                "foursave/v1/demo/m1/reading",
                json.dumps({**good, "seq": 1, "fields": {"voltage_v": 230.0}}),
            )
            pub("foursave/v1/demo/m1/reading", json.dumps({**good, "seq": 2, "ts": 1700000002000}))
            wait_for(lambda: ing.ingester.dead.count() == 4, 20, "4 dead letters")
            wait_for(
                lambda: (
                    influx.rows("SELECT count(active_power_w) FROM meter")[0]["count"] == 1
                    if influx.rows("SELECT count(active_power_w) FROM meter")
                    else False
                ),
                20,
                "the good reading stored",
            )
            rows = ing.ingester.dead.rows()
        errors = [r[3] for r in rows]
        assert "not JSON" in errors[0]
        assert "ts:" in errors[1]
        assert "site 'Demo Site'" in errors[2]
        assert "HTTP 400" in errors[3] and "conflict" in errors[3]
        assert rows[3][2].startswith("meter,")  # the offending line is kept with the error
    finally:
        client.loop_stop()
        client.disconnect()


@BOTH_INFLUXES
def test_readings_wait_in_the_spool_until_an_ingester_subscribes(
    tmp_path, broker, influx_url, database, influx
):
    """MQTT 5 PUBACK reason 0x10 (no matching subscribers): the broker would drop
    them, so the collector keeps them and tries again."""
    cfg = make_config(tmp_path, broker, influx_url, database)
    with SimulatorThread(cfg):
        collector = CollectorThread(cfg).start()
        run_until(collector, 5)
        pub = collector.collector.publisher
        wait_for(lambda: pub.refused > 0, 20, "PUBACKs with 'no matching subscribers'")
        # the spool commits on the collector's loop: the last readings land a moment
        # after the pollers count them
        wait_for(lambda: collector.collector.spool.depth >= 6 * 5, 10, "the readings spooled")
        with IngesterThread(cfg):
            before = collector.published_counts()
            wait_for(
                lambda: min(collector.published_counts()[k] - before[k] for k in before) >= 3,
                30,
                "more readings",
            )
            collector.stop()
            drain(influx, collector.published_counts(), timeout_s=60)


@BOTH_INFLUXES
def test_fast_simulated_time_through_the_whole_pipeline(
    tmp_path, broker, influx_url, database, influx
):
    """Simulators at 600x from a chosen date; the collector stamps readings in the same
    simulated time (shared anchor), so stored counters and timestamps agree."""
    from datetime import UTC, datetime

    anchor = datetime.now(UTC).isoformat()
    cfg = make_config(
        tmp_path,
        broker,
        influx_url,
        database,
        devices=[d for d in demo_raw()["devices"] if d["id"] == "inv-01"],
        extra_services={
            "simulator": {"speed": 600, "start": "2025-07-01T10:00:00+08:00", "anchor": anchor},
            "collector": {"clock": "simulated"},
        },
        commissioned=date(2025, 6, 28),
    )
    with SimulatorThread(cfg), IngesterThread(cfg):
        collector = CollectorThread(cfg).start()
        run_until(collector, 8)
        collector.stop()
        drain(influx, collector.published_counts())
    rows = influx.rows("SELECT ac_power_w, ac_energy_wh FROM inverter ORDER BY time")
    t0 = datetime(2025, 7, 1, 2, 0, tzinfo=UTC).timestamp() * 1000
    assert all(t0 <= r["time"] < t0 + 3_600_000 for r in rows)  # within the first simulated hour
    span_s = (rows[-1]["time"] - rows[0]["time"]) / 1000
    assert span_s > 8 * 0.2 * 600 * 0.5  # 8 polls 0.2 s apart at 600x: minutes, not seconds
    energy = rows[-1]["ac_energy_wh"] - rows[0]["ac_energy_wh"]
    mean_power = sum(r["ac_power_w"] for r in rows) / len(rows)
    assert energy == pytest.approx(mean_power * span_s / 3600, rel=0.25)


def _poison_payloads() -> dict[str, bytes]:
    """Each of these once stopped ingestion for good (issue 12), named after it."""
    head = '{"ts": 1700000001000, "kind": "meter", "role": "main", '
    fields = '"fields": {"active_power_w": 10.0}'
    return {
        "seq 2**64": f'{head}"seq": {2**64}, {fields}}}'.encode(),
        "400-digit number": f'{head}"seq": 0, "fields": {{"active_power_w": {"9" * 400}}}}}'.encode(),
        "5,000-digit integer": f'{head}"seq": {"7" * 5000}, {fields}}}'.encode(),
        "100,000-deep nesting": b'{"fields": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        "1 MB payload": f'{head}"seq": 0, "pad": "{"x" * 1_000_000}", {fields}}}'.encode(),
        "unknown fields only": (
            f'{head}"seq": 0, "fields": {json.dumps({f"f{i}": 1.0 for i in range(50)})}}}'
        ).encode(),
        "a date in 2090": (
            '{"ts": 3786912000000, "kind": "meter", "role": "main", "seq": 0, ' + fields + "}"
        ).encode(),
    }


@BOTH_INFLUXES
def test_poison_payloads_are_dead_lettered_and_the_next_good_reading_is_stored(
    tmp_path, broker, influx_url, database, influx
):
    cfg = make_config(tmp_path, broker, influx_url, database, devices=[])
    client = mqtt_anyone(broker, "test-poisoner")
    good = {"ts": 1700000001000, "kind": "meter", "role": "main", "seq": 0}
    good["fields"] = {"active_power_w": 10.0}
    try:
        with IngesterThread(cfg) as ing:

            def pub(topic, payload):
                client.publish(topic, payload, qos=1).wait_for_publish(5)

            poison = _poison_payloads()
            for payload in poison.values():
                pub("foursave/v1/demo/m1/reading", payload)
            pub("foursave/v1/demo/M-1!/reading", json.dumps(good))  # a tag that is no slug
            pub("foursave/v1/_collector/c1/status", b"[" * 100_000)
            pub(
                "foursave/v1/_collector/c1/status",
                b'{"state": "online", "ts": 1' + b"0" * 5000 + b"}",
            )
            # a good reading with one unknown field: stored without it
            mixed = {**good, "seq": 1, "fields": {"active_power_w": 11.0, "made_up_w": 1.0}}
            pub("foursave/v1/demo/m1/reading", json.dumps(mixed))
            pub("foursave/v1/demo/m1/reading", json.dumps({**good, "seq": 2, "ts": 1700000002000}))
            n_bad = len(poison) + 3
            wait_for(lambda: ing.ingester.dead.count() == n_bad, 30, f"{n_bad} dead letters")
            wait_for(
                lambda: (
                    (influx.rows("SELECT count(active_power_w) FROM meter") or [{}])[0].get("count")
                    == 2
                ),
                30,
                "both good readings stored",
            )
            assert ing.thread.is_alive()
            assert ing.ingester.unknown_fields == 1
            errors = [r[3] for r in ing.ingester.dead.rows()]
    finally:
        client.loop_stop()
        client.disconnect()
    assert not any(e.startswith("unexpected") for e in errors), errors  # each one foreseen
    fields = {r["fieldKey"] for r in influx.rows("SHOW FIELD KEYS FROM meter")}
    # nothing outside the glossary was stored, beside the reading's own seq
    assert fields == {"active_power_w", SEQ_FIELD}
    values = [r["active_power_w"] for r in influx.rows("SELECT active_power_w FROM meter")]
    assert values == [11.0, 10.0]
