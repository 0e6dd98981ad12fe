"""The collector against the simulators over real Modbus: TCP, RTU on a serial line
(socat pty pair), RTU over TCP; read-only; a dead or slow device delays nobody."""

from __future__ import annotations

import asyncio
import logging
import subprocess
from datetime import date, datetime, timedelta, timezone

import pytest
from pymodbus.pdu.bit_message import WriteMultipleCoilsRequest, WriteSingleCoilRequest
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersRequest,
    ReadInputRegistersRequest,
    WriteMultipleRegistersRequest,
    WriteSingleRegisterRequest,
)
from sunspec2.modbus.client import SunSpecModbusClientDeviceTCP

from foursave.app import load_config
from foursave.collector.modbus import ModbusLink, WriteRefused, read_only_guard, reader_for
from foursave.core.clock import ManualClock
from foursave.localstack import free_port
from foursave.simulators.server import SimulatorThread
from tests.helpers import (
    ROOT,
    CollectorThread,
    IngesterThread,
    Watcher,
    demo_raw,
    make_config,
    wait_for,
)

pytestmark = pytest.mark.integration


def read_all(cfg, device_ids=None):
    async def main():
        out = {}
        for d in cfg.devices:
            if device_ids and d.id not in device_ids:
                continue
            async with ModbusLink(d) as link:
                out[d.id] = await reader_for(d).read(link)
        return out

    return asyncio.run(main())


@pytest.mark.parametrize(
    "pdu",
    [
        WriteSingleRegisterRequest(address=1, registers=[5]),
        WriteMultipleRegistersRequest(address=1, registers=[5, 6]),
        WriteSingleCoilRequest(address=1, bits=[True]),
        WriteMultipleCoilsRequest(address=1, bits=[True] * 8),
    ],
    ids=lambda p: f"fc{p.function_code}",
)
def test_read_only_guard_refuses_every_write_function(pdu):
    with pytest.raises(WriteRefused, match=f"function code {pdu.function_code} is not a read"):
        read_only_guard(True, pdu)


@pytest.mark.parametrize(
    "pdu",
    [
        ReadHoldingRegistersRequest(address=0, count=2),
        ReadInputRegistersRequest(address=0, count=2),
    ],
)
def test_read_only_guard_lets_reads_through(pdu):
    assert read_only_guard(True, pdu) is pdu


def test_collector_link_cannot_send_a_write(tmp_path):
    cfg = make_config(tmp_path, 1, "http://127.0.0.1:1", "x", devices=[demo_raw()["devices"][0]])
    d = cfg.devices[0]
    with SimulatorThread(cfg) as sim:

        async def attempt():
            async with ModbusLink(d) as link:
                await link.client.connect()
                with pytest.raises(WriteRefused):
                    await link.client.write_register(40070, 1, device_id=1)

        before = sim.devices[d.id].requests
        asyncio.run(attempt())
        assert sim.devices[d.id].requests == before  # nothing reached the device
        assert sim.devices[d.id].writes_refused == 0


# SunSpec St of a healthy inverter at any hour these tests happen to run: SLEEPING at
# night, STARTING around sunrise and sunset, MPPT or THROTTLED by day (never FAULT)
HEALTHY_STATES = (2, 3, 4, 5)


def test_sunspec_discovery_at_every_base_address(tmp_path):
    raw = demo_raw()["devices"][0]
    devices = [dict(raw, id=f"inv-{b}", sunspec_base=b) for b in (40000, 0, 50000)]
    cfg = make_config(tmp_path, 1, "http://127.0.0.1:1", "x", devices=devices)
    # the collector does not know where the map is: discovery must find it
    plain = cfg.model_copy(
        update={"devices": tuple(d.model_copy(update={"sunspec_base": None}) for d in cfg.devices)}
    )
    with SimulatorThread(cfg):
        results = read_all(plain)
    for d in cfg.devices:
        assert results[d.id].fields["state"] in HEALTHY_STATES, d.id
        assert "ac_energy_wh" in results[d.id].fields


