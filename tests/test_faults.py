"""Faults injected over the simulator's HTTP control, observed through the real
collector path: Modbus -> collector -> MQTT -> ingester -> InfluxDB."""

from __future__ import annotations

import copy
import json
import logging
from datetime import date, datetime, timedelta, timezone

import httpx
import pytest

from foursave.core.clock import SimClock
from foursave.simulators.faults import evt1_bits
from tests.helpers import Pipeline, Watcher, demo_raw, mqtt_anyone, wait_for

pytestmark = pytest.mark.integration

TAIPEI = timezone(timedelta(hours=8))
NOON = datetime(2026, 10, 13, 11, 0, tzinfo=TAIPEI).timestamp()  # a Tuesday, working day


def sim_clock(speed: float = 60.0) -> SimClock:
    return SimClock(start=NOON, speed=speed)


# SunSpec St of a healthy inverter (never FAULT): see tests/test_collector.py
HEALTHY_STATES = (2, 3, 4, 5)


def status(p: Pipeline, device: str) -> dict:
    r = p.rows(
        f"SELECT last(online) AS online, last(errors) AS errors FROM device_status WHERE \"device\" = '{device}'"
    )
    return r[0] if r else {}


def test_offline_slow_and_exception_codes(tmp_path, broker, influx_url, database):
    with Pipeline(
        tmp_path, broker, influx_url, database, clock=sim_clock(), commissioned=date(2026, 10, 10)
    ) as p:
        wait_for(lambda: p.latest("inverter", "inv-01"), 30, "first inverter reading")
        pollers = {x.device.id: x for x in p.collector.collector.pollers}

        p.fault("inv-01", offline=True)  # listener closed: connection refused
        wait_for(
            lambda: status(p, "inv-01").get("online") is False, 30, "inv-01 offline in InfluxDB"
        )
        assert "refused" in pollers["inv-01"].health.last_error
        p.clear("inv-01")
        wait_for(lambda: status(p, "inv-01").get("online") is True, 60, "inv-01 back")

        p.fault("water-01", exception=4)  # server device failure on every request
        wait_for(lambda: status(p, "water-01").get("online") is False, 30, "water-01 failing")
        assert "exception 04" in pollers["water-01"].health.last_error
        p.fault("water-01", exception=6)  # server busy
        wait_for(
            lambda: "exception 06" in (pollers["water-01"].health.last_error or ""), 30, "busy"
        )
        p.clear("water-01")

        p.fault("meter-hvac", delay_s=3.0)  # slower than the 2 s timeout
        wait_for(
            lambda: status(p, "meter-hvac").get("online") is False, 60, "slow meter timing out"
        )
        assert "timeout, no answer within 2 s" in pollers["meter-hvac"].health.last_error
        p.clear("meter-hvac")
        # the others never stopped
        assert pollers["inv-02"].health.online and pollers["weather-01"].health.online


def test_inverter_trip_and_string_derate(tmp_path, broker, influx_url, database):
    with Pipeline(
        tmp_path, broker, influx_url, database, clock=sim_clock(), commissioned=date(2026, 10, 10)
    ) as p:
        wait_for(lambda: p.latest("inverter", "inv-01"), 30, "first reading")
        p.fault("inv-01", trip=["GROUND_FAULT", "OVER_TEMP"])
        wait_for(lambda: p.latest("inverter", "inv-01")[0]["state"] == 7, 30, "St FAULT stored")
        row = p.latest("inverter", "inv-01")[0]
        assert row["events"] == evt1_bits(["GROUND_FAULT", "OVER_TEMP"]) == 0b10000001
        assert row["ac_power_w"] == 0
        e1 = row["ac_energy_wh"]
        wait_for(
            lambda: (
                len(
                    p.rows(
                        "SELECT ac_energy_wh FROM inverter WHERE \"device\"='inv-01' AND state = 7"
                    )
                )
                >= 3
            ),
            30,
            "3 tripped readings",
        )
        tripped = p.rows(
            "SELECT ac_energy_wh FROM inverter WHERE \"device\"='inv-01' AND state = 7"
        )
        assert {r["ac_energy_wh"] for r in tripped} == {e1}  # the counter stops
        p.clear("inv-01")
        wait_for(lambda: p.latest("inverter", "inv-01")[0]["state"] in (4, 5), 30, "back to MPPT")

        p.fault("inv-02", derate_pct=50)

        def ratio():
            a = p.latest("inverter", "inv-01")[0]
            b = p.latest("inverter", "inv-02")[0]
            return b["ac_power_w"] / a["ac_power_w"] if a["ac_power_w"] else None

        # same sun, same size: the derated inverter makes about half its peer's power
        wait_for(
            lambda: (r := ratio()) is not None and 0.4 < r < 0.6, 30, "inv-02 at ~50 % of inv-01"
        )


