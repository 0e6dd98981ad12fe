"""Simulator start-up benchmark (run on demand): cold and warm daily-totals cache.

For each configuration (default config/tainan.yaml and config/demo.yaml), with its
simulated clock at ``--at`` and an empty cache folder of its own, prints from one run:

- in process, each run in a fresh Python: the imports, reading the configuration, and
  the start itself (``Simulator(config)``: every device's first values, counters
  included), with the past days it integrated: first cold (empty cache), then warm;
- the whole ``foursave sim`` process, from spawning it until every device's port
  accepts a connection, cold then warm (the ports are moved to free ones).

    .venv/bin/python bench/simstart.py                          # history to 2026-11-01
    .venv/bin/python bench/simstart.py --at 2030-06-01T12:00:00+08:00 --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from foursave.localstack import free_port  # noqa: E402

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
from foursave.app import load_config
from foursave.simulators.server import Simulator
t1 = time.perf_counter()
cfg = load_config(sys.argv[1], env={}, images=True)
t2, c2 = time.perf_counter(), time.process_time()
sim = Simulator(cfg)
t3, c3 = time.perf_counter(), time.process_time()
print(json.dumps({
    "import_s": t1 - t0, "config_s": t2 - t1, "start_s": t3 - t2, "start_cpu_s": c3 - c2,
    "days": sum(m.days_integrated for m in sim.sites.values()),
    "problems": sum(len(m.cache.problems) for m in sim.sites.values() if m.cache),
}))
"""


def prepare(config: Path, at: str, folder: Path) -> Path:
    """The configuration with its clock at ``at``, its cache in ``folder``, free ports
    and no fault-control server."""
    raw = yaml.safe_load(config.read_text())
    sim = raw["services"].setdefault("simulator", {})
    sim.update({"start": at, "cache_dir": str(folder / "sim-cache"), "control_port": None})
    for d in raw["devices"]:
        if d.get("simulate") and d.get("transport", "tcp") != "rtu":
            d["port"] = free_port()
    out = folder / config.name
    out.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False))
    return out


def in_process(config: Path) -> dict:
    r = subprocess.run(
        [sys.executable, "-c", CHILD, str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(r.stdout.strip().splitlines()[-1])


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 0.2).close()
        return True
    except OSError:
        return False


def whole_process(config: Path) -> float:
    """Seconds from spawning ``foursave sim`` until every device's port accepts; the
    ports are chosen afresh each time, and a run whose port was taken meanwhile (the
    machine is shared) is run again."""
    for _ in range(3):
        raw = yaml.safe_load(config.read_text())
        for d in raw["devices"]:
            if d.get("simulate") and d.get("transport", "tcp") != "rtu":
                d["port"] = free_port()
        config.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False))
        seconds = _spawn_sim(config, {d["port"] for d in raw["devices"] if d.get("port")})
        if seconds is not None:
            return seconds
    raise SystemExit("foursave sim could not listen three times: ports taken?")


def _spawn_sim(config: Path, ports: set[int]) -> float | None:
    exe = Path(sys.executable).with_name("foursave")
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [str(exe), "sim", "--config", str(config)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = t0 + 600
        waiting = set(ports)
        while waiting:
            if proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                if "Could not start listen" in err:
                    return None
                raise SystemExit(f"foursave sim exited {proc.returncode}: {err}")
            if time.perf_counter() > deadline:
                raise SystemExit("foursave sim did not listen within 600 s")
            waiting = {p for p in waiting if not _accepts(p)}
            if waiting:
                time.sleep(0.01)
        return time.perf_counter() - t0
    finally:
        proc.terminate()
        proc.wait(30)


def fmt(xs: list[float]) -> str:
    return " / ".join(f"{x:.2f}" for x in xs) + f" s (median {statistics.median(xs):.2f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--at", default="2026-11-01T12:00:00+08:00", help="simulated start")
    ap.add_argument("--runs", type=int, default=3, help="warm runs per measure (3)")
    ap.add_argument("configs", nargs="*", default=["config/tainan.yaml", "config/demo.yaml"])
    args = ap.parse_args()
    print(f"simulated clock at {args.at}; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    for name in args.configs:
        with tempfile.TemporaryDirectory(prefix="simstart-") as tmp:
            folder = Path(tmp)
            cfg = prepare(ROOT / name, args.at, folder)
            print(f"\n{name}")
            cold = in_process(cfg)
            warm = [in_process(cfg) for _ in range(args.runs)]
            print(
                f"  in process, cold: start {cold['start_s']:.2f} s "
                f"(CPU {cold['start_cpu_s']:.2f} s), {cold['days']} "
                f"site-days integrated (imports {cold['import_s']:.2f} s, "
                f"configuration {cold['config_s']:.2f} s)"
            )
            print(
                f"  in process, warm: start {fmt([w['start_s'] for w in warm])} "
                f"(CPU {fmt([w['start_cpu_s'] for w in warm])}), "
                f"{max(w['days'] for w in warm)} site-days integrated, "
                f"{sum(w['problems'] for w in warm)} cache problems "
                f"(imports {fmt([w['import_s'] for w in warm])})"
            )
            print(
                f"  warm / cold start: {statistics.median(w['start_s'] for w in warm) / cold['start_s']:.3f}"
            )
            for f in (folder / "sim-cache").iterdir():
                f.unlink()  # cold again, for the whole process
            cold_p = whole_process(cfg)
            warm_p = [whole_process(cfg) for _ in range(args.runs)]
            print(f"  foursave sim until every port listens, cold: {cold_p:.2f} s")
            print(f"  foursave sim until every port listens, warm: {fmt(warm_p)}")


if __name__ == "__main__":
    main()
