"""The PV value from a real influxd filled by backfill: a site with PV behind its main
meter, big enough to export on a Sunday, and a plant of its own (a PV meter, no main
meter) with its own plan; the rules pass writes what ``site_pv_value`` computes."""

from __future__ import annotations

import copy
from datetime import date

import pytest

from foursave.core.clock import ManualClock
from foursave.localstack import free_port
from foursave.rules.bill import site_bill
from foursave.rules.engine import run_once
from foursave.rules.pvvalue import pv_source, site_pv_value
from foursave.rules.records import RecordStore
from foursave.rules.tariff import load_tariffs
from foursave.simulators.backfill import run_backfill
from tests.helpers import demo_raw, make_config

pytestmark = pytest.mark.integration

START, END = date(2025, 7, 1), date(2025, 7, 8)  # a summer week with a Saturday and Sunday
STEP_S = 300


def config(tmp_path, influx_url, database):
    raw = demo_raw()
    devices = copy.deepcopy(raw["devices"])
    for d in devices:
        if d["kind"] == "inverter":  # 2 x 75 kW: more than the weekend load at noon
            d["simulate"] |= {"rated_power_w": 75000, "dc_kwp": 90}
    devices += [
        {
            "id": "plant-inv",
            "site": "plant",
            "kind": "inverter",
            "profile": "sunspec",
            "host": "127.0.0.1",
            "simulate": {"model": "pv", "rated_power_w": 50000, "behind_main": False},
        },
        {
            "id": "plant-pv-meter",
            "site": "plant",
            "kind": "meter",
            "role": "pv",
            "profile": "sunspec",
            "host": "127.0.0.1",
            "simulate": {"model": "pv_meter", "rated_power_w": 50000},
        },
    ]
    sites = raw["sites"] + [
        {
            "id": "plant",
            "name": "電廠",
            "lat": 22.993,
            "lon": 120.186,
            "pv_capacity_kwp": 60,
            "tariff": {"plan": "three_stage", "contracts_kw": {"regular": 100}},
        }
    ]
    return make_config(
        tmp_path,
        free_port(),
        influx_url,
        database,
        devices=devices,
        sites=sites,
        commissioned=date(2025, 6, 1),
    )


def counter_delta(influx, measurement, fieldname, device):
    lo = f"SELECT first({fieldname}) AS c FROM {measurement} WHERE device = '{device}'"
    hi = f"SELECT last({fieldname}) AS c FROM {measurement} WHERE device = '{device}'"
    return (influx.rows(hi)[0]["c"] - influx.rows(lo)[0]["c"]) / 1000


def test_pv_value_from_influxdb_and_the_rules_pass(tmp_path, influx_url, database, influx):
    cfg = config(tmp_path, influx_url, database)
    run_backfill(cfg, START, END, step_s=STEP_S, influx=influx)
    demo, plant = cfg.sites
    assert pv_source(cfg, demo).devices == ("inv-01", "inv-02")  # no PV meter on the demo
    assert pv_source(cfg, plant).devices == ("plant-pv-meter",)
    v = site_pv_value(cfg, influx, demo, START, END)
    # the blocks chain: generation and export are the counters' deltas over the week
    gen = sum(counter_delta(influx, "inverter", "ac_energy_wh", d) for d in ("inv-01", "inv-02"))
    exported = counter_delta(influx, "meter", "export_energy_wh", "meter-main")
    assert v.generation_kwh == pytest.approx(gen, rel=1e-9) and gen > 1000
    assert v.exported_kwh == pytest.approx(exported, rel=1e-9) and exported > 10
    assert v.total_consumed_kwh == pytest.approx(gen - exported, rel=1e-9)
    assert v.unvalued_kwh == 0 and v.export_measured
    # each period's value is its kWh at its price (TARIFFS.md §2a, from the tariff file)
    ed = load_tariffs().edition_on(START)
    for period, kwh in v.consumed_kwh.items():
        price = ed.energy_price("three_stage", period, True)
        assert v.value_ntd[period] == pytest.approx(kwh * price)
    assert v.consumed_kwh["peak"] > 0 and v.consumed_kwh["sat_semi_peak"] > 0
    # demand with PV is the bill's; without PV it is never lower, and lower at noon
    bill = site_bill(cfg, influx, demo, START, END)
    assert v.demand_kw == pytest.approx(bill.max_demand_kw)
    assert all(v.demand_without_pv_kw[p] >= kw for p, kw in v.demand_kw.items())
    assert v.demand_reduction_kw()["semi_peak"] > 0
    assert v.bill_saved_ntd > v.total_value_ntd * v.coefficient * 0.98  # PF discount aside
    # the plant: its PV meter's whole production at its own plan, no demand
    w = site_pv_value(cfg, influx, plant, START, END)
    assert w.generation_kwh == pytest.approx(
        counter_delta(influx, "meter", "import_energy_wh", "plant-pv-meter"), rel=1e-9
    )
    assert w.total_consumed_kwh == pytest.approx(w.generation_kwh) and w.demand_kw == {}

    records = RecordStore(tmp_path / "records.sqlite")
    run_once(cfg, influx, records, START, END, ManualClock(0))
    rows = {r["site"]: r for r in influx.rows('SELECT * FROM "pv_value_month" GROUP BY "site"')}
    assert set(rows) == {"demo", "plant"}
    # the pass values the calendar month: the week is all the data it has
    assert rows["demo"]["pv_value_ntd"] == pytest.approx(v.total_value_ntd)
    assert rows["demo"]["demand_without_pv_kw_peak"] == pytest.approx(
        v.demand_without_pv_kw["peak"]
    )
    assert rows["plant"]["pv_value_ntd"] == pytest.approx(w.total_value_ntd)
    assert rows["demo"]["tariff"] == "tpc-hv-2024-10-16"
