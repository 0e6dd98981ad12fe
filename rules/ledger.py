"""The four-saving ledger: electricity, water, fuel and paper per site and period,
against baseline and target, with CO2e, adjustments, data completeness and the method
version, so a past committee report can be reproduced exactly.

This module orchestrates; the parts are kept where they are owned:

* ``rules/rollup.py``: each counter device's quantity per local day, from InfluxDB
  through the ``counter_daily`` rollup (:func:`daily_quantities`, rebuilds);
* ``rules/items.py``: the catalogue of items (order, units, kind of target) and each
  item's computation, against the :class:`Ledger` as its ``Sources``;
* ``rules/targets.py``: baselines, the target formula and the verdict;
* ``rules/normalise.py``: weather (CDD) normalisation of electricity;
* ``rules/rows.py``: :class:`LedgerRow`.

Here: the :class:`Ledger` (loading a range of days once, the per-period totals over a
site's devices, adjustments, judging) and the rows' serialisation, the ``ledger`` and
``ledger_daily`` measurements (:func:`ledger_lines`, :meth:`Ledger.daily_lines`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Set
from datetime import date, timedelta

from foursave.core.clock import Clock, SystemClock
from foursave.core.config import Config, Site
from foursave.core.influx import InfluxClient
from foursave.core.periods import (
    Period,
    ZoneLike,
    day_period,
    day_start_ms,
    parse_period,
)
from foursave.core.periods import zone as zone_of
from foursave.core.reading import to_line
from foursave.rules import items, normalise, targets
from foursave.rules.factors import load_factors
from foursave.rules.items import ITEMS
from foursave.rules.notes import Note
from foursave.rules.realbill import BillCheck, bill_checks
from foursave.rules.records import RecordStore
from foursave.rules.rollup import (
    DeviceDays,
    daily_quantities,
    site_daily_means,
)
from foursave.rules.rows import METHOD_VERSION, LedgerRow


class Ledger:
    """Computes ledger rows for a configuration from InfluxDB and the record store."""

    def __init__(
        self,
        config: Config,
        influx: InfluxClient,
        records: RecordStore,
        clock: Clock | None = None,
    ):
        self.config = config
        self.influx = influx
        self.records = records
        self.clock = clock or SystemClock()  # "today": which days may still change
        self.factors = load_factors()
        self._days: dict[tuple[str, str], DeviceDays] = {}
        self._loaded: tuple[date, date] | None = None
        self._temps: dict[str, dict[date, float]] = {}

    def load(self, start: date, end: date) -> None:
        """Fetch the daily quantities once for every period computed afterwards."""
        self._days = daily_quantities(self.influx, self.config, start, end, clock=self.clock)
        self._loaded = (start, end)
        # daily mean outdoor temperatures (weather normalisation), through the rollup too
        self._temps = {
            s.id: site_daily_means(
                self.influx, s.id, s.timezone, "weather", "ambient_temp_c", start, end, self.clock
            )
            for s in self.config.sites
        }

    # ------------------------------------------------------------------ rows
    def rows(self, periods: list[Period]) -> list[LedgerRow]:
        """Every site's row of every item (in catalogue order) for each period."""
        out = []
        for site in self.config.sites:
            for p in periods:
                for it in ITEMS:
                    out.append(items.compute(self, it.name, site, p))
        return out

    # named shortcuts to items.compute / items.quantity (an item needs none of its own)
    def electricity(self, site: Site, p: Period) -> LedgerRow:
        return items.compute(self, "electricity", site, p)

    def water(self, site: Site, p: Period) -> LedgerRow:
        return items.compute(self, "water", site, p)

    def fuel(self, site: Site, p: Period) -> LedgerRow:
        return items.compute(self, "fuel", site, p)

    def paper(self, site: Site, p: Period) -> LedgerRow:
        return items.compute(self, "paper", site, p)

    def electricity_raw(self, site: Site, p: Period) -> float | None:
        return items.quantity(self, "electricity", site, p)

    # ------------------------------------------------------------------ items.Sources
    def quantity(self, site: Site, p: Period, item: str) -> float | None:
        """The item's actual for another period (baselines), without judging it: meter
        data when loaded for that period, otherwise the records (bills)."""
        return items.quantity(self, item, site, p)

    def metered(
        self,
        site: Site,
        p: Period,
        fname: str,
        roles: Set[str] | None = None,
        kinds: Set[str] | None = None,
    ) -> tuple[float | None, float | None, list[Note]]:
        """The site's devices' (of ``roles`` and ``kinds``) total of counter ``fname``
        over ``p``, the share of expected readings (None: no such device) and notes."""
        devices = [
            d
            for d in self.config.devices
            if d.site == site.id
            and (roles is None or d.role in roles)
            and (kinds is None or d.kind in kinds)
        ]
        total, seen = 0.0, False
        shares: list[float] = []
        notes: list[Note] = []
        for d in devices:
            dd = self._days.get((d.id, fname))
            day = p.start
            while day < p.end:
                if dd and day in dd.quantity:
                    total += dd.quantity[day]
                    shares.append(dd.completeness[day])
                    seen = True
                else:
                    shares.append(0.0)
                day += timedelta(days=1)
            if dd:
                resets = [r for r in dd.resets if p.start <= r < p.end]
                if resets:
                    notes.append(
                        Note("counter_back", {"device": d.id, "days": [str(r) for r in resets]})
                    )
        if not seen:
            return None, (0.0 if devices else None), notes
        return total, sum(shares) / len(shares), notes

    def adjustments(self, site: Site, p: Period, item: str) -> tuple[float, list[Note]]:
        """The approved adjustments of ``item`` in force over ``p``: their sum and notes."""
        rs = [
            r
            for r in self.records.current(site.id, p.months)
            if r.kind == "adjustment" and r.item == item
        ]
        notes = [
            Note(
                "adjustment",
                {
                    "amount": r.value,
                    "reason": r.reason,
                    "approved_by": r.approved_by,
                    "approved_on": r.approved_on,
                },
            )
            for r in rs
        ]
        return sum(r.value for r in rs), notes

    def months_recorded(self, site: Site, p: Period, needs: list[set[str]]) -> float:
        """Share of ``p``'s months whose records in force include, for each set in
        ``needs``, at least one of its kinds."""
        by_month: dict[str, set[str]] = defaultdict(set)
        for r in self.records.current(site.id, p.months):
            by_month[r.period].add(r.kind)
        months = p.months
        ok = sum(1 for m in months if all(by_month[m] & kinds for kinds in needs))
        return ok / len(months) if months else 0.0

    def weather_normalised(self, site: Site, p: Period, actual: float) -> dict[str, float] | None:
        """Savings against a cooling-degree-day regression of the base year's months
        (``rules/normalise.py``), from the temperatures loaded with the days."""
        return normalise.weather_normalised(
            self._temps.get(site.id, {}),
            site.ledger.base_year,
            p,
            actual,
            lambda bp: self.quantity(site, bp, "electricity"),
        )

    def judge(self, site: Site, p: Period, row: LedgerRow) -> None:
        """Set the row's baseline, target and verdict by the site's target preset."""
        if row.actual is None:
            return
        rule = targets.preset(self.factors, site.ledger.preset)[row.item]
        if items.item(row.item).target == "rate":
            target = targets.rate_target(rule, int(p.label[:4]))
            j = targets.judge_rate(row.actual, target, row.completeness or 0.0)
        else:
            j = targets.judge_reduction(
                rule,
                p,
                site.ledger.base_year,
                row.actual,
                row.completeness,
                lambda q: self.quantity(site, q, row.item),
            )
        row.baseline, row.baseline_rule, row.target_rate = (
            j.baseline,
            j.baseline_rule,
            j.target_rate,
        )
        row.savings_rate, row.met = j.savings_rate, j.met
        row.notes.extend(j.notes)

    # ------------------------------------------------------------------ real bills
    def bill_checks(self, site: Site, p: Period) -> list[BillCheck]:
        """The rebuilt bill against the recorded Taipower bill, per billing period of
        each month of ``p`` that has one (``rules/realbill.py``)."""
        out: list[BillCheck] = []
        for label in p.months:
            out.extend(
                bill_checks(
                    self.config, self.influx, site, int(label[:4]), int(label[5:]), self.records
                )
            )
        return out

    # ------------------------------------------------------------------ daily
    def daily_lines(self, start: date, end: date) -> list[str]:
        """``ledger_daily``: per site and local day, the quantities behind the ledger."""
        lines = []
        for site in self.config.sites:
            zone = zone_of(site.timezone)
            d = start
            while d < end:
                p = day_period(d)
                imp, comp, _ = self.metered(site, p, "import_energy_wh", roles={"main"})
                excl, _, _ = self.metered(
                    site, p, "import_energy_wh", roles=set(site.ledger.exclusions)
                )
                exp_, _, _ = self.metered(site, p, "export_energy_wh", roles={"main"})
                pv, _, _ = self.metered(site, p, "import_energy_wh", roles={"pv"})
                if pv is None:
                    pv, _, _ = self.metered(site, p, "ac_energy_wh", kinds={"inverter"})
                water, wcomp, _ = self.metered(site, p, "volume_m3", kinds={"water"})
                fields: dict[str, float] = {}
                if imp is not None:
                    fields.update(
                        electricity_kwh=(imp - (excl or 0)) / 1000,
                        grid_import_kwh=imp / 1000,
                        grid_export_kwh=(exp_ or 0) / 1000,
                        excluded_kwh=(excl or 0) / 1000,
                        completeness=comp or 0.0,
                    )
                if pv is not None:
                    fields["pv_generation_kwh"] = pv / 1000
                if water is not None:
                    fields.update(water_m3=water, water_completeness=wcomp or 0.0)
                if fields:
                    ts = day_start_ms(d, zone)
                    lines.append(
                        to_line(
                            "ledger_daily", {"site": site.id, "method": METHOD_VERSION}, fields, ts
                        )
                    )
                d += timedelta(days=1)
        return lines


