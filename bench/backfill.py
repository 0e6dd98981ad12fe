"""Backfill benchmark (run on demand): simulated history into a real influxd.

Prints, from one run on one influxd: the bare InfluxDB /write rate for the same kind of
lines (generated beforehand, posted by the same number of writer threads), the
backfill's rate (generation + writing, the way `foursave backfill` runs), and their
ratio; the goal is >= 0.7.  Also checks the count of stored points.

    .venv/bin/python bench/backfill.py --days 730        # two years of the demo site
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from foursave.app import load_config  # noqa: E402
from foursave.core.influx import InfluxClient  # noqa: E402
from foursave.core.influxql import agg, select  # noqa: E402
from foursave.localstack import free_port, influxd  # noqa: E402
from foursave.simulators.backfill import generate, run_backfill  # noqa: E402


def bare_write_rate(url: str, batches: list[list[str]], writers: int) -> float:
    clients = [InfluxClient(url, "bare") for _ in range(writers)]
    clients[0].create_database()
    it = iter(batches)
    lock = threading.Lock()
    n = [0]

    def work(c):
        while True:
            with lock:
                b = next(it, None)
            if b is None:
                return
            c.write(b)
            with lock:
                n[0] += len(b)

    t0 = time.monotonic()
    threads = [threading.Thread(target=work, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rate = n[0] / (time.monotonic() - t0)
    for c in clients:
        c.close()
    return rate


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--config", default=str(ROOT / "config" / "demo.yaml"))
    ap.add_argument("--days", type=int, default=60, help="days of history to backfill")
    ap.add_argument("--bare-days", type=int, default=14, help="days of lines for the bare rate")
    ap.add_argument("--writers", type=int, default=2)
    args = ap.parse_args()

    db = influxd(free_port(), Path(tempfile.mkdtemp(prefix="foursave-bfbench-"))).start(60)
    url = f"http://127.0.0.1:{db.port}"
    os.environ["FOURSAVE_INFLUXDB_URL"] = url
    os.environ["FOURSAVE_INFLUXDB_DATABASE"] = "backfill"
    try:
        cfg = load_config(args.config)
        devices = sum(1 for d in cfg.devices if d.simulate)
        start = date(2024, 1, 1)
        end = start + timedelta(days=args.days)
        # the bare rate: the same kind of lines, made beforehand, posted as fast as it goes
        lines = [
            ln
            for _, chunk in generate(
                cfg, date(2023, 6, 1), date(2023, 6, 1) + timedelta(days=args.bare_days)
            )
            for ln in chunk
        ]
        batches = [lines[i : i + 5000] for i in range(0, len(lines), 5000)]
        bare = bare_write_rate(url, batches, args.writers)
        result = run_backfill(cfg, start, end, writers=args.writers)
        client = InfluxClient(url, "backfill")
        stored = sum(
            max(v or 0 for k, v in r.items() if k.startswith("count_"))
            for m in ("inverter", "meter", "weather", "water")
            for r in client.rows(select(agg("count", "*"), m, group_by=["device"]))
        )
        client.close()
        print(f"demo site: {devices} simulated devices, {args.days} days of 1-minute data")
        print(
            f"backfill             {result.lines_per_s:10,.0f} lines/s  ({result.lines:,} lines in {result.seconds:.1f} s)"
        )
        print(
            f"bare InfluxDB /write {bare:10,.0f} lines/s  (same lines, {args.writers} writers, batches of 5,000)"
        )
        print(f"ratio                {result.lines_per_s / bare:10.2f}  (goal >= 0.7)")
        print(f"stored points        {stored:10,}  (expected {result.lines:,})")
    finally:
        db.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
