"""The four-saving ledger: electricity, water, fuel and paper per site and period,
against baseline and target, with CO2e, adjustments, data completeness and the method
version, so a past committee report can be reproduced exactly.

Aggregation is pushed into InfluxDB: one query per counter field returns each device's
counter at the end of every local day and how many readings it had.  Days become
months and years here.  Counter resets (a day whose end is below the previous day's)
count the energy since the reset and are flagged.

Closed days are kept in the ``counter_daily`` rollup (per device, counter field and
local day: the counter at the day's end and the share of expected readings, plus a
``_scanned`` marker per day that had data), so a second pass reads a few thousand rows
instead of every reading.  After late data for past days (a backfill into the past)
the rollup is rebuilt: :func:`rebuild_rollup`, ``foursave rules --once --rebuild``.

A rebuild cannot DROP or DELETE: InfluxDB 3 serves neither over InfluxQL.  Rewriting
the points in place is not enough either: InfluxDB overwrites a point with the same
measurement, tags and time, but a point the new pass would not write (a day whose
readings were deleted, a device taken out) would stay, and with it the day's
``_scanned`` marker, so the stale value would be read as if closed.  So the rollup is
versioned: every point carries a ``generation`` tag, each rebuild records the next
generation in ``counter_daily_generation`` (one point, field ``generation``), and
reads match only the highest generation recorded (0 before any rebuild).  Points of
earlier generations are never read again; they stay on disk (a few thousand small
points per year of history), and a pass that started before a rebuild writes into
its old generation, where nothing reads.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta, tzinfo

from foursave.core.clock import Clock, SystemClock
from foursave.core.config import Config, Site
from foursave.core.influx import InfluxClient
from foursave.core.influxql import Cond, agg, column, eq, every, select, time_range
from foursave.core.periods import (
    Period,
    ZoneLike,
    add_months,
    day_period,
    day_start_ms,
    local_date,
    month,
    parse_period,
    today,
)
from foursave.core.periods import months_between as months_between  # re-exported
from foursave.core.periods import year as year  # re-exported (periods lived here)
from foursave.core.periods import zone as zone_of
from foursave.core.reading import to_line
from foursave.rules import formulas
from foursave.rules.factors import FactorError, emission_factor, load_factors
from foursave.rules.notes import Note
from foursave.rules.records import RecordStore

METHOD_VERSION = "ledger/1"
BACKFILL_STEP_S = 60  # foursave backfill's default: one point a minute

COUNTERS = (
    ("meter", "import_energy_wh"),
    ("meter", "export_energy_wh"),
    ("inverter", "ac_energy_wh"),
    ("water", "volume_m3"),
)


@dataclass
class DeviceDays:
    """Per device and local day: the quantity and the share of expected readings."""

    quantity: dict[date, float] = field(default_factory=dict)
    completeness: dict[date, float] = field(default_factory=dict)
    resets: list[date] = field(default_factory=list)


def _days_range(start: date, end: date, tz: tzinfo) -> Cond:
    """Local days [start, end) in ``tz`` as an InfluxQL time range."""
    return time_range(day_start_ms(start, tz), day_start_ms(end, tz))


COMPLETE_ENOUGH = 0.98  # a period is judged (savings, met) only with this much data
RESET_NEAR_ZERO = 0.01  # a counter falling below 1 % of its last value restarted from zero
ROLLUP = "counter_daily"  # per device, counter field and closed local day: end value, completeness
ROLLUP_GENERATIONS = "counter_daily_generation"  # one point per rebuild (module docstring)
OPEN_DAYS = 2  # the last days before "end" are always recomputed (data may still arrive)


def _raw_days(
    influx: InfluxClient,
    config: Config,
    measurement: str,
    fname: str,
    start: date,
    end: date,
    zone: tzinfo,
    tz: str,
) -> dict[str, dict[date, tuple[float, float]]]:
    """Device -> day -> (counter at the day's end, share of expected readings), from
    the raw points (one aggregation pass per selector, pushed into InfluxDB).  Days are
    local days in ``zone`` (named ``tz``): 23 or 25 hours long where the clocks change,
    and as many readings are expected as the day has seconds."""
    intervals = {d.id: d.interval_s for d in config.devices}
    q = select(
        [agg("last", fname, "c"), agg("count", fname, "n")],
        measurement,
        where=[_days_range(start, end, zone)],
        group_by=[every("1d"), "device", "source", "step_s"],
        tz=tz,
    )
    per: dict[str, dict[date, tuple[float, float]]] = defaultdict(dict)
    for row in influx.rows(q):
        if row["c"] is None:
            continue
        day = local_date(row["time"], zone)
        dev = row["device"]
        backfilled = row.get("source") == "backfill"
        step = float(row.get("step_s") or BACKFILL_STEP_S) if backfilled else intervals.get(dev, 60)
        seconds = (day_start_ms(day + timedelta(days=1), zone) - day_start_ms(day, zone)) / 1000
        share = min(1.0, row["n"] / (seconds / step))
        prev = per[dev].get(day)
        # live data wins over history for the same day; completeness: the better
        if prev is None or not backfilled:
            per[dev][day] = (row["c"], max(share, prev[1] if prev else 0.0))
    return per


SCANNED = "_scanned"  # rollup marker: every device's day was scanned (per counter field)


def daily_quantities(
    influx: InfluxClient,
    config: Config,
    start: date,
    end: date,
    use_rollup: bool = True,
    clock: Clock | None = None,
) -> dict[tuple[str, str], DeviceDays]:
    """(device, field) -> per-day quantity for local days in [start, end), each device's
    days in its own site's time zone.

    Closed days are kept in the ``counter_daily`` rollup: a second ledger over the
    same history reads a few thousand rows instead of every reading.  The last
    ``OPEN_DAYS`` days before ``end`` or before today (by ``clock``, default the system
    clock) are always recomputed.

    Sites in different zones have different days, so each zone is aggregated on its
    own (one pass over the readings per zone) and keeps its own rollup: rows at its
    local midnights, its "day scanned" marker named after it (``_scanned@Europe/Berlin``)
    — only when the sites do not all share one zone, so a single-zone rollup is the
    one it always was.  A rollup row that is not at a local midnight of the zone
    reading it (a site whose zone was changed) is ignored and the day recomputed.
    """
    clock = clock or SystemClock()
    zones: dict[str, set[str]] = defaultdict(set)  # zone name -> its sites' devices
    site_zone = {s.id: s.timezone for s in config.sites}
    for d in config.devices:
        zones[site_zone[d.site]].add(d.id)
    for s in config.sites:
        zones.setdefault(s.timezone, set())
    out: dict[tuple[str, str], DeviceDays] = {}
    for tz, devices in zones.items():
        only = devices if len(zones) > 1 else None  # one zone: every device, as ever
        marker = SCANNED if len(zones) == 1 else f"{SCANNED}@{tz}"
        out.update(
            _zone_quantities(influx, config, start, end, tz, only, marker, use_rollup, clock)
        )
    return out


def _zone_quantities(
    influx: InfluxClient,
    config: Config,
    start: date,
    end: date,
    tz: str,
    devices: set[str] | None,
    marker: str,
    use_rollup: bool,
    clock: Clock,
) -> dict[tuple[str, str], DeviceDays]:
    """:func:`daily_quantities` for the devices of the sites in zone ``tz`` (``None``:
    every device with readings)."""
    zone = zone_of(tz)
    out: dict[tuple[str, str], DeviceDays] = {}
    lo = start - timedelta(days=1)
    all_days = [lo + timedelta(days=k) for k in range((end - lo).days)]
    # days still open: near the requested end, or near today (data may still arrive)
    open_from = min(end, today(clock, zone)) - timedelta(days=OPEN_DAYS)
    generation = rollup_generation(influx) if use_rollup else 0
    for measurement, fname in COUNTERS:
        per: dict[str, dict[date, tuple[float, float]]] = defaultdict(dict)
        scanned: set[date] = set()
        if use_rollup:
            for row in influx.rows(
                select(
                    [column("c"), column("share"), column("device")],
                    ROLLUP,
                    where=[
                        eq("field", fname),
                        eq("generation", str(generation)),
                        _days_range(lo, open_from, zone),
                    ],
                )
            ):
                day = local_date(row["time"], zone)
                if row["time"] != day_start_ms(day, zone):
                    continue  # another zone's day
                if row["device"] == marker:
                    scanned.add(day)
                elif devices is None or row["device"] in devices:
                    per[row["device"]][day] = (row["c"], row["share"])
        missing = [d for d in all_days if d not in scanned]
        if missing:
            raw = _raw_days(
                influx,
                config,
                measurement,
                fname,
                missing[0],
                missing[-1] + timedelta(days=1),
                zone,
                tz,
            )
            if devices is not None:
                raw = {dev: days for dev, days in raw.items() if dev in devices}
            lines = []
            for dev, days in raw.items():
                for day, (c, share) in days.items():
                    per[dev][day] = (c, share)
                    if day < open_from:
                        lines.append(_rollup_line(dev, fname, day, c, share, zone, generation))
            if use_rollup:
                with_data = {day for days in raw.values() for day in days}
                lines += [
                    _rollup_line(marker, fname, d, 0.0, 0.0, zone, generation)
                    for d in missing
                    if d < open_from and d in with_data  # a day without data may yet get some
                ]
                for i in range(0, len(lines), 5000):
                    influx.write(lines[i : i + 5000])
        firsts = None
        for dev, days in per.items():
            dd = DeviceDays()
            ordered = sorted(days)
            for i, day in enumerate(ordered):
                if day < start:
                    continue
                c = days[day][0]
                if i:
                    c_prev = days[ordered[i - 1]][0]  # after a gap: the energy lands here
                else:  # the first day of data (commissioning): from its first reading
                    if firsts is None:
                        firsts = {
                            r["device"]: r["first"]
                            for r in influx.rows(
                                select(
                                    agg("first", fname),
                                    measurement,
                                    where=[_days_range(lo, end, zone)],
                                    group_by=["device"],
                                )
                            )
                        }
                    c_prev = firsts.get(dev, c)
                if c < c_prev:
                    dd.resets.append(day)
                    if c <= RESET_NEAR_ZERO * max(c_prev, 1.0):
                        dd.quantity[day] = c  # restarted from zero: count what it shows since
                    else:
                        continue  # stepped back (replaced meter? rewritten history?): unknown
                else:
                    dd.quantity[day] = c - c_prev
                dd.completeness[day] = days[day][1]
            out[(dev, fname)] = dd
    return out


def _rollup_line(
    device: str, fname: str, day: date, c: float, share: float, zone: tzinfo, generation: int
) -> str:
    return to_line(
        ROLLUP,
        {"device": device, "field": fname, "generation": str(generation)},
        {"c": float(c), "share": float(share)},
        day_start_ms(day, zone),
    )


def rollup_generation(influx: InfluxClient) -> int:
    """The rollup's current generation: the highest recorded (0 before any rebuild)."""
    rows = influx.rows(select(agg("max", "generation"), ROLLUP_GENERATIONS))
    return int(rows[0]["max"]) if rows and rows[0]["max"] is not None else 0


def rebuild_rollup(
    influx: InfluxClient,
    config: Config,
    start: date | None = None,
    end: date | None = None,
    clock: Clock | None = None,
) -> int:
    """Rebuild the ``counter_daily`` rollup from the readings, without DROP: record the
    next generation (every earlier point is ignored from then on), then fill it for the
    local days [start, end) (default: every day with counter data, in every site's
    zone).  Returns the new generation.  Days outside the range are computed again when
    a pass asks for them.  The CLI's ``rules --once --rebuild`` (and so the demo) calls
    this."""
    clock = clock or SystemClock()
    generation = rollup_generation(influx) + 1
    influx.write(
        [
            to_line(
                ROLLUP_GENERATIONS,
                {},
                {"generation": float(generation)},
                int(clock.time() * 1000),
            )
        ]
    )
    if start is None or end is None:
        span = data_span(influx, *{s.timezone for s in config.sites})
        if span is None:
            return generation
        start, end = start or span[0], end or span[1]
    daily_quantities(influx, config, start, end, clock=clock)
    return generation


def data_span(influx: InfluxClient, *zones: ZoneLike) -> tuple[date, date] | None:
    """[first, last + 1 day) of the local days with meter, inverter or water data.

    Readings are not told apart by site here, so with several zones (every site's)
    the span is the union of the local days in each: from the earliest local date of
    the first reading to the latest local date of the last one."""
    if not zones:
        raise ValueError("data_span needs at least one time zone (the sites')")
    tzs = [zone_of(z) for z in zones]
    firsts: list[date] = []
    lasts: list[date] = []
    for m, f in (
        ("meter", "import_energy_wh"),
        ("inverter", "ac_energy_wh"),
        ("water", "volume_m3"),
    ):
        for fn, acc in (("first", firsts), ("last", lasts)):
            rows = influx.rows(select(agg(fn, f), m))
            if rows:
                acc.extend(local_date(rows[0]["time"], z) for z in tzs)
    if not firsts:
        return None
    return min(firsts), max(lasts) + timedelta(days=1)


@dataclass
class LedgerRow:
    site: str
    item: str  # electricity | water | fuel | paper
    period: str
    unit: str
    actual: float | None
    baseline: float | None = None
    baseline_rule: str = ""
    savings_rate: float | None = None
    target_rate: float | None = None
    met: bool | None = None
    co2e_kg: float | None = None
    completeness: float | None = None
    adjustments: float = 0.0
    details: dict[str, float] = field(default_factory=dict)
    notes: list[Note] = field(default_factory=list)  # rules/notes.py: code and values
    method_version: str = METHOD_VERSION


def _factor_values(f) -> dict:
    return {"value": f.value, "unit": f.unit, "basis": f.basis, "confidence": f.confidence}


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

    def load(self, start: date, end: date) -> None:
        """Fetch the daily quantities once for every period computed afterwards."""
        self._days = daily_quantities(self.influx, self.config, start, end, clock=self.clock)
        self._loaded = (start, end)
        self._temps = self._daily_temps(start, end)

    def _daily_temps(self, start: date, end: date) -> dict[str, dict[date, float]]:
        """Site -> day -> mean outdoor temperature from the site's own weather station."""
        out: dict[str, dict[date, float]] = {}
        for site in self.config.sites:
            zone = zone_of(site.timezone)
            rows = self.influx.rows(
                select(
                    agg("mean", "ambient_temp_c", "t"),
                    "weather",
                    where=[eq("site", site.id), _days_range(start, end, zone)],
                    group_by=[every("1d")],
                    tz=site.timezone,
                )
            )
            out[site.id] = {local_date(r["time"], zone): r["t"] for r in rows if r["t"] is not None}
        return out

    def weather_normalised(self, site: Site, p: Period, actual: float) -> dict[str, float] | None:
        """Savings against a cooling-degree-day regression of the base year's months
        (ASHRAE Guideline 14: CV(RMSE), NMBE and the savings' uncertainty with it)."""
        temps = getattr(self, "_temps", {}).get(site.id, {})
        if not temps:
            return None
        base_y = site.ledger.base_year
        energy, days, cdd = [], [], []
        for m in range(1, 13):
            bp = month(base_y, m)
            e = self.electricity_raw(site, bp)
            t = [temps[d] for d in bp.dates() if d in temps]
            if e is None or len(t) < 0.9 * bp.days:
                continue
            energy.append(e)
            days.append(bp.days)
            cdd.append(formulas.cooling_degree_days(t) * bp.days / len(t))
        if len(energy) < 6:
            return None
        fit = formulas.fit_cdd_baseline(energy, days, cdd)
        t_rep = [temps[d] for d in p.dates() if d in temps]
        if len(t_rep) < 0.9 * p.days:
            return None
        predicted = fit.predict(p.days, formulas.cooling_degree_days(t_rep) * p.days / len(t_rep))
        saved = formulas.savings_rate(predicted, actual)
        months = max(1, round(p.days / 30.4))
        return {
            "normalised_baseline_kwh": predicted,
            "normalised_savings_rate": saved,
            "normalised_savings_uncertainty": fit.savings_uncertainty(months, saved) * abs(saved)
            if saved
            else float("nan"),
            "baseline_cv_rmse": fit.cv_rmse,
            "baseline_nmbe": fit.nmbe,
        }

    # ------------------------------------------------------------------ sums
    def _sum(
        self, site: Site, p: Period, fname: str, roles=None, kinds=None
    ) -> tuple[float | None, float | None, list[str]]:
        devices = [
            d
            for d in self.config.devices
            if d.site == site.id
            and (roles is None or d.role in roles)
            and (kinds is None or d.kind in kinds)
        ]
        total, shares, notes, seen = 0.0, [], [], False
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

    def _adjustments(self, site: Site, p: Period, item: str) -> tuple[float, list[str]]:
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

    # ------------------------------------------------------------------ items
    def electricity(self, site: Site, p: Period) -> LedgerRow:
        st = site.ledger
        imp, comp, notes = self._sum(site, p, "import_energy_wh", roles={"main"})
        exp_, _, _ = self._sum(site, p, "export_energy_wh", roles={"main"})
        excl, _, _ = self._sum(site, p, "import_energy_wh", roles=set(st.exclusions))
        pv, _, _ = self._sum(site, p, "import_energy_wh", roles={"pv"})
        if pv is None:
            pv, _, _ = self._sum(site, p, "ac_energy_wh", kinds={"inverter"})
        source = "main_meters"
        if imp is None:
            bill = self.records.totals(site.id, p.months, "electricity_bill_kwh")
            imp_kwh = bill
            source, comp = ("taipower_bills", 1.0) if bill is not None else ("no_data", 0.0)
        else:
            imp_kwh = imp / 1000
        adj, adj_notes = self._adjustments(site, p, "electricity")
        actual = None if imp_kwh is None else imp_kwh - (excl or 0) / 1000 + adj
        row = LedgerRow(
            site.id,
            "electricity",
            p.label,
            "kWh",
            actual,
            completeness=comp,
            adjustments=adj,
            notes=notes + adj_notes,
        )
        row.details = {
            "grid_import_kwh": imp_kwh or 0.0,
            "grid_export_kwh": (exp_ or 0) / 1000,
            "excluded_kwh": (excl or 0) / 1000,
            "pv_generation_kwh": (pv or 0) / 1000,
        }
        if excl:
            row.notes.append(Note("excluded", {"roles": list(st.exclusions), "kwh": excl / 1000}))
        row.notes.append(Note("source", {"source": source}))
        if site.floor_area_m2 and actual is not None:
            row.details["eui_kwh_m2"] = formulas.eui_kwh_m2(
                actual, site.floor_area_m2, st.parking_area_m2
            )
            if len(p.label) == 7:  # a month: also the rolling 12 months ending with it
                y, m = int(p.label[:4]), int(p.label[5:])
                months12 = [month(*add_months(y, m, -k)) for k in range(12)]
                vals = [self.electricity_raw(site, q) for q in months12]
                if all(v is not None for v in vals):
                    row.details["eui_rolling_12m_kwh_m2"] = formulas.eui_kwh_m2(
                        sum(vals), site.floor_area_m2, st.parking_area_m2
                    )
        if actual is not None:
            wn = self.weather_normalised(site, p, actual)
            if wn:
                row.details.update({k: v for k, v in wn.items() if v == v})  # drop NaN
                row.notes.append(
                    Note(
                        "weather_normalised",
                        {
                            "base_year": site.ledger.base_year,
                            "cv_rmse": wn["baseline_cv_rmse"],
                            "nmbe": wn["baseline_nmbe"],
                        },
                    )
                )
            try:
                f = emission_factor("grid_electricity", p.start)
            except FactorError as exc:
                row.notes.append(Note("no_co2e", {"error": str(exc)}))
                self._judge(site, p, row, "electricity")
                return row
            row.co2e_kg = formulas.co2e_kg(actual, f.value)
            row.details["pv_co2e_avoided_kg"] = formulas.co2e_kg(
                row.details["pv_generation_kwh"], f.value
            )
            row.notes.append(Note("grid_factor", _factor_values(f)))
        self._judge(site, p, row, "electricity")
        return row

    def water(self, site: Site, p: Period) -> LedgerRow:
        vol, comp, notes = self._sum(site, p, "volume_m3", kinds={"water"})
        source = "water_meters"
        if vol is None:
            vol = self.records.totals(site.id, p.months, "water_bill_m3")
            source, comp = ("water_bills", 1.0) if vol is not None else ("no_data", 0.0)
        adj, adj_notes = self._adjustments(site, p, "water")
        actual = None if vol is None else vol + adj
        row = LedgerRow(
            site.id,
            "water",
            p.label,
            "m³",
            actual,
            completeness=comp,
            adjustments=adj,
            notes=[*notes, *adj_notes, Note("source", {"source": source})],
        )
        if actual is not None:
            f = emission_factor("tap_water", p.start)
            row.co2e_kg = formulas.co2e_kg(actual, f.value)
            row.notes.append(
                Note(
                    "tap_water_factor",
                    {
                        **_factor_values(f),
                        "source": site.ledger.water_factor_source or f.source,
                    },
                )
            )
        self._judge(site, p, row, "water")
        return row

    def fuel(self, site: Site, p: Period) -> LedgerRow:
        gas = self.records.totals(site.id, p.months, "gasoline_l")
        diesel = self.records.totals(site.id, p.months, "diesel_l")
        adj, adj_notes = self._adjustments(site, p, "fuel")
        actual = None if gas is None and diesel is None else (gas or 0) + (diesel or 0) + adj
        row = LedgerRow(
            site.id,
            "fuel",
            p.label,
            "L",
            actual,
            adjustments=adj,
            notes=adj_notes,
            # the share of the period's months with a fuel record: a year with eleven
            # months entered is not judged against a whole previous year
            completeness=self._months_recorded(site, p, [{"gasoline_l", "diesel_l"}]),
        )
        row.details = {"gasoline_l": gas or 0.0, "diesel_l": diesel or 0.0}
        if actual is not None:
            g, d = emission_factor("gasoline", p.start), emission_factor("diesel", p.start)
            row.co2e_kg = formulas.co2e_kg(gas or 0, g.value) + formulas.co2e_kg(
                diesel or 0, d.value
            )
        self._judge(site, p, row, "fuel")
        return row

    def paper(self, site: Site, p: Period) -> LedgerRow:
        counts = {
            k: self.records.totals(site.id, p.months, k)
            for k in (
                "docs_online_signed",
                "docs_electronic_received",
                "docs_paper_to_online",
                "docs_self_created",
            )
        }
        reams = self.records.totals(site.id, p.months, "paper_reams")
        rate = None
        if all(v is not None for v in counts.values()):
            rate = formulas.online_signing_rate(*(int(v) for v in counts.values()))
        row = LedgerRow(
            site.id,
            "paper",
            p.label,
            "online-signing rate",
            rate,
            completeness=self._months_recorded(site, p, [{k} for k in counts]),
        )
        row.details = {k: float(v or 0) for k, v in counts.items()} | {"paper_reams": reams or 0.0}
        target = self._paper_target(site, int(p.label[:4]))
        if rate is not None and target is not None and row.completeness < COMPLETE_ENOUGH:
            row.target_rate = target
            row.baseline_rule = "online-signing rate against the year's target"
            row.notes.append(Note("incomplete", {"share": row.completeness}))
        elif rate is not None and target is not None:
            row.target_rate = target
            row.met = rate >= target
            row.baseline_rule = "online-signing rate against the year's target"
        return row

    def _months_recorded(self, site: Site, p: Period, needs: list[set[str]]) -> float:
        """Share of ``p``'s months whose records in force include, for each set in
        ``needs``, at least one of its kinds."""
        by_month: dict[str, set[str]] = defaultdict(set)
        for r in self.records.current(site.id, p.months):
            by_month[r.period].add(r.kind)
        months = p.months
        ok = sum(1 for m in months if all(by_month[m] & kinds for kinds in needs))
        return ok / len(months) if months else 0.0

    # ------------------------------------------------------------------ targets
    def _preset(self, site: Site) -> dict:
        return self.factors["target_presets"][site.ledger.preset]

    def _paper_target(self, site: Site, y: int) -> float | None:
        table = {int(k): v for k, v in self._preset(site)["paper"]["online_signing_rate"].items()}
        return _interpolate(table, y)

    def _judge(self, site: Site, p: Period, row: LedgerRow, item: str) -> None:
        rule = self._preset(site)[item]
        if row.actual is None:
            return
        if rule["baseline"] == "previous_year":
            base_p = p.shifted_years(1)
            row.baseline = self._quantity(site, base_p, item)
            row.baseline_rule = f"previous year ({base_p.label})"
            row.target_rate = rule["reduction_per_year"]
        elif rule["baseline"] == "base_year_eui":
            y = site.ledger.base_year
            base_p = p.shifted_years(int(p.label[:4]) - y)
            row.baseline = self._quantity(site, base_p, item)
            row.baseline_rule = f"base year {y} (EUI no growth)"
            row.target_rate = 0.0
        else:  # plan 2011: base year 2007, reduction ramping to the target year
            y0 = int(rule["base_year"])
            base_p = p.shifted_years(int(p.label[:4]) - y0)
            row.baseline = self._quantity(site, base_p, item)
            row.baseline_rule = f"base year {y0}"
            targets = {2010: 0.0} | {int(k): v for k, v in rule["reduction_by_year"].items()}
            row.target_rate = _interpolate(targets, int(p.label[:4]))
        if row.baseline and base_p.days != p.days:  # e.g. February of a leap base year
            row.baseline *= p.days / base_p.days
            row.notes.append(Note("prorated", {"from_days": base_p.days, "to_days": p.days}))
        if row.completeness is not None and row.completeness < COMPLETE_ENOUGH:
            row.notes.append(Note("incomplete", {"share": row.completeness}))
            return
        if row.baseline and row.baseline > 0:
            row.savings_rate = formulas.savings_rate(row.baseline, row.actual)
            row.met = row.savings_rate >= (row.target_rate or 0.0) - 1e-12
        else:
            row.notes.append(Note("no_baseline", {"rule": row.baseline_rule}))

    def _quantity(self, site: Site, p: Period, item: str) -> float | None:
        """The item's actual for another period (baselines), without judging it: meter
        data when loaded for that period, otherwise the records (bills)."""
        raw = {"electricity": self.electricity_raw, "water": self.water_raw, "fuel": self.fuel_raw}
        return raw[item](site, p)

    def electricity_raw(self, site: Site, p: Period) -> float | None:
        imp, _, _ = self._sum(site, p, "import_energy_wh", roles={"main"})
        excl, _, _ = self._sum(site, p, "import_energy_wh", roles=set(site.ledger.exclusions))
        adj, _ = self._adjustments(site, p, "electricity")
        if imp is None:
            bill = self.records.totals(site.id, p.months, "electricity_bill_kwh")
            return None if bill is None else bill + adj
        return imp / 1000 - (excl or 0) / 1000 + adj

    def water_raw(self, site: Site, p: Period) -> float | None:
        vol, _, _ = self._sum(site, p, "volume_m3", kinds={"water"})
        if vol is None:
            vol = self.records.totals(site.id, p.months, "water_bill_m3")
        adj, _ = self._adjustments(site, p, "water")
        return None if vol is None else vol + adj

    def fuel_raw(self, site: Site, p: Period) -> float | None:
        gas = self.records.totals(site.id, p.months, "gasoline_l")
        diesel = self.records.totals(site.id, p.months, "diesel_l")
        adj, _ = self._adjustments(site, p, "fuel")
        return None if gas is None and diesel is None else (gas or 0) + (diesel or 0) + adj

    # ------------------------------------------------------------------ daily
    def daily_lines(self, start: date, end: date) -> list[str]:
        """``ledger_daily``: per site and local day, the quantities behind the ledger."""
        lines = []
        for site in self.config.sites:
            zone = zone_of(site.timezone)
            d = start
            while d < end:
                p = day_period(d)
                imp, comp, _ = self._sum(site, p, "import_energy_wh", roles={"main"})
                excl, _, _ = self._sum(
                    site, p, "import_energy_wh", roles=set(site.ledger.exclusions)
                )
                exp_, _, _ = self._sum(site, p, "export_energy_wh", roles={"main"})
                pv, _, _ = self._sum(site, p, "import_energy_wh", roles={"pv"})
                if pv is None:
                    pv, _, _ = self._sum(site, p, "ac_energy_wh", kinds={"inverter"})
                water, wcomp, _ = self._sum(site, p, "volume_m3", kinds={"water"})
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

    # ------------------------------------------------------------------ all
    def rows(self, periods: list[Period]) -> list[LedgerRow]:
        out = []
        for site in self.config.sites:
            for p in periods:
                for item in ("electricity", "water", "fuel", "paper"):
                    out.append(getattr(self, item)(site, p))
        return out


def _interpolate(table: dict[int, float], y: int) -> float:
    ys = sorted(table)
    if y <= ys[0]:
        return table[ys[0]]
    if y >= ys[-1]:
        return table[ys[-1]]
    for a, b in itertools.pairwise(ys):
        if a <= y <= b:
            return table[a] + (table[b] - table[a]) * (y - a) / (b - a)
    return table[ys[-1]]


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
        if r.baseline and r.target_rate is not None and r.item != "paper":
            fields["target"] = float(r.baseline * (1 - r.target_rate))  # the quantity to stay under
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