def test_pysunspec2_client_reads_what_the_collector_stored(
    tmp_path, broker, influx_url, database, influx
):
    """The SunSpec Alliance's own client scans the simulated inverter and meter; on a
    frozen clock it reads exactly the values the pipeline stored in InfluxDB."""
    devs = [d for d in demo_raw()["devices"] if d["id"] in ("inv-01", "meter-main")]
    cfg = make_config(
        tmp_path, broker, influx_url, database, devices=devs, commissioned=date(2026, 9, 19)
    )
    noon = datetime(2026, 9, 22, 12, 0, tzinfo=timezone(timedelta(hours=8)))  # a Tuesday
    with SimulatorThread(cfg, clock=ManualClock(noon.timestamp())), IngesterThread(cfg):
        collector = CollectorThread(cfg).start()
        wait_for(lambda: min(collector.published_counts().values()) >= 3, 30, "3 readings each")
        collector.stop()
        total = sum(collector.published_counts().values())

        def stored() -> int:
            rows = influx.rows('SELECT count(*) FROM "inverter"') + influx.rows(
                'SELECT count(*) FROM "meter"'
            )
            return sum(max(v or 0 for k, v in r.items() if k.startswith("count_")) for r in rows)

        wait_for(lambda: stored() == total, 30, f"{total} readings stored")
        clients = {}
        for dev_id in ("inv-01", "meter-main"):
            c = SunSpecModbusClientDeviceTCP(
                slave_id=1, ipaddr="127.0.0.1", ipport=cfg.device(dev_id).port, timeout=5
            )
            c.scan()
            clients[dev_id] = c
            c.close()
    inv_row = influx.rows(
        "SELECT * FROM inverter WHERE \"device\" = 'inv-01' ORDER BY time DESC LIMIT 1"
    )[0]
    inv = clients["inv-01"].models[103][0]
    assert 1 in clients["inv-01"].models
    assert inv_row["ac_power_w"] == pytest.approx(inv.W.cvalue) and inv_row["ac_power_w"] > 0
    assert inv_row["ac_energy_wh"] == pytest.approx(inv.WH.cvalue)
    assert inv_row["dc_voltage_v"] == pytest.approx(inv.DCV.cvalue)
    assert inv_row["ac_frequency_hz"] == pytest.approx(inv.Hz.cvalue)
    assert inv_row["state"] == inv.St.cvalue == 4
    assert inv_row["power_factor"] == pytest.approx(inv.PF.cvalue / 100)
    m_row = influx.rows(
        "SELECT * FROM meter WHERE \"device\" = 'meter-main' ORDER BY time DESC LIMIT 1"
    )[0]
    meter = clients["meter-main"].models[203][0]
    assert m_row["active_power_w"] == pytest.approx(meter.W.cvalue)
    assert m_row["import_energy_wh"] == pytest.approx(meter.TotWhImp.cvalue)
    assert m_row["frequency_hz"] == pytest.approx(meter.Hz.cvalue)
    assert clients["inv-01"].common[0].SN.cvalue == "inv-01"


def test_rtu_on_a_serial_line_with_two_devices(tmp_path):
    dev_end, sim_end = tmp_path / "ttyCollector", tmp_path / "ttySim"
    socat = subprocess.Popen(
        ["socat", f"pty,raw,echo=0,link={dev_end}", f"pty,raw,echo=0,link={sim_end}"],
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: dev_end.exists() and sim_end.exists(), 10, "socat pty pair")
        raw = demo_raw()["devices"]
        serial = {"port": str(dev_end), "baudrate": 38400}
        devices = [
            dict(
                raw[3],
                transport="rtu",
                serial=serial,
                unit_id=1,
                simulate=dict(raw[3]["simulate"], serial_port=str(sim_end)),
            ),
            dict(
                raw[5],
                transport="rtu",
                serial=serial,
                unit_id=2,
                simulate=dict(raw[5]["simulate"], serial_port=str(sim_end)),
            ),
        ]
        for d in devices:
            d.pop("host")
        cfg = make_config(tmp_path, 1, "http://127.0.0.1:1", "x", devices=devices)
        with SimulatorThread(cfg) as sim:
            results = read_all(cfg)
            truth_meter = sim.devices["meter-hvac"].served[-1][1]
        assert results["meter-hvac"].fields["active_power_w"] == pytest.approx(
            truth_meter["active_power_w"], rel=1e-6
        )
        assert results["water-01"].fields["volume_m3"] > 0
    finally:
        socat.terminate()
        socat.wait(5)


def test_rtu_over_tcp_gateway(tmp_path):
    raw = demo_raw()["devices"]
    port = free_port()
    devices = [
        dict(raw[0], transport="rtu-over-tcp", unit_id=1),
        dict(raw[5], transport="rtu-over-tcp", unit_id=7),
    ]
    cfg = make_config(tmp_path, 1, "http://127.0.0.1:1", "x", devices=devices)
    # both behind the same gateway port
    cfg = cfg.model_copy(
        update={"devices": tuple(d.model_copy(update={"port": port}) for d in cfg.devices)}
    )
    with SimulatorThread(cfg):
        results = read_all(cfg)
    assert results["inv-01"].fields["state"] in HEALTHY_STATES
    assert results["water-01"].fields["volume_m3"] > 0


