"""Ledger benchmark (run on demand): the annual four-saving ledger over two years of
1-minute data for the demo site, against the bare InfluxQL aggregation of the same data
in the same run (goal: <= 1.5x).

The bare aggregation is what any daily energy needs at least: the last counter value
per device and day, for every counter field.  The ledger adds the reading counts for
completeness, months, years, baselines, targets and CO2e.

    .venv/bin/python bench/ledger.py            # backfills 730 days first (~1 min)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from foursave.app import load_config  # noqa: E402
from foursave.core.influx import InfluxClient  # noqa: E402
from foursave.core.influxql import agg, every, select, time_range  # noqa: E402
from foursave.core.periods import year  # noqa: E402
from foursave.localstack import free_port, influxd  # noqa: E402
from foursave.rules.ledger import Ledger  # noqa: E402
from foursave.rules.records import RecordStore  # noqa: E402
from foursave.rules.rollup import COUNTERS  # noqa: E402
from foursave.simulators.backfill import run_backfill  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--days", type=int, default=730)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    db = influxd(free_port(), Path(tempfile.mkdtemp(prefix="foursave-ledger-bench-"))).start(60)
    url = f"http://127.0.0.1:{db.port}"
    os.environ["FOURSAVE_INFLUXDB_URL"] = url
    try:
        cfg = load_config(ROOT / "config" / "demo.yaml")
        start = date(2025, 1, 1)
        end = start + timedelta(days=args.days)
        bf = run_backfill(cfg, start, end)
        influx = InfluxClient(url, cfg.services.influxdb.database, timeout_s=300)
        records = RecordStore(Path(tempfile.mkdtemp()) / "records.sqlite")
        years = [year(y) for y in range(start.year, end.year)]

        def utc_ms(d: date) -> int:
            return int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp() * 1000)

        def bare():
            for m, f in COUNTERS:
                influx.rows(
                    select(
                        agg("last", f),
                        m,
                        where=[time_range(utc_ms(start) - 86_400_000, utc_ms(end))],
                        group_by=[every("1d"), "device"],
                        tz="Asia/Taipei",
                    )
                )

        def ledger():
            lg = Ledger(cfg, influx, records)
            lg.load(start, end)
            return lg.rows(years)

        bare()  # warm the file cache
        t = time.perf_counter()
        ledger()  # first run: scans the readings and writes the counter_daily rollup
        t_cold = time.perf_counter() - t
        t_bare, t_ledger = [], []
        for _ in range(args.repeat):
            t = time.perf_counter()
            bare()
            t_bare.append(time.perf_counter() - t)
            t = time.perf_counter()
            rows = ledger()
            t_ledger.append(time.perf_counter() - t)
        b, lg = statistics.median(t_bare), statistics.median(t_ledger)
        print(f"demo site, {args.days} days of 1-minute data ({bf.lines:,} points)")
        print(f"bare aggregation (last per device-day, 4 counter fields): {b * 1000:8.0f} ms")
        print(
            f"annual ledger, first run (builds the rollup): {t_cold * 1000:8.0f} ms  ratio {t_cold / b:.2f}"
        )
        print(
            f"annual ledger ({len(rows)} rows), rollup warm: {lg * 1000:8.0f} ms  ratio {lg / b:.2f} "
            f"(goal <= 1.5), median of {args.repeat}"
        )
        influx.close()
    finally:
        db.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
