"""The contract optimiser (rules/contract.py): the vectorised cost against the bill and
against tariff.basic_parts/excesses, the search against brute force over the whole grid,
and a case worked by hand to the NT$."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import numpy as np
import pytest

from foursave.core.config import SiteTariff
from foursave.rules.contract import (
    Box,
    Evaluator,
    Unit,
    box_of,
    brute_force,
    search,
    slow_cost,
    units_of,
)
from foursave.rules.tariff import BLOCK_MS, compute_bill, load_tariffs

T = load_tariffs()
ED = next(e for e in T.editions if e.id == "tpc-hv-2024-10-16")
TAIPEI = timezone(timedelta(hours=8))
PERIODS = {
    "three_stage": ("peak", "semi_peak", "sat_semi_peak", "off_peak"),
    "two_stage": ("peak", "sat_semi_peak", "off_peak"),
}


def st_of(plan: str, contracts: dict[str, float], **kw) -> SiteTariff:
    return SiteTariff(plan=plan, contracts_kw=contracts, industry="831", **kw)


def ev_of(units, plan, st, current, fee=185.0) -> Evaluator:
    p = T.plan(plan)
    cur = np.array([current.get(k, 0.0) for k in p.contracts])
    return Evaluator(units, 1 + max(u.month for u in units), T, p, st, cur, fee, 24)


def random_units(rng, plan: str, months: int, level: float) -> list[Unit]:
    out = []
    for m in range(months):
        segs = [True, False] if m % 3 == 0 else [bool(m % 2)]  # some months cross 5/16
        for i, summer in enumerate(segs):
            share = 1.0 if len(segs) == 1 else (15 / 31 if i else 16 / 31)
            names = [p for p in PERIODS[plan] if summer or p != "peak" or plan == "two_stage"]
            out.append(
                Unit(
                    m,
                    ED,
                    summer,
                    share,
                    1.0,
                    1.017 * (1 - 0.01),
                    1.017,
                    {p: float(rng.uniform(0.6, 1.4) * level) for p in names},
                )
            )
    return out


@pytest.mark.parametrize("plan", ["three_stage", "two_stage"])
@pytest.mark.parametrize(
    "options", [{}, {"over_contract_price": "regular"}, {"over_contract_base": "regular"}]
)
def test_vectorised_cost_is_basic_parts_and_excesses(plan, options):
    rng = np.random.default_rng(7)
    units = random_units(rng, plan, 5, 300)
    st = st_of(plan, {"regular": 300}, **options)
    ev = ev_of(units, plan, st, {"regular": 300}, fee=0.0)
    cand = rng.integers(0, 250, size=(40, 4)).astype(float)
    got, _ = ev.cost(cand)
    p = T.plan(plan)
    want = [slow_cost(units, T, p, st, dict(zip(p.contracts, c, strict=True))) for c in cand]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert min(want) > 0


def _blocks(start: date, days: int, kw_of) -> dict[int, float]:
    t0 = int(datetime(start.year, start.month, start.day, tzinfo=TAIPEI).timestamp() * 1000)
    return {t0 + i * BLOCK_MS: kw_of(i) * 0.25 for i in range(days * 96)}


@pytest.mark.parametrize("plan", ["three_stage", "two_stage"])
def test_cost_plus_energy_is_the_bill_across_5_16(plan):
    """May crosses 5/16: the candidate's cost plus the contract-free part is the bill's
    total for every candidate (PF adjustment and coefficient included)."""
    rng = np.random.default_rng(3)
    load = rng.uniform(150, 420, size=31 * 96)
    blocks = _blocks(date(2025, 5, 1), 31, lambda i: load[i])
    st = st_of(plan, {"regular": 300})
    p = T.plan(plan)

    def bill(contracts):
        return compute_bill(
            "s",
            st,
            date(2025, 5, 1),
            date(2025, 6, 1),
            TAIPEI,
            blocks,
            power_factor=0.9,
            plan=plan,
            contracts_kw=contracts,
            tariffs=T,
        )

    base = bill({"regular": 300})
    assert len(base.segments) == 2  # non-summer 5/1-5/15 and summer 5/16-5/31
    units = units_of([base], st, T)
    ev = ev_of(units, plan, st, {}, fee=0.0)
    free = base.coefficient * (base.energy_ntd * (1 + base.pf_adjust_share))
    for c in rng.integers(0, 300, size=(15, 4)):
        contracts = dict(zip(p.contracts, map(float, c), strict=True))
        b = bill(contracts)
        got, _ = ev.cost(np.array([c], dtype=float))
        assert got[0] + free == pytest.approx(b.total_ntd, rel=1e-12)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("plan", ["three_stage", "two_stage"])
def test_search_equals_brute_force_over_the_whole_grid(plan, seed):
    """A small synthetic case (levels ~30 kW, minimum 20 kW so the 4-D grid is small
    enough for brute force): the search's optimum is brute force's, to the NT$; some
    cases have Saturday/off-peak demand above the weekday's, some a current contract
    above the optimum (the raising cost counts)."""
    rng = np.random.default_rng(seed)
    units = random_units(rng, plan, 4, 30.0)
    if seed % 2:
        for u in units:  # weekend and night loads above the weekday's: c3, c4 matter
            for k in ("sat_semi_peak", "off_peak"):
                if k in u.max_kw:
                    u.max_kw[k] *= 1.6
    current = {"regular": float(rng.integers(25, 50))}
    st = st_of(plan, {"regular": 300})
    ev = ev_of(units, plan, st, current)
    box = box_of(units, 20, [True] * 4)
    box = Box(box.lo1, min(box.hi, 64), 20, box.free)
    fast = search(ev, box)
    slow = brute_force(ev, box)
    assert fast.cost_ntd == pytest.approx(slow.cost_ntd, abs=1e-6)
    again, _ = ev.cost(fast.contracts[None, :])
    assert again[0] == pytest.approx(fast.cost_ntd, abs=1e-9)
    print(plan, seed, fast.contracts, round(fast.cost_ntd, 2), fast.candidates, slow.candidates)


def test_hand_worked_twelve_months_regular_only():
    """Twelve non-summer months, three-stage, semi-peak demand 200 kW in eleven and 210 kW
    in one (month 6); current contract 210 kW regular, coefficient 1.017, no PF.

    c = 200: basic 12 x 166.90 x 200 = 400,560; month 6 over by 10 kW, within 10 % of
    200: 10 x 166.90 x 2 = 3,338; x 1.017 = 410,764.266.  The cut of 10 kW goes over:
    raising back 10 kW pays 185 x 24 x 10 = 44,400: 455,164.266.
    c = 210: 12 x 166.90 x 210 = 420,588 x 1.017 = 427,737.996.
    Without the raising cost each kW above 200 adds 12 x 166.90 = 2,002.8 of basic and
    saves 2 x 166.90 = 333.8 of over-contract; each kW below adds 12 x 333.8 and saves
    2,002.8: 200 is the optimum.  With it, a cut of x kW (0 < x <= 10) saves
    (2,002.8 - 333.8) x 1.017 x = 1,697.4 x and pays 4,440 x: 210 stays."""
    units = [
        Unit(m, ED, False, 1.0, 1.0, 1.017, 1.017, {"semi_peak": 210.0 if m == 5 else 200.0})
        for m in range(12)
    ]
    st = st_of("three_stage", {"regular": 210})
    ev = ev_of(units, "three_stage", st, {"regular": 210})
    box = box_of(units, 100, [True, False, False, False])
    assert (box.lo1, box.hi) == (160, 315)
    cost, first = ev.cost(np.array([[210.0, 0, 0, 0], [200.0, 0, 0, 0]]))
    assert cost[0] == pytest.approx(427_737.996, abs=0.0005)
    assert cost[1] == pytest.approx(455_164.266, abs=0.0005)
    assert list(first) == [0, 6]
    assert ev.raise_cost(np.array([[200.0, 0, 0, 0]]))[0] == pytest.approx(44_400)
    found = search(ev, box)
    assert list(found.contracts) == [210, 0, 0, 0]
    assert found.cost_ntd == pytest.approx(427_737.996, abs=0.0005)
    ev.raise_fee = 0.0
    found = search(ev, box)
    assert list(found.contracts) == [200, 0, 0, 0]
    assert found.cost_ntd == pytest.approx(410_764.266, abs=0.0005)


def test_margin_is_applied_to_demand():
    from foursave.rules.contract import scaled

    units = [Unit(m, ED, False, 1.0, 1.0, 1.0, 1.0, {"semi_peak": 200.0}) for m in range(12)]
    st = st_of("three_stage", {"regular": 200})
    box = box_of(units, 100, [True, False, False, False])
    assert search(ev_of(units, "three_stage", st, {"regular": 200}), box).contracts[0] == 200
    up = scaled(units, 1.05)
    assert search(ev_of(up, "three_stage", st, {"regular": 200}), box).contracts[0] == 210
