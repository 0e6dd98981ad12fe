"""Report benchmark (run on demand): the annual four-saving report of the demo site over
two years of 1-minute data, against the bare InfluxQL queries it needs, in one run.

The bare queries are what the report's numbers need at least, issued as plain
aggregations: the last counter value and the reading count per device and day of every
counter field over the days the ledger loads (from the year before, for baselines),
the daily mean temperature over the same days, and the PV queries over the year
(hourly irradiance and module temperature, 15-minute inverter power, daily state
counts).  Measured, each as a ratio to the bare queries of its year:

* building the report in process (``build_report``), closed year 2025;
* a frozen (closed) annual PDF through ``reports.cache.report_file``, first request
  (builds, issues revision 1, renders, stores) and second request (goal <= 0.2 s);
* a fresh build of the open year 2026 as a PDF (goal <= 1.2x its bare queries).

A rules pass runs first, as the deployed engine would have (rollup, derived points).

    .venv/bin/python bench/report.py            # backfills 730 days first (~1-2 min)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from foursave.app import load_config  # noqa: E402
from foursave.core.clock import ManualClock  # noqa: E402
from foursave.core.influx import InfluxClient  # noqa: E402
from foursave.core.influxql import agg, eq, every, select  # noqa: E402
from foursave.core.periods import year  # noqa: E402
from foursave.localstack import free_port, influxd  # noqa: E402
from foursave.reports.build import build_report  # noqa: E402
from foursave.reports.cache import report_file  # noqa: E402
from foursave.reports.inputs import loaded_start  # noqa: E402
from foursave.reports.store import ReportStore  # noqa: E402
from foursave.rules.engine import run_once  # noqa: E402
from foursave.rules.records import RecordStore  # noqa: E402
from foursave.rules.rollup import COUNTERS, days_range  # noqa: E402
from foursave.simulators.backfill import run_backfill  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--days", type=int, default=730)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    db = influxd(free_port(), Path(tempfile.mkdtemp(prefix="foursave-report-bench-"))).start(60)
    url = f"http://127.0.0.1:{db.port}"
    os.environ["FOURSAVE_INFLUXDB_URL"] = url
    try:
        cfg = load_config(ROOT / "config" / "demo.yaml")
        site = cfg.sites[0]
        tz = ZoneInfo(site.timezone)
        start = date(2024, 11, 1)
        end = start + timedelta(days=args.days)
        t = time.perf_counter()
        bf = run_backfill(cfg, start, end)
        t_fill = time.perf_counter() - t
        influx = InfluxClient(url, cfg.services.influxdb.database, timeout_s=300)
        tmp = Path(tempfile.mkdtemp())
        records = RecordStore(tmp / "records.sqlite")
        now = datetime(end.year, end.month, end.day, 12, tzinfo=tz)
        clock = ManualClock(now.timestamp())
        t = time.perf_counter()
        run_once(cfg, influx, records, clock=clock)  # the engine's pass: rollup, derived points
        t_pass = time.perf_counter() - t

        def bare(y: int) -> None:
            p = year(y)
            lo = loaded_start(cfg, y) - timedelta(days=1)
            for m, f in COUNTERS:
                influx.rows(
                    select(
                        [agg("last", f), agg("count", f)],
                        m,
                        where=[days_range(lo, p.end, tz)],
                        group_by=[every("1d"), "device"],
                        tz=site.timezone,
                    )
                )
            influx.rows(
                select(
                    agg("mean", "ambient_temp_c"),
                    "weather",
                    where=[eq("site", site.id), days_range(lo, p.end, tz)],
                    group_by=[every("1d")],
                    tz=site.timezone,
                )
            )
            rng = days_range(p.start, p.end, tz)
            for m, f, step in (
                ("weather", "poa_irradiance_wm2", "1h"),
                ("weather", "ghi_wm2", "1h"),
                ("weather", "module_temp_c", "1h"),
                ("inverter", "ac_power_w", "15m"),
            ):
                influx.rows(
                    select(
                        agg("mean", f),
                        m,
                        where=[eq("site", site.id), rng],
                        group_by=[every(step), "device"],
                        fill="none",
                    )
                )
            for state in (5, 7):
                influx.rows(
                    select(
                        agg("count", "state"),
                        "inverter",
                        where=[eq("site", site.id), rng, eq("state", state)],
                        group_by=[every("1d"), "device"],
                        tz=site.timezone,
                    )
                )

        def timed(fn) -> float:
            t = time.perf_counter()
            fn()
            return time.perf_counter() - t

        closed, current = end.year - 1, end.year  # 2025 closed, 2026 open
        bare(closed)  # warm the file cache
        b_closed = statistics.median(timed(lambda: bare(closed)) for _ in range(args.repeat))
        b_open = statistics.median(timed(lambda: bare(current)) for _ in range(args.repeat))
        t_build = statistics.median(
            timed(lambda: build_report(cfg, influx, records, closed, None, now))
            for _ in range(args.repeat)
        )
        firsts, seconds = [], []
        for k in range(args.repeat):
            store = ReportStore(tmp / f"reports-{k}.sqlite")  # a fresh store: nothing issued

            def request(store=store):
                return report_file(cfg, influx, records, store, closed, None, now, "pdf", "zh-TW")

            firsts.append(timed(request))
            seconds.append(timed(request))
            assert request().source == "cache"
            store.close()
        f1, f2 = statistics.median(firsts), statistics.median(seconds)
        store = ReportStore(tmp / "reports-open.sqlite")
        t_open = statistics.median(
            timed(
                lambda: report_file(cfg, influx, records, store, current, None, now, "pdf", "zh-TW")
            )
            for _ in range(args.repeat)
        )
        print(
            f"demo site, {args.days} days of 1-minute data from {start} ({bf.lines:,} points; "
            f"backfill {t_fill:.0f} s, rules pass {t_pass:.0f} s); medians of {args.repeat}"
        )
        print(f"bare queries, year {closed} (closed):  {b_closed * 1000:8.0f} ms  1x")
        print(
            f"report build in process ({closed}):   {t_build * 1000:8.0f} ms  "
            f"ratio {t_build / b_closed:.2f}"
        )
        print(f"frozen annual PDF, first request:   {f1 * 1000:8.0f} ms  ratio {f1 / b_closed:.2f}")
        print(
            f"frozen annual PDF, second request:  {f2 * 1000:8.0f} ms  ratio {f2 / b_closed:.3f} "
            "(goal <= 0.2 s)"
        )
        print(f"bare queries, year {current} (open):    {b_open * 1000:8.0f} ms  1x")
        print(
            f"open year {current}, PDF built fresh:  {t_open * 1000:8.0f} ms  "
            f"ratio {t_open / b_open:.2f} (goal <= 1.2)"
        )
        influx.close()
    finally:
        db.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
