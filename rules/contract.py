"""The contract capacity (契約容量) that would have minimised a site's bills.

Method (TARIFFS.md §5, M): over the last 12 or 24 billing months, every candidate set of
contracts (1 kW steps, ``contract_step_kw``) is billed with the month's own tariff edition
and season, exactly as the bill does: ``rules/bill.py`` reads each month's 15-minute
blocks once (``bill_inputs``) and ``rules/tariff.compute_bill`` splits the month into its
edition/season segments (5/16 and 10/16 included) with each segment's maximum demand per
TOU period.  A candidate's cost is then, per segment, the basic charge
(``tariff.basic_parts``) plus the over-contract charge (``tariff.excesses``), weighted by
the segment's share of the month's days, times the power-factor factor where the site's
PF adjustment applies to them and times the industry coefficient: exactly the part of
``Bill.total_ntd`` that depends on the contracts (energy charges do not).  The candidates
are evaluated in memory (numpy, ``Evaluator``); the tests check it against
``compute_bill`` and against ``basic_parts``/``excesses`` one candidate at a time.

Search range (documented, TARIFFS.md §5 / S13): with D the months' maximum 15-minute
demands (all periods), the regular contract runs from 0.8 x min D to 1.5 x max D and
every contract set stays at or under 1.5 x max D in total and at or over
``contract_minimum_kw`` (100 kW) in total; the other contract types run from 0.

Search (exact over that grid).  Contract types are in the plan's order (c1 regular, c2
semi-peak/non-summer, c3 Saturday, c4 off-peak), and each TOU period is covered by a
prefix of them (stacking, S1 ch.8).  Split the cost of a candidate into

- ``A(c1, c2)``: the basic charge of the full contracts (c1, c2) and the over-contract
  charge of the periods covered by c1 and c2 alone (peak and semi-peak; two-stage peak),
  which come first in the no-kW-twice order, so they do not depend on c3, c4;
- ``B(c1..c4) >= 0``: the shared Saturday/off-peak basic part, the over-contract charge
  of the later periods and the raising cost below.

``A`` is evaluated on the whole (c1, c2) grid; the (c1, c2) pairs are taken in increasing
``A`` and for each the best (c3, c4) is found on its whole grid; the search stops at the
first pair whose ``A`` is not below the best total found, since ``B >= 0`` no later pair
can beat it.  The grid is also trimmed, without losing the optimum: lowering a contract
type by 1 kW whose stacked level L_k (c1+..+c_k) is above the highest demand of every
period it covers, above ``contract_minimum_kw``, and whose kW are above the current
contract's, changes no over-contract kW, no raising cost, and does not raise the basic
charge (for a full contract type this needs its price to be at least half the shared
Saturday/off-peak price summed over the months, checked, else that type is not trimmed).
``tests/unit/test_contract.py`` proves the search against brute force over the whole
untrimmed grid.

Raising again within 2 years (``raise_within_2_years`` in tariffs.yaml: 185 NT$ per kW
and month since the cut, ``window_months`` 24; confidence L; configurable in the file or
by ``raise_fee=``).  Model: a candidate that lowers contract types below the current ones
"would need raising" when the history, billed at the candidate, goes over contract in any
month; the site is then assumed to raise it back by the largest over-contract kW of the
history (at most the kW cut) at the end of the window, paying fee x window x kW once:
185 x 24 = 4,440 NT$/kW, close to Taipower's own example of about NT$4,500 per kW for a
2-year cut (S16).  The over-contract charges of the history are still counted in full (the
raise is not simulated), so the model errs towards keeping capacity.  The raise is taken
at the end of the window rather than in the month that first goes over: an earlier month
would make a cut that goes over sooner cheaper, which is no model of a decision.  The
cost is monotone (more cut, more over-contract kW: more fee), so it keeps the bound of the
search valid.  Annual figures divide the months' sum (fee included) by months / 12.

Safety margin: the candidate is chosen on the history's demand scaled by (1 + margin)
(every segment's maximum per period), so the recommendation covers the demand the
optimum covered, plus the margin.  The saving and the months over are then reported on
the actual (unscaled) history.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np

from foursave.core.config import Config, Site, SiteTariff
from foursave.core.influx import InfluxClient
from foursave.core.periods import day_start_ms
from foursave.core.periods import month as month_period
from foursave.core.retention import raw_from_ms
from foursave.rules.bill import (
    BILLING_DAYS,
    BillInputs,
    NoMeterData,
    bill_inputs,
    billing_periods,
    equivalent_contracts,
    site_tariff,
)
from foursave.rules.records import RecordStore
from foursave.rules.tariff import (
    Bill,
    Edition,
    Plan,
    Tariffs,
    basic_parts,
    compute_bill,
    excesses,
    load_tariffs,
)

CHUNK = 64  # (c1, c2) pairs whose (c3, c4) grids are evaluated together


class TooFewMonths(LookupError):
    """Fewer billing months with main-meter data than the optimiser was asked to use."""


@dataclass(frozen=True)
class Unit:
    """One edition/season segment of one billing month, as the bill splits it."""

    month: int  # index into the months
    edition: Edition
    summer: bool
    share: float  # of the month's days
    no_use: float  # the basic charge's share (0.5 in a month without use, else 1)
    k_basic: float  # coefficient x (1 + PF share) if the PF adjustment covers basic
    k_over: float  # coefficient x (1 + PF share) if it covers the over-contract part
    max_kw: dict[str, float]


@dataclass(frozen=True)
class Month:
    label: str
    start: date
    end: date
    inputs: BillInputs


def units_of(bills: Sequence[Bill], st: SiteTariff, t: Tariffs) -> list[Unit]:
    """The segments of the months' bills (of one plan), with the factors the bill applies."""
    out = []
    for i, b in enumerate(bills):
        s = b.pf_adjust_share
        s_basic = s if st.power_factor_applies_to in ("basic_energy", "basic", "total") else 0.0
        s_over = s if st.power_factor_applies_to == "total" else 0.0
        for seg in b.segments:
            e = next(x for x in t.editions if x.id == seg.edition)
            out.append(
                Unit(
                    i,
                    e,
                    seg.summer,
                    seg.share,
                    t.no_use_basic_share if b.no_use else 1.0,
                    b.coefficient * (1 + s_basic),
                    b.coefficient * (1 + s_over),
                    dict(seg.max_demand_kw),
                )
            )
    return out


