"""Bill and contract-optimiser benchmark (run on demand): in one run, the bills of 12
months of the demo site and the contract optimiser over 24 months, each against the bare
InfluxQL aggregation it needs (the main meters' ``first(import_energy_wh)`` per 15
minutes over the same months), in the same run.

    .venv/bin/python bench/bill.py              # backfills 2024-11 .. 2026-10 at 15 min
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from foursave.app import load_config  # noqa: E402
from foursave.core.influx import InfluxClient  # noqa: E402
from foursave.core.influxql import agg, every, select, tag_in, time_range  # noqa: E402
from foursave.core.periods import bounds_ms  # noqa: E402
from foursave.localstack import free_port, influxd  # noqa: E402
from foursave.rules.bill import main_meters, site_bill  # noqa: E402
from foursave.rules.contract import advise, month_labels  # noqa: E402
from foursave.rules.tariff import BLOCK_MS  # noqa: E402
from foursave.simulators.backfill import run_backfill  # noqa: E402

END = (2026, 10)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    db = influxd(free_port(), Path(tempfile.mkdtemp(prefix="foursave-bill-bench-"))).start(60)
    url = f"http://127.0.0.1:{db.port}"
    os.environ["FOURSAVE_INFLUXDB_URL"] = url
    try:
        cfg = load_config(ROOT / "config" / "demo.yaml")
        site = cfg.sites[0]
        t0 = time.perf_counter()
        run_backfill(cfg, date(2024, 11, 1), date(2026, 11, 2), step_s=900)
        print(f"backfill 2024-11 .. 2026-10 at 15 min: {time.perf_counter() - t0:.1f} s")
        influx = InfluxClient(url, cfg.services.influxdb.database, timeout_s=300)
        devices = main_meters(cfg, site)
        from foursave.core.periods import month

        def spans(n):
            return [month(y, m) for y, m in month_labels(END, n)]

        def bare(n):
            for p in spans(n):
                lo, hi = bounds_ms(p.start, p.end, site.timezone)
                influx.rows(
                    select(
                        agg("first", "import_energy_wh", "c"),
                        "meter",
                        where=[tag_in("device", devices), time_range(lo, hi + BLOCK_MS)],
                        group_by=[every("15m"), "device"],
                        fill="none",
                    )
                )

        def bills():
            for p in spans(12):
                site_bill(cfg, influx, site, p.start, p.end)

        def optimiser():
            advise(cfg, influx, site, END, 24, 0.0)

        def timed(fn):
            out = []
            for _ in range(args.repeat):
                t = time.perf_counter()
                fn()
                out.append(time.perf_counter() - t)
            return statistics.median(out)

        b12, b24 = timed(lambda: bare(12)), timed(lambda: bare(24))
        tb, to = timed(bills), timed(optimiser)
        a = advise(cfg, influx, site, END, 24, 0.0)
        print(f"bare first(import_energy_wh) per 15 min, 12 months: {b12:.3f} s")
        print(f"bills of 12 months:                                 {tb:.3f} s  = {tb / b12:.2f} x")
        print(f"bare first(import_energy_wh) per 15 min, 24 months: {b24:.3f} s")
        print(f"contract optimiser over 24 months (both plans):     {to:.3f} s  = {to / b24:.2f} x")
        r = a.current
        print(
            f"recommendation {r.recommended_kw} (current {r.current_kw}), NT$ "
            f"{r.annual_saving_ntd:,.0f} a year, {r.candidates:,} candidates "
            f"({r.pairs_searched} of {r.pairs} pairs), cheaper plan {a.cheaper_plan}"
        )
        influx.close()
    finally:
        db.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
