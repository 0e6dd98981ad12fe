"""Savings targets: which baseline a period is measured against, the target formula, and
the verdict (met, not met, or not judged).

The rules come from the target presets in ``rules/data/factors.yaml``
(``target_presets``: ``plan_2011``, ``plan_2016``), one rule per item:

* ``previous_year``: the same period a year earlier, reduced by ``reduction_per_year``;
* ``base_year_eui``: the same period of the site's base year, no growth (rate 0);
* a fixed ``base_year`` with ``reduction_by_year``: the reduction ramps linearly from
  0 in 2010 to each listed year (plan 2011);
* paper: an online-signing rate to reach, interpolated between the listed years.

A period is judged only with :data:`COMPLETE_ENOUGH` of its data; otherwise it keeps its
baseline and target but says it is incomplete.  Pure: the baseline quantity is asked
of the caller (``quantity``), so this module reads no data.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from foursave.core.periods import Period
from foursave.rules import formulas
from foursave.rules.notes import Note

COMPLETE_ENOUGH = 0.98  # a period is judged (savings, met) only with this much data
RATE_RULE = "online-signing rate against the year's target"  # paper's baseline rule

Rule = Mapping[str, Any]  # one item's entry of a target preset


@dataclass
class Judgement:
    """What judging a period against its target found (the fields of a ledger row)."""

    baseline: float | None = None
    baseline_rule: str = ""
    target_rate: float | None = None
    savings_rate: float | None = None
    met: bool | None = None
    notes: list[Note] = field(default_factory=list)


def preset(factors: Mapping[str, Any], name: str) -> Mapping[str, Rule]:
    """The target preset ``name`` (plan_2011, plan_2016): item -> rule."""
    rules: Mapping[str, Rule] = factors["target_presets"][name]
    return rules


def interpolate(table: Mapping[int, float], y: int) -> float:
    """The value for year ``y``: linear between the listed years, flat outside them."""
    ys = sorted(table)
    if y <= ys[0]:
        return table[ys[0]]
    if y >= ys[-1]:
        return table[ys[-1]]
    for a, b in itertools.pairwise(ys):
        if a <= y <= b:
            return table[a] + (table[b] - table[a]) * (y - a) / (b - a)
    return table[ys[-1]]


def target_quantity(baseline: float | None, target_rate: float | None) -> float | None:
    """The target formula: the quantity to stay under, baseline × (1 − target rate)."""
    if baseline is None or target_rate is None:
        return None
    return baseline * (1 - target_rate)


def rate_target(rule: Rule, y: int) -> float:
    """Paper: the online-signing rate to reach in year ``y`` (``online_signing_rate``)."""
    table: dict[int, float] = {int(k): v for k, v in rule["online_signing_rate"].items()}
    return interpolate(table, y)


def baseline_of(rule: Rule, p: Period, base_year: int) -> tuple[Period, str, float]:
    """The baseline period of ``p`` under ``rule``, its wording and the target rate
    (the required reduction) for ``p``.  ``base_year``: the site's (``base_year_eui``)."""
    y = int(p.label[:4])
    if rule["baseline"] == "previous_year":
        base_p = p.shifted_years(1)
        rate: float = rule["reduction_per_year"]  # as written in the preset (not cast)
        return base_p, f"previous year ({base_p.label})", rate
    if rule["baseline"] == "base_year_eui":
        return p.shifted_years(y - base_year), f"base year {base_year} (EUI no growth)", 0.0
    # plan 2011: base year 2007, reduction ramping to the target year
    y0 = int(rule["base_year"])
    ramp: dict[int, float] = {2010: 0.0} | {int(k): v for k, v in rule["reduction_by_year"].items()}
    return p.shifted_years(y - y0), f"base year {y0}", interpolate(ramp, y)


def judge_reduction(
    rule: Rule,
    p: Period,
    base_year: int,
    actual: float,
    completeness: float | None,
    quantity: Callable[[Period], float | None],
) -> Judgement:
    """An item with a reduction target: baseline (prorated to ``p``'s days when the
    baseline period is longer or shorter, e.g. February of a leap year), target rate,
    and — with enough data and a baseline — the savings rate and whether it was met."""
    base_p, wording, rate = baseline_of(rule, p, base_year)
    j = Judgement(baseline=quantity(base_p), baseline_rule=wording, target_rate=rate)
    if j.baseline and base_p.days != p.days:
        j.baseline *= p.days / base_p.days
        j.notes.append(Note("prorated", {"from_days": base_p.days, "to_days": p.days}))
    if completeness is not None and completeness < COMPLETE_ENOUGH:
        j.notes.append(Note("incomplete", {"share": completeness}))
        return j
    if j.baseline and j.baseline > 0:
        j.savings_rate = formulas.savings_rate(j.baseline, actual)
        j.met = j.savings_rate >= rate - 1e-12
    else:
        j.notes.append(Note("no_baseline", {"rule": j.baseline_rule}))
    return j


def judge_rate(rate: float, target: float, completeness: float) -> Judgement:
    """An item with a rate to reach (paper): met when the rate is at least the target,
    with enough of the period's months recorded."""
    j = Judgement(baseline_rule=RATE_RULE, target_rate=target)
    if completeness < COMPLETE_ENOUGH:
        j.notes.append(Note("incomplete", {"share": completeness}))
    else:
        j.met = rate >= target
    return j


def target_of(kind: str, baseline: float | None, target_rate: float | None) -> float | None:
    """What a row is held to: for a ``rate`` item (paper) the rate to reach, otherwise
    the quantity to stay under (:func:`target_quantity`)."""
    return target_rate if kind == "rate" else target_quantity(baseline, target_rate)
