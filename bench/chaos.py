"""The chaos and fuzz suite at full size (issue 12; run on demand, never in CI).

Runs each scenario against real mosquitto and influxd (foursave.localstack), the
collector and the ingester as their own processes, the simulators over Modbus TCP, and
prints per scenario: readings taken, stored, lost, extra points, duplicated,
dead-lettered, the longest stall of a healthy device and the wall time (how each is
counted: tests/chaos/harness.py).  The CI runs the same scenarios at small sizes
(tests/chaos/test_chaos.py).

    .venv/bin/python bench/chaos.py                       # every scenario, CI sizes
    .venv/bin/python bench/chaos.py --full                # full sizes (~20 min)
    .venv/bin/python bench/chaos.py --full --scenario broker-kill --scenario mqtt-fuzz
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from foursave.localstack import free_port, influxd  # noqa: E402
from tests.chaos.harness import Result, table  # noqa: E402
from tests.chaos.scenarios import SCENARIOS, Size  # noqa: E402

# scenarios that stall, kill or replace influxd start their own; the others share one
OWN_INFLUXD = {"broker-kill", "influx-down"}


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--scenario", action="append", choices=sorted(SCENARIOS))
    ap.add_argument("--full", action="store_true", help="the full sizes (the figures)")
    args = ap.parse_args()
    size = Size.full_size() if args.full else Size.ci()
    names = args.scenario or list(SCENARIOS)
    import tempfile

    shared = None
    if any(n not in OWN_INFLUXD for n in names):
        shared = influxd(free_port(), Path(tempfile.mkdtemp(prefix="foursave-chaos-influxd-")))
        shared.start(timeout_s=60)
    results: list[Result] = []
    t0 = time.monotonic()
    try:
        for name in names:
            print(f"--- {name} ({'full' if args.full else 'CI'} size)", flush=True)
            try:
                r = SCENARIOS[name](size, None if name in OWN_INFLUXD else shared)
            except Exception as exc:
                traceback.print_exc()
                r = Result(name)
                r.notes.append(f"FAILED: {exc!r}"[:300])
            print(r.report(), flush=True)
            results.append(r)
    finally:
        if shared is not None:
            shared.stop()
            import shutil

            shutil.rmtree(shared.workdir, ignore_errors=True)
    print()
    print(table(results))
    print(f"\nall scenarios: {time.monotonic() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