def test_counter_reset_rollover_and_stuck_value(tmp_path, broker, influx_url, database):
    with Pipeline(
        tmp_path, broker, influx_url, database, clock=sim_clock(), commissioned=date(2026, 10, 10)
    ) as p:
        wait_for(lambda: p.latest("water", "water-01"), 30, "first water reading")
        before = p.latest("water", "water-01")[0]["volume_m3"]
        assert before > 1
        p.fault("water-01", counter_reset=True)
        wait_for(
            lambda: p.latest("water", "water-01")[0]["volume_m3"] < 1, 30, "volume restarted at 0"
        )

        # the SDM630 import counter is a float32 (no rollover); the SunSpec main meter's
        # acc32 rolls over: it jumps close to its limit, then wraps to a small value
        wait_for(lambda: p.latest("meter", "meter-main"), 30, "main meter")
        p.fault("meter-main", counter_rollover=True)
        limit = 4_294_967_295 * 10  # acc32 x 10^TotWh_SF for a 200 kW meter
        wait_for(
            lambda: p.latest("meter", "meter-main")[0]["import_energy_wh"] > 0.99 * limit,
            30,
            "near the limit",
        )
        wait_for(
            lambda: p.latest("meter", "meter-main")[0]["import_energy_wh"] < 0.01 * limit,
            60,
            "wrapped",
        )

        p.fault("weather-01", stuck=True)
        wait_for(lambda: len(p.latest("weather", "weather-01", 6)) == 6, 30, "weather readings")
        first_stuck_n = len(p.rows("SELECT * FROM weather"))
        wait_for(
            lambda: len(p.rows("SELECT * FROM weather")) >= first_stuck_n + 4, 30, "4 more readings"
        )
        last4 = p.latest("weather", "weather-01", 4)
        assert len({(r["ghi_wm2"], r["ambient_temp_c"]) for r in last4}) == 1  # frozen


def test_leak_and_demand_spike(tmp_path, broker, influx_url, database):
    with Pipeline(
        tmp_path, broker, influx_url, database, clock=sim_clock(), commissioned=date(2026, 10, 10)
    ) as p:
        wait_for(
            lambda: p.latest("water", "water-01") and p.latest("meter", "meter-hvac"),
            30,
            "readings",
        )
        flow0 = p.latest("water", "water-01")[0]["flow_m3h"]
        p.fault("water-01", leak_m3h=5.0)
        wait_for(lambda: p.latest("water", "water-01")[0]["flow_m3h"] > flow0 + 4, 30, "leak flow")
        hvac0 = p.latest("meter", "meter-hvac")[0]["active_power_w"]
        p.fault("meter-hvac", spike_w=80_000)
        wait_for(
            lambda: p.latest("meter", "meter-hvac")[0]["active_power_w"] > hvac0 + 60_000,
            30,
            "spike",
        )
        # the control interface reports what is active
        r = httpx.get(f"{p.control}/devices/meter-hvac", timeout=5).json()
        assert r["faults"]["spike_w"] == 80_000


def test_control_interface_rejects_nonsense(tmp_path, broker, influx_url, database):
    with Pipeline(
        tmp_path, broker, influx_url, database, clock=sim_clock(), commissioned=date(2026, 10, 10)
    ) as p:
        bad = [
            ("inv-01", {"exception": 5}, "not one of"),
            ("water-01", {"trip": ["GROUND_FAULT"]}, "only inverters trip"),
            ("inv-01", {"trip": ["MELTDOWN"]}, "unknown Evt1"),
            ("inv-01", {"derate_pct": 120}, "less than or equal to 100"),
            ("inv-01", {"colour": "red"}, "Extra inputs"),
        ]
        for dev, body, expected in bad:
            r = httpx.patch(f"{p.control}/devices/{dev}/faults", json=body, timeout=5)
            assert r.status_code == 422, (body, r.text)
            assert expected in r.text, (body, r.text)
        assert (
            httpx.patch(f"{p.control}/devices/nope/faults", json={}, timeout=5).status_code == 404
        )


