"""The demo's past: simulated history and sample manual records, filled once.

``foursave demo`` shows a site with a past, so that baselines, annual reports and every
dashboard have something to show from the first minutes:

- history from 1 January of the year before last (or of an earlier base year) up to the
  instant live simulation starts, written by the backfill (same physics, same counters,
  so live data continues it without a jump).  Only the hours that hold no reading at all
  are filled, so a second demo run fills just the time it was stopped and never doubles
  what is there;
- sample manual records for the same months (fuel, paper, document counts, a few water
  bills), marked as sample data in who entered them and in their evidence, added only
  where no sample record of that site, month and kind exists yet.
"""

from __future__ import annotations

import math
import random
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta

from foursave.core.config import Config
from foursave.core.influx import InfluxClient
from foursave.core.influxql import agg, every, select, tag_in, time_range
from foursave.core.periods import day_start_ms, local_date, next_month
from foursave.rules.records import RecordIn, RecordStore
from foursave.simulators.backfill import BackfillResult, run_backfill

HOUR_MS = 3_600_000
READING_MEASUREMENTS = ("inverter", "meter", "weather", "water")

# who "entered" the sample records, and what their evidence says: never mistaken for real
SAMPLE_BY = "sample data (foursave demo)"
SAMPLE_EVIDENCE = "SAMPLE DATA: simulated by foursave demo, not a real document"


@dataclass(frozen=True)
class Gap:
    """[start_ms, end_ms): a stretch without any reading from the simulated devices."""

    start_ms: int
    end_ms: int

    @property
    def hours(self) -> float:
        return (self.end_ms - self.start_ms) / HOUR_MS


def history_start(config: Config, now: float) -> date:
    """1 January of the year before last (the base year of the 2016 plan's electricity
    rule defaults to it), or of the earliest configured base year if that is earlier.
    "This year" is each site's local year (they differ on New Year's Eve): the earliest."""
    years = [st.ledger.base_year for st in config.sites]
    this_years = [local_date(now * 1000, s.timezone).year for s in config.sites]
    return date(min([y - 2 for y in this_years] + years), 1, 1)


def find_gaps(influx: InfluxClient, config: Config, start_ms: int, end_ms: int) -> list[Gap]:
    """Hours of [start_ms, end_ms) in which no simulated device has a reading, merged into
    runs; the first and last run are cut to the exact bounds."""
    ids = sorted(d.id for d in config.devices if d.simulate and d.simulate.image is None)
    if not ids or end_ms <= start_ms:
        return []
    # hours aligned to the epoch: every zone the demo runs in has whole-hour offsets
    first_hour = start_ms - start_ms % HOUR_MS
    busy: set[int] = set()
    for m in READING_MEASUREMENTS:
        rows = influx.rows(
            select(
                agg("count", "*"),
                m,
                where=[tag_in("device", ids), time_range(first_hour, end_ms)],
                group_by=[every("1h")],
            )
        )
        for r in rows:
            if any(v for k, v in r.items() if k.startswith("count_") and v):
                busy.add(int(r["time"]))
    gaps: list[Gap] = []
    h = first_hour
    run_start: int | None = None
    while h < end_ms:
        if h in busy:
            if run_start is not None:
                gaps.append(Gap(max(run_start, start_ms), h))
                run_start = None
        elif run_start is None:
            run_start = h
        h += HOUR_MS
    if run_start is not None:
        gaps.append(Gap(max(run_start, start_ms), end_ms))
    return [g for g in gaps if g.end_ms > g.start_ms]


def fill_gaps(
    config: Config,
    gaps: list[Gap],
    influx: InfluxClient | None = None,
    progress: Callable[[int, int, int], None] | None = None,
    step_s: int = 60,
) -> BackfillResult:
    """Backfill every gap, each cut to the minute; ``progress(days_done, days_total,
    lines)`` over all gaps together."""
    zones = {s.timezone for s in config.sites}
    spans = []
    for g in gaps:
        # the local days the gap touches at every site (the backfill cuts to the gap)
        first = min(local_date(g.start_ms, z) for z in zones)
        last = max(local_date(g.end_ms - 1, z) for z in zones) + timedelta(days=1)
        spans.append((g, first, last))
    total_days = sum((b - a).days for _, a, b in spans)
    done_days, lines, seconds = 0, 0, 0.0
    for g, a, b in spans:
        offset = done_days

        def step(days: int, _total: int, n: int, offset: int = offset, base: int = lines) -> None:
            if progress:
                progress(offset + days, total_days, base + n)

        r = run_backfill(
            config,
            a,
            b,
            step_s=step_s,
            influx=influx,
            progress=step,
            window_ms=(g.start_ms, g.end_ms),
        )
        done_days += (b - a).days
        lines += r.lines
        seconds += r.seconds
    return BackfillResult(lines, seconds, total_days)


