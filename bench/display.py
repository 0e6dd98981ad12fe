"""Display benchmark (run on demand): latency of ``/display/data`` under 100 concurrent
clients, against a trivial FastAPI endpoint served by the same app, process and run.
Goal: p99 <= 20 ms and within 2x the trivial endpoint.

The app runs as in production (uvicorn, one process, the snapshot refresher rebuilding
every 5 s from a real influxd holding three weeks of the demo site) in its own process;
the load comes from this process.  Two loads, each against both endpoints in turn:

- open loop: 100 clients on their own keep-alive connections, each sending a request
  every 200 ms (500 requests/s, 25x what 100 lobby screens polling every 5 s send);
  latency is measured from the moment a request was due, so a stalled server shows
  (no coordinated omission);
- closed loop (wrk, 100 connections, if installed): throughput and latency at saturation.

    .venv/bin/python bench/display.py [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from foursave.localstack import free_port, influxd  # noqa: E402

AT = datetime(2026, 1, 20, 13, 0, tzinfo=ZoneInfo("Asia/Taipei"))


def serve(config_path: str, port: int) -> None:
    """The server process: the real app plus one trivial route, under uvicorn."""
    import uvicorn

    from foursave.api.main import create_app
    from foursave.app import load_config
    from foursave.core.clock import ManualClock

    app = create_app(load_config(config_path, env={}), clock=ManualClock(AT.timestamp()))

    @app.get("/bench/trivial", include_in_schema=False)
    async def trivial() -> dict:
        return {"ok": True}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def make_site(tmp: Path, influx_port: int) -> Path:
    """Three weeks of the demo site, backfilled; the config the server loads."""
    import yaml

    from foursave.app import load_config
    from foursave.core.influx import InfluxClient
    from foursave.simulators.backfill import run_backfill
    from tests.helpers import demo_raw

    raw = demo_raw()
    raw["services"]["influxdb"] = {"url": f"http://127.0.0.1:{influx_port}", "database": "bench"}
    raw["services"]["mqtt"]["url"] = f"mqtt://127.0.0.1:{free_port()}"  # none: status stays empty
    raw["services"]["rules"] = {
        "records_path": str(tmp / "r.sqlite"),
        "state_path": str(tmp / "s.sqlite"),
    }
    raw["services"]["api"] = {
        "keys_path": str(tmp / "k.sqlite"),
        "reports_path": str(tmp / "rep.sqlite"),
        "display_rate_per_s": 1e6,  # the limiter runs on every request, but refuses none
        "display_burst": 1_000_000,
    }
    for d in raw["devices"]:
        if d.get("simulate"):
            d["simulate"]["commissioned"] = "2025-12-01"
    path = tmp / "bench.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    cfg = load_config(path, env={})
    with InfluxClient(cfg.services.influxdb.url, "bench") as influx:
        influx.create_database()
        run_backfill(cfg, date(2026, 1, 1), date(2026, 1, 21), step_s=60, influx=influx)
    return path


async def _client(host, port, path, period_s, until, out, start_offset):
    reader, writer = await asyncio.open_connection(host, port)
    req = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    due = time.perf_counter() + start_offset
    try:
        while due < until:
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            writer.write(req)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(
                next(
                    h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")
                ).split(b":")[1]
            )
            await reader.readexactly(length)
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(head.split(b"\r\n")[0].decode())
            out.append(time.perf_counter() - due)  # from when it was due
            due += period_s
    finally:
        writer.close()


async def open_loop(
    port: int, path: str, clients: int, period_s: float, seconds: float
) -> list[float]:
    out: list[float] = []
    until = time.perf_counter() + seconds
    await asyncio.gather(
        *(
            _client("127.0.0.1", port, path, period_s, until, out, period_s * i / clients)
            for i in range(clients)
        )
    )
    return out


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))] * 1000


def wrk(port: int, path: str, seconds: int) -> str:
    r = subprocess.run(
        ["wrk", "-t2", "-c100", f"-d{seconds}s", "--latency", f"http://127.0.0.1:{port}{path}"],
        capture_output=True,
        text=True,
        check=True,
    )
    keep = [
        ln.strip()
        for ln in r.stdout.splitlines()
        if ln.strip().startswith(("50%", "99%", "Requests/sec"))
    ]
    return "  ".join(keep)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--period-ms", type=float, default=200)
    ap.add_argument("--serve", nargs=2, metavar=("CONFIG", "PORT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]))
        return 0

    tmp = Path(tempfile.mkdtemp(prefix="foursave-bench-display-"))
    db = influxd(free_port(), tmp / "influxdb").start(timeout_s=60)
    server = None
    try:
        t0 = time.perf_counter()
        config = make_site(tmp, db.port)
        print(f"backfilled 20 days of the demo site in {time.perf_counter() - t0:.1f} s")
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(config), str(port)],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        import httpx

        from tests.helpers import wait_for

        wait_for(lambda: _ok(httpx, port), 60, "the API")
        snap = httpx.get(f"http://127.0.0.1:{port}/display/data").content
        print(
            f"display snapshot: {len(snap)} bytes; pv_power_w {httpx.get(f'http://127.0.0.1:{port}/display/data').json()['values']['pv_power_w']}"
        )
        rate = args.clients / (args.period_ms / 1000)
        print(
            f"\nopen loop: {args.clients} clients x 1 request / {args.period_ms:.0f} ms = {rate:.0f} requests/s, {args.seconds:.0f} s each"
        )
        results = {}
        for name, path in (
            ("trivial", "/bench/trivial"),
            ("display", "/display/data"),
            ("trivial", "/bench/trivial"),
            ("display", "/display/data"),
        ):
            lat = asyncio.run(
                open_loop(port, path, args.clients, args.period_ms / 1000, args.seconds)
            )
            results.setdefault(name, []).extend(lat)
            print(
                f"  {name:<8} n={len(lat):>6}  p50 {pct(lat, 50):6.2f} ms  p99 {pct(lat, 99):6.2f} ms  mean {statistics.mean(lat) * 1000:6.2f} ms"
            )
        d50, d99 = pct(results["display"], 50), pct(results["display"], 99)
        t50, t99 = pct(results["trivial"], 50), pct(results["trivial"], 99)
        print(
            f"  both rounds: display p50 {d50:.2f} / p99 {d99:.2f} ms; trivial p50 {t50:.2f} / p99 {t99:.2f} ms"
        )
        print(f"  ratio display/trivial: p50 {d50 / t50:.2f}x, p99 {d99 / t99:.2f}x")
        print(
            f"  goal p99 <= 20 ms: {'met' if d99 <= 20 else 'NOT met'}; within 2x trivial: {'met' if d99 <= 2 * t99 else 'NOT met'}"
        )
        if shutil.which("wrk"):
            print("\nclosed loop (wrk -t2 -c100, saturation):")
            for name, path in (("trivial", "/bench/trivial"), ("display", "/display/data")):
                print(f"  {name:<8} {wrk(port, path, int(args.seconds))}")
        else:
            print("\n(wrk not installed: apt-get install wrk for the closed-loop figures)")
    finally:
        if server is not None:
            server.terminate()
            server.wait(30)
        db.stop()
    return 0


def _ok(httpx, port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    raise SystemExit(main())
