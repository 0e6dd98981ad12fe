"""Taipower high-voltage time-of-use tariffs as dated data, and the monthly bill they give.

The facts (prices per edition, the summer season, the time windows, the off-peak days, the
contract stacking and the bill's formulas) are in ``rules/data/tariffs.yaml`` with their
sources and confidence, from ``../shared/TARIFFS.md``.  This module only applies them:

- ``load_tariffs()``: the editions; ``Tariffs.edition_on(day)`` raises ``NoTariff`` for a
  day no edition covers ("no tariff for this date": nothing is guessed).
- ``Edition.period_at(plan, local time)``: the TOU period of a moment.
- ``compute_bill(...)``: the bill of a billing period from 15-minute block energies
  (TARIFFS.md §4): basic charge with contract stacking, energy by period, over-contract
  per period with no kW counted twice, the power-factor adjustment, the industry
  coefficient.  Pure: the InfluxDB side is ``rules/bill.py``.

A billing period that crosses a season boundary (5/16, 10/16) or two editions is billed in
segments: energy block by block at its own day's prices; basic and over-contract charges
per segment, each as a month of its season weighted by the segment's share of the
period's days.  Taipower's own rule for such periods was NOT FOUND (TARIFFS.md §4.13, L).
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import yaml

from foursave.core.config import SiteTariff
from foursave.core.periods import ZoneLike, local_datetime, zone
from foursave.rules import formulas

DATA = Path(__file__).parent / "data" / "tariffs.yaml"
BLOCK_MS = 900_000
BLOCKS_PER_DAY = 96

PERIOD_NAMES = {
    "peak": ("尖峰", "peak"),
    "semi_peak": ("半尖峰", "semi-peak"),
    "sat_semi_peak": ("週六半尖峰", "Saturday semi-peak"),
    "off_peak": ("離峰", "off-peak"),
}
CONTRACT_NAMES = {
    "regular": ("經常契約", "regular"),
    "semi_peak": ("半尖峰契約", "semi-peak"),
    "non_summer": ("非夏月契約", "non-summer"),
    "saturday": ("週六半尖峰契約", "Saturday semi-peak"),
    "off_peak": ("離峰契約", "off-peak"),
}


class NoTariff(LookupError):
    """No tariff edition on record covers a day: the bill cannot be computed."""


class TariffDataError(ValueError):
    """rules/data/tariffs.yaml is inconsistent (a developer's mistake, named)."""


def _date(v: Any) -> date:
    return v if isinstance(v, date) else date.fromisoformat(str(v))


def _md(s: str) -> tuple[int, int]:
    m, d = s.split("-")
    return int(m), int(d)


def _minutes(s: str) -> int:
    h, m = s.split(":")
    return int(h) * 60 + int(m)


# ---------------------------------------------------------------------- off-peak days


def _lunar(found: tuple[date | None, bool]) -> date:
    """A date from the holidays package's Chinese lunisolar calendar (estimated: False)."""
    day, _ = found
    if day is None:
        raise TariffDataError("the lunisolar calendar has no date for that year")
    return day


@dataclass(frozen=True, eq=False)
class OffPeakDays:
    """Taipower's 離峰日 list of an edition (not the government holiday calendar)."""

    id: str
    source: str
    fixed: tuple[tuple[int, int, str, date | None], ...]  # month, day, name, listed_from
    lunar: tuple[tuple[int, int, str], ...]
    new_year_from_days_before: int
    new_year_through_day: int
    qingming: str | None

    @lru_cache(maxsize=64)  # noqa: B019 - a handful of editions, each kept for the process
    def of_year(self, y: int) -> dict[date, str]:
        from holidays.calendars.chinese import _ChineseLunisolar

        cal = _ChineseLunisolar()
        out: dict[date, str] = {}
        for m, d, name, listed_from in self.fixed:
            day = date(y, m, d)
            if listed_from is None or day >= listed_from:
                out[day] = name
        new_year = _lunar(cal.lunar_new_year_date(y))
        for k in range(-self.new_year_from_days_before, self.new_year_through_day):
            out[new_year + timedelta(days=k)] = "春節"
        for m, d, name in self.lunar:
            if (m, d) == (5, 5):
                day = _lunar(cal.dragon_boat_date(y))
            elif (m, d) == (8, 15):
                day = _lunar(cal.mid_autumn_date(y))
            else:
                raise TariffDataError(f"{self.id}: lunar day {m}/{d} is not supported")
            out[day] = name
        if self.qingming:
            out[_lunar(cal.qingming_date(y))] = self.qingming
        return out

    def name_on(self, d: date) -> str | None:
        return self.of_year(d.year).get(d)


# ---------------------------------------------------------------------- plans, editions


@dataclass(frozen=True)
class PeriodRule:
    name: str
    covered_by: tuple[str, ...]
    covered_by_non_summer: tuple[str, ...]
    basic_price_of: str


@dataclass(frozen=True)
class Plan:
    id: str
    name_zh: str
    name_en: str
    contracts: tuple[str, ...]
    periods: tuple[PeriodRule, ...]  # in the order over-contract kW are counted
    basic_full: tuple[str, ...]
    basic_discounted: tuple[str, ...]

    def period(self, name: str) -> PeriodRule:
        return next(p for p in self.periods if p.name == name)

    def covered_kw(self, period: str, contracts: Mapping[str, float], summer: bool) -> float:
        rule = self.period(period)
        types = rule.covered_by if summer else rule.covered_by_non_summer
        return sum(contracts.get(c, 0.0) for c in types)


Window = tuple[str, int, int]  # period, start minute, end minute (local, [start, end))


@dataclass(frozen=True, eq=False)
class Edition:
    id: str
    valid_from: date
    valid_to: date | None  # inclusive; None: open
    source: str
    confidence: str
    note: str | None
    summer_start: tuple[int, int]
    summer_end: tuple[int, int]  # inclusive
    windows_id: str
    windows: Mapping[str, Mapping[str, Mapping[str, tuple[Window, ...]]]]
    off_peak: OffPeakDays
    basic: Mapping[str, Mapping[str, tuple[float | None, float | None]]]
    energy: Mapping[str, Mapping[str, tuple[float | None, float | None]]]

    def covers(self, d: date) -> bool:
        return self.valid_from <= d and (self.valid_to is None or d <= self.valid_to)

    def is_summer(self, d: date) -> bool:
        return self.summer_start <= (d.month, d.day) <= self.summer_end

    def day_kind(self, d: date) -> str:
        """weekday, saturday or off_peak (Sunday, or an off-peak day of the list)."""
        if d.weekday() == 6 or self.off_peak.name_on(d):
            return "off_peak"
        return "saturday" if d.weekday() == 5 else "weekday"

    def basic_price(self, plan: str, contract: str, summer: bool) -> float | None:
        pair = self.basic[plan][contract]
        return pair[0] if summer else pair[1]

    def energy_price(self, plan: str, period: str, summer: bool) -> float:
        pair = self.energy[plan].get(period)
        price = None if pair is None else (pair[0] if summer else pair[1])
        if price is None:
            raise TariffDataError(f"{self.id}: {plan} has no {period} price in that season")
        return price

    @lru_cache(maxsize=4096)  # noqa: B019 - editions live for the process
    def day_periods(self, plan: str, d: date) -> tuple[str, ...]:
        """The TOU period of each 15-minute block of local day ``d`` (by wall time)."""
        kind = self.day_kind(d)
        out = ["off_peak"] * BLOCKS_PER_DAY
        if kind != "off_peak":
            season = "summer" if self.is_summer(d) else "non_summer"
            for period, a, b in self.windows[plan][season][kind]:
                for k in range(a // 15, b // 15):
                    out[k] = period
        return tuple(out)

    def period_at(self, plan: str, t: datetime) -> str:
        """The TOU period at local wall time ``t``."""
        return self.day_periods(plan, t.date())[(t.hour * 60 + t.minute) // 15]


@dataclass(frozen=True)
class Industry:
    code: str
    name: str
    periods: tuple[tuple[date, float, str], ...]  # from, value, confidence


@dataclass(frozen=True, eq=False)
class Tariffs:
    version: str
    editions: tuple[Edition, ...]
    plans: Mapping[str, Plan]
    industries: Mapping[str, Industry]
    industry_source: str
    over_contract: Mapping[str, Any]
    power_factor: Mapping[str, Any]
    no_use_basic_share: float
    contract_minimum_kw: float
    contract_step_kw: float
    raise_within_2_years: Mapping[str, Any]
    path: str = ""

    def edition_on(self, d: date) -> Edition:
        for e in self.editions:
            if e.covers(d):
                return e
        known = ", ".join(
            f"{e.valid_from}..{e.valid_to or 'open'}"
            for e in sorted(self.editions, key=lambda e: e.valid_from)
        )
        raise NoTariff(
            f"no tariff for {d}: no edition in {self.path or 'the tariff file'} covers it "
            f"(editions: {known}); add the Taipower table in force then"
        )

    def coefficient(self, industry: str, d: date) -> tuple[float, str]:
        ind = self.industries.get(industry)
        if ind is None:
            raise NoTariff(f"no price coefficient for industry {industry!r}")
        valid = [p for p in ind.periods if p[0] <= d]
        if not valid:
            raise NoTariff(f"industry {industry!r} has no coefficient in force on {d}")
        _, value, conf = max(valid)
        return value, conf

    def plan(self, name: str) -> Plan:
        try:
            return self.plans[name]
        except KeyError:
            raise NoTariff(f"unknown plan {name!r}; plans: {sorted(self.plans)}") from None


def _pairs(d: Mapping[str, list]) -> dict[str, tuple[float | None, float | None]]:
    return {k: (v[0], v[1]) for k, v in d.items()}


@cache
def load_tariffs(path: str | None = None) -> Tariffs:
    p = Path(path or DATA)
    raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    windows = {
        wid: {
            plan: {
                season: {
                    kind: tuple((w[0], _minutes(w[1]), _minutes(w[2])) for w in ws)
                    for kind, ws in by_kind.items()
                }
                for season, by_kind in by_season.items()
            }
            for plan, by_season in spec.items()
            if plan not in ("source", "confidence")
        }
        for wid, spec in raw["window_sets"].items()
    }
    off_sets = {}
    for oid, spec in raw["off_peak_day_sets"].items():
        ny = spec["lunar_new_year"]
        off_sets[oid] = OffPeakDays(
            oid,
            spec["source"],
            tuple(
                (*_md(f["day"]), f["name"], _date(f["listed_from"]) if "listed_from" in f else None)
                for f in spec["fixed"]
            ),
            tuple((x["month"], x["day"], x["name"]) for x in spec.get("lunar", ())),
            int(ny["from_days_before"]),
            int(ny["through_day"]),
            (spec.get("qingming") or {}).get("name"),
        )
    editions = tuple(
        Edition(
            e["id"],
            _date(e["valid_from"]),
            _date(e["valid_to"]) if e.get("valid_to") else None,
            " ".join(str(e["source"]).split()),
            e["confidence"],
            e.get("note"),
            _md(e["summer"]["start"]),
            _md(e["summer"]["end"]),
            e["windows"],
            windows[e["windows"]],
            off_sets[e["off_peak_days"]],
            {plan: _pairs(v["basic_ntd_per_kw_month"]) for plan, v in e["plans"].items()},
            {plan: _pairs(v["energy_ntd_per_kwh"]) for plan, v in e["plans"].items()},
        )
        for e in raw["editions"]
    )
    plans = {}
    for pid, spec in raw["plans"].items():
        rules = tuple(
            PeriodRule(
                name,
                tuple(r["covered_by"]),
                tuple(r.get("covered_by_non_summer", r["covered_by"])),
                r["basic_price_of"],
            )
            for name, r in spec["periods"].items()
        )
        plans[pid] = Plan(
            pid,
            spec["name"]["zh-TW"],
            spec["name"]["en"],
            tuple(spec["contracts"]),
            rules,
            tuple(spec["basic"]["full"]),
            tuple(spec["basic"]["discounted"]),
        )
    industries = {
        str(code): Industry(
            str(code),
            spec["name"],
            tuple((_date(x["from"]), float(x["value"]), x["confidence"]) for x in spec["periods"]),
        )
        for code, spec in raw["industry_coefficients"].items()
    }
    t = Tariffs(
        str(raw["version"]),
        editions,
        plans,
        industries,
        raw["industry_coefficient_source"],
        raw["over_contract"],
        raw["power_factor"],
        float(raw["no_use_basic_share"]["value"]),
        float(raw["contract_minimum_kw"]["value"]),
        float(raw["contract_step_kw"]["value"]),
        raw["raise_within_2_years"],
        str(p),
    )
    _check_data(t)
    return t


def _check_data(t: Tariffs) -> None:
    ordered = sorted(t.editions, key=lambda e: e.valid_from)
    for a, b in itertools.pairwise(ordered):
        if a.valid_to is None or a.valid_to >= b.valid_from:
            raise TariffDataError(f"editions {a.id} and {b.id} overlap")
    for e in t.editions:
        for pid, plan in t.plans.items():
            if set(e.basic[pid]) != set(plan.contracts):
                raise TariffDataError(f"{e.id} {pid}: basic prices are not per {plan.contracts}")
            missing = {p.name for p in plan.periods} - set(e.energy[pid])
            if missing:
                raise TariffDataError(f"{e.id} {pid}: no energy price for {sorted(missing)}")


def check_site_tariff(st: SiteTariff, tariffs: Tariffs | None = None) -> list[tuple[tuple, str]]:
    """What is wrong with a site's ``tariff`` against the tariff file (for check-config)."""
    t = tariffs or load_tariffs()
    problems: list[tuple[tuple, str]] = []
    if st.plan not in t.plans:
        return [(("plan",), f"unknown plan {st.plan!r}; plans: {sorted(t.plans)}")]
    plan = t.plans[st.plan]
    unknown = sorted(set(st.contracts_kw) - set(plan.contracts))
    if unknown:
        problems.append(
            (
                ("contracts_kw",),
                f"{unknown} not contract types of {st.plan}; it has {list(plan.contracts)}",
            )
        )
    if "regular" not in st.contracts_kw:
        problems.append((("contracts_kw",), "needs the 'regular' (經常) contract"))
    total = sum(st.contracts_kw.values())
    if total < t.contract_minimum_kw:
        problems.append(
            (
                ("contracts_kw",),
                f"{total:g} kW in total is under the {t.contract_minimum_kw:g} kW minimum of "
                f"a high-voltage TOU contract (Taipower 電價表 ch.8)",
            )
        )
    if st.industry not in t.industries:
        problems.append(
            (
                ("industry",),
                f"unknown industry code {st.industry!r}; the tariff file knows "
                f"{sorted(t.industries)}",
            )
        )
    return problems


# ---------------------------------------------------------------------- the bill


@dataclass(frozen=True)
class Excess:
    """One period's over-contract kW (TARIFFS.md §4.4-4.5)."""

    period: str
    max_demand_kw: float
    covered_kw: float
    excess_kw: float  # charged here, after the larger excesses of earlier periods
    within_kw: float  # at x2
    above_kw: float  # at x3
    price_ntd_per_kw: float
    ntd: float


@dataclass(frozen=True)
class BasicPart:
    label: str  # a contract type, or "saturday_off_peak" for the shared part
    kw: float
    price_ntd_per_kw: float
    ntd: float


@dataclass(frozen=True)
class Segment:
    """Days of one billing period under one edition and season."""

    edition: str
    summer: bool
    first: date
    last: date
    days: int
    share: float  # of the billing period's days
    energy_kwh: dict[str, float]
    energy_ntd_by_period: dict[str, float]
    max_demand_kw: dict[str, float]
    basic: tuple[BasicPart, ...]
    basic_ntd: float  # x share (and x the no-use share)
    excesses: tuple[Excess, ...]
    over_contract_ntd: float  # x share


@dataclass(frozen=True)
class Bill:
    site: str
    plan: str
    start: date
    end: date  # exclusive
    contracts_kw: dict[str, float]
    industry: str
    segments: tuple[Segment, ...]
    energy_kwh: dict[str, float]
    max_demand_kw: dict[str, float]
    basic_ntd: float
    energy_ntd: float
    over_contract_ntd: float
    power_factor: float | None
    power_factor_source: str
    pf_adjust_share: float  # + surcharge, - discount
    pf_adjust_base: str
    pf_adjust_ntd: float
    coefficient: float
    total_ntd: float
    completeness: float  # share of the period's 15-minute blocks (so far) with an energy
    blocks_expected: int
    blocks_measured: int
    unallocated_kwh: float  # energy over gaps (counter known), spread over the gap's blocks
    no_use: bool
    tariffs: tuple[str, ...]
    confidence: str
    notes: tuple[str, ...] = field(default=())
    provisional: bool = False  # the period is still open: a bill to date

    @property
    def days(self) -> int:
        return (self.end - self.start).days

    @property
    def total_kwh(self) -> float:
        return sum(self.energy_kwh.values())

    @property
    def tariff_tag(self) -> str:
        return "+".join(self.tariffs)


@dataclass(frozen=True)
class Gap:
    """Energy a counter measured across blocks with no reading of their own."""

    start_ms: int  # first block without its own energy
    end_ms: int  # end of the last such block
    kwh: float


def basic_parts(
    edition: Edition, plan: Plan, contracts: Mapping[str, float], summer: bool
) -> list[BasicPart]:
    """基本電費 of a month (TARIFFS.md §4.2): the full contracts at their prices, plus the
    Saturday/off-peak price on what the discounted contracts exceed half of the full ones."""
    parts = []
    for c in plan.basic_full:
        price = edition.basic_price(plan.id, c, summer)
        kw = contracts.get(c, 0.0)
        if price is None or kw == 0:
            continue
        parts.append(BasicPart(c, kw, price, price * kw))
    disc_kw = sum(contracts.get(c, 0.0) for c in plan.basic_discounted)
    full_kw = sum(contracts.get(c, 0.0) for c in plan.basic_full)
    billed = max(0.0, disc_kw - 0.5 * full_kw)
    if billed > 0:
        prices = {edition.basic_price(plan.id, c, summer) for c in plan.basic_discounted}
        if len(prices) != 1 or None in prices:
            raise TariffDataError(f"{edition.id}: {plan.basic_discounted} prices differ")
        (price,) = prices
        assert price is not None
        parts.append(BasicPart("saturday_off_peak", billed, price, price * billed))
    return parts


def excesses(
    t: Tariffs,
    edition: Edition,
    plan: Plan,
    contracts: Mapping[str, float],
    summer: bool,
    max_kw: Mapping[str, float],
    price_of: str = "contract_type",
    base_of: str = "stacked",
) -> list[Excess]:
    """Over-contract per period (TARIFFS.md §4.4-4.5): each period's excess over the
    capacity stacked for it, less the largest excess of the periods before it, so that no
    kW is charged twice; up to 10 % of the base capacity at x2, beyond at x3."""
    oc = t.over_contract
    out = []
    largest = 0.0
    for rule in plan.periods:
        if rule.name not in max_kw:
            continue
        covered = plan.covered_kw(rule.name, contracts, summer)
        raw = max(0.0, max_kw[rule.name] - covered)
        charged = max(0.0, raw - largest)
        largest = max(largest, raw)
        if price_of == "regular":
            price = edition.basic_price(plan.id, "regular", summer)
        else:
            price = edition.basic_price(plan.id, rule.basic_price_of, summer)
        if price is None:
            raise TariffDataError(f"{edition.id}: no basic price for {rule.basic_price_of}")
        base = covered if base_of == "stacked" else contracts.get("regular", 0.0)
        within = min(charged, float(oc["within_share"]) * base)
        above = charged - within
        ntd = price * (
            float(oc["within_multiplier"]) * within + float(oc["above_multiplier"]) * above
        )
        out.append(
            Excess(rule.name, max_kw[rule.name], covered, charged, within, above, price, ntd)
        )
    return out


def compute_bill(
    site: str,
    st: SiteTariff,
    start: date,
    end: date,
    tz: ZoneLike,
    blocks_kwh: Mapping[int, float],
    *,
    gaps: Iterable[Gap] = (),
    power_factor: float | None = None,
    power_factor_source: str = "not measured",
    plan: str | None = None,
    contracts_kw: Mapping[str, float] | None = None,
    tariffs: Tariffs | None = None,
    now_ms: int | None = None,
) -> Bill:
    """The bill of local days [start, end) from 15-minute block energies
    (block start [epoch ms] -> kWh; demand = kWh / 0.25 h).  ``plan`` and ``contracts_kw``
    override the site's (for comparing plans and contract sets).  With ``now_ms`` inside
    the period the bill is provisional: its completeness counts the blocks until then.
    ``NoTariff`` when a day has no edition."""
    t = tariffs or load_tariffs()
    tzi = zone(tz)
    plan_id = plan or st.plan
    p = t.plan(plan_id)
    contracts = dict(contracts_kw if contracts_kw is not None else st.contracts_kw)
    period_days = (end - start).days
    if period_days <= 0:
        raise ValueError(f"empty billing period {start}..{end}")
    # segments: runs of days with one edition and one season
    day_seg: dict[date, tuple[str, bool]] = {}
    editions: dict[str, Edition] = {}
    missing: list[date] = []
    d = start
    while d < end:
        try:
            e = t.edition_on(d)
        except NoTariff:
            missing.append(d)
        else:
            editions[e.id] = e
            day_seg[d] = (e.id, e.is_summer(d))
        d += timedelta(days=1)
    if missing:
        first, last = missing[0], missing[-1]
        span = str(first) if first == last else f"{first}..{last}"
        raise NoTariff(
            f"no tariff for {span} ({len(missing)} of the {period_days} days of "
            f"{start}..{end - timedelta(days=1)}): no edition in the tariff file covers "
            f"{'it' if first == last else 'them'}; nothing is billed rather than guessed"
        )
    # energy and demand per block, with gap energy spread over its blocks (not demand)
    energy: dict[int, float] = {}
    lo = int(datetime(start.year, start.month, start.day, tzinfo=tzi).timestamp() * 1000)
    hi = int(datetime(end.year, end.month, end.day, tzinfo=tzi).timestamp() * 1000)
    provisional = now_ms is not None and now_ms < hi
    if provisional:
        assert now_ms is not None
        expected = max(0, (max(now_ms, lo) - lo) // BLOCK_MS)
    else:
        expected = (hi - lo) // BLOCK_MS
    measured = 0
    for ms, kwh in blocks_kwh.items():
        if lo <= ms < hi:
            energy[ms] = energy.get(ms, 0.0) + kwh
            measured += 1
    demand = dict(energy)
    unallocated = 0.0
    for g in gaps:
        inside = [ms for ms in range(g.start_ms, g.end_ms, BLOCK_MS)]
        if not inside:
            continue
        each = g.kwh / len(inside)
        for ms in inside:
            if lo <= ms < hi:
                energy[ms] = energy.get(ms, 0.0) + each
                unallocated += each
    seg_energy: dict[tuple[str, bool], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    seg_ntd: dict[tuple[str, bool], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    seg_max: dict[tuple[str, bool], dict[str, float]] = defaultdict(dict)
    for ms, kwh in energy.items():
        lt = local_datetime(ms, tzi)
        key = day_seg[lt.date()]
        e = editions[key[0]]
        period = e.period_at(plan_id, lt)
        seg_energy[key][period] += kwh
        seg_ntd[key][period] += kwh * e.energy_price(plan_id, period, key[1])
        if ms in demand:
            kw = formulas.block_demand_kw(demand[ms])
            mx = seg_max[key]
            mx[period] = max(mx.get(period, 0.0), kw)
    total_kwh = sum(sum(v.values()) for v in seg_energy.values())
    all_max = [kw for v in seg_max.values() for kw in v.values()]
    no_use = measured > 0 and total_kwh == 0 and max(all_max, default=0.0) == 0
    segments = []
    runs: list[tuple[tuple[str, bool], date, date]] = []
    for day in sorted(day_seg):
        key = day_seg[day]
        if runs and runs[-1][0] == key and runs[-1][2] + timedelta(days=1) == day:
            runs[-1] = (key, runs[-1][1], day)
        else:
            runs.append((key, day, day))
    merged: dict[tuple[str, bool], list[tuple[date, date]]] = defaultdict(list)
    for key, a, b in runs:
        merged[key].append((a, b))
    for key, spans in merged.items():
        e = editions[key[0]]
        summer = key[1]
        days = sum((b - a).days + 1 for a, b in spans)
        share = days / period_days
        parts = basic_parts(e, p, contracts, summer)
        basic = sum(x.ntd for x in parts) * share
        if no_use:
            basic *= t.no_use_basic_share
        exc = excesses(
            t, e, p, contracts, summer, seg_max[key], st.over_contract_price, st.over_contract_base
        )
        segments.append(
            Segment(
                e.id,
                summer,
                spans[0][0],
                spans[-1][1],
                days,
                share,
                dict(seg_energy[key]),
                dict(seg_ntd[key]),
                dict(seg_max[key]),
                tuple(parts),
                basic,
                tuple(exc),
                sum(x.ntd for x in exc) * share,
            )
        )
    segments.sort(key=lambda s: s.first)
    energy_by: dict[str, float] = defaultdict(float)
    max_by: dict[str, float] = {}
    for s in segments:
        for k, v in s.energy_kwh.items():
            energy_by[k] += v
        for k, v in s.max_demand_kw.items():
            max_by[k] = max(max_by.get(k, 0.0), v)
    basic_ntd = sum(s.basic_ntd for s in segments)
    energy_ntd = sum(sum(s.energy_ntd_by_period.values()) for s in segments)
    oc_ntd = sum(s.over_contract_ntd for s in segments)
    pf_cfg = t.power_factor
    pf_share = 0.0
    if power_factor is not None:
        pf_share = formulas.power_factor_adjustment(
            power_factor,
            float(pf_cfg["base_pct"]) / 100,
            float(pf_cfg["step_pct_per_pct"]) / 100,
            float(pf_cfg["credit_up_to_pct"]) / 100,
        )
    pf_base = {
        "basic_energy": basic_ntd + energy_ntd,
        "basic": basic_ntd,
        "total": basic_ntd + energy_ntd + oc_ntd,
    }[st.power_factor_applies_to]
    pf_ntd = pf_base * pf_share
    coefficient, coef_conf = t.coefficient(st.industry, start)
    total = (basic_ntd + energy_ntd + oc_ntd + pf_ntd) * coefficient
    confs = {e.confidence for e in editions.values()} | {coef_conf}
    notes = []
    for e in editions.values():
        if e.note:
            notes.append(f"{e.id}: {e.note}")
    if len(segments) > 1:
        notes.append(
            "the period crosses a season or edition boundary: energy is priced block by "
            "block; basic and over-contract charges per part, weighted by its days "
            "(Taipower's rule for this was NOT FOUND, TARIFFS.md §4.13)"
        )
    if unallocated:
        notes.append(
            f"{unallocated:,.1f} kWh measured by the counters across data gaps, spread "
            "evenly over the gaps' 15-minute blocks for pricing; the gaps' demand is unknown"
        )
    return Bill(
        site=site,
        plan=plan_id,
        start=start,
        end=end,
        contracts_kw=contracts,
        industry=st.industry,
        segments=tuple(segments),
        energy_kwh=dict(energy_by),
        max_demand_kw=max_by,
        basic_ntd=basic_ntd,
        energy_ntd=energy_ntd,
        over_contract_ntd=oc_ntd,
        power_factor=power_factor,
        power_factor_source=power_factor_source,
        pf_adjust_share=pf_share,
        pf_adjust_base=st.power_factor_applies_to,
        pf_adjust_ntd=pf_ntd,
        coefficient=coefficient,
        total_ntd=total,
        completeness=min(1.0, measured / expected) if expected else 0.0,
        blocks_expected=expected,
        blocks_measured=measured,
        unallocated_kwh=unallocated,
        no_use=no_use,
        tariffs=tuple(sorted(editions, key=lambda i: editions[i].valid_from)),
        confidence=max(confs, key="HML".index),
        notes=tuple(notes),
        provisional=provisional,
    )
