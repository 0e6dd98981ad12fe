"""Hourly and daily rollups of the readings, kept for ever (``services.influxdb.retention``).

InfluxDB 3 has no continuous queries, so the rules engine computes them, each pass,
for every site it evaluates (a partition's sites: each site's rollup is read and
written by site, so two partitions never touch one another's).  Where they live is
core/retention.py: retention policies ``rollup_1h`` and ``rollup_1d``, beside the
``raw`` readings that are kept ``raw_days``.

A rollup point has the raw measurement's name (``inverter``, ``meter``, ``weather``,
``water``, ``inverter_string``, ``battery``), its tags (``site``, ``device``, ``role``,
``string``) and is stamped at the start of its hour, or of its local day in the site's
zone.  Per field of the glossary (:func:`stats_of`):

* a gauge (power, voltage, temperature, irradiance, ...): ``f`` = the mean, ``f_min``,
  ``f_max``, ``f_sum`` and ``f_n`` (how many readings had it), so a longer bucket's mean
  is Σ``f_sum`` / Σ``f_n``, exactly;
* a lifetime counter (:data:`COUNTERS`): ``f`` = the last value, ``f_first`` and ``f_n``;
  a counter reset shows as a bucket whose ``f`` is below the previous one's, as in the
  readings;
* a state or event bit field (``state``, ``events``): ``f`` = the last value, ``f_n``.

A field's own name holds the value a chart draws, so a query of the rollup reads like
one of the readings (Grafana's ``$rp`` variable, the API's ``resolution``).  A bucket
without readings has no point (a gap stays a gap).  The aggregation is InfluxDB's:
one ``GROUP BY time(1h|1d), device, ...`` query per measurement and stretch of time.

Each bucket is computed twice: *provisional* once it has ended (plus
:data:`PROVISIONAL_AFTER_S`, the readings in flight), *final* once it ended
:data:`~foursave.core.late.LATE_AFTER_S` ago.  A reading stored later than that leaves
a ``late_data`` marker (core/late.py), and the final buckets it touches are computed
again, once.  What was done is kept per site in ``rollup_state`` (in the rollup's own
policy, one point per site at time 0: ``final_upto_ms``, ``provisional_upto_ms``,
``late_seen_ms``), so each pass reads only the buckets that closed since.  A site's
first pass starts at its first reading.

Where the readings are read from: ``raw``; buckets older than the raw policy's window
(``raw_days`` before now) from the database's default policy, where readings stored
before retention was turned on stay (core/retention.py).  A bucket whose readings are
gone by the time it would be final keeps its provisional values.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo

from foursave.core.clock import Clock, SystemClock
from foursave.core.config import Config, Site
from foursave.core.glossary import FIELDS, PARTS
from foursave.core.influx import InfluxClient, InfluxRejected
from foursave.core.influxql import (
    ALL,
    DEFAULT_RP,
    Expr,
    agg,
    column,
    eq,
    every,
    select,
    time_range,
)
from foursave.core.late import LATE, LATE_AFTER_S
from foursave.core.periods import day_start_ms, local_date
from foursave.core.periods import zone as zone_of
from foursave.core.reading import to_line
from foursave.core.retention import COPY_MARGIN_MS, RAW_RP, ROLLED_UP, ROLLUP_RPS, raw_from_ms

log = logging.getLogger("foursave.downsample")

STATE = "rollup_state"
PROVISIONAL_AFTER_S = 120  # after its end a bucket waits this long for readings in flight
CHUNK_DAYS = {"1h": 7, "1d": 92}  # one query reads at most this much of a measurement
WRITE_BATCH = 5000

# lifetime counters (the glossary calls them so): last and first, never a mean
COUNTERS = frozenset(
    {
        ("inverter", "ac_energy_wh"),
        ("meter", "import_energy_wh"),
        ("meter", "export_energy_wh"),
        ("water", "volume_m3"),
        ("inverter_string", "dc_energy_wh"),
        ("battery", "discharged_energy_wh"),
        ("battery", "charged_energy_wh"),
    }
)
GAUGE_STATS = ("", "_min", "_max", "_sum", "_n")
COUNTER_STATS = ("", "_first", "_n")
STATE_STATS = ("", "_n")


def stats_of(measurement: str) -> dict[str, str]:
    """Field -> ``gauge``, ``counter`` or ``state`` for the rolled-up fields of
    ``measurement`` (text fields are not rolled up)."""
    out: dict[str, str] = {}
    for name, f in FIELDS[measurement].items():
        if (measurement, name) in COUNTERS:
            out[name] = "counter"
        elif f.type == "int":
            out[name] = "state"
        elif f.type == "float":
            out[name] = "gauge"
    return out


def _exprs(measurement: str) -> list[Expr]:
    exprs = []
    for name, kind in stats_of(measurement).items():
        if kind == "gauge":
            exprs += [
                agg("mean", name, name),
                agg("min", name, f"{name}_min"),
                agg("max", name, f"{name}_max"),
                agg("sum", name, f"{name}_sum"),
            ]
        elif kind == "counter":
            exprs += [agg("last", name, name), agg("first", name, f"{name}_first")]
        else:
            exprs.append(agg("last", name, name))
        exprs.append(agg("count", name, f"{name}_n"))
    return exprs


def _fields(measurement: str, row: dict) -> dict[str, float | int]:
    """A result row as the rollup point's fields (None left out; counts as floats, a
    state as the integer the glossary says)."""
    out: dict[str, float | int] = {}
    for name, kind in stats_of(measurement).items():
        n = row.get(f"{name}_n")
        if not n:
            continue
        for suffix in {"gauge": GAUGE_STATS, "counter": COUNTER_STATS, "state": STATE_STATS}[kind]:
            v = row.get(name + suffix)
            if v is None:
                continue
            out[name + suffix] = int(v) if kind == "state" and suffix == "" else float(v)
    return out


# ------------------------------------------------------------------ buckets


def floor(bucket: str, t_ms: int, zone: tzinfo) -> int:
    """The start of the bucket (local hour or day in ``zone``) holding ``t_ms``."""
    if bucket == "1d":
        return day_start_ms(local_date(t_ms, zone), zone)
    local = datetime.fromtimestamp(t_ms / 1000, zone).replace(minute=0, second=0, microsecond=0)
    return int(local.timestamp() * 1000)


def after(bucket: str, start_ms: int, zone: tzinfo) -> int:
    """The start of the bucket after the one starting at ``start_ms``."""
    if bucket == "1d":
        return day_start_ms(local_date(start_ms, zone) + timedelta(days=1), zone)
    return start_ms + 3_600_000


def _chunks(bucket: str, start: int, end: int, zone: tzinfo) -> Iterable[tuple[int, int]]:
    """[start, end) cut at bucket starts, a chunk at most :data:`CHUNK_DAYS` long."""
    span = CHUNK_DAYS[bucket] * 86_400_000
    t = start
    while t < end:
        t1 = min(end, floor(bucket, t + span, zone))
        if t1 <= t:
            t1 = min(end, after(bucket, t, zone))
        yield t, t1
        t = t1


# ------------------------------------------------------------------ the pass


@dataclass
class SiteState:
    final_upto_ms: int | None = None
    provisional_upto_ms: int | None = None
    late_seen_ms: int | None = None


@dataclass
class PassResult:
    """What one pass did, per bucket size: points written and raw queries sent."""

    points: dict[str, int]
    queries: dict[str, int]


def _states(influx: InfluxClient, rp: str) -> dict[str, SiteState]:
    rows = influx.rows(
        select(
            [
                column("final_upto_ms"),
                column("provisional_upto_ms"),
                column("late_seen_ms"),
                column("site"),
            ],
            STATE,
            rp=rp,
        )
    )
    out = {}
    for r in rows:

        def ms(k: str, r: dict = r) -> int | None:
            return int(r[k]) if r.get(k) is not None else None

        out[r["site"]] = SiteState(
            ms("final_upto_ms"), ms("provisional_upto_ms"), ms("late_seen_ms")
        )
    return out


def _state_line(site: str, st: SiteState) -> str:
    fields = {
        k: float(v)
        for k, v in (
            ("final_upto_ms", st.final_upto_ms),
            ("provisional_upto_ms", st.provisional_upto_ms),
            ("late_seen_ms", st.late_seen_ms),
        )
        if v is not None
    }
    return to_line(STATE, {"site": site}, fields, 0)


def _measurements(config: Config, site: Site) -> list[str]:
    kinds = sorted({d.kind for d in config.devices if d.site == site.id})
    return [m for k in kinds for m in (k, *PARTS.get(k, {}))]


class _Reader:
    """Reads a site's readings per bucket from ``raw`` and, before the raw window, from
    the default policy; counts its queries."""

    def __init__(self, influx: InfluxClient, raw_from: int | None, bucket: str, zone: tzinfo):
        self.influx, self.bucket, self.zone = influx, bucket, zone
        # buckets wholly before the raw window: the default policy (readings from
        # before retention); a bucket across its start is the raw policy's
        # (an hour inside the window, where core/retention.py's copy begins)
        self.split = (
            None
            if raw_from is None
            else after(bucket, floor(bucket, raw_from + COPY_MARGIN_MS, zone), zone)
        )
        self.queries = 0

    def rows(self, measurement: str, site: Site, start: int, end: int) -> list[dict]:
        parts: list[tuple[int, int, str | None]] = []
        if self.split is None:
            parts.append((start, end, None))
        else:
            if start < self.split:
                parts.append((start, min(end, self.split), DEFAULT_RP))
            if end > self.split:
                parts.append((max(start, self.split), end, RAW_RP))
        out: list[dict] = []
        for a, b, rp in parts:
            for c0, c1 in _chunks(self.bucket, a, b, self.zone):
                self.queries += 1
                out.extend(
                    self.influx.rows(
                        select(
                            _exprs(measurement),
                            measurement,
                            where=[eq("site", site.id), time_range(c0, c1)],
                            group_by=[every(self.bucket), *ROLLED_UP[measurement]],
                            fill="none",
                            tz=site.timezone,
                            rp=rp,
                        )
                    )
                )
        return out

    def first_ms(self, measurement: str, site: Site) -> int | None:
        """The site's first reading of ``measurement`` (either policy)."""
        found = []
        for rp in (DEFAULT_RP, RAW_RP):
            self.queries += 1
            rows = self.influx.rows(
                select(ALL, measurement, where=[eq("site", site.id)], limit=1, rp=rp)
            )
            found += [r["time"] for r in rows]
        return min(found) if found else None


