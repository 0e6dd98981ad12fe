"""Golden cases of the Taipower high-voltage bill, worked by hand from ../shared/TARIFFS.md.

Each expected number below is worked out in the comment beside it from the prices of the
2024-10-16 table (TARIFFS.md §2a, §2b), the windows of §2c and the formulas of §4 — not
from rules/tariff.py.  Amounts are NT$ incl. VAT; the industry coefficient 831 is 1.017.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from foursave.core.config import SiteTariff
from foursave.rules.tariff import (
    BLOCK_MS,
    Gap,
    NoTariff,
    check_site_tariff,
    compute_bill,
    load_tariffs,
)

TZ = ZoneInfo("Asia/Taipei")
T = load_tariffs()
E = T.edition_on(date(2025, 7, 1))


def ms(d: date, h: int = 0, m: int = 0) -> int:
    return int(datetime(d.year, d.month, d.day, h, m, tzinfo=TZ).timestamp() * 1000)


def blocks(start: date, end: date, kw_at) -> dict[int, float]:
    """Block start -> kWh for local days [start, end), kW given by kw_at(day, minute)."""
    out = {}
    d = start
    while d < end:
        for k in range(96):
            out[ms(d) + k * BLOCK_MS] = kw_at(d, k * 15) * 0.25
        d += timedelta(days=1)
    return out


def one_day(day: date):
    """100 kW all day, 200 kW 13:00-18:00 on ``day``; nothing on the month's other days."""

    def kw(d: date, minute: int) -> float:
        if d != day:
            return 0.0
        return 200.0 if 13 * 60 <= minute < 18 * 60 else 100.0

    return kw


def month_of(day: date) -> tuple[date, date]:
    start = day.replace(day=1)
    return start, (start + timedelta(days=32)).replace(day=1)


def bill(plan: str, contracts: dict, start: date, end: date, b: dict, **kw):
    st = SiteTariff(plan=plan, contracts_kw=contracts, **kw.pop("options", {}))
    return compute_bill("s", st, start, end, TZ, b, tariffs=T, **kw)


# ----------------------------------------------------------------------------- windows


@pytest.mark.parametrize(
    ("plan", "when", "period"),
    [
        ("three_stage", datetime(2025, 7, 1, 8, 45), "off_peak"),  # summer weekday
        ("three_stage", datetime(2025, 7, 1, 9, 0), "semi_peak"),
        ("three_stage", datetime(2025, 7, 1, 15, 45), "semi_peak"),
        ("three_stage", datetime(2025, 7, 1, 16, 0), "peak"),
        ("three_stage", datetime(2025, 7, 1, 21, 45), "peak"),
        ("three_stage", datetime(2025, 7, 1, 22, 0), "semi_peak"),
        ("three_stage", datetime(2025, 12, 2, 5, 45), "off_peak"),  # non-summer weekday
        ("three_stage", datetime(2025, 12, 2, 6, 0), "semi_peak"),
        ("three_stage", datetime(2025, 12, 2, 11, 0), "off_peak"),
        ("three_stage", datetime(2025, 12, 2, 14, 0), "semi_peak"),
        ("three_stage", datetime(2025, 7, 5, 9, 0), "sat_semi_peak"),  # Saturday
        ("three_stage", datetime(2025, 7, 6, 17, 0), "off_peak"),  # Sunday
        ("two_stage", datetime(2025, 7, 1, 9, 0), "peak"),
        ("two_stage", datetime(2025, 7, 1, 23, 45), "peak"),
        ("two_stage", datetime(2025, 12, 2, 12, 0), "off_peak"),
        ("two_stage", datetime(2025, 12, 6, 15, 0), "sat_semi_peak"),
        # season boundary: 5/15 is non-summer (no peak period), 5/16 summer
        ("three_stage", datetime(2025, 5, 15, 17, 0), "semi_peak"),
        ("three_stage", datetime(2025, 5, 16, 17, 0), "peak"),
        ("three_stage", datetime(2025, 10, 15, 17, 0), "peak"),
        ("three_stage", datetime(2025, 10, 16, 17, 0), "semi_peak"),
    ],
)
def test_time_of_use_windows(plan, when, period):
    assert E.period_at(plan, when) == period


