"""The daily counter rollup: every counter device's quantity per local day, and its cache.

Aggregation is pushed into InfluxDB: one query per counter field (:data:`COUNTERS`)
returns each device's counter at the end of every local day and how many readings it
had (:func:`daily_quantities`).  Counter resets (a day whose end is below the previous
day's) count the energy since the reset and are flagged.  Days become months and years
in the ledger (``rules/ledger.py``), not here.

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

A read-only client (the API logs in as the reader) reads the rollup and computes the
days it lacks from the readings, but writes nothing: filling the rollup is the rules
engine's (logged once).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta, tzinfo

from foursave.core.clock import Clock, SystemClock
from foursave.core.config import Config
from foursave.core.influx import InfluxClient
from foursave.core.influxql import Cond, agg, column, eq, every, select, time_range
from foursave.core.periods import ZoneLike, day_start_ms, local_date, today
from foursave.core.periods import zone as zone_of
from foursave.core.reading import to_line

log = logging.getLogger("foursave.rollup")

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


def days_range(start: date, end: date, tz: tzinfo) -> Cond:
    """Local days [start, end) in ``tz`` as an InfluxQL time range."""
    return time_range(day_start_ms(start, tz), day_start_ms(end, tz))


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
        where=[days_range(start, end, zone)],
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


def _runs(days: list[date], join_gap_days: int = 7) -> list[tuple[date, date]]:
    """Sorted ``days`` as (first, last) runs; runs fewer than ``join_gap_days`` apart are
    joined (one query reads a few scanned days rather than many small queries)."""
    runs: list[tuple[date, date]] = []
    for d in days:
        if runs and (d - runs[-1][1]).days <= join_gap_days:
            runs[-1] = (runs[-1][0], d)
        else:
            runs.append((d, d))
    return runs


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
                        days_range(lo, open_from, zone),
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
            # each run of missing days is read on its own: the day before the data
            # starts is never marked scanned, and one read from it to the open days
            # would go through every scanned day between (months of raw readings)
            raw: dict[str, dict[date, tuple[float, float]]] = defaultdict(dict)
            for first, last in _runs(missing):
                for dev, days in _raw_days(
                    influx, config, measurement, fname, first, last + timedelta(days=1), zone, tz
                ).items():
                    raw[dev].update(days)
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
                if influx.read_only:
                    _not_cached(influx, len(lines))
                else:
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
                                    where=[days_range(lo, end, zone)],
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


_told_read_only: set[str] = set()  # the clients' urls already told (logged once)


def _not_cached(influx: InfluxClient, n: int) -> None:
    """A read-only client (the API's reader) leaves the rollup to the rules engine:
    days it lacks are computed from the readings each time, said once per process."""
    if n and influx.url not in _told_read_only:
        _told_read_only.add(influx.url)
        log.info(
            "%s rollup: %d day(s) computed from the readings and not cached (this "
            "client is read-only; the rules engine fills the rollup); said once",
            ROLLUP,
            n,
        )


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
        span = data_span(
            influx, *{s.timezone for s in config.sites}, until_ms=int(clock.time() * 1000)
        )
        if span is None:
            return generation
        start, end = start or span[0], end or span[1]
    daily_quantities(influx, config, start, end, clock=clock)
    return generation


def data_span(
    influx: InfluxClient, *zones: ZoneLike, until_ms: int | None = None
) -> tuple[date, date] | None:
    """[first, last + 1 day) of the local days with meter, inverter or water data,
    counting no point after ``until_ms`` (the caller's "now"): a stray point dated
    ahead must not open a span of years to compute over.

    Readings are not told apart by site here, so with several zones (every site's)
    the span is the union of the local days in each: from the earliest local date of
    the first reading to the latest local date of the last one."""
    if not zones:
        raise ValueError("data_span needs at least one time zone (the sites')")
    tzs = [zone_of(z) for z in zones]
    firsts: list[date] = []
    lasts: list[date] = []
    bound = [] if until_ms is None else [time_range(end_ms=until_ms, include_end=True)]
    for m, f in (
        ("meter", "import_energy_wh"),
        ("inverter", "ac_energy_wh"),
        ("water", "volume_m3"),
    ):
        for fn, acc in (("first", firsts), ("last", lasts)):
            rows = influx.rows(select(agg(fn, f), m, where=bound))
            if rows:
                acc.extend(local_date(rows[0]["time"], z) for z in tzs)
    if not firsts:
        return None
    return min(firsts), max(lasts) + timedelta(days=1)
