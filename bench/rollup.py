"""Rollup benchmark (run on demand): what the hourly and daily rollups cost a rules pass.

Backfills the demo site's last ``--days`` days (a point a minute) into a real influxd
with ``retention: {raw_days: 400}``, then times, on one influxd:

* the first pass (every hour and day from the first reading: what turning retention on
  costs once), its queries and points;
* an hour later: the next pass (the hour that ended, and the hour that became final);
* a pass with nothing due (the same instant again): the state and the markers only;

beside the bare aggregation of the same raw points (one ``GROUP BY time(1h)`` query of
the same columns over the whole span per measurement), so the first pass is measured
against InfluxDB's own cost of the work.

    .venv/bin/python bench/rollup.py --days 30
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from foursave.core.clock import ManualClock  # noqa: E402
from foursave.core.config import parse_config  # noqa: E402
from foursave.core.influx import InfluxClient  # noqa: E402
from foursave.core.influxql import eq, every, select, time_range  # noqa: E402
from foursave.core.retention import RAW_RP, ROLLED_UP  # noqa: E402
from foursave.localstack import free_port, influxd  # noqa: E402
from foursave.rules.downsample import _exprs, run_pass  # noqa: E402
from foursave.simulators.backfill import run_backfill  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=30)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        svc = influxd(free_port(), Path(tmp) / "influxd")
        svc.start(timeout_s=60)
        try:
            raw = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
            raw["services"]["influxdb"] = {
                "url": f"http://127.0.0.1:{svc.port}",
                "database": "bench",
                "retention": {"raw_days": 400},
            }
            raw["services"]["simulator"]["cache_dir"] = str(Path(tmp) / "cache")
            cfg = parse_config(yaml.safe_dump(raw, allow_unicode=True))
            ret = cfg.services.influxdb.retention
            influx = InfluxClient(cfg.services.influxdb.url, "bench", retention=ret, timeout_s=600)
            today = datetime.now(UTC).date()
            start = today - timedelta(days=args.days)
            t = time.perf_counter()
            res = run_backfill(cfg, start, today, step_s=60, influx=influx)
            print(f"backfill: {res.lines:,} points in {time.perf_counter() - t:.1f} s")
            now = datetime(today.year, today.month, today.day, tzinfo=UTC).timestamp()
            t0 = int(datetime(start.year, start.month, start.day, tzinfo=UTC).timestamp() * 1000)
            site = cfg.sites[0]
            kinds = {d.kind for d in cfg.devices}
            bare = time.perf_counter()
            for m in ROLLED_UP:
                if m in kinds:
                    influx.rows(
                        select(
                            _exprs(m),
                            m,
                            where=[eq("site", site.id), time_range(t0, int(now * 1000))],
                            group_by=[every("1h"), *ROLLED_UP[m]],
                            fill="none",
                            tz=site.timezone,
                            rp=RAW_RP,
                        )
                    )
            bare = time.perf_counter() - bare
            print(f"bare hourly aggregation of the span: {bare:.2f} s")
            for what, at in (
                ("first pass", now),
                ("an hour later", now + 3600),
                ("nothing due", now + 3600),
            ):
                t = time.perf_counter()
                r = run_pass(cfg, influx, ManualClock(at))
                dt = time.perf_counter() - t
                print(
                    f"{what}: {dt:.2f} s; points {r.points}, raw queries {r.queries}"
                    + (
                        f"; {dt / bare:.2f}x the bare hourly aggregation"
                        if what == "first pass"
                        else ""
                    )
                )
            influx.close()
        finally:
            svc.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