def scaled(units: Sequence[Unit], factor: float) -> list[Unit]:
    return [
        Unit(
            u.month,
            u.edition,
            u.summer,
            u.share,
            u.no_use,
            u.k_basic,
            u.k_over,
            {p: kw * factor for p, kw in u.max_kw.items()},
        )
        for u in units
    ]


def slow_cost(
    units: Sequence[Unit], t: Tariffs, plan: Plan, st: SiteTariff, contracts: Mapping[str, float]
) -> float:
    """A candidate's contract-dependent cost with ``tariff.basic_parts`` and ``excesses``
    (one candidate at a time: the reference the vectorised evaluator is tested against;
    no raising cost)."""
    total = 0.0
    for u in units:
        basic = sum(x.ntd for x in basic_parts(u.edition, plan, contracts, u.summer))
        exc = excesses(
            t,
            u.edition,
            plan,
            contracts,
            u.summer,
            u.max_kw,
            st.over_contract_price,
            st.over_contract_base,
        )
        over = sum(x.ntd for x in exc)
        total += u.share * (u.k_basic * u.no_use * basic + u.k_over * over)
    return total


@dataclass
class Evaluator:
    """Candidates' costs over the months, vectorised: candidates are int arrays (N, 4)
    of kW per contract type in ``plan.contracts`` order."""

    units: Sequence[Unit]
    months: int
    t: Tariffs
    plan: Plan
    st: SiteTariff
    current: np.ndarray  # (4,) the current contracts, for the raising cost
    raise_fee: float  # NT$ per kW and month since the cut
    raise_window: int  # months
    early: tuple[str, ...] = field(init=False)  # periods covered by c1, c2 only

    def __post_init__(self) -> None:
        c = self.plan.contracts
        outer = set(c[:2])
        early: list[str] = []
        for i, rule in enumerate(self.plan.periods):
            if set(rule.covered_by) | set(rule.covered_by_non_summer) <= outer:
                if len(early) != i:
                    raise ValueError(f"{self.plan.id}: the early periods are not a prefix")
                early.append(rule.name)
        self.early = tuple(early)
        if list(self.plan.basic_full) != list(c[:2]) or set(self.plan.basic_discounted) != set(
            c[2:]
        ):
            raise ValueError(f"{self.plan.id}: full contracts are not the first two types")

    def _masks(self, summer: bool) -> dict[str, np.ndarray]:
        out = {}
        for rule in self.plan.periods:
            types = rule.covered_by if summer else rule.covered_by_non_summer
            out[rule.name] = np.array([k in types for k in self.plan.contracts], dtype=float)
        return out

    def cost(self, cand: np.ndarray, only_early: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(cost [NT$] over all months, first month over (1-based; 0: never) per candidate).
        ``only_early``: A(c1, c2) of the module docstring (no raising cost)."""
        cand = np.asarray(cand, dtype=float)
        n = cand.shape[0]
        total = np.zeros(n)
        first_over = np.zeros(n, dtype=int)
        max_raw = np.zeros(n)
        oc = self.t.over_contract
        within_share = float(oc["within_share"])
        m_in, m_above = float(oc["within_multiplier"]), float(oc["above_multiplier"])
        full = cand[:, 0] + cand[:, 1]
        disc = cand[:, 2] + cand[:, 3]
        pid = self.plan.id
        for u in self.units:
            e, summer = u.edition, u.summer
            basic = np.zeros(n)
            for j, k in enumerate(self.plan.contracts[:2]):
                price = e.basic_price(pid, k, summer)
                if price:
                    basic += price * cand[:, j]
            if not only_early:
                dprice = e.basic_price(pid, self.plan.basic_discounted[0], summer) or 0.0
                basic += dprice * np.maximum(0.0, disc - 0.5 * full)
            over = np.zeros(n)
            largest = np.zeros(n)
            masks = self._masks(summer)
            for rule in self.plan.periods:
                if rule.name not in u.max_kw:
                    continue
                if only_early and rule.name not in self.early:
                    break
                covered = cand @ masks[rule.name]
                raw = np.maximum(0.0, u.max_kw[rule.name] - covered)
                charged = np.maximum(0.0, raw - largest)
                largest = np.maximum(largest, raw)
                of = "regular" if self.st.over_contract_price == "regular" else rule.basic_price_of
                price = e.basic_price(pid, of, summer) or 0.0
                base = covered if self.st.over_contract_base == "stacked" else cand[:, 0]
                within = np.minimum(charged, within_share * base)
                over += price * (m_in * within + m_above * (charged - within))
            total += u.share * (u.k_basic * u.no_use * basic + u.k_over * over)
            if not only_early:
                went = (largest > 0) & (first_over == 0)
                first_over[went] = u.month + 1
                max_raw = np.maximum(max_raw, largest)
        if not only_early and self.raise_fee > 0:
            cut = np.maximum(0.0, self.current[None, :] - cand).sum(axis=1)
            restored = np.minimum(cut, max_raw)
            total += np.where(first_over > 0, self.raise_fee * self.raise_window * restored, 0.0)
        return total, first_over

    def raise_cost(self, cand: np.ndarray) -> np.ndarray:
        with_fee, _ = self.cost(cand)
        saved, self.raise_fee = self.raise_fee, 0.0
        try:
            without, _ = self.cost(cand)
        finally:
            self.raise_fee = saved
        return with_fee - without


@dataclass(frozen=True)
class Box:
    """The search grid: c1 in [lo1, hi]; c2..c4 >= 0; total in [minimum, hi]."""

    lo1: int
    hi: int
    minimum: int
    free: tuple[bool, bool, bool, bool]  # types the search may set (others stay 0)


def box_of(units: Sequence[Unit], minimum: float, free: Sequence[bool]) -> Box:
    month_max: dict[int, float] = {}
    for u in units:
        for kw in u.max_kw.values():
            month_max[u.month] = max(month_max.get(u.month, 0.0), kw)
    if not month_max:
        raise NoMeterData("no demand in the months: nothing to optimise")
    lo1 = max(0, math.floor(0.8 * min(month_max.values())))
    hi = max(math.ceil(1.5 * max(month_max.values())), math.ceil(minimum))
    return Box(lo1, hi, math.ceil(minimum), tuple(bool(f) for f in free))  # type: ignore[arg-type]


def _demand_caps(ev: Evaluator) -> list[float]:
    """Per contract type: the highest demand of any period it covers (either season)."""
    caps = [0.0] * 4
    for u in ev.units:
        for rule in ev.plan.periods:
            if rule.name not in u.max_kw:
                continue
            types = rule.covered_by if u.summer else rule.covered_by_non_summer
            for j, k in enumerate(ev.plan.contracts):
                if k in types:
                    caps[j] = max(caps[j], u.max_kw[rule.name])
    return caps


def _trimmable(ev: Evaluator) -> list[bool]:
    """A full contract type may be trimmed when, summed over the months, its price is at
    least half the shared Saturday/off-peak price (lowering it never raises the basic)."""
    out = [True] * 4
    pid = ev.plan.id
    for j in (0, 1):
        k = ev.plan.contracts[j]
        s = 0.0
        for u in ev.units:
            p = u.edition.basic_price(pid, k, u.summer) or 0.0
            d = u.edition.basic_price(pid, ev.plan.basic_discounted[0], u.summer) or 0.0
            s += u.share * u.k_basic * u.no_use * (p - 0.5 * d)
        out[j] = s >= 0
    return out


def _range(level_before: int, j: int, box: Box, caps, trim, current) -> range:
    """c_j's values given the level c1+..+c_{j-1} (trimmed as the module docstring says)."""
    if not box.free[j]:
        return range(0, 1)
    lo = box.lo1 if j == 0 else 0
    hi = box.hi - level_before
    if trim[j]:
        t = max(math.ceil(caps[j]) - level_before, box.minimum - level_before, int(current[j]), 0)
        hi = min(hi, t)
    return range(lo, max(lo, hi) + 1) if hi >= lo else range(0)


@dataclass(frozen=True)
class Found:
    contracts: np.ndarray  # (4,)
    cost_ntd: float
    pairs: int  # (c1, c2) pairs on the grid
    pairs_searched: int  # whose (c3, c4) grid was evaluated
    candidates: int  # evaluated in all


def search(ev: Evaluator, box: Box, trim_grid: bool = True) -> Found:
    """The cheapest candidate on the box's grid (exact: see the module docstring)."""
    caps = _demand_caps(ev)
    trim = _trimmable(ev) if trim_grid else [False] * 4
    cur = ev.current
    pairs = [
        (c1, c2)
        for c1 in _range(0, 0, box, caps, trim, cur)
        for c2 in _range(c1, 1, box, caps, trim, cur)
    ]
    if not pairs:
        raise ValueError(f"empty search grid {box}")
    outer = np.zeros((len(pairs), 4))
    outer[:, :2] = pairs
    a, _ = ev.cost(outer, only_early=True)
    order = np.argsort(a, kind="stable")
    best_cost, best = math.inf, None
    searched = evaluated = 0
    for i0 in range(0, len(order), CHUNK):
        chunk = [int(i) for i in order[i0 : i0 + CHUNK] if a[i] < best_cost]
        if not chunk:
            break
        rows = []
        for i in chunk:
            c1, c2 = pairs[i]
            l2 = c1 + c2
            for c3 in _range(l2, 2, box, caps, trim, cur):
                r4 = _range(l2 + c3, 3, box, caps, trim, cur)
                need = box.minimum - (l2 + c3)
                for c4 in r4:
                    if c4 >= need:
                        rows.append((c1, c2, c3, c4))
        searched += len(chunk)
        if not rows:
            continue
        cand = np.array(rows, dtype=float)
        cost, _ = ev.cost(cand)
        evaluated += len(rows)
        k = int(np.argmin(cost))
        if cost[k] < best_cost:
            best_cost, best = float(cost[k]), cand[k]
    if best is None:
        raise ValueError(f"no candidate on the grid meets the {box.minimum} kW minimum")
    return Found(best, best_cost, len(pairs), searched, evaluated + len(pairs))


def brute_force(ev: Evaluator, box: Box) -> Found:
    """Every candidate of the (untrimmed) box: the proof of ``search`` in the tests."""
    best_cost, best, n = math.inf, None, 0
    rest = [np.arange(0, box.hi + 1) if box.free[j] else np.arange(1) for j in (1, 2, 3)]
    grid = np.stack(np.meshgrid(*rest, indexing="ij"), -1).reshape(-1, 3).astype(float)
    for c1 in range(box.lo1, box.hi + 1):
        tot = c1 + grid.sum(axis=1)
        sub = grid[(tot >= box.minimum) & (tot <= box.hi)]
        if not len(sub):
            continue
        cand = np.column_stack([np.full(len(sub), float(c1)), sub])
        cost, _ = ev.cost(cand)
        n += len(cand)
        k = int(np.argmin(cost))
        if cost[k] < best_cost:
            best_cost, best = float(cost[k]), cand[k]
    if best is None:
        raise ValueError(f"no candidate in {box}")
    return Found(best, best_cost, 0, 0, n)


# ---------------------------------------------------------------------- the site


@dataclass(frozen=True)
class PlanResult:
    plan: str
    current_kw: dict[str, float]
    recommended_kw: dict[str, float]
    current_annual_ntd: float  # contract-dependent part (basic + over-contract), per year
    recommended_annual_ntd: float  # incl. the raising cost, per year, on actual demand
    raise_cost_ntd: float  # in the months' sum
    annual_saving_ntd: float
    months_over: tuple[str, ...]  # months the recommendation would have gone over
    bills_total_ntd: float  # whole bills over the months at the recommendation
    current_bills_total_ntd: float  # whole bills over the months at the current contracts
    pairs: int
    pairs_searched: int
    candidates: int


@dataclass(frozen=True)
class ContractAdvice:
    site: str
    months: tuple[str, ...]
    margin_pct: float
    plan: str  # the site's plan
    raise_fee_ntd_per_kw_month: float
    confidence: str
    current: PlanResult  # the site's plan
    other: PlanResult | None  # the other plan, its own optimum
    cheaper_plan: str
    notes: tuple[str, ...] = ()

    @property
    def years(self) -> float:
        return len(self.months) / 12


def month_labels(end: tuple[int, int], n: int) -> list[tuple[int, int]]:
    """The ``n`` months up to and including ``end`` (y, m), oldest first."""
    y, m = end
    out = []
    for _ in range(n):
        out.append((y, m))
        m -= 1
        if m == 0:
            y, m = y - 1, 12
    return out[::-1]


def months_within(raw_days: int) -> int:
    """The most billing months whose 15-minute readings ``raw_days`` of raw readings
    hold at the end of any month (a bill period may begin 39 days before its month,
    BILLING_DAYS; each month, and the part of this one gone by, up to 31 days)."""
    return max(0, (raw_days - (BILLING_DAYS[1] - 1) - 31) // 31)


def load_months(
    config: Config,
    influx: InfluxClient,
    site: Site,
    end: tuple[int, int],
    n: int,
    records: RecordStore | None = None,
) -> list[Month]:
    """The billing months' inputs (one InfluxDB read per month). ``TooFewMonths`` when
    fewer than ``n`` of them have main-meter data (it says how many have), or when the
    first of them begins before the raw readings kept (``services.influxdb.retention``:
    the optimiser reads the 15-minute blocks of the readings, not the rollups)."""
    raw_days = config.services.influxdb.retention.raw_days
    if raw_days is not None:
        first = month_labels(end, n)[0]
        raw_from = raw_from_ms(config.services.influxdb.retention, int(time.time() * 1000))
        assert raw_from is not None
        begins = month_period(*first).start - timedelta(days=BILLING_DAYS[1] - 1)
        if day_start_ms(begins, site.timezone) < raw_from:
            raise TooFewMonths(
                f"site {site.id!r}: the {n} billing months {first[0]:04d}-{first[1]:02d}.."
                f"{end[0]:04d}-{end[1]:02d} need the main meters' 15-minute readings, and "
                f"they are kept {raw_days} days (services.influxdb.retention.raw_days): "
                f"ask for at most {months_within(raw_days)} months (--months), or keep the "
                "readings longer"
            )
    out = []
    for y, m in month_labels(end, n):
        for start, stop in billing_periods(site, y, m, records):
            x = bill_inputs(config, influx, site, start, stop, records)
            if x.blocks_kwh:
                out.append(Month(month_period(y, m).label, start, stop, x))
    if len(out) < n:
        first = month_labels(end, n)[0]
        raise TooFewMonths(
            f"site {site.id!r} has main-meter data in {len(out)} of the {n} billing months "
            f"{first[0]:04d}-{first[1]:02d}..{end[0]:04d}-{end[1]:02d}"
            + (f" ({', '.join(x.label for x in out)})" if out else "")
            + f"; the contract optimiser needs all {n}"
        )
    return out


def _bills(site: Site, st: SiteTariff, months: Sequence[Month], plan: str, contracts, t):
    return [
        compute_bill(
            site.id,
            st,
            mo.start,
            mo.end,
            site.timezone,
            mo.inputs.blocks_kwh,
            gaps=mo.inputs.gaps,
            power_factor=mo.inputs.power_factor,
            power_factor_source=mo.inputs.power_factor_source,
            plan=plan,
            contracts_kw=contracts,
            tariffs=t,
        )
        for mo in months
    ]


def optimise_plan(
    site: Site,
    st: SiteTariff,
    months: Sequence[Month],
    plan_id: str,
    t: Tariffs,
    margin_pct: float = 0.0,
    raise_fee: float | None = None,
    types: Sequence[str] | None = None,
) -> PlanResult:
    plan = t.plan(plan_id)
    current = dict(st.contracts_kw) if plan_id == st.plan else equivalent_contracts(st, plan_id, t)
    bills = _bills(site, st, months, plan_id, current, t)
    units = units_of(bills, st, t)
    cfg = t.raise_within_2_years
    fee = float(cfg["ntd_per_kw_month_since_cut"]) if raise_fee is None else raise_fee
    cur = np.array([current.get(k, 0.0) for k in plan.contracts])
    free = [types is None or k in types for k in plan.contracts]
    ev_margin = Evaluator(
        scaled(units, 1 + margin_pct / 100),
        len(months),
        t,
        plan,
        st,
        cur,
        fee,
        int(cfg["window_months"]),
    )
    found = search(ev_margin, box_of(ev_margin.units, t.contract_minimum_kw, free))
    ev = Evaluator(units, len(months), t, plan, st, cur, fee, int(cfg["window_months"]))
    both = np.stack([cur, found.contracts])
    cost, _ = ev.cost(both)
    raise_ntd = float(ev.raise_cost(both)[1])
    rec = {k: float(v) for k, v in zip(plan.contracts, found.contracts, strict=True) if v}
    years = len(months) / 12
    rec_bills = _bills(site, st, months, plan_id, rec, t)
    over = tuple(mo.label for mo, b in zip(months, rec_bills, strict=True) if b.over_contract_ntd)
    return PlanResult(
        plan=plan_id,
        current_kw={k: v for k, v in current.items() if v},
        recommended_kw=rec,
        current_annual_ntd=float(cost[0]) / years,
        recommended_annual_ntd=float(cost[1]) / years,
        raise_cost_ntd=raise_ntd,
        annual_saving_ntd=float(cost[0] - cost[1]) / years,
        months_over=over,
        bills_total_ntd=sum(b.total_ntd for b in rec_bills) + raise_ntd,
        current_bills_total_ntd=sum(b.total_ntd for b in bills),
        pairs=found.pairs,
        pairs_searched=found.pairs_searched,
        candidates=found.candidates,
    )


def advise(
    config: Config,
    influx: InfluxClient,
    site: Site,
    end: tuple[int, int],
    n_months: int = 12,
    margin_pct: float = 0.0,
    records: RecordStore | None = None,
    tariffs: Tariffs | None = None,
    months: Sequence[Month] | None = None,
) -> ContractAdvice:
    """The recommendation for ``site`` over the ``n_months`` billing months up to ``end``
    (y, m).  ``NoTariff`` (no tariff configured or no edition for a day), ``TooFewMonths``."""
    st = site_tariff(site)
    t = tariffs or load_tariffs()
    if margin_pct < 0 or margin_pct > 100:
        raise ValueError(f"margin {margin_pct} % is outside 0..100")
    months = (
        list(months)
        if months is not None
        else load_months(config, influx, site, end, n_months, records)
    )
    mine = optimise_plan(site, st, months, st.plan, t, margin_pct)
    other_id = next(p for p in t.plans if p != st.plan)
    other = optimise_plan(site, st, months, other_id, t, margin_pct)
    cheaper = st.plan if mine.bills_total_ntd <= other.bills_total_ntd else other_id
    notes = [
        f"raising again within {t.raise_within_2_years['window_months']} months of a cut: "
        f"{t.raise_within_2_years['ntd_per_kw_month_since_cut']} NT$/kW-month since the cut "
        f"(confidence {t.raise_within_2_years['confidence']}; TARIFFS.md §5)",
        "search range: regular 0.8 x min .. 1.5 x max monthly demand, total "
        f">= {t.contract_minimum_kw:g} kW (TARIFFS.md §5)",
    ]
    if margin_pct:
        notes.append(
            f"chosen on demand x {1 + margin_pct / 100:g}; saving and months over on the "
            "actual demand"
        )
    return ContractAdvice(
        site=site.id,
        months=tuple(mo.label for mo in months),
        margin_pct=margin_pct,
        plan=st.plan,
        raise_fee_ntd_per_kw_month=float(t.raise_within_2_years["ntd_per_kw_month_since_cut"]),
        confidence="L" if mine.raise_cost_ntd else "M",
        current=mine,
        other=other,
        cheaper_plan=cheaper,
        notes=tuple(notes),
    )


def last_complete_month(today: date) -> tuple[int, int]:
    y, m = today.year, today.month - 1
    return (y - 1, 12) if m == 0 else (y, m)


# ---------------------------------------------------------------------- output

_L = {
    "title": ("契約容量建議", "Contract capacity"),
    "months": ("分析月份", "months"),
    "margin": ("安全裕度", "safety margin"),
    "plan": ("電價", "plan"),
    "current": ("現行契約", "current contract"),
    "recommended": ("建議契約", "recommended"),
    "annual": ("每年基本及超約電費", "basic + over-contract per year"),
    "saving": ("每年節省", "annual saving"),
    "raise": ("兩年內再增加容量之費用", "cost of raising again within 2 years"),
    "over": ("建議契約下超約月份", "months over contract at the recommendation"),
    "none": ("無", "none"),
    "compare": (
        "二段式與三段式比較（全部電費，各自最佳契約）",
        "two- vs three-stage (whole bills, each at its optimum)",
    ),
    "now": ("現行", "now"),
    "cheaper": ("較便宜", "cheaper"),
    "searched": ("搜尋", "searched"),
}


def _t(key: str, lang: str) -> str:
    zh, en = _L[key]
    return zh if lang == "zh-TW" else en


def _kw(contracts: Mapping[str, float], plan: Plan, lang: str) -> str:
    from foursave.rules.tariff import CONTRACT_NAMES

    parts = []
    for k in plan.contracts:
        kw = contracts.get(k, 0.0)
        if kw:
            zh, en = CONTRACT_NAMES[k]
            parts.append(f"{zh if lang == 'zh-TW' else en} {kw:,.0f} kW")
    return ", ".join(parts) or "0 kW"


def advice_text(a: ContractAdvice, lang: str = "en") -> str:
    t = load_tariffs()
    plan = t.plan(a.plan)
    r = a.current
    name = plan.name_zh if lang == "zh-TW" else plan.name_en
    out = [
        f"{_t('title', lang)}: {a.site} ({name})",
        f"  {_t('months', lang)}: {a.months[0]} .. {a.months[-1]} ({len(a.months)})",
        f"  {_t('margin', lang)}: {a.margin_pct:g} %",
        f"  {_t('current', lang)}: {_kw(r.current_kw, plan, lang)}",
        f"  {_t('recommended', lang)}: {_kw(r.recommended_kw, plan, lang)}",
        f"  {_t('annual', lang)}: NT$ {r.current_annual_ntd:,.0f} -> "
        f"NT$ {r.recommended_annual_ntd:,.0f}",
        f"  {_t('saving', lang)}: NT$ {r.annual_saving_ntd:,.0f}",
        f"  {_t('raise', lang)}: NT$ {r.raise_cost_ntd:,.0f}",
        f"  {_t('over', lang)}: {', '.join(r.months_over) or _t('none', lang)}",
        f"  {_t('searched', lang)}: {r.candidates:,} candidates "
        f"({r.pairs_searched:,} of {r.pairs:,} regular/second-type pairs)",
    ]
    if a.other is not None:
        out.append(f"{_t('compare', lang)}:")
        for x in (a.current, a.other):
            p = t.plan(x.plan)
            mark = f"  <- {_t('cheaper', lang)}" if x.plan == a.cheaper_plan else ""
            out.append(
                f"  {p.name_zh if lang == 'zh-TW' else p.name_en}: "
                f"NT$ {x.bills_total_ntd:,.0f} ({_kw(x.recommended_kw, p, lang)}); "
                f"{_t('now', lang)} NT$ {x.current_bills_total_ntd:,.0f}{mark}"
            )
    for n in a.notes:
        out.append(f"note: {n}")
    return "\n".join(out)


def advice_dict(a: ContractAdvice) -> dict:
    from dataclasses import asdict

    return asdict(a)
