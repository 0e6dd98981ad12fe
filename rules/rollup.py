"""The daily counter rollup: every counter device's quantity per local day, and its cache.

Aggregation is pushed into InfluxDB: one query per counter field (:data:`COUNTERS`)
returns each device's counter at the end of every local day and how many readings it
had (:func:`daily_quantities`).  Counter resets (a day whose end is below the previous
day's) count the energy since the reset and are flagged.  Days become months and years
in the ledger (``rules/ledger.py``), not here.

Closed days are kept in the ``counter_daily`` rollup (per device, counter field and
local day: the counter at the day's end, the share of expected readings and the day's
first reading, plus per site a ``_scanned:<site>`` marker with the scan's time for
every closed day a scan of its devices went over, with data or without), so a second
pass reads a few thousand rows instead of every reading, and no raw reading older than
the open days: the days before a device's first reading are known to be empty, and
only runs of days really missing are scanned.  Late data for a closed day is noticed by
the ``late_data`` markers the ingester and ``foursave backfill`` write
(``core/late.py``; the newest handled is kept per site in ``counter_daily_late_seen``):
its days are scanned again, once.  Everything is per site so that rules partitions
(``rules/partition.py``), each given its own sites, never mark, skip or rewrite each
other's days; the markers of before (``_scanned``, ``_scanned@<zone>``: every site of
the zone) are still read.
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
    sites: list[str],
) -> dict[str, dict[date, tuple[float, float, float]]]:
    """Device -> day -> (counter at the day's end, share of expected readings, the
    day's first reading) of the devices of ``sites``, from the raw points (one
    aggregation pass per selector, pushed into InfluxDB).  Days are local days in
    ``zone`` (named ``tz``): 23 or 25 hours long where the clocks change, and as many
    readings are expected as the day has seconds.  The first reading is the lowest
    first of the day's series (live and backfilled): a counter's earliest reading is
    its lowest."""
    intervals = {d.id: d.interval_s for d in config.devices}
    q = select(
        [agg("last", fname, "c"), agg("count", fname, "n"), agg("first", fname, "f")],
        measurement,
        where=[tag_in("site", sites), days_range(start, end, zone)],
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


SCANNED = "_scanned"  # rollup marker prefix: a day was scanned (per counter field)
LATE_SEEN = "counter_daily_late_seen"  # per generation and rollup: the last late_data handled


def site_marker(site_id: str) -> str:
    """The ``device`` of the rollup's marker rows saying a closed day of the site's
    devices was scanned (per counter field), with the scan's time: each site has its
    own, so partitions of the rules engine (``rules/partition.py``) never mark each
    other's days, and a site added later is scanned from its first day."""
    return f"{SCANNED}:{site_id}"


def legacy_markers(tz: str) -> tuple[str, str]:
    """The markers of a rollup written before markers were per site: ``_scanned`` (one
    zone: every device with readings) and ``_scanned@<zone>`` (the configuration's
    devices in that zone).  Still read as covering every site of the zone."""
    return SCANNED, f"{SCANNED}@{tz}"


def daily_quantities(
    influx: InfluxClient,
    config: Config,
    start: date,
    end: date,
    use_rollup: bool = True,
    clock: Clock | None = None,
) -> dict[tuple[str, str], DeviceDays]:
    """(device, field) -> per-day quantity for local days in [start, end) of the
    configuration's devices, each device's days in its own site's time zone.

    Closed days are kept in the ``counter_daily`` rollup: a second ledger over the
    same history reads a few thousand rows instead of every reading.  The last
    ``OPEN_DAYS`` days before ``end`` or before today (by ``clock``, default the system
    clock) are always recomputed.

    The rollup knows its coverage: every closed day a raw scan went over is marked
    scanned for each site whose devices it read (:func:`site_marker`, with the scan's
    time), with data or without, so the days before a device's first reading are known
    to be empty and a warm load reads no raw data older than the open days.  Readings
    stored later for a closed day are noticed by the ``late_data`` markers their writer
    leaves (``core/late.py``): the days they touch are scanned again, once per site
    (the newest marker handled is kept per site).  Data written past that (by hand)
    needs ``--rebuild``.  Only the configuration's sites are read, marked and written:
    a rules partition given its own sites (``rules/partition.py``) leaves every other
    site's rows, markers and late-data bookkeeping to their partition.

    Sites in different zones have different days, so each zone is aggregated on its
    own (one pass over the readings per zone): rows and markers at its local
    midnights.  A rollup row that is not at a local midnight of the zone reading it (a
    site whose zone was changed) is ignored and the day recomputed.
    """
    clock = clock or SystemClock()
    zones: dict[str, list[str]] = defaultdict(list)  # zone name -> its sites
    for s in config.sites:
        zones[s.timezone].append(s.id)
    out: dict[tuple[str, str], DeviceDays] = {}
    for tz, sites in zones.items():
        out.update(_zone_quantities(influx, config, start, end, tz, sites, use_rollup, clock))
    return out


