"""End-to-end pipeline benchmark (run on demand, never in CI).

Drives N simulated devices through the whole pipeline — simulators (own process) →
collector (own process, so its RSS is its own) → mosquitto → ingester → influxd — and
prints, from one run:

- readings per second stored end to end,
- p50 / p99 latency from the Modbus read (reading ts) to queryable in InfluxDB (the
  ingester's /write answered 204, after which InfluxDB 1.x serves the point),
- the collector's RSS,
- and, measured in the same run on the same machine, the bare pymodbus read rate
  against the same simulators and the bare InfluxDB /write rate (lines/s).

    .venv/bin/python bench/pipeline.py --devices 1000 --seconds 30
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date, timedelta
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from foursave.app import ingester, load_config  # noqa: E402
from foursave.core.influx import InfluxClient  # noqa: E402
from foursave.localstack import free_port, influxd, mosquitto, wait_until  # noqa: E402

TEMPLATES = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())["devices"]


def bench_config(
    tmp: Path, n: int, per_endpoint: int, interval_s: float, mqtt_port: int, influx_port: int
) -> Path:
    devices = []
    port = None
    for i in range(n):
        t = dict(TEMPLATES[i % len(TEMPLATES)])
        if i % per_endpoint == 0:
            port = free_port()
        t.update(
            id=f"dev-{i:04d}",
            port=port,
            unit_id=1 + i % per_endpoint,
            interval_s=interval_s,
            timeout_s=2.0,
        )
        # counters from two days back: no years of history to integrate at start-up
        t["simulate"] = {**t["simulate"], "commissioned": str(date.today() - timedelta(days=2))}
        devices.append(t)
    raw = {
        "services": {
            "mqtt": {"url": f"mqtt://127.0.0.1:{mqtt_port}"},
            "influxdb": {"url": f"http://127.0.0.1:{influx_port}", "database": "bench"},
            "collector": {
                "id": "bench",
                "spool_path": str(tmp / "spool.sqlite"),
                "status_interval_s": 30,
            },
            "ingester": {
                "id": "bench",
                "client_id": "bench-ingester",
                "dead_letter_path": str(tmp / "dead.sqlite"),
            },
        },
        "sites": [{"id": "demo", "name": "bench", "lat": 22.99, "lon": 120.19}],
        "devices": devices,
    }
    path = tmp / "bench.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    import os

    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def bare_modbus_rate(cfg, seconds: float) -> float:
    """Reads/s of plain pymodbus clients reading the same blocks the collector reads."""
    from pymodbus.client import AsyncModbusTcpClient

    targets = [(d.port, d.unit_id) for d in cfg.devices if d.kind == "inverter"][:50]

    async def worker(port, unit, stop, counter):
        c = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)
        await c.connect()
        while time.monotonic() < stop:
            await c.read_holding_registers(40070, count=52, device_id=unit)
            counter[0] += 1
        c.close()

    async def main():
        counter = [0]
        stop = time.monotonic() + seconds
        ports = {}
        for p, u in targets:
            ports.setdefault(p, u)
        await asyncio.gather(*(worker(p, u, stop, counter) for p, u in ports.items()))
        return counter[0] / seconds

    return asyncio.run(main())


def bare_write_rate(url: str, seconds: float) -> float:
    client = InfluxClient(url, "bare")
    client.create_database()
    n = 0
    t0 = time.monotonic()
    ts = 1_790_000_000_000
    while time.monotonic() - t0 < seconds:
        lines = [
            f"inverter,device=dev-{i % 1000:04d},site=demo ac_power_w={i}.5,ac_energy_wh=12345.0,"
            f"dc_power_w=1.0,state=4i {ts + n + i}"
            for i in range(5000)
        ]
        client.write(lines)
        n += len(lines)
    rate = n / (time.monotonic() - t0)
    client.close()
    return rate


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--per-endpoint", type=int, default=10, help="unit ids behind one TCP endpoint")
    ap.add_argument("--interval", type=float, default=1.0, help="poll interval per device [s]")
    ap.add_argument("--seconds", type=float, default=30.0, help="measured period")
    ap.add_argument("--warmup", type=float, default=10.0)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="foursave-bench-"))
    broker = mosquitto(free_port(), tmp / "mosquitto", anonymous_dev=True).start()
    db = influxd(free_port(), tmp / "influxd").start(60)
    cfg_path = bench_config(
        tmp, args.devices, args.per_endpoint, args.interval, broker.port, db.port
    )
    cfg = load_config(cfg_path, env={})
    url = f"http://127.0.0.1:{db.port}"
    procs = []
    try:
        sim = subprocess.Popen(
            [sys.executable, "-m", "foursave", "sim", "--config", str(cfg_path)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=open(tmp / "sim.log", "wb"),  # noqa: SIM115 - owned by the child
        )
        procs.append(sim)
        last = cfg.devices[-1]
        from foursave.localstack import port_open

        wait_until(lambda: port_open("127.0.0.1", last.port), 120, "simulators", sim)

        print(
            f"devices {args.devices} ({args.per_endpoint} per TCP endpoint), interval {args.interval} s"
        )
        modbus_rate = bare_modbus_rate(cfg, 5)
        write_rate = bare_write_rate(url, 5)

        ing = ingester(cfg)
        latencies: list[float] = []
        stored = [0]
        window = {"on": False}

        to_broker: list[float] = []

        def on_batch(ts_list):
            now = time.time() * 1000
            if window["on"]:
                latencies.extend(now - t for t, _ in ts_list)
                to_broker.extend(r - t for t, r in ts_list)
                stored[0] += len(ts_list)

        ing.on_batch = on_batch
        t_ing = threading.Thread(target=ing.run, daemon=True)
        t_ing.start()
        wait_until(ing.connected.is_set, 30, "ingester")

        col = subprocess.Popen(
            [sys.executable, "-m", "foursave", "collect", "--config", str(cfg_path)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=open(tmp / "collect.log", "wb"),  # noqa: SIM115 - owned by the child
        )
        procs.append(col)
        time.sleep(args.warmup)  # a benchmark's warm-up period, not a test wait
        window["on"] = True
        t0 = time.monotonic()
        rss = []
        cpu0 = {n: cpu_s(p.pid) for n, p in (("sim", sim), ("collector", col))}
        while time.monotonic() - t0 < args.seconds:
            time.sleep(1)
            rss.append(rss_mb(col.pid))
        cpu = {
            n: (cpu_s(p.pid) - cpu0[n]) / (time.monotonic() - t0)
            for n, p in (("sim", sim), ("collector", col))
        }
        window["on"] = False
        elapsed = time.monotonic() - t0
        col.terminate()
        col.wait(60)
        ing.stop()
        t_ing.join(30)
        ing.influx.close()

        rate = stored[0] / elapsed
        lat = sorted(latencies)
        p50 = lat[len(lat) // 2] if lat else float("nan")
        p99 = lat[int(len(lat) * 0.99)] if lat else float("nan")
        print(
            f"end to end           {rate:10.0f} readings/s  ({stored[0]} in {elapsed:.0f} s; "
            f"offered {args.devices / args.interval:.0f}/s)"
        )
        print(f"latency read->stored p50 {p50:7.0f} ms   p99 {p99:7.0f} ms")
        tb = sorted(to_broker)
        if tb:
            print(
                f"  of which read->ingester received p50 {tb[len(tb) // 2]:5.0f} ms   "
                f"p99 {tb[int(len(tb) * 0.99)]:5.0f} ms"
            )
        print(
            f"collector RSS        {max(rss):10.1f} MB (max), {statistics.median(rss):.1f} MB (median)"
        )
        print(
            f"bare pymodbus reads  {modbus_rate:10.0f} reads/s (same simulators, 1 client per endpoint)"
        )
        print(f"bare InfluxDB /write {write_rate:10.0f} lines/s (batches of 5,000)")
        print("CPU (cores)          " + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items()))
        print(f"seq gaps {sum(s.gaps for s in ing.seq.devices.values())}")
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(30)
        broker.stop()
        db.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