def test_off_peak_days_are_taipowers_list_not_the_holiday_calendar():
    # 2025-05-31 (Saturday) is 端午: off-peak all day; 2025-05-30 is the government's
    # substitute day off (補假), which Taipower's list does not have: an ordinary weekday
    assert E.day_kind(date(2025, 5, 31)) == "off_peak"
    assert E.day_kind(date(2025, 5, 30)) == "weekday"
    assert E.period_at("three_stage", datetime(2025, 5, 30, 17, 0)) == "peak"
    # 春節 2026: from the day before 除夕 (2/15) through 正月初五 (2/21)
    spring = [d for d, n in E.off_peak.of_year(2026).items() if n == "春節"]
    assert sorted(spring) == [date(2026, 2, 15) + timedelta(days=k) for k in range(7)]
    assert E.day_kind(date(2026, 2, 14)) == "saturday"
    # 12/25 is listed from the 2025-11-17 edition on: 2024-12-25 (Wed) is an ordinary day
    assert E.day_kind(date(2024, 12, 25)) == "weekday"
    assert E.day_kind(date(2025, 12, 25)) == "off_peak"
    assert E.day_kind(date(2026, 4, 5)) == "off_peak"  # 民族掃墓節 2026 (qingming)


# ----------------------------------------------------------------------------- days


@pytest.mark.parametrize(
    ("plan", "day", "energy_ntd"),
    [
        # summer weekday, three-stage: off 00-09 9 h x 100 = 900 kWh x 2.53 = 2,277;
        # semi 09-16 and 22-24: 7 h x 100 + 3 h extra (13-16) x 100 + 2 h x 100 = 1,200 kWh
        # x 5.85 = 7,020; peak 16-22: 6 h x 100 + 2 h extra (16-18) x 100 = 800 x 9.39 =
        # 7,512; total 16,809
        ("three_stage", date(2025, 7, 1), 16_809.00),
        # two-stage: peak 09-24 15 h x 100 + 5 h x 100 = 2,000 x 6.75 = 13,500;
        # off 900 x 2.71 = 2,439; total 15,939
        ("two_stage", date(2025, 7, 1), 15_939.00),
        # summer Saturday, three-stage: Sat semi-peak 09-24: 2,000 x 2.60 = 5,200;
        # off 900 x 2.53 = 2,277; total 7,477
        ("three_stage", date(2025, 7, 5), 7_477.00),
        # two-stage: 2,000 x 2.77 = 5,540; 900 x 2.71 = 2,439; total 7,979
        ("two_stage", date(2025, 7, 5), 7_979.00),
        # off-peak day 10/10 (still summer): all 2,900 kWh off-peak; x 2.53 = 7,337
        ("three_stage", date(2025, 10, 10), 7_337.00),
        # two-stage: 2,900 x 2.71 = 7,859
        ("two_stage", date(2025, 10, 10), 7_859.00),
    ],
)
def test_a_day_of_energy_under_both_plans(plan, day, energy_ntd):
    start, end = month_of(day)
    b = bill(plan, {"regular": 300}, start, end, blocks(start, end, one_day(day)))
    assert b.energy_ntd == pytest.approx(energy_ntd, abs=0.5)
    assert b.total_kwh == pytest.approx(2_900)
    assert b.completeness == 1.0


def test_summer_weekday_month_total_with_power_factor():
    # July 2025, three-stage, regular 300 kW; the 7/1 load above, PF 93 %:
    # basic 300 x 223.60 = 67,080; energy 16,809; PF: (93 - 80) x 0.1 % = 1.3 % off
    # basic + energy: -0.013 x 83,889 = -1,090.557; 82,798.443 x 1.017 -> 84,206.02
    start, end = month_of(date(2025, 7, 1))
    b = bill(
        "three_stage",
        {"regular": 300},
        start,
        end,
        blocks(start, end, one_day(date(2025, 7, 1))),
        power_factor=0.93,
    )
    assert b.basic_ntd == pytest.approx(67_080.00, abs=0.005)
    assert b.pf_adjust_ntd == pytest.approx(-1_090.56, abs=0.005)
    assert b.coefficient == 1.017
    assert b.total_ntd == pytest.approx(84_206.02, abs=0.005)
    assert b.over_contract_ntd == 0