def _late_days(
    influx: InfluxClient,
    zone: tzinfo,
    generation: int,
    markers: dict[str, str],
    open_from: date,
    fallback: tuple[str, ...] = (),
) -> tuple[dict[str, set[date]], dict[str, int], int | None]:
    """Per key of ``markers`` (key -> the rollup it keeps, e.g. site -> its marker):
    the closed local days touched by ``late_data`` markers that rollup has not handled
    yet; the keys whose newest handled marker is older than the newest marker now
    (key -> the newest, to record once handled); and the newest marker's time (None: no
    marker at all).  A rollup that has not handled any yet starts from the newest
    handled by the ``fallback`` rollups (the markers before they were per site)."""
    names = list(markers.values()) + list(fallback)
    seen = {
        r["rollup"]: int(r["last"])
        for r in influx.rows(
            select(
                agg("last", "upto_ms"),
                LATE_SEEN,
                where=[eq("generation", str(generation)), tag_in("rollup", names)],
                group_by=["rollup"],
            )
        )
        if r.get("last") is not None
    }
    old = [seen[f] for f in fallback if f in seen]
    since = {k: seen.get(m, max(old) if old else None) for k, m in markers.items()}
    known = [v for v in since.values() if v is not None]
    lowest = None if len(known) < len(since) or not known else min(known)
    where = [] if lowest is None else [time_range(start_ms=lowest + 1)]
    days: dict[str, set[date]] = {k: set() for k in markers}
    newest = None
    for r in influx.rows(select([column("first_ms"), column("last_ms")], LATE, where=where)):
        newest = max(newest or r["time"], r["time"])
        if r["first_ms"] is None or r["last_ms"] is None:
            continue
        touched: set[date] = set()
        d, last = local_date(r["first_ms"], zone), local_date(r["last_ms"], zone)
        while d <= last and d < open_from:
            touched.add(d)
            d += timedelta(days=1)
        for k, t in since.items():
            if t is None or r["time"] > t:
                days[k] |= touched
    behind = {
        k: newest for k, t in since.items() if newest is not None and (t is None or newest > t)
    }
    return days, behind, newest


def _late_seen_lines(generation: int, behind: dict[str, int], markers: dict[str, str]) -> list[str]:
    """``counter_daily_late_seen`` points: each rollup of ``behind`` has handled the
    ``late_data`` markers up to its value."""
    return [
        to_line(
            LATE_SEEN,
            {"generation": str(generation), "rollup": markers[k]},
            {"upto_ms": float(upto)},
            upto,
        )
        for k, upto in behind.items()
    ]