def ledger_lines(rows: list[LedgerRow], tz: ZoneLike) -> list[str]:
    """Ledger rows as the ``ledger`` measurement (time = the period's local start in
    ``tz``, the zone of the rows' site: pass each site's rows with its own zone)."""
    zone = zone_of(tz)
    lines = []
    for r in rows:
        ts = day_start_ms(parse_period(r.period).start, zone)
        fields: dict[str, float | int | bool] = {}
        for k in ("actual", "baseline", "savings_rate", "target_rate", "co2e_kg", "completeness"):
            v = getattr(r, k)
            if v is not None:
                fields[k] = float(v)
        if r.met is not None:
            fields["met"] = r.met
        # the quantity to stay under; not for a zero baseline (nothing to reduce from)
        target = targets.target_quantity(r.baseline, r.target_rate) if r.baseline else None
        if target is not None and items.item(r.item).target == "reduction":
            fields["target"] = float(target)
        fields["adjustments"] = float(r.adjustments)
        fields.update({k: float(v) for k, v in r.details.items()})
        tags = {
            "site": r.site,
            "item": r.item,
            "period": r.period,
            "granularity": "year" if len(r.period) == 4 else "month",
            "method": r.method_version,
        }
        lines.append(to_line("ledger", tags, fields, ts))
    return lines