def test_a_billing_month_crossing_5_16():
    # May 2025, 50 kW all the time, three-stage, regular 200 kW.
    # 1-15 non-summer (15 days): weekdays 2, 5-9, 12-15 (10); Saturdays 3, 10; off-peak
    # 1 (勞動節), 4, 11.  16-31 summer (16 days): weekdays 16, 19-23, 26-30 (11);
    # Saturdays 17, 24; off-peak 18, 25, 31 (端午 2025-05-31).
    # basic: 200 x 166.90 x 15/31 = 16,151.61 + 200 x 223.60 x 16/31 = 23,081.29 = 39,232.90
    # energy, non-summer: semi 10 d x 15 h x 50 = 7,500 x 5.47 = 41,025;
    #   Sat semi 2 x 15 x 50 = 1,500 x 2.41 = 3,615; off (90 + 18 + 72) h x 50 = 9,000
    #   x 2.32 = 20,880
    # summer: peak 11 x 6 x 50 = 3,300 x 9.39 = 30,987; semi 11 x 9 x 50 = 4,950 x 5.85 =
    #   28,957.5; Sat semi 1,500 x 2.60 = 3,900; off (99 + 18 + 72) x 50 = 9,450 x 2.53 =
    #   23,908.5 -> energy 153,273
    # total (39,232.90 + 153,273) x 1.017 = 195,778.50
    start, end = date(2025, 5, 1), date(2025, 6, 1)
    b = bill("three_stage", {"regular": 200}, start, end, blocks(start, end, lambda d, m: 50.0))
    assert [(s.first, s.last, s.summer) for s in b.segments] == [
        (date(2025, 5, 1), date(2025, 5, 15), False),
        (date(2025, 5, 16), date(2025, 5, 31), True),
    ]
    assert b.basic_ntd == pytest.approx(39_232.90, abs=0.005)
    assert b.energy_ntd == pytest.approx(153_273.00, abs=0.005)
    assert b.energy_kwh == pytest.approx(
        {"peak": 3_300, "semi_peak": 12_450, "sat_semi_peak": 3_000, "off_peak": 18_450}
    )
    assert b.total_ntd == pytest.approx(195_778.50, abs=0.005)
    assert any("5/16" in n or "season" in n for n in b.notes)


