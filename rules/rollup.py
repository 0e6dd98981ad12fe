"""The daily counter rollup: every counter device's quantity per local day, and its cache.

Aggregation is pushed into InfluxDB: one query per counter field (:data:`COUNTERS`)
returns each device's counter at the end of every local day and how many readings it
had (:func:`daily_quantities`).  Counter resets (a day whose end is below the previous
day's) count the energy since the reset and are flagged.  Days become months and years
in the ledger (``rules/ledger.py``), not here.

Closed days are kept in the ``counter_daily`` rollup (per device, counter field and
local day: the counter at the day's end, the share of expected readings and the day's
first reading, plus a ``_scanned`` marker with the scan's time for every closed day a
scan went over, with data or without), so a second pass reads a few thousand rows
instead of every reading, and no raw reading older than the open days: the days
before a device's first reading are known to be empty, and only runs of days really
missing are scanned.  Late data for a closed day is noticed by the ``late_data``
markers the ingester and ``foursave backfill`` write (``core/late.py``; the newest
handled is kept in ``counter_daily_late_seen``): its days are scanned again, once.
Comparing every day's reading count with the rollup's would notice any late point but
costs as much as the aggregation itself (``bench/ledger.py``: 0.97-1.06x the bare
query), so it is not done on each pass.  After data written past the markers (by
hand) the rollup is rebuilt: :func:`rebuild_rollup`, ``foursave rules --once --rebuild``.

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
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo

from foursave.core.clock import Clock, SystemClock
from foursave.core.config import Config
from foursave.core.influx import InfluxClient
from foursave.core.influxql import ALL, Cond, agg, column, eq, every, select, tag_in, time_range
from foursave.core.late import LATE
from foursave.core.periods import ZoneLike, day_start_ms, local_date, today
from foursave.core.periods import zone as zone_of
from foursave.core.reading import to_line
from foursave.core.retention import raw_from_ms

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
    # closed days: when the rollup scanned them (pv_daily rows name the scan they used)
    scanned: dict[date, float] = field(default_factory=dict)


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
) -> dict[str, dict[date, tuple[float, float, float]]]:
    """Device -> day -> (counter at the day's end, share of expected readings, the
    day's first reading), from the raw points (one aggregation pass per selector,
    pushed into InfluxDB).  Days are local days in ``zone`` (named ``tz``): 23 or 25
    hours long where the clocks change, and as many readings are expected as the day
    has seconds.  The first reading is the lowest first of the day's series (live and
    backfilled): a counter's earliest reading is its lowest."""
    intervals = {d.id: d.interval_s for d in config.devices}
    q = select(
        [agg("last", fname, "c"), agg("count", fname, "n"), agg("first", fname, "f")],
        measurement,
        where=[days_range(start, end, zone)],
        group_by=[every("1d"), "device", "source", "step_s"],
        tz=tz,
    )
    per: dict[str, dict[date, tuple[float, float, float]]] = defaultdict(dict)
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
        first = row["f"] if prev is None else min(row["f"], prev[2])
        # live data wins over history for the same day; completeness: the better
        if prev is None or not backfilled:
            per[dev][day] = (row["c"], max(share, prev[1] if prev else 0.0), first)
        else:
            per[dev][day] = (prev[0], prev[1], first)
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
LATE_SEEN = "counter_daily_late_seen"  # per generation and rollup: the last late_data handled


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

    The rollup knows its coverage: every closed day a raw scan went over is marked
    scanned (with the scan's time), with data or without, so the days before a
    device's first reading are known to be empty and a warm load reads no raw data
    older than the open days.  Readings stored later for a closed day are noticed by
    the ``late_data`` markers their writer leaves (``core/late.py``): the days they
    touch are scanned again, once.  Data written past that (by hand) needs
    ``--rebuild``.

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


def _late_days(
    influx: InfluxClient, zone: tzinfo, generation: int, marker: str, open_from: date
) -> tuple[set[date], int | None]:
    """The closed local days touched by ``late_data`` markers this rollup has not
    handled yet, and the newest marker's time (None: no new marker)."""
    seen = influx.rows(
        select(
            agg("last", "upto_ms"),
            LATE_SEEN,
            where=[eq("generation", str(generation)), eq("rollup", marker)],
        )
    )
    since = int(seen[0]["last"]) if seen and seen[0]["last"] is not None else None
    where = [] if since is None else [time_range(start_ms=since + 1)]
    days: set[date] = set()
    newest = None
    for r in influx.rows(select([column("first_ms"), column("last_ms")], LATE, where=where)):
        newest = max(newest or r["time"], r["time"])
        if r["first_ms"] is None or r["last_ms"] is None:
            continue
        d, last = local_date(r["first_ms"], zone), local_date(r["last_ms"], zone)
        while d <= last and d < open_from:
            days.add(d)
            d += timedelta(days=1)
    return days, newest


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
    late, late_upto = (
        _late_days(influx, zone, generation, marker, open_from) if use_rollup else (set(), None)
    )
    stamp = float(int(time.time() * 1000))  # this scan's mark: pv_daily rows refer to it
    for measurement, fname in COUNTERS:
        per: dict[str, dict[date, tuple[float, float, float | None]]] = defaultdict(dict)
        scanned: dict[date, float] = {}
        if use_rollup:
            for row in influx.rows(
                select(
                    [column("c"), column("share"), column("f"), column("at_ms"), column("device")],
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
                    scanned[day] = float(row.get("at_ms") or 0.0)
                elif devices is None or row["device"] in devices:
                    per[row["device"]][day] = (row["c"], row["share"], row.get("f"))
        missing = {d for d in all_days if d not in scanned} | late
        if missing:
            # each run of missing days is read on its own: one read from the first to
            # the open days would go through every scanned day between
            raw: dict[str, dict[date, tuple[float, float, float]]] = defaultdict(dict)
            for first, last in _runs(sorted(missing)):
                for dev, days in _raw_days(
                    influx, config, measurement, fname, first, last + timedelta(days=1), zone, tz
                ).items():
                    raw[dev].update(days)
            if devices is not None:
                raw = {dev: days for dev, days in raw.items() if dev in devices}
            lines = []
            for dev, days in raw.items():
                for day, (c, share, f) in days.items():
                    if lo <= day < end:
                        per[dev][day] = (c, share, f)
                    if day < open_from:
                        lines.append(_rollup_line(dev, fname, day, c, share, zone, generation, f))
            for d in missing:
                if d < open_from:  # scanned, with data or without: covered
                    scanned[d] = stamp
            if use_rollup:
                lines += [
                    _rollup_line(marker, fname, d, 0.0, 0.0, zone, generation, at_ms=stamp)
                    for d in sorted(missing)
                    if d < open_from
                ]
                if influx.read_only:
                    _not_cached(influx, len(lines))
                else:
                    for i in range(0, len(lines), 5000):
                        influx.write(lines[i : i + 5000])
        for dev, pdays in per.items():
            dd = DeviceDays()
            ordered = sorted(pdays)
            for i, day in enumerate(ordered):
                if day < start:
                    continue
                c = pdays[day][0]
                if i:
                    c_prev = pdays[ordered[i - 1]][0]  # after a gap: the energy lands here
                else:  # the first day of data (commissioning): from its first reading
                    f0 = pdays[day][2]
                    c_prev = (
                        f0
                        if f0 is not None
                        else _first(influx, measurement, fname, dev, day, zone, c)
                    )
                if c < c_prev:
                    dd.resets.append(day)
                    if c <= RESET_NEAR_ZERO * max(c_prev, 1.0):
                        dd.quantity[day] = c  # restarted from zero: count what it shows since
                    else:
                        continue  # stepped back (replaced meter? rewritten history?): unknown
                else:
                    dd.quantity[day] = c - c_prev
                dd.completeness[day] = pdays[day][1]
                if day in scanned:
                    dd.scanned[day] = scanned[day]
            out[(dev, fname)] = dd
    if late_upto is not None and use_rollup and not influx.read_only:
        influx.write(
            [
                to_line(
                    LATE_SEEN,
                    {"generation": str(generation), "rollup": marker},
                    {"upto_ms": float(late_upto)},
                    late_upto,
                )
            ]
        )
    return out


def _first(
    influx: InfluxClient,
    measurement: str,
    fname: str,
    device: str,
    day: date,
    zone: tzinfo,
    default: float,
) -> float:
    """A device's first reading of ``day``, for a rollup row written before rows kept
    it (field ``f``): one query over that day."""
    rows = influx.rows(
        select(
            agg("first", fname),
            measurement,
            where=[eq("device", device), days_range(day, day + timedelta(days=1), zone)],
        )
    )
    return rows[0]["first"] if rows and rows[0]["first"] is not None else default


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
    device: str,
    fname: str,
    day: date,
    c: float,
    share: float,
    zone: tzinfo,
    generation: int,
    first: float | None = None,
    at_ms: float | None = None,
) -> str:
    fields = {"c": float(c), "share": float(share)}
    if first is not None:
        fields["f"] = float(first)  # the day's first reading: a device's first day
    if at_ms is not None:
        fields["at_ms"] = float(at_ms)  # a marker: when the day was scanned
    return to_line(
        ROLLUP,
        {"device": device, "field": fname, "generation": str(generation)},
        fields,
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
    this.  With ``services.influxdb.retention`` the days whose readings are gone keep
    their rows (carried into the new generation): only the days kept are rebuilt."""
    clock = clock or SystemClock()
    previous = rollup_generation(influx)
    generation = previous + 1
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
    raw_from = raw_from_ms(config.services.influxdb.retention, int(time.time() * 1000))
    if raw_from is not None:
        # the readings of older days are gone (services.influxdb.retention): their rows
        # are carried into the new generation as they were, and only days whose
        # readings are all kept are rebuilt
        carry_until = raw_from + 3 * 86_400_000
        _carry(influx, previous, generation, carry_until)
        first_whole = datetime.fromtimestamp(raw_from / 1000, UTC).date() + timedelta(days=2)
        if start is not None and start < first_whole:
            log.info("rebuild: days before %s keep their rows (readings gone)", first_whole)
            start = first_whole
    if start is None or end is None:
        span = data_span(
            influx, *{s.timezone for s in config.sites}, until_ms=int(clock.time() * 1000)
        )
        if span is None:
            return generation
        start, end = start or span[0], end or span[1]
        if raw_from is not None:
            start = max(
                start, datetime.fromtimestamp(raw_from / 1000, UTC).date() + timedelta(days=2)
            )
    if start < end:
        daily_quantities(influx, config, start, end, clock=clock)
    return generation


def _carry(influx: InfluxClient, old: int, new: int, until_ms: int) -> None:
    """The rollup's rows (and late-data marks) of generation ``old`` stamped before
    ``until_ms``, written again as generation ``new``."""
    lines = []
    for row in influx.rows(
        select(ALL, ROLLUP, where=[eq("generation", str(old)), time_range(end_ms=until_ms)])
    ):
        fields = {k: float(row[k]) for k in ("c", "share", "f", "at_ms") if row.get(k) is not None}
        tags = {"device": row["device"], "field": row["field"], "generation": str(new)}
        lines.append(to_line(ROLLUP, tags, fields, row["time"]))
    for row in influx.rows(select(ALL, LATE_SEEN, where=[eq("generation", str(old))])):
        if row.get("upto_ms") is not None:
            tags = {"generation": str(new), "rollup": row["rollup"]}
            lines.append(to_line(LATE_SEEN, tags, {"upto_ms": float(row["upto_ms"])}, row["time"]))
    for i in range(0, len(lines), 5000):
        influx.write(lines[i : i + 5000])
    log.info("rebuild: %d rows of days whose readings are gone carried over", len(lines))


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


def site_daily_means(
    influx: InfluxClient,
    site_id: str,
    tz: str,
    measurement: str,
    fname: str,
    start: date,
    end: date,
    clock: Clock | None = None,
) -> dict[date, float]:
    """Local day -> the site's mean of ``fname`` (e.g. the weather station's outdoor
    temperature) for days in [start, end), through the same rollup and coverage as the
    counters: rows with ``field`` = ``fname`` and ``device`` = the site, the site's own
    scanned marker, ``late_data`` markers noticed; open days always from the readings."""
    clock = clock or SystemClock()
    zone = zone_of(tz)
    marker = f"{SCANNED}#{site_id}"
    open_from = min(end, today(clock, zone)) - timedelta(days=OPEN_DAYS)
    generation = rollup_generation(influx)
    late, late_upto = _late_days(influx, zone, generation, marker, open_from)
    days = [start + timedelta(days=k) for k in range((end - start).days)]
    out: dict[date, float] = {}
    scanned: set[date] = set()
    for row in influx.rows(
        select(
            [column("c"), column("device")],
            ROLLUP,
            where=[
                eq("field", fname),
                eq("generation", str(generation)),
                tag_in("device", [site_id, marker]),
                days_range(start, open_from, zone),
            ],
        )
    ):
        day = local_date(row["time"], zone)
        if row["time"] != day_start_ms(day, zone):
            continue
        if row["device"] == marker:
            scanned.add(day)
        else:
            out[day] = row["c"]
    missing = {d for d in days if d not in scanned} | late
    lines = []
    stamp = float(int(time.time() * 1000))
    for first, last in _runs(sorted(missing)):
        for row in influx.rows(
            select(
                agg("mean", fname, "m"),
                measurement,
                where=[eq("site", site_id), days_range(first, last + timedelta(days=1), zone)],
                group_by=[every("1d")],
                tz=tz,
            )
        ):
            day = local_date(row["time"], zone)
            if row["m"] is None:
                continue
            if start <= day < end:
                out[day] = row["m"]
            if day < open_from:
                lines.append(_rollup_line(site_id, fname, day, row["m"], 1.0, zone, generation))
    lines += [
        _rollup_line(marker, fname, d, 0.0, 0.0, zone, generation, at_ms=stamp)
        for d in sorted(missing)
        if d < open_from
    ]
    if late_upto is not None:
        lines.append(
            to_line(
                LATE_SEEN,
                {"generation": str(generation), "rollup": marker},
                {"upto_ms": float(late_upto)},
                late_upto,
            )
        )
    if influx.read_only:
        _not_cached(influx, len(lines))
    elif lines:
        for i in range(0, len(lines), 5000):
            influx.write(lines[i : i + 5000])
    return out
