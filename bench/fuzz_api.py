"""Schemathesis at length (run on demand): many generated requests per operation of
``/openapi.json`` against a real backfilled stack, randomised (not derandomised as in
CI).  Passes when no response is a server error.

    .venv/bin/python bench/fuzz_api.py [--examples 150]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from foursave.api.main import create_app  # noqa: E402
from foursave.localstack import free_port, influxd, mosquitto  # noqa: E402
from tests.api_fixtures import ServerThread, build_history, build_stack  # noqa: E402
from tests.fuzz import fuzz  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--examples", type=int, default=150, help="cases per operation")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="foursave-fuzz-"))
    db = influxd(free_port(), tmp / "influxdb").start(timeout_s=60)
    broker = mosquitto(free_port(), tmp / "mosquitto", anonymous_dev=True).start()
    try:
        st = build_stack(tmp, broker.port, build_history(tmp / "history", db))
        t0 = time.perf_counter()
        with ServerThread(create_app(st.config, clock=st.clock, refresh=False)) as server:
            result = fuzz(server.url, st.keys["admin"], args.examples, derandomize=False)
        took = time.perf_counter() - t0
    finally:
        broker.stop()
        db.stop()
    print(f"{result.cases} cases over {result.operations} operations in {took:.0f} s")
    print("status codes:", dict(sorted(result.by_status.items())))
    errors = sum(n for code, n in result.by_status.items() if code >= 500)
    print(f"server errors: {errors}")
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