# ---------------------------------------------------------------------- sample records


def _months(first: date, until: date) -> Iterator[tuple[int, int]]:
    """(year, month) from ``first``'s month up to the month before ``until``'s."""
    y, m = first.year, first.month
    while (y, m) < (until.year, until.month):
        yield y, m
        y, m = next_month(y, m)


def _seasonal(month: int, peak_month: int, amplitude: float) -> float:
    return 1 + amplitude * math.cos(2 * math.pi * (month - peak_month) / 12)


def sample_records(site_id: str, y: int, m: int, seed: int, base_year: int) -> list[RecordIn]:
    """One month of plausible manual records for one site (seeded: the same every run).

    Shapes: official-vehicle fuel a little higher in summer and low in February (the
    Lunar New Year holidays), falling about 3 % a year; paper highest at year end and
    falling about 5 % a year; online signing rising towards the 2016 plan's 100 % target;
    water billed every second month.
    """
    rng = random.Random(zlib.crc32(f"{seed}:{site_id}:{y}-{m:02d}".encode()))
    years = y - base_year
    holiday = 0.8 if m == 2 else 1.0

    def noisy(v: float, spread: float = 0.04) -> float:
        return v * (1 + rng.uniform(-spread, spread))

    gasoline = noisy(330 * _seasonal(m, 7, 0.08) * holiday * 0.97**years)
    diesel = noisy(55 * _seasonal(m, 8, 0.25) * 0.98**years, 0.08)  # generator tests
    reams = noisy(160 * _seasonal(m, 12, 0.12) * holiday * 0.95**years)
    received = round(noisy(2300 * holiday, 0.06))
    paper_to_online = round(noisy(140 * 0.9**years, 0.1))
    self_created = round(noisy(850 * holiday, 0.06))
    rate = min(0.995, 0.95 + 0.015 * years + rng.uniform(-0.004, 0.004))
    signed = round(rate * (received + paper_to_online + self_created))
    period = f"{y}-{m:02d}"
    values = {
        "gasoline_l": round(gasoline, 1),
        "diesel_l": round(diesel, 1),
        "paper_reams": float(round(reams)),
        "docs_online_signed": float(signed),
        "docs_electronic_received": float(received),
        "docs_paper_to_online": float(paper_to_online),
        "docs_self_created": float(self_created),
    }
    if m % 2 == 0:  # Taiwan Water bills every second month, for the two months
        values["water_bill_m3"] = float(round(noisy(2 * 780 * _seasonal(m, 7, 0.15))))
    return [
        RecordIn(
            site=site_id,
            period=period,
            kind=kind,
            value=value,
            entered_by=SAMPLE_BY,
            evidence=f"{SAMPLE_EVIDENCE} ({kind} {period})",
        )
        for kind, value in values.items()
    ]


def add_sample_records(config: Config, store: RecordStore, first: date, until: date) -> int:
    """Sample records for every site and month of [first's month, until's month), skipping
    any site, month and kind that already has a sample record; returns how many were
    added."""
    have = {(r.site, r.period, r.kind) for r in store.history() if r.entered_by == SAMPLE_BY}
    added = 0
    with store.db:
        store.db.execute("BEGIN")  # all of them or none
        for site in config.sites:
            for y, m in _months(first, until):
                for rec in sample_records(
                    site.id, y, m, config.services.simulator.seed, site.ledger.base_year
                ):
                    if (rec.site, rec.period, rec.kind) not in have:
                        store.add(rec)
                        added += 1
    return added


def history_window(config: Config, now: float) -> tuple[int, int]:
    """[start, now) in epoch ms for the demo's history: from the first local midnight
    of :func:`history_start` among the sites' zones."""
    start = history_start(config, now)
    return min(day_start_ms(start, s.timezone) for s in config.sites), int(now * 1000)
