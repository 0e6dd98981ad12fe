"""The PV value worked by hand: a few 15-minute blocks of PV, import and export in known
TOU periods of a summer week (三段式, 高壓, the table in force since 2024-10-16:
../shared/TARIFFS.md §2a: peak 9.39, semi-peak 5.85, Saturday semi-peak 2.60, off-peak
2.53 NT$/kWh; basic 經常 223.60 NT$/kW; industry 831 coefficient 1.017)."""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest

from foursave.core.config import SiteTariff
from foursave.rules.pvvalue import pv_value, pv_value_lines

TZ = ZoneInfo("Asia/Taipei")
ST = SiteTariff(plan="three_stage", contracts_kw={"regular": 300}, industry="831")
JULY = (date(2025, 7, 1), date(2025, 8, 1))


def at(day: int, hour: int, minute: int = 0) -> int:
    return int(datetime(2025, 7, day, hour, minute, tzinfo=TZ).timestamp() * 1000)


# block: (PV kWh, main import kWh, main export kWh); 2025-07-16 is a Wednesday, 07-19 a Saturday
BLOCKS = {
    at(16, 3): (0.0, 30.0, 0.0),  # off-peak, night
    at(16, 10): (20.0, 50.0, 0.0),  # semi-peak: all 20 consumed
    at(16, 12): (30.0, 0.0, 5.0),  # semi-peak: 5 exported, 25 consumed
    at(16, 16): (4.0, 100.0, 0.0),  # peak
    at(19, 11): (10.0, 2.0, 0.0),  # Saturday semi-peak
}
NO_MAIN = at(16, 13)  # 8 kWh of PV in a block the main meter missed: not valued


def split():
    pv = {ms: b[0] for ms, b in BLOCKS.items()} | {NO_MAIN: 8.0}
    imp = {ms: b[1] for ms, b in BLOCKS.items()}
    exp = {ms: b[2] for ms, b in BLOCKS.items()}
    return pv, imp, exp


def test_consumed_pv_valued_per_period_to_the_cent():
    pv, imp, exp = split()
    v = pv_value("s", ST, *JULY, TZ, pv, imp, exp)
    assert v.consumed_kwh == pytest.approx(
        {"off_peak": 0.0, "semi_peak": 45.0, "peak": 4.0, "sat_semi_peak": 10.0}
    )
    # 20 x 5.85 + 25 x 5.85 = 263.25; 4 x 9.39 = 37.56; 10 x 2.60 = 26.00
    assert round(v.value_ntd["semi_peak"], 2) == 263.25
    assert round(v.value_ntd["peak"], 2) == 37.56
    assert round(v.value_ntd["sat_semi_peak"], 2) == 26.00
    assert round(v.total_value_ntd, 2) == 326.81
    assert v.generation_kwh == pytest.approx(72.0) and v.exported_kwh == pytest.approx(5.0)
    assert v.unvalued_kwh == pytest.approx(8.0) and v.blocks_valued == 5
    assert v.tariffs and v.export_measured and v.behind_main


def test_demand_with_and_without_pv_and_what_it_saved():
    pv, imp, exp = split()
    v = pv_value("s", ST, *JULY, TZ, pv, imp, exp)
    # with PV: import / 0.25 h; without: (import + consumed PV) / 0.25 h
    assert v.demand_kw == pytest.approx(
        {"off_peak": 120.0, "semi_peak": 200.0, "peak": 400.0, "sat_semi_peak": 8.0}
    )
    assert v.demand_without_pv_kw == pytest.approx(
        {"off_peak": 120.0, "semi_peak": 280.0, "peak": 416.0, "sat_semi_peak": 48.0}
    )
    assert v.demand_reduction_kw() == pytest.approx(
        {"off_peak": 0.0, "semi_peak": 80.0, "peak": 16.0, "sat_semi_peak": 40.0}
    )
    # peak over a 300 kW contract by 100 (with) and 116 kW (without): the 16 kW the PV
    # took off are all above the 10 % band, x3 at the regular basic price
    assert round(v.over_contract_saved_ntd, 2) == round(16 * 3 * 223.60, 2) == 10732.80
    # the whole bill: (energy + over-contract) x the 831 coefficient, no PF measured
    assert v.coefficient == 1.017
    assert round(v.bill_saved_ntd, 2) == round((326.81 + 10732.80) * 1.017, 2)


def test_no_export_counter_counts_all_pv_as_consumed_and_says_so():
    pv, imp, _ = split()
    v = pv_value("s", ST, *JULY, TZ, pv, imp, None)
    assert v.consumed_kwh["semi_peak"] == pytest.approx(50.0) and not v.export_measured
    assert any("no export" in n for n in v.notes)


def test_a_plant_without_main_meter_is_valued_at_its_own_plan():
    pv, _, _ = split()
    v = pv_value("plant", ST, *JULY, TZ, pv)
    # every kWh: 8 more semi-peak (13:00) and the 5 that a main meter would have exported
    assert round(v.total_value_ntd, 2) == round(58 * 5.85 + 4 * 9.39 + 10 * 2.60, 2)
    assert v.demand_kw == {} and v.bill_saved_ntd is None and not v.behind_main


def test_line_carries_the_fields_and_tags():
    pv, imp, exp = split()
    (line,) = pv_value_lines(pv_value("s", ST, *JULY, TZ, pv, imp, exp), TZ)
    assert line.startswith("pv_value_month,plan=three_stage,site=s,tariff=")
    for f in (
        "pv_kwh_peak=4",
        "pv_value_ntd_semi_peak=263.25",
        "demand_kw_peak=400",
        "demand_without_pv_kw_peak=416",
        "demand_reduction_kw_semi_peak=80",
        "export_measured=true",
    ):
        assert f in line, f
    assert line.endswith(f" {at(1, 0)}")  # the month's local start (ms precision)
