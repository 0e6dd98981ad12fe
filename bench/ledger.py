"""Ledger benchmark (run on demand): the annual four-saving ledger over two years of
1-minute data for the demo site, against the bare InfluxQL aggregation of the same data
in the same run (issue 17: a warm ledger at most 0.3x the bare aggregation, and no raw
query older than the open days).

The bare aggregation is what any daily energy needs at least: the last counter value
per device and day, for every counter field.  Also measured in the same run: the
per-day reading count of every counter (the "compare counts" way of noticing late
data, not chosen: it reads every point again), and ``pv_days`` recomputed from the
raw data against read from ``pv_daily``.

    .venv/bin/python bench/ledger.py            # backfills 730 days first (~1-2 min)
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from foursave.app import load_config  # noqa: E402
from foursave.core.clock import ManualClock  # noqa: E402
from foursave.core.influx import InfluxClient  # noqa: E402
from foursave.core.influxql import agg, every, select, time_range  # noqa: E402
from foursave.core.periods import day_start_ms, year  # noqa: E402
from foursave.localstack import free_port, influxd  # noqa: E402
from foursave.rules import pv as pvmod  # noqa: E402
from foursave.rules.ledger import Ledger  # noqa: E402
from foursave.rules.records import RecordStore  # noqa: E402
from foursave.rules.rollup import COUNTERS  # noqa: E402
from foursave.simulators.backfill import run_backfill  # noqa: E402

RAW = ("meter", "inverter", "water", "weather")


class Recording(InfluxClient):
    """The real client, remembering every InfluxQL statement it sends."""

    sent: list[str]

    def query(self, q, epoch="ms"):
        self.sent.append(q)
        return super().query(q, epoch)

    def raw(self) -> list[tuple[str, int | None]]:
        """(statement, its lower time bound in ms or None) of each raw-data query."""
        out = []
        for q in self.sent:
            m = re.search(r'FROM "?(\w+)"?', q)
            if m and m.group(1) in RAW:
                lo = re.search(r"time >= (\d+)ms", q)
                out.append((q, int(lo.group(1)) if lo else None))
        return out


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
        tz = cfg.sites[0].timezone
        start = date(2025, 1, 1)
        end = start + timedelta(days=args.days)
        bf = run_backfill(cfg, start, end)
        influx = Recording(url, cfg.services.influxdb.database, timeout_s=300)
        influx.sent = []
        # "now": an hour into the day after the history, so the open days are its last two
        clock = ManualClock(day_start_ms(end, tz) / 1000 + 3600)
        open_from_ms = day_start_ms(end - timedelta(days=2), tz)
        records = RecordStore(Path(tempfile.mkdtemp()) / "records.sqlite")
        years = [year(y) for y in range(start.year, end.year)]

        def utc_ms(d: date) -> int:
            return int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp() * 1000)

        def grouped(fn: str):
            for m, f in COUNTERS:
                influx.rows(
                    select(
                        agg(fn, f),
                        m,
                        where=[time_range(utc_ms(start) - 86_400_000, utc_ms(end))],
                        group_by=[every("1d"), "device"],
                        tz=tz,
                    )
                )

        def ledger():
            lg = Ledger(cfg, influx, records, clock)
            lg.load(start, end)
            return lg.rows(years)

        def timed(fn):
            t = time.perf_counter()
            out = fn()
            return time.perf_counter() - t, out

        grouped("last")  # warm the file cache
        t_cold, _ = timed(ledger)  # first run: scans the readings, writes the rollup
        t_bare, t_count, t_ledger, raw_warm = [], [], [], []
        for _ in range(args.repeat):
            t_bare.append(timed(lambda: grouped("last"))[0])
            t_count.append(timed(lambda: grouped("count"))[0])
            influx.sent = []
            dt, _ = timed(ledger)
            t_ledger.append(dt)
            raw_warm = influx.raw()
        b = statistics.median(t_bare)
        older = [q for q, lo in raw_warm if lo is None or lo < open_from_ms]

        # PV days: recomputed from raw (no pv_daily yet), then the engine writes them
        # (pv_lines) and a report reads the closed days back
        def pv():
            return pvmod.pv_days(cfg, influx, start, end, clock)

        t_pv_cold, pv_rows = timed(pv)
        influx.write(pvmod.pv_lines(pv_rows, tz))
        t_pv = []
        for _ in range(args.repeat):
            influx.sent = []
            t_pv.append(timed(pv)[0])
        pv_raw = [q for q, lo in influx.raw() if lo is None or lo < open_from_ms]
        p = statistics.median(t_pv)

        print(f"demo site, {args.days} days of 1-minute data ({bf.lines:,} points), one run")
        print(f"{'what':58} {'ms':>8} {'ratio':>6}")

        def line(what: str, s: float) -> None:
            print(f"{what:58} {s * 1000:8.0f} {s / b:6.2f}")

        line("bare aggregation (last per device-day, 4 counters)", b)
        line(
            "per-day count of every counter (late-data check, not used)", statistics.median(t_count)
        )
        line("annual ledger, cold (first run, builds the rollup)", t_cold)
        line(
            f"annual ledger, warm (median of {args.repeat}; goal <= 0.30)",
            statistics.median(t_ledger),
        )
        line("pv_days, cold (recomputed from the raw data)", t_pv_cold)
        line(f"pv_days, warm (median of {args.repeat})", p)
        print(
            f"warm ledger: {len(raw_warm)} raw queries, {len(older)} reaching before the open days"
        )
        print(f"warm pv_days: {len(pv_raw)} raw queries reaching before the open days")
        for q in older + pv_raw:
            print("   ", q[:160])
        influx.close()
    finally:
        db.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