def _zone_quantities(
    influx: InfluxClient,
    config: Config,
    start: date,
    end: date,
    tz: str,
    sites: list[str],
    use_rollup: bool,
    clock: Clock,
) -> dict[tuple[str, str], DeviceDays]:
    """:func:`daily_quantities` for the devices of ``sites``, the configuration's sites
    in zone ``tz``."""
    zone = zone_of(tz)
    out: dict[tuple[str, str], DeviceDays] = {}
    site_of = {d.id: d.site for d in config.devices if d.site in set(sites)}
    markers = {s: site_marker(s) for s in sites}
    by_marker = {m: s for s, m in markers.items()}
    legacy = legacy_markers(tz)
    lo = start - timedelta(days=1)
    all_days = [lo + timedelta(days=k) for k in range((end - lo).days)]
    # days still open: near the requested end, or near today (data may still arrive)
    open_from = min(end, today(clock, zone)) - timedelta(days=OPEN_DAYS)
    generation = rollup_generation(influx) if use_rollup else 0
    late: dict[str, set[date]] = {s: set() for s in sites}
    behind: dict[str, int] = {}
    if use_rollup:
        late, behind, _ = _late_days(influx, zone, generation, markers, open_from, legacy)
    stamp = float(int(time.time() * 1000))  # this scan's mark: pv_daily rows refer to it
    for measurement, fname in COUNTERS:
        per: dict[str, dict[date, tuple[float, float, float | None]]] = defaultdict(dict)
        # site -> closed day -> when its devices were scanned
        scanned: dict[str, dict[date, float]] = {s: {} for s in sites}
        everyone: dict[date, float] = {}  # days a marker from before per-site markers covers
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
                dev = row["device"]
                at = float(row.get("at_ms") or 0.0)
                if dev in by_marker:
                    scanned[by_marker[dev]][day] = at
                elif dev in legacy:
                    everyone[day] = max(at, everyone.get(day, 0.0))
                elif dev in site_of:
                    per[dev][day] = (row["c"], row["share"], row.get("f"))
            for s in sites:
                for day, at in everyone.items():
                    scanned[s][day] = max(at, scanned[s].get(day, 0.0))
        # a day is read from the readings when any of the zone's sites lacks it (or has
        # late data on it): one query for all of them, rows and markers for each
        missing: set[date] = set()
        for s in sites:
            missing |= {d for d in all_days if d not in scanned[s]} | late[s]
        if missing:
            # each run of missing days is read on its own: one read from the first to
            # the open days would go through every scanned day between
            raw: dict[str, dict[date, tuple[float, float, float]]] = defaultdict(dict)
            for first, last in _runs(sorted(missing)):
                for dev, days in _raw_days(
                    influx,
                    config,
                    measurement,
                    fname,
                    first,
                    last + timedelta(days=1),
                    zone,
                    tz,
                    sites,
                ).items():
                    if dev in site_of:
                        raw[dev].update(days)
            lines = []
            for dev, days in raw.items():
                for day, (c, share, f) in days.items():
                    if lo <= day < end:
                        per[dev][day] = (c, share, f)
                    if day < open_from:
                        lines.append(_rollup_line(dev, fname, day, c, share, zone, generation, f))
            closed = sorted(d for d in missing if d < open_from)
            for s in sites:  # scanned, with data or without: covered
                for d in closed:
                    scanned[s][d] = stamp
            if use_rollup:
                lines += [
                    _rollup_line(markers[s], fname, d, 0.0, 0.0, zone, generation, at_ms=stamp)
                    for s in sites
                    for d in closed
                ]
                if influx.read_only:
                    _not_cached(influx, len(lines))
                else:
                    for i in range(0, len(lines), 5000):
                        influx.write(lines[i : i + 5000])
        for dev, pdays in per.items():
            dd = DeviceDays()
            ordered = sorted(pdays)
            site_scans = scanned[site_of[dev]]
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
                if day in site_scans:
                    dd.scanned[day] = site_scans[day]
            out[(dev, fname)] = dd
    if behind and use_rollup and not influx.read_only:
        influx.write(_late_seen_lines(generation, behind, markers))
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
            influx,
            *{s.timezone for s in config.sites},
            until_ms=int(clock.time() * 1000),
            sites=[s.id for s in config.sites],
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
    influx: InfluxClient,
    *zones: ZoneLike,
    until_ms: int | None = None,
    sites: list[str] | None = None,
) -> tuple[date, date] | None:
    """[first, last + 1 day) of the local days with meter, inverter or water data (of
    ``sites`` only, when given: a rules partition's), counting no point after
    ``until_ms`` (the caller's "now"): a stray point dated ahead must not open a span
    of years to compute over.

    Readings are not told apart by site here, so with several zones (every site's)
    the span is the union of the local days in each: from the earliest local date of
    the first reading to the latest local date of the last one."""
    if not zones:
        raise ValueError("data_span needs at least one time zone (the sites')")
    tzs = [zone_of(z) for z in zones]
    firsts: list[date] = []
    lasts: list[date] = []
    bound = [] if until_ms is None else [time_range(end_ms=until_ms, include_end=True)]
    if sites is not None:
        bound.append(tag_in("site", sites))
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
    late_by, behind, _ = _late_days(influx, zone, generation, {site_id: marker}, open_from)
    late = late_by[site_id]
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
    lines += _late_seen_lines(generation, behind, {site_id: marker})
    if influx.read_only:
        _not_cached(influx, len(lines))
    elif lines:
        for i in range(0, len(lines), 5000):
            influx.write(lines[i : i + 5000])
    return out
