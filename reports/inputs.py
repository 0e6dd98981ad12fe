"""A cheap fingerprint of everything a report's numbers are computed from.

A frozen report is served from its cached bytes while this fingerprint is unchanged
(``reports/cache.py``); when it changes the report is rebuilt and compared with the
issued revision, as :func:`reports.build.report_for` always did ("late data").  A
change of the fingerprint without a change of numbers costs one rebuild, never a wrong
answer; a change of numbers without a change of the fingerprint would be wrong, so the
fingerprint takes in, generously:

* the method version, the configuration's sites and devices (and the closing rule),
  and the data files of ``rules/data`` (emission factors, tariffs);
* the manual records' last change (the store is append-only: count and highest id);
* what the rules engine derived from the readings, per series (count and sum of the
  fields the report's numbers follow, or of every field): the ``counter_daily``
  rollup (every generation) over the days the ledger loads (from its earliest base
  year) up to the period's end, and its generation; over the report's year up to the
  period's end, ``pv_daily``, ``bill_month``, ``bill_check``, ``pv_value_month``,
  ``demand_month`` and the ``ledger`` rows (weather normalisation is in their details);
* the raw readings the ledger reads from the readings on every build (count and sum
  per device and field): the period's last ``OPEN_DAYS`` days, and the closed days
  the rollup has not scanned (before data began, or a rollup behind: the rules engine
  fills it, a read-only client does not).

Late raw data for any other closed day reaches the report's numbers through the
rollup and the rules engine's derived points (``foursave rules --once [--rebuild]``,
or a pass whose window covers the day), and so reaches this fingerprint the same way.
The queries aggregate a few thousand derived points and two days of readings: tens of
milliseconds, against seconds for a build.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from functools import cache, partial
from pathlib import Path

from foursave.core.config import Config
from foursave.core.influx import InfluxClient
from foursave.core.influxql import Expr, agg, column, eq, select, tag_in, time_range
from foursave.core.late import LATE
from foursave.core.periods import Period, day_start_ms, local_date
from foursave.core.periods import zone as zone_of
from foursave.rules.records import RecordStore
from foursave.rules.rollup import (
    COUNTERS,
    OPEN_DAYS,
    ROLLUP,
    days_range,
    legacy_markers,
    rollup_generation,
    site_marker,
)
from foursave.rules.rows import METHOD_VERSION

FINGERPRINT_QUERIES_AT_ONCE = 4  # InfluxDB answers them side by side

# derived measurement -> (the tags that tell its series apart, the fields summed: None
# for every field), over the days the ledger loads ("loaded") or the report's year
# up to the period's end ("year")
DERIVED: dict[str, tuple[str, tuple[str, ...], tuple[str, ...] | None]] = {
    ROLLUP: ("loaded", ("device", "field", "generation"), ("c", "share")),
    # the ledger's rows of the months and the year: weather normalisation is in their
    # details (the temperatures are read from the readings at every build)
    "ledger": (
        "year",
        ("site", "item", "granularity"),
        (
            "actual",
            "baseline",
            "completeness",
            "co2e_kg",
            "normalised_baseline_kwh",
            "normalised_savings_rate",
            "baseline_cv_rmse",
        ),
    ),
    "pv_daily": ("year", ("site", "device"), ("e_ac_kwh", "y_r", "pr", "availability")),
    "bill_month": ("year", ("site", "plan", "tariff"), None),
    "bill_check": ("year", ("site",), None),
    "pv_value_month": ("year", ("site", "plan", "tariff"), None),
    "demand_month": ("year", ("site",), None),
}
LEAD_DAYS = 40  # before the year: a billing period may start in the month before


def loaded_start(config: Config, y: int) -> date:
    """The first day the report's ledger loads (``build_report``): the previous year's
    or the earliest base year's 1 January."""
    return date(min([y - 1, *(s.ledger.base_year for s in config.sites)]), 1, 1)


@cache
def _data_files_digest() -> str:
    root = Path(__file__).resolve().parent.parent / "rules" / "data"
    h = hashlib.sha256()
    for f in sorted(root.rglob("*")):
        if f.is_file():
            h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def _config_digest(config: Config) -> str:
    parts = {
        "sites": [s.model_dump(mode="json") for s in config.sites],
        "devices": [d.model_dump(mode="json") for d in config.devices],
        "close_after_days": config.services.api.close_after_days,
    }
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _bounds(config: Config, first: date, end: date) -> tuple[int, int]:
    zones = [zone_of(tz) for tz in {s.timezone for s in config.sites}]
    return (
        min(day_start_ms(first, z) for z in zones),
        max(day_start_ms(end, z) for z in zones),
    )


def _series(
    influx: InfluxClient,
    measurement: str,
    tags: tuple[str, ...],
    fields: tuple[str, ...] | None,
    t0: int,
    t1: int,
):
    """Per series of ``measurement`` in [t0, t1): the count and the sum of its fields."""
    exprs: list[Expr] = (
        [agg("count", "*"), agg("sum", "*")]
        if fields is None
        else [agg("count", fields[0]), *(agg("sum", f) for f in fields)]
    )
    q = select(exprs, measurement, where=[time_range(t0, t1)], group_by=list(tags))
    return sorted(
        (json.dumps(s.get("tags", {}), sort_keys=True), s["columns"], s["values"])
        for s in influx.query(q)
    )