def test_impossible_values_are_never_stored(
    tmp_path, broker, influx_url, database, caplog, request
):
    """A SunSpec inverter (with its nameplate, WRtg 5 kW) and an SDM630 meter send
    impossible values over real Modbus TCP (issue 12): the readings stored in InfluxDB
    lack exactly those fields and keep the others, the retained device status counts
    them per field, and the collector logs each once while it lasts.  A reading that
    reaches the broker with an impossible value anyway is cut down by the ingester."""

    caplog.set_level(logging.INFO, logger="foursave.collector")
    raw = {d["id"]: d for d in demo_raw()["devices"]}
    inverter = copy.deepcopy(raw["inv-01"])
    inverter["simulate"]["sunspec_models"] = [1, 103, 120]  # WRtg = rated_power_w 5000
    devices = [inverter, raw["meter-hvac"]]
    impossible = {
        "ac_frequency_hz": 600.0,  # Hz raw 60000 x 10^-2
        "power_factor": 32.767,  # PF raw 32767 x 10^-1 %
        "state": 59541,  # St: no such state
        "ac_power_w": 20_000.0,  # 4 x WRtg: a plausible number, impossible for this device
    }
    watcher = Watcher(broker)
    request.addfinalizer(watcher.close)
    with Pipeline(
        tmp_path,
        broker,
        influx_url,
        database,
        devices=devices,
        clock=sim_clock(),
        commissioned=date(2026, 10, 10),
    ) as p:
        pollers = {x.device.id: x for x in p.collector.collector.pollers}
        wait_for(
            lambda: p.latest("inverter", "inv-01") and p.latest("meter", "meter-hvac"),
            30,
            "first readings",
        )
        assert pollers["inv-01"].reader.rated_power_w == 5000  # read from model 120
        p.fault("inv-01", values=impossible)
        p.fault("meter-hvac", values={"frequency_hz": 3.4e38})  # float32 0x7F7FFFxx

        def lacking(measurement, device, field, keeps):
            rows = p.rows(
                f"SELECT {field}, {keeps} FROM {measurement} WHERE \"device\" = '{device}'"
            )
            return [r for r in rows if r[field] is None and r[keeps] is not None]

        wait_for(
            lambda: len(lacking("inverter", "inv-01", "ac_frequency_hz", "ac_energy_wh")) >= 3,
            30,
            "3 inverter readings stored without their impossible fields",
        )
        wait_for(
            lambda: len(lacking("meter", "meter-hvac", "frequency_hz", "voltage_v")) >= 3,
            30,
            "3 meter readings stored without frequency",
        )
        faulty = [
            r
            for r in p.rows("SELECT * FROM inverter WHERE \"device\" = 'inv-01'")
            if r["ac_frequency_hz"] is None
        ]
        for r in faulty:  # the other fields are stored as served
            assert r["power_factor"] is None and r["state"] is None and r["ac_power_w"] is None
            assert 200 < r["ac_voltage_v"] < 250 and r["ac_energy_wh"] > 0
            assert r["dc_power_w"] is not None and r["events"] is not None
        # nothing impossible was ever stored
        for r in p.rows("SELECT * FROM inverter"):
            assert r["ac_frequency_hz"] is None or 40 <= r["ac_frequency_hz"] <= 70
            assert r["power_factor"] is None or -1 <= r["power_factor"] <= 1
            assert r["state"] is None or 1 <= r["state"] <= 8
            assert r["ac_power_w"] is None or abs(r["ac_power_w"]) <= 7500
        for r in p.rows("SELECT frequency_hz FROM meter"):
            assert r["frequency_hz"] is None or r["frequency_hz"] <= 70

        # the retained device status counts them per field, and InfluxDB has the total
        def status_counts(device):
            body = watcher.last(f"foursave/v1/demo/{device}/status") or {}
            return body.get("out_of_bounds", {})

        wait_for(
            lambda: (
                set(status_counts("inv-01")) == set(impossible)
                and min(status_counts("inv-01").values()) >= 3
                and status_counts("meter-hvac").get("frequency_hz", 0) >= 3
            ),
            30,
            "out_of_bounds counts in the retained status",
        )
        assert watcher.last("foursave/v1/demo/inv-01/status")["online"] is True
        wait_for(
            lambda: (
                (
                    r := p.rows(
                        "SELECT last(out_of_bounds) AS n FROM device_status WHERE \"device\" = 'inv-01'"
                    )
                )
                and r[0]["n"] >= 12
            ),
            30,
            "device_status.out_of_bounds in InfluxDB",
        )

        p.clear("inv-01")
        wait_for(
            lambda: (
                (r := p.latest("inverter", "inv-01")[0])["ac_frequency_hz"] is not None
                and r["state"] in HEALTHY_STATES
            ),
            30,
            "values back in bounds stored again",
        )

        # a reading published straight to the broker: the ingester checks again
        client = mqtt_anyone(broker, "rogue-publisher")
        try:
            body = {"ts": 1_790_000_000_000, "seq": 0, "kind": "meter", "role": "main"}
            body["fields"] = {"voltage_v": 229.5, "frequency_hz": 655.35, "power_factor": 327.67}
            client.publish(
                "foursave/v1/demo/rogue/reading", json.dumps(body), qos=1
            ).wait_for_publish(5)
        finally:
            client.loop_stop()
            client.disconnect()
        wait_for(lambda: p.latest("meter", "rogue"), 30, "the rogue reading, cut down")
        row = p.latest("meter", "rogue")[0]
        assert row["voltage_v"] == 229.5
        assert row["frequency_hz"] is None and row["power_factor"] is None
        wait_for(
            lambda: (
                (r := p.rows("SELECT last(out_of_bounds) AS n FROM ingest_stats"))
                and r[0]["n"] >= 2
            ),
            30,
            "ingest_stats.out_of_bounds",
        )

    # logged once while it lasted (however many polls), then once back in bounds
    logged = [r.getMessage() for r in caplog.records if r.name == "foursave.collector"]
    for name in impossible:
        went = [m for m in logged if m.startswith(f"inv-01: {name} = ")]
        assert len(went) == 1, (name, went)
    assert len([m for m in logged if m.startswith("meter-hvac: frequency_hz = ")]) == 1
    assert "registers 0x7F7F" in next(m for m in logged if m.startswith("meter-hvac: frequency"))
    assert len([m for m in logged if m.startswith("inv-01: ac_frequency_hz back in bounds")]) == 1
