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
* what the rules engine derived from the readings, per series (count and sum of every
  field) over the days the ledger loads (from its earliest base year) up to the
  period's end: the ``counter_daily`` rollup (every generation) and its generation,
  ``pv_daily``, ``bill_month``, ``bill_check``, ``pv_value_month``, ``demand_month``
  and the ``ledger`` rows (weather normalisation is in their details);
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
from datetime import date, timedelta
from functools import cache
from pathlib import Path

from foursave.core.config import Config
from foursave.core.influx import InfluxClient
from foursave.core.influxql import Expr, agg, column, eq, select, time_range
from foursave.core.periods import Period, day_start_ms, local_date
from foursave.core.periods import zone as zone_of
from foursave.rules.records import RecordStore
from foursave.rules.rollup import (
    COUNTERS,
    OPEN_DAYS,
    ROLLUP,
    SCANNED,
    days_range,
    rollup_generation,
)
from foursave.rules.rows import METHOD_VERSION

# derived measurement -> the tags that tell its series apart
DERIVED = {
    ROLLUP: ("device", "field", "generation"),
    "pv_daily": ("site", "device"),
    "bill_month": ("site", "plan", "tariff"),
    "bill_check": ("site",),
    "pv_value_month": ("site", "plan", "tariff"),
    "demand_month": ("site", "month"),
    "ledger": ("site", "item", "period", "granularity", "method"),
}
RAW = ("meter", "inverter", "water", "weather")  # read from the readings for the open days
LEAD_DAYS = 40  # before the loaded range: a billing period may start in the month before


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


def _series(influx: InfluxClient, measurement: str, tags: tuple[str, ...], t0: int, t1: int):
    """Per series of ``measurement`` in [t0, t1): the count and the sum of every field."""
    fields: list[Expr] = [agg("count", "*"), agg("sum", "*")]
    q = select(fields, measurement, where=[time_range(t0, t1)], group_by=list(tags))
    return sorted(
        (json.dumps(s.get("tags", {}), sort_keys=True), s["columns"], s["values"])
        for s in influx.query(q)
    )


def _unscanned(config: Config, influx: InfluxClient, start: date, end: date) -> list:
    """The readings of the closed days the rollup has not scanned (no ``_scanned``
    marker of the current generation: days before data began, or a rollup behind), per
    counter field and run of days: the ledger reads those from the readings too."""
    generation = rollup_generation(influx)
    zones = sorted({s.timezone for s in config.sites})
    out: list = []
    for tz in zones:
        zone = zone_of(tz)
        marker = SCANNED if len(zones) == 1 else f"{SCANNED}@{tz}"
        lo, hi = start - timedelta(days=1), end - timedelta(days=OPEN_DAYS + 1)
        scanned: dict[str, set[date]] = {f: set() for _, f in COUNTERS}
        for row in influx.rows(
            select(
                [column("c"), column("field")],
                ROLLUP,
                where=[
                    eq("device", marker),
                    eq("generation", str(generation)),
                    days_range(lo, hi, zone),
                ],
            )
        ):
            scanned.setdefault(row["field"], set()).add(local_date(row["time"], zone))
        for m, f in COUNTERS:
            runs: list[list[date]] = []
            d = lo
            while d < hi:
                if d not in scanned[f]:
                    if runs and runs[-1][1] == d:
                        runs[-1][1] = d + timedelta(days=1)
                    else:
                        runs.append([d, d + timedelta(days=1)])
                d += timedelta(days=1)
            for a, b in runs:
                q = select(
                    [agg("count", f), agg("sum", f)],
                    m,
                    where=[days_range(a, b, zone)],
                    group_by=["device", "source", "step_s"],
                )
                out.append(
                    (
                        tz,
                        f,
                        str(a),
                        str(b),
                        sorted(json.dumps(r, sort_keys=True) for r in influx.rows(q)),
                    )
                )
    return out


def input_fingerprint(
    config: Config, influx: InfluxClient, records: RecordStore, p: Period, y: int
) -> str:
    """The fingerprint of the report of ``p`` (of year ``y``)'s inputs (module doc)."""
    t0, t1 = _bounds(config, loaded_start(config, y) - timedelta(days=LEAD_DAYS), p.end)
    o0, o1 = _bounds(config, p.end - timedelta(days=OPEN_DAYS + 1), p.end)
    parts: dict[str, object] = {
        "method": METHOD_VERSION,
        "config": _config_digest(config),
        "data": _data_files_digest(),
        "records": records.last_change(),
        "generation": rollup_generation(influx),
        "period": [p.label, t0, t1],
    }
    for m, tags in DERIVED.items():
        parts[m] = _series(influx, m, tags, t0, t1)
    for m in RAW:
        parts["raw:" + m] = _series(influx, m, ("device", "source", "step_s"), o0, o1)
    parts["unscanned"] = _unscanned(config, influx, loaded_start(config, y), p.end)
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()
