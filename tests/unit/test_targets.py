"""rules/targets.py: the target formula and the verdict, worked by hand."""

from __future__ import annotations

import pytest

from foursave.core.periods import month, year
from foursave.rules import targets
from foursave.rules.factors import load_factors
from foursave.rules.notes import Note


def _preset(name: str, item: str):
    return targets.preset(load_factors(), name)[item]


def _asked(values: dict[str, float]):
    """A baseline ``quantity`` that answers from ``values`` (period label -> quantity)
    and remembers which periods it was asked for."""
    asked: list[str] = []

    def quantity(p):
        asked.append(p.label)
        return values.get(p.label)

    return quantity, asked


def test_the_target_formula():
    assert targets.target_quantity(1000.0, 0.06) == pytest.approx(940.0)
    assert targets.target_quantity(1000.0, 0.0) == 1000.0
    assert targets.target_quantity(None, 0.06) is None
    assert targets.target_quantity(1000.0, None) is None
    # a rate item (paper) is held to the rate itself, a reduction item to the quantity
    assert targets.target_of("rate", None, 0.9) == 0.9
    assert targets.target_of("reduction", 500.0, 0.02) == pytest.approx(490.0)


def test_base_year_rule_ramps_from_2010_to_the_target_year():
    # plan 2011, electricity: base year 2007, 10 % by 2015, 0 in 2010: 2013 is 6 %
    rule = _preset("plan_2011", "electricity")
    quantity, asked = _asked({"2007": 1000.0})
    j = targets.judge_reduction(rule, year(2013), 2024, 930.0, 1.0, quantity)
    assert asked == ["2007"]  # the plan's base year, not the site's (2024)
    assert j.baseline == 1000.0
    assert j.baseline_rule == "base year 2007"
    assert j.target_rate == pytest.approx(0.06)
    assert targets.target_quantity(j.baseline, j.target_rate) == pytest.approx(940.0)
    assert j.savings_rate == pytest.approx(0.07)  # (1000 − 930) / 1000
    assert j.met is True
    # 950 saves 5 %, short of 6 %
    j = targets.judge_reduction(rule, year(2013), 2024, 950.0, 1.0, quantity)
    assert j.savings_rate == pytest.approx(0.05)
    assert j.met is False
    # after the target year the rate stays at the last one
    assert targets.baseline_of(rule, year(2020), 2024)[2] == pytest.approx(0.10)


def test_base_year_eui_rule_is_no_growth_against_the_sites_base_year():
    rule = _preset("plan_2016", "electricity")
    quantity, asked = _asked({"2024-07": 100.0})
    j = targets.judge_reduction(rule, month(2026, 7), 2024, 100.0, 1.0, quantity)
    assert asked == ["2024-07"]
    assert j.baseline_rule == "base year 2024 (EUI no growth)"
    assert j.target_rate == 0.0
    assert j.savings_rate == 0.0
    assert j.met is True  # no growth is enough


def test_previous_year_rule_with_its_reduction_per_year():
    # plan 2016, water: 2 % less than the same month a year earlier
    rule = _preset("plan_2016", "water")
    quantity, asked = _asked({"2024-03": 500.0})
    j = targets.judge_reduction(rule, month(2025, 3), 2024, 490.0, 0.99, quantity)
    assert asked == ["2024-03"]
    assert j.baseline_rule == "previous year (2024-03)"
    assert j.target_rate == 0.02
    assert j.savings_rate == pytest.approx(0.02)
    assert j.met is True  # exactly the target is met
    j = targets.judge_reduction(rule, month(2025, 3), 2024, 492.0, 0.99, quantity)
    assert j.savings_rate == pytest.approx(0.016)
    assert j.met is False
    assert j.notes == []


def test_a_leap_february_baseline_is_prorated():
    rule = _preset("plan_2016", "fuel")
    quantity, _ = _asked({"2024-02": 290.0})  # 29 days: 10 a day
    j = targets.judge_reduction(rule, month(2025, 2), 2024, 270.0, 1.0, quantity)
    assert j.baseline == pytest.approx(280.0)  # 28 days of it
    assert j.notes == [Note("prorated", {"from_days": 29, "to_days": 28})]
    assert j.met is True  # 3.6 % saved against 1 %


def test_not_judged_below_98_percent_complete():
    rule = _preset("plan_2016", "water")
    quantity, _ = _asked({"2024-03": 500.0})
    j = targets.judge_reduction(rule, month(2025, 3), 2024, 400.0, 0.979, quantity)
    assert j.baseline == 500.0 and j.target_rate == 0.02  # shown, but not judged
    assert j.savings_rate is None
    assert j.met is None
    assert j.notes == [Note("incomplete", {"share": 0.979})]
    assert targets.COMPLETE_ENOUGH == 0.98
    j = targets.judge_reduction(rule, month(2025, 3), 2024, 400.0, 0.98, quantity)
    assert j.met is True


def test_no_baseline_is_not_judged():
    rule = _preset("plan_2016", "water")
    quantity, _ = _asked({})
    j = targets.judge_reduction(rule, month(2025, 3), 2024, 400.0, 1.0, quantity)
    assert j.baseline is None
    assert j.met is None
    assert j.notes == [Note("no_baseline", {"rule": "previous year (2024-03)"})]


def test_paper_online_signing_rate_is_interpolated_between_preset_years():
    rule = _preset("plan_2016", "paper")  # 2016: 0.90, 2019: 1.00
    assert targets.rate_target(rule, 2016) == pytest.approx(0.90)
    assert targets.rate_target(rule, 2017) == pytest.approx(0.90 + 0.10 / 3)
    assert targets.rate_target(rule, 2018) == pytest.approx(0.90 + 0.20 / 3)
    assert targets.rate_target(rule, 2019) == pytest.approx(1.00)
    assert targets.rate_target(rule, 2025) == pytest.approx(1.00)  # flat after
    assert targets.rate_target(rule, 2014) == pytest.approx(0.90)  # and before
    rule = _preset("plan_2011", "paper")  # 2012: 0.30, 2015: 0.40
    assert targets.rate_target(rule, 2013) == pytest.approx(0.30 + 0.10 / 3)


def test_paper_judged_against_its_rate_only_when_complete():
    j = targets.judge_rate(0.95, 0.9, 1.0)
    assert (j.target_rate, j.met, j.baseline) == (0.9, True, None)
    assert j.baseline_rule == "online-signing rate against the year's target"
    assert targets.judge_rate(0.85, 0.9, 1.0).met is False
    j = targets.judge_rate(0.95, 0.9, 11 / 12)  # a month not recorded
    assert j.met is None
    assert j.target_rate == 0.9
    assert j.notes == [Note("incomplete", {"share": 11 / 12})]