def spikes(start: date, end: date, base_kw: float, at: dict[tuple[date, int, int], float]):
    """base_kw everywhere, and the given kW in the blocks at (day, hour, minute)."""

    def kw(d: date, minute: int) -> float:
        return at.get((d, minute // 60, minute % 60), base_kw)

    return blocks(start, end, kw)


def test_over_contract_in_the_semi_peak_period_only():
    # July 2025, three-stage, regular 100 + semi-peak 50 kW: semi-peak covered by 150 kW.
    # Max demand: semi-peak 170 kW (7/2 10:00), peak 90, off-peak 80 -> excess 20 kW in
    # the semi-peak period only.  Price: the semi-peak contract's summer 166.90; 10 % of
    # the stacked 150 = 15 kW at x2, 5 kW at x3: 15 x 2 x 166.90 + 5 x 3 x 166.90 = 7,510.50
    start, end = month_of(date(2025, 7, 1))
    d = date(2025, 7, 2)
    b_kw = spikes(start, end, 80.0, {(d, 10, 0): 170.0, (d, 17, 0): 90.0})
    contracts = {"regular": 100, "semi_peak": 50}
    b = bill("three_stage", contracts, start, end, b_kw)
    (seg,) = b.segments
    charged = {x.period: x.excess_kw for x in seg.excesses if x.excess_kw}
    assert charged == {"semi_peak": pytest.approx(20.0)}
    assert b.over_contract_ntd == pytest.approx(7_510.50, abs=0.005)
    # basic: 100 x 223.60 + 50 x 166.90 = 30,705 (no Saturday/off-peak contract)
    assert b.basic_ntd == pytest.approx(30_705.00, abs=0.005)
    # the ambiguous points (TARIFFS.md §4.5) as options: the regular price for all
    # periods, 15 x 2 x 223.60 + 5 x 3 x 223.60 = 10,062; 10 % of the regular contract
    # only, 10 x 2 x 166.90 + 10 x 3 x 166.90 = 8,345
    b = bill("three_stage", contracts, start, end, b_kw, options={"over_contract_price": "regular"})
    assert b.over_contract_ntd == pytest.approx(10_062.00, abs=0.005)
    b = bill("three_stage", contracts, start, end, b_kw, options={"over_contract_base": "regular"})
    assert b.over_contract_ntd == pytest.approx(8_345.00, abs=0.005)


def test_over_contract_in_two_periods_at_once_charges_no_kw_twice():
    # July 2025, three-stage, regular 100 kW only (covers every period).  Max demand:
    # peak 130 (excess 30), semi-peak 125 (25: inside the peak's 30, charged 0), off-peak
    # 140 (40: 10 beyond the peak's 30).  Peak: 10 kW x 2 x 223.60 + 20 x 3 x 223.60 =
    # 4,472 + 13,416 = 17,888; off-peak at the off-peak contract's price 44.70 (its
    # stacked base 100 kW, 10 kW within 10 %): 10 x 2 x 44.70 = 894.  Total 18,782 for
    # 40 kW = the largest excess, counted once.
    start, end = month_of(date(2025, 7, 1))
    d = date(2025, 7, 2)
    b_kw = spikes(start, end, 60.0, {(d, 17, 0): 130.0, (d, 10, 0): 125.0, (d, 3, 0): 140.0})
    b = bill("three_stage", {"regular": 100}, start, end, b_kw)
    (seg,) = b.segments
    charged = {x.period: round(x.excess_kw, 6) for x in seg.excesses}
    assert charged == {"peak": 30.0, "semi_peak": 0.0, "sat_semi_peak": 0.0, "off_peak": 10.0}
    assert sum(charged.values()) == 40.0
    assert b.over_contract_ntd == pytest.approx(18_782.00, abs=0.005)


@pytest.mark.parametrize(
    ("pf", "share"),
    [
        (0.72, +0.008),  # (80 - 72) x 0.1 % = 0.8 % added
        (0.97, -0.015),  # credit only up to 95 %: (95 - 80) x 0.1 % = 1.5 % off
        (0.80, 0.0),
    ],
)
def test_power_factor_72_and_97_percent(pf, share):
    # December 2025 (non-summer), three-stage, regular 150 kW, 40 kW all the time.
    # basic 150 x 166.90 = 25,035.  Energy: December 2025 has 22 weekdays, 4 Saturdays,
    # 5 off-peak days (Sundays 7, 14, 21, 28 and 12/25 行憲紀念日).  Weekday: semi 15 h,
    # off 9 h; Saturday: Sat semi 15 h, off 9 h; off-peak day 24 h.
    # semi 22 x 15 x 40 = 13,200 x 5.47 = 72,204; Sat semi 4 x 15 x 40 = 2,400 x 2.41 =
    # 5,784; off (22 x 9 + 4 x 9 + 5 x 24) x 40 = 354 x 40 = 14,160 x 2.32 = 32,851.20;
    # energy 110,839.20.  Basic + energy = 135,874.20.
    # PF 72 %: +0.8 % = +1,086.99; total (135,874.20 + 1,086.99) x 1.017 = 139,289.53
    # PF 97 %: -1.5 % = -2,038.11; total 133,836.09 x 1.017 = 136,111.30
    start, end = date(2025, 12, 1), date(2026, 1, 1)
    b = bill(
        "three_stage",
        {"regular": 150},
        start,
        end,
        blocks(start, end, lambda d, m: 40.0),
        power_factor=pf,
    )
    assert b.energy_ntd == pytest.approx(110_839.20, abs=0.005)
    assert b.pf_adjust_share == pytest.approx(share)
    expected = {0.72: 139_289.53, 0.97: 136_111.30, 0.80: 138_184.06}[pf]
    assert b.total_ntd == pytest.approx(expected, abs=0.01)
    assert b.total_ntd == pytest.approx(expected, rel=1e-4)  # 4 significant figures


def test_a_month_with_2_percent_of_its_data_missing_is_marked_not_billed_low():
    # December 2025, 40 kW: 2,976 blocks; 60 blocks (2.0 %) of 12/10 have no reading of
    # their own, but the counter measured their 60 x 10 kWh = 600 kWh: the bill keeps
    # that energy (spread over the gap's blocks) and says how complete its data is
    start, end = date(2025, 12, 1), date(2026, 1, 1)
    full = blocks(start, end, lambda d, m: 40.0)
    gap_start = ms(date(2025, 12, 10), 6, 0)
    gap_end = gap_start + 60 * BLOCK_MS
    holed = {t: kwh for t, kwh in full.items() if not gap_start <= t < gap_end}
    gap = Gap(gap_start, gap_end, 600.0)
    b_full = bill("three_stage", {"regular": 150}, start, end, full)
    b = bill("three_stage", {"regular": 150}, start, end, holed, gaps=[gap])
    assert b.completeness == pytest.approx(1 - 60 / 2976)  # 97.98 %
    assert b.blocks_expected == 2976
    assert b.unallocated_kwh == pytest.approx(600.0)
    assert b.total_kwh == pytest.approx(b_full.total_kwh)
    # evenly spread over the gap's blocks, the energy falls in the same periods here
    assert b.total_ntd == pytest.approx(b_full.total_ntd, abs=0.005)
    assert any("gaps" in n for n in b.notes)
    # with no counter across the gap the bill is low by that energy, and says so
    b_lost = bill("three_stage", {"regular": 150}, start, end, holed)
    assert b_lost.completeness == b.completeness
    assert b_lost.total_kwh == pytest.approx(b_full.total_kwh - 600.0)


def test_no_use_pays_half_the_basic_charge():
    start, end = date(2025, 12, 1), date(2026, 1, 1)
    b = bill("three_stage", {"regular": 150}, start, end, blocks(start, end, lambda d, m: 0.0))
    assert b.no_use
    assert b.basic_ntd == pytest.approx(150 * 166.90 * 0.5)


def test_basic_charge_stacking():
    # summer, three-stage: regular 200, Saturday 50, off-peak 120: the discounted part is
    # (50 + 120) - 0.5 x 200 = 70 kW at 44.70 = 3,129; + 200 x 223.60 = 44,720 -> 47,849
    start, end = month_of(date(2025, 7, 1))
    contracts = {"regular": 200, "saturday": 50, "off_peak": 120}
    b = bill("three_stage", contracts, start, end, blocks(start, end, lambda d, m: 10.0))
    assert b.basic_ntd == pytest.approx(47_849.00, abs=0.005)
    # two-stage, non-summer: regular 200 + non-summer 100 at 166.90 = 50,070; discounted
    # (50 + 120) - 0.5 x 300 = 20 kW at 33.30 = 666 -> 50,736
    start, end = date(2025, 12, 1), date(2026, 1, 1)
    contracts = {"regular": 200, "non_summer": 100, "saturday": 50, "off_peak": 120}
    b = bill("two_stage", contracts, start, end, blocks(start, end, lambda d, m: 10.0))
    assert b.basic_ntd == pytest.approx(50_736.00, abs=0.005)


def test_a_date_without_a_tariff_edition_is_not_billed():
    start, end = date(2024, 9, 1), date(2024, 10, 1)
    with pytest.raises(NoTariff, match=r"no tariff for 2024-09-01\.\.2024-09-30"):
        bill("three_stage", {"regular": 200}, start, end, blocks(start, end, lambda d, m: 5.0))
    # October 2024: the table in force from 10/16 is on record, the one before is not
    start, end = date(2024, 10, 1), date(2024, 11, 1)
    with pytest.raises(NoTariff, match=r"2024-10-01\.\.2024-10-15 \(15 of the 31 days"):
        bill("three_stage", {"regular": 200}, start, end, blocks(start, end, lambda d, m: 5.0))
    with pytest.raises(NoTariff, match="2023-04-01"):
        T.edition_on(date(2023, 4, 1))
    assert T.edition_on(date(2023, 2, 1)).id == "tpc-hv-2023-01-01"


def test_site_tariff_problems_are_named():
    st = SiteTariff(
        plan="three_stage", contracts_kw={"regular": 60, "non_summer": 10}, industry="x"
    )
    messages = [m for _, m in check_site_tariff(st, T)]
    assert any("['non_summer'] not contract types of three_stage" in m for m in messages)
    assert any("70 kW in total is under the 100 kW minimum" in m for m in messages)
    assert any("unknown industry code 'x'" in m for m in messages)
    assert check_site_tariff(SiteTariff(plan="two_stage", contracts_kw={"regular": 100}), T) == []


def test_an_open_month_is_a_provisional_bill_to_date():
    # 12/10 00:00 is "now": the 9 days so far are all the data there can be
    start, end = date(2025, 12, 1), date(2026, 1, 1)
    now = ms(date(2025, 12, 10))
    so_far = blocks(start, date(2025, 12, 10), lambda d, m: 40.0)
    b = bill("three_stage", {"regular": 150}, start, end, so_far, now_ms=now)
    assert b.provisional
    assert (b.blocks_measured, b.blocks_expected, b.completeness) == (864, 864, 1.0)
    assert b.basic_ntd == pytest.approx(150 * 166.90)  # the month's basic charge
    closed = bill("three_stage", {"regular": 150}, start, end, so_far, now_ms=ms(end))
    assert not closed.provisional and closed.completeness == pytest.approx(9 / 31)