def _lines(measurement: str, site: Site, rows: list[dict]) -> list[str]:
    out = []
    for r in rows:
        fields = _fields(measurement, r)
        if not fields:
            continue
        tags = {"site": site.id, **{t: r[t] for t in ROLLED_UP[measurement] if r.get(t)}}
        out.append(to_line(measurement, tags, fields, int(r["time"])))
    return out


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in sorted(r for r in ranges if r[1] > r[0]):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def run_pass(
    config: Config,
    influx: InfluxClient,
    clock: Clock | None = None,
    sites: Sequence[Site] | None = None,
    server_now_ms: int | None = None,
) -> PassResult:
    """Bring the hourly and daily rollups of ``sites`` (default: every site) up to
    ``clock``'s now (module docstring).  ``server_now_ms`` (default: this machine's
    time) is the InfluxDB server's now, which its retention policy counts from."""
    retention = config.services.influxdb.retention
    if not retention.enabled:
        raise ValueError(
            "the rollups need services.influxdb.retention.raw_days: without it the "
            "readings are kept for ever and nothing is rolled up"
        )
    clock = clock or SystemClock()
    now = int(clock.time() * 1000)
    server_now = int(time.time() * 1000) if server_now_ms is None else server_now_ms
    raw_from = raw_from_ms(retention, server_now)
    sites = list(config.sites if sites is None else sites)
    result = PassResult({}, {})
    markers: list[dict] | None = None
    for bucket, rp in ROLLUP_RPS.items():
        try:
            states = _states(influx, rp)
        except InfluxRejected as exc:
            if "retention policy not found" not in exc.text:
                raise
            log.error(
                "no retention policy %s in %s: the rollups wait for it (foursave "
                "influx-setup makes it): %s",
                rp,
                influx.database,
                exc.text,
            )
            return result
        if markers is None:  # read once a pass: from the oldest a site has not handled
            seen = [states[s.id].late_seen_ms for s in sites if s.id in states]
            known = [x for x in seen if x is not None]
            since = None if len(known) < len(seen) else min(known, default=None)
            where = [] if since is None else [time_range(start_ms=since + 1)]
            markers = influx.rows(
                select([column("first_ms"), column("last_ms")], LATE, where=where, rp=DEFAULT_RP)
            )
        written = queries = 0
        state_lines = []
        for site in sites:
            zone = zone_of(site.timezone)
            reader = _Reader(influx, raw_from, bucket, zone)
            st = states.get(site.id, SiteState())
            final_to = floor(bucket, now - LATE_AFTER_S * 1000, zone)
            prov_to = floor(bucket, now - PROVISIONAL_AFTER_S * 1000, zone)
            measurements = _measurements(config, site)
            first_pass = st.final_upto_ms is None
            if first_pass:
                firsts = [f for m in measurements if (f := reader.first_ms(m, site)) is not None]
                if not firsts:
                    queries += reader.queries
                    continue  # no readings yet
                st.final_upto_ms = floor(bucket, min(firsts), zone)
                st.provisional_upto_ms = st.final_upto_ms
            final_from = st.final_upto_ms
            assert final_from is not None
            prov_from = max(st.provisional_upto_ms or final_from, final_to)
            todo = [(final_from, final_to), (prov_from, prov_to)]
            newest = st.late_seen_ms
            for mk in markers:
                if st.late_seen_ms is not None and mk["time"] <= st.late_seen_ms:
                    continue
                newest = max(newest or mk["time"], mk["time"])
                if first_pass or mk.get("first_ms") is None or mk.get("last_ms") is None:
                    continue  # a first pass reads everything from the first reading on
                a = floor(bucket, int(mk["first_ms"]), zone)
                b = after(bucket, floor(bucket, int(mk["last_ms"]), zone), zone)
                todo.append((a, min(b, final_from)))  # closed buckets the marker touches
            lines = []
            for a, b in _merge(todo):
                for m in measurements:
                    lines += _lines(m, site, reader.rows(m, site, a, b))
            for i in range(0, len(lines), WRITE_BATCH):
                influx.write(lines[i : i + WRITE_BATCH], rp=rp)
            written += len(lines)
            queries += reader.queries
            st.final_upto_ms = max(final_from, final_to)
            st.provisional_upto_ms = max(prov_from, prov_to, st.final_upto_ms)
            st.late_seen_ms = newest
            state_lines.append(_state_line(site.id, st))
        if state_lines:
            influx.write(state_lines, rp=rp)
        result.points[bucket], result.queries[bucket] = written, queries
    log.info(
        "rollups: %s",
        ", ".join(
            f"{b} {n} points ({result.queries[b]} queries)" for b, n in result.points.items()
        ),
    )
    return result