def _by_measurement(counters: tuple[tuple[str, str], ...]) -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    for m, f in counters:
        out[m] = (*out.get(m, ()), f)
    return out


def _unscanned(
    config: Config, influx: InfluxClient, start: date, end: date, generation: int
) -> list:
    """The readings of the closed days the rollup has not scanned (no scanned marker of
    the current generation for one of the zone's sites: days before data began, or a
    rollup behind), per counter field and run of days: the ledger reads those from the
    readings too."""
    zones = sorted({s.timezone for s in config.sites})
    out: list = []
    for tz in zones:
        zone = zone_of(tz)
        sites = [s.id for s in config.sites if s.timezone == tz]
        legacy = legacy_markers(tz)
        lo, hi = start - timedelta(days=1), end - timedelta(days=OPEN_DAYS + 1)
        # a day is scanned when every site of the zone has its marker (rules/rollup.py),
        # or a marker from before markers were per site covers it
        per_site: dict[tuple[str, str], set[date]] = {}
        for row in influx.rows(
            select(
                [column("c"), column("field"), column("device")],
                ROLLUP,
                where=[
                    tag_in("device", [*legacy, *(site_marker(s) for s in sites)]),
                    eq("generation", str(generation)),
                    days_range(lo, hi, zone),
                ],
            )
        ):
            key = "*" if row["device"] in legacy else row["device"]
            per_site.setdefault((row["field"], key), set()).add(local_date(row["time"], zone))
        scanned: dict[str, set[date]] = {}
        for _, f in COUNTERS:
            each = [per_site.get((f, site_marker(s)), set()) for s in sites]
            scanned[f] = per_site.get((f, "*"), set()) | set.intersection(*each)
        for m, fs in _by_measurement(COUNTERS).items():
            runs: list[list[date]] = []
            d = lo
            while d < hi:
                if any(d not in scanned[f] for f in fs):
                    if runs and runs[-1][1] == d:
                        runs[-1][1] = d + timedelta(days=1)
                    else:
                        runs.append([d, d + timedelta(days=1)])
                d += timedelta(days=1)
            for a, b in runs:
                q = select(
                    [agg("count", fs[0]), *(agg("sum", f) for f in fs)],
                    m,
                    where=[days_range(a, b, zone)],
                    group_by=["device", "source", "step_s"],
                )
                rows = sorted(json.dumps(r, sort_keys=True) for r in influx.rows(q))
                out.append((tz, m, str(a), str(b), rows))
    return out


def input_fingerprint(
    config: Config, influx: InfluxClient, records: RecordStore, p: Period, y: int
) -> str:
    """The fingerprint of the report of ``p`` (of year ``y``)'s inputs (module doc)."""
    ranges = {
        "loaded": _bounds(config, loaded_start(config, y) - timedelta(days=1), p.end),
        "year": _bounds(config, date(y, 1, 1) - timedelta(days=LEAD_DAYS), p.end),
    }
    o0, o1 = _bounds(config, p.end - timedelta(days=OPEN_DAYS + 1), p.end)
    generation = rollup_generation(influx)
    parts: dict[str, object] = {
        "method": METHOD_VERSION,
        "config": _config_digest(config),
        "data": _data_files_digest(),
        "records": records.last_change(),
        "generation": generation,
        "period": [p.label, ranges],
    }
    # the queries are independent and small: sent side by side, the fingerprint costs
    # about the slowest round trips rather than their sum (a cache hit is nothing else)
    tasks: dict[str, Callable[[], object]] = {
        m: partial(_series, influx, m, tags, fields, *ranges[span])
        for m, (span, tags, fields) in DERIVED.items()
    }
    for m, fs in _by_measurement(COUNTERS).items():
        tasks[f"raw:{m}"] = partial(_series, influx, m, ("device", "source", "step_s"), fs, o0, o1)
    tasks["unscanned"] = partial(
        _unscanned, config, influx, loaded_start(config, y), p.end, generation
    )
    # readings stored late (the ingester's and backfill's late_data markers, core/late.py):
    # the raw inputs a build reads directly (temperatures, PV, the bills' 15-minute blocks)
    # may have changed; any new marker costs one rebuild, after which the fingerprint is
    # stored again
    tasks["late"] = partial(
        influx.rows,
        select(
            [agg("count", "n", "k"), agg("sum", "n", "s"), agg("max", "last_ms", "m")],
            LATE,
        ),
    )
    with ThreadPoolExecutor(max_workers=FINGERPRINT_QUERIES_AT_ONCE) as pool:
        futures = {k: pool.submit(f) for k, f in tasks.items()}
        parts.update({k: fut.result() for k, fut in futures.items()})
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()