def test_dead_and_slow_devices_do_not_delay_the_others(tmp_path, broker, caplog):
    raw = demo_raw()["devices"]
    devices = [
        dict(raw[0], id="healthy", interval_s_override=0.1),
        # nobody listens there
        dict(raw[1], id="dead", simulate=None, interval_s_override=0.1, timeout_s=0.5),
        dict(raw[5], id="slow", interval_s_override=0.1, timeout_s=0.5),
    ]
    cfg = make_config(tmp_path, broker, "http://127.0.0.1:1", "x", devices=devices)
    with SimulatorThread(cfg) as sim:
        sim.call(lambda: setattr(sim.devices["slow"].faults, "delay_s", 2.0))  # > timeout 0.5 s
        caplog.set_level(logging.WARNING, logger="foursave.collector")
        collector = CollectorThread(cfg).start()
        dead = next(p for p in collector.collector.pollers if p.device.id == "dead")
        slow = next(p for p in collector.collector.pollers if p.device.id == "slow")
        wait_for(lambda: dead.health.errors >= 3 and slow.health.errors >= 2, 60, "failed polls")
        healthy = collector.published_counts()["healthy"]
        collector.stop()
    # each failed poll of the slow device costs 3 x 0.75 s; meanwhile the healthy one
    # kept its 0.1 s interval
    assert healthy >= 10, healthy
    assert not dead.health.online and dead.health.last_error
    assert dead.backoff_s() > dead.device.interval_s  # backing off exponentially
    failures = [r for r in caplog.records if r.getMessage().startswith("dead: poll failed")]
    assert len(failures) == 1  # logged once while it lasts


def test_the_tainan_city_hall_is_served_and_read(tmp_path):
    """config/tainan.yaml (the real shape: 3 sites, 19 devices) runs on simulators."""
    import yaml

    raw = yaml.safe_load((ROOT / "config" / "tainan.yaml").read_text())
    devices = raw["devices"]
    cfg = make_config(tmp_path, 1, "http://127.0.0.1:1", "x", devices=devices, sites=raw["sites"])
    assert load_config(ROOT / "config" / "tainan.yaml", env={}).devices  # valid as shipped
    with SimulatorThread(cfg):
        results = read_all(cfg)
    assert set(results) == {d["id"] for d in devices}
    for dev_id, r in results.items():
        assert r.fields and not r.errors, (dev_id, r.errors)
    assert results["lm-weather"].fields.keys() >= {
        "poa_irradiance_wm2",
        "module_temp_c",
        "ambient_temp_c",
    }
    assert results["yh-ev"].fields["active_power_w"] >= 0


def test_a_huawei_inverter_is_read_through_its_profile_with_its_pv_inputs(tmp_path, broker):
    """The simulator serves a SUN2000 from collector/profiles/huawei_sun2000_2pv.yaml over
    Modbus TCP; the collector reads it through the same profile and publishes readings
    carrying each PV input as an inverter_string part (tag string)."""
    huawei = {
        "id": "sun2000",
        "site": "demo",
        "kind": "inverter",
        "profile": "huawei_sun2000_2pv",
        "host": "127.0.0.1",
        "unit_id": 1,
        "simulate": {"model": "pv", "rated_power_w": 5000, "dc_kwp": 6},
    }
    cfg = make_config(
        tmp_path,
        broker,
        "http://127.0.0.1:1",
        "x",
        devices=[huawei],
        commissioned=date(2026, 9, 19),
    )
    noon = datetime(2026, 9, 22, 12, 0, tzinfo=timezone(timedelta(hours=8)))
    watcher = Watcher(broker)
    topic = "foursave/v1/demo/sun2000/reading"
    try:
        with SimulatorThread(cfg, clock=ManualClock(noon.timestamp())) as sim:
            collector = CollectorThread(cfg).start()
            wait_for(lambda: len(watcher.messages.get(topic, [])) >= 2, 30, "two readings")
            collector.stop()
            served = sim.devices["sun2000"].served[-1][1]
    finally:
        watcher.close()
    reading = watcher.last(topic)
    assert reading is not None and reading["kind"] == "inverter"
    parts = {p["tags"]["string"]: p for p in reading["parts"]}
    assert set(parts) == {"1", "2"}
    assert all(p["measurement"] == "inverter_string" for p in parts.values())
    # the simulated array split over the two inputs (simulators/site.py even_strings),
    # to the registers' resolution (0.1 V, 0.01 A)
    assert served["dc_current_a"] > 0 and served["ac_energy_wh"] > 0
    for p in parts.values():
        assert p["fields"]["dc_voltage_v"] == pytest.approx(served["dc_voltage_v"], abs=0.051)
        assert p["fields"]["dc_current_a"] == pytest.approx(served["dc_current_a"] / 2, abs=0.006)
    fields = reading["fields"]
    assert fields["dc_power_w"] == pytest.approx(served["dc_power_w"], abs=0.51)
    assert fields["ac_power_w"] == pytest.approx(served["ac_power_w"], abs=0.51)
    assert fields["ac_energy_wh"] == pytest.approx(served["ac_energy_wh"], abs=5.01)
    # Huawei has no total DC voltage or current register: absent, not computed
    assert "dc_voltage_v" not in fields and "dc_current_a" not in fields
