"""The city benchmark (run on demand, never in CI): every part scaled out on one machine.

A whole city's devices — by default 10,000 simulated devices polled every 10 s — split
across 4 collectors (one per district, from one city configuration), 2 ingesters in one
MQTT shared subscription, and 2 rules-engine partitions (``--shard i/2``), with one
mosquitto and one influxd.  Every component runs as its own process, as it would in
production, so its CPU time and RSS are its own.  Printed from one run:

- readings per second stored, against what was offered;
- p50 / p99 latency from the Modbus read (the reading's ``ts``) to queryable (the
  ingester's ``/write`` answered 204; InfluxDB 1.x serves the point from then on);
- CPU-seconds per reading per component (all its processes together) and RSS per process;
- seq gaps: readings a collector took whose seq never reached InfluxDB (counted per
  device from the stored ``seq`` numbers of the measured window);
- and beside them, from the same run on the same machine: bare pymodbus reading the same
  register blocks (CPU per request set, at saturation), a bare paho QoS 1 subscriber
  that writes the same lines to ``/write``, and bare ``/write``.

The sizing table in docs/scale.md ("Sizing") is worked from the per-reading figures.

    .venv/bin/python bench/city.py                      # 10,000 devices, 10 s, 60 s measured
    .venv/bin/python bench/city.py --devices 2000 --seconds 30
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from foursave.localstack import free_port, influxd, mosquitto, port_open, wait_until  # noqa: E402

DEMO = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
TEMPLATES = DEMO["devices"]
SITE = DEMO["sites"][0]


# ------------------------------------------------------------------ the city


def city_config(tmp: Path, args, mqtt_port: int, influx_port: int) -> Path:
    """One configuration for the whole city: ``--collectors`` districts of
    ``--sites-per-district`` sites each, the devices dealt round-robin over the sites,
    ``--per-endpoint`` unit ids behind each simulated TCP endpoint (a gateway)."""
    n_sites = args.collectors * args.sites_per_district
    sites = []
    for i in range(n_sites):
        district = i % args.collectors + 1
        s = {k: v for k, v in SITE.items() if k not in ("name", "name_en")}
        s.update(id=f"d{district}-s{i // args.collectors + 1:03d}", name=f"site {i + 1}")
        sites.append(s)
    commissioned = str(date.today() - timedelta(days=2))  # no years of history to integrate
    devices = []
    port = None
    by_site: dict[str, list[dict]] = {}
    for i in range(args.devices):
        site = sites[i % n_sites]["id"]
        by_site.setdefault(site, []).append({})
    # devices of one site sit together behind endpoints, so a district's devices are
    # its collectors' own endpoints (no endpoint shared across collectors)
    k = 0
    for site in sites:
        for j, _ in enumerate(by_site.get(site["id"], [])):
            t = dict(TEMPLATES[k % len(TEMPLATES)])
            if k % args.per_endpoint == 0 or j == 0:
                port, unit = free_port(), 0
            unit += 1
            t.update(
                id=f"dev-{k:05d}",
                site=site["id"],
                port=port,
                unit_id=unit,
                interval_s=args.interval,
                timeout_s=3.0,
            )
            t["simulate"] = {**t["simulate"], "commissioned": commissioned}
            devices.append(t)
            k += 1
    districts = {}
    for s in sites:
        districts.setdefault(s["id"].split("-")[0], []).append(s["id"])
    raw = {
        "services": {
            "mqtt": {"url": f"mqtt://127.0.0.1:{mqtt_port}"},
            "influxdb": {"url": f"http://127.0.0.1:{influx_port}", "database": "city"},
            "collector": {
                "spool_path": str(tmp / "spool-{id}.sqlite"),
                "status_interval_s": 30,
            },
            "ingester": {
                "id": "city-1",
                "instances": [f"city-{i}" for i in range(2, args.ingesters + 1)],
                "shared_group": "city",
                "dead_letter_path": str(tmp / "dead-{id}.sqlite"),
            },
            "rules": {
                "state_path": str(tmp / "rules-{id}.sqlite"),
                "records_path": str(tmp / "records.sqlite"),
                "interval_s": 30,
            },
            "simulator": {"cache_dir": str(tmp / "sim-cache"), "control_port": None},
        },
        "collectors": [{"id": f"district-{d[1:]}", "sites": ids} for d, ids in districts.items()],
        "sites": sites,
        "devices": devices,
    }
    path = tmp / "city.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False))
    return path


def sim_configs(tmp: Path, city: Path) -> list[Path]:
    """One simulator process per district (a district's devices only), as the city's
    devices would be spread over its buildings."""
    raw = yaml.safe_load(city.read_text())
    out = []
    for c in raw["collectors"]:
        sub = dict(raw)
        sub.pop("collectors")
        sites = set(c["sites"])
        sub["sites"] = [s for s in raw["sites"] if s["id"] in sites]
        sub["devices"] = [d for d in raw["devices"] if d["site"] in sites]
        p = tmp / f"sim-{c['id']}.yaml"
        p.write_text(yaml.safe_dump(sub, allow_unicode=True, sort_keys=False))
        out.append(p)
    return out


def bare_config(tmp: Path, sim_config: Path, n: int) -> Path:
    """The first ``n`` devices of one district, for bare pymodbus to read back to back."""
    raw = yaml.safe_load(sim_config.read_text())
    raw["devices"] = raw["devices"][:n]
    sites = {d["site"] for d in raw["devices"]}
    raw["sites"] = [s for s in raw["sites"] if s["id"] in sites]
    p = tmp / "bare-modbus.yaml"
    p.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False))
    return p


# ------------------------------------------------------------------ processes


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Procs:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.by_component: dict[str, list[tuple[str, subprocess.Popen]]] = {}

    def start(self, component: str, name: str, cmd: list[str]) -> subprocess.Popen:
        p = subprocess.Popen(
            cmd,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=open(self.tmp / f"{name}.log", "wb"),  # noqa: SIM115 - owned by the child
        )
        self.by_component.setdefault(component, []).append((name, p))
        return p

    def all(self):
        for procs in self.by_component.values():
            yield from procs

    def check(self) -> None:
        for name, p in self.all():
            if p.poll() is not None:
                log = (self.tmp / f"{name}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{name} exited with {p.returncode}:\n{log}")

    def stop(self) -> None:
        for _, p in self.all():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for _, p in self.all():
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()


def foursave(*args: str) -> list[str]:
    return [sys.executable, "-m", "foursave", *args]


# ------------------------------------------------------------------ the ingester probe


def probe_ingester(cfg_path: str, instance: str, out: str) -> int:
    """``foursave ingest --ingester ID`` as the CLI runs it, with a hook after each
    stored batch that notes when each reading became queryable: (stored at, latency)."""
    import numpy as np

    from foursave.app import ingester, load_config

    ing = ingester(load_config(cfg_path), instance=instance)
    stored_at: list[float] = []
    latency_ms: list[float] = []

    def on_batch(ts_list):
        now = time.time() * 1000
        stored_at.extend([now] * len(ts_list))
        latency_ms.extend(now - ts for ts, _ in ts_list)

    ing.on_batch = on_batch
    signal.signal(signal.SIGTERM, lambda *a: ing.stop())
    try:
        ing.run()
    finally:
        np.save(out, np.array([stored_at, latency_ms]))
        ing.influx.close()
    return 0


# ------------------------------------------------------------------ the bare libraries


def bare_figures(
    tmp: Path, bare_modbus_config: Path, sims: list, broker_port: int, influx_url: str
) -> dict:
    """Bare pymodbus over the same plan, bare paho QoS 1 -> /write and bare /write, each
    in its own process, in this run."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "collector_bench", ROOT / "bench" / "collector.py"
    )
    assert spec is not None and spec.loader is not None
    collector_bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(collector_bench)
    out = {}
    sets = collector_bench.run_bare(bare_modbus_config, 10, sims)
    out["modbus"] = {
        "rate": sets["sets"] / sets["seconds"],
        "cpu_us": sets["cpu_s"] / sets["sets"] * 1e6,
        "requests_per_set": sets["requests"] / sets["sets"],
    }
    import ingest as ingest_bench

    from foursave.core.influx import InfluxClient

    cfg = ingest_bench.bench_config(tmp, "barepaho", broker_port, int(influx_url.rsplit(":", 1)[1]))
    messages = ingest_bench.backlog(600, 30_000)
    client_id = "bench-bare"
    ingest_bench.prime(broker_port, client_id)
    ingest_bench.publish(broker_port, messages)
    out["paho"] = ingest_bench.run_consumer("bare", cfg, len(messages), {})
    out["paho"]["lines"] = ingest_bench.lines_of(messages)
    from pipeline import bare_write_rate

    out["write_lines_s"] = bare_write_rate(influx_url, 5)
    InfluxClient(influx_url, "barepaho").close()
    return out


# ------------------------------------------------------------------ the run


def stored_seq_gaps(influx_url: str, t0_ms: int, t1_ms: int) -> tuple[int, int]:
    """(readings stored in [t0, t1), seqs missing inside each device's stored run)."""
    from foursave.core.influx import InfluxClient
    from foursave.core.influxql import agg, select, time_range
    from foursave.core.reading import SEQ_FIELD

    db = InfluxClient(influx_url, "city")
    total = gaps = 0
    for kind in ("inverter", "meter", "weather", "water"):
        q = select(
            kind,
            [
                agg("count", SEQ_FIELD, "n"),
                agg("min", SEQ_FIELD, "lo"),
                agg("max", SEQ_FIELD, "hi"),
            ],
            where=time_range(t0_ms, t1_ms),
            group_by=["device"],
        )
        for row in db.rows(q):
            n, lo, hi = row["n"], row["lo"], row["hi"]
            total += n
            gaps += hi - lo + 1 - n
    db.close()
    return total, gaps


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--devices", type=int, default=10_000)
    ap.add_argument("--interval", type=float, default=10.0, help="poll interval per device [s]")
    ap.add_argument("--collectors", type=int, default=4, help="districts, one collector each")
    ap.add_argument("--sites-per-district", type=int, default=10)
    ap.add_argument("--ingesters", type=int, default=2, help="members of the shared subscription")
    ap.add_argument("--partitions", type=int, default=2, help="rules engine partitions")
    ap.add_argument("--per-endpoint", type=int, default=50, help="unit ids behind one endpoint")
    ap.add_argument("--seconds", type=float, default=60.0, help="measured period")
    ap.add_argument("--warmup", type=float, default=30.0)
    ap.add_argument("--bare-devices", type=int, default=400, help="devices bare pymodbus reads")
    ap.add_argument(
        "--probe-ingester", nargs=3, metavar=("CONFIG", "ID", "OUT"), help=argparse.SUPPRESS
    )
    args = ap.parse_args()
    if args.probe_ingester:
        return probe_ingester(*args.probe_ingester)

    import numpy as np

    tmp = Path(tempfile.mkdtemp(prefix="foursave-city-"))
    broker = mosquitto(free_port(), tmp / "mosquitto", anonymous_dev=True).start()
    db = influxd(free_port(), tmp / "influxd").start(60)
    url = f"http://127.0.0.1:{db.port}"
    cfg_path = city_config(tmp, args, broker.port, db.port)
    raw = yaml.safe_load(cfg_path.read_text())
    procs = Procs(tmp)
    env_note = f"load average before start {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"
    try:
        sims = sim_configs(tmp, cfg_path)
        for p in sims:
            procs.start("simulators", p.stem, foursave("sim", "--config", str(p)))
        last_ports = [yaml.safe_load(p.read_text())["devices"][-1]["port"] for p in sims]
        for port in last_ports:
            wait_until(lambda port=port: port_open("127.0.0.1", port), 300, "simulators")
        print(f"city: {args.devices} devices every {args.interval:g} s at "
              f"{len(raw['sites'])} sites; {args.collectors} collectors, {args.ingesters} "
              f"ingesters (shared subscription), {args.partitions} rules partitions")  # fmt: skip
        print(env_note)

        sim_procs = [p for _, p in procs.by_component["simulators"]]
        bare = bare_figures(
            tmp, bare_config(tmp, sims[0], args.bare_devices), sim_procs, broker.port, url
        )

        for i in range(1, args.ingesters + 1):
            out = tmp / f"ingester-{i}.npy"
            procs.start(
                "ingester",
                f"ingester-{i}",
                [
                    sys.executable,
                    __file__,
                    "--probe-ingester",
                    str(cfg_path),
                    f"city-{i}",
                    str(out),
                ],
            )
        for c in raw["collectors"]:
            procs.start(
                "collector", c["id"], foursave("collect", "--config", str(cfg_path), "--collector", c["id"])
            )  # fmt: skip
        for i in range(1, args.partitions + 1):
            procs.start(
                "rules",
                f"rules-{i}",
                foursave("rules", "--config", str(cfg_path), "--shard", f"{i}/{args.partitions}"),
            )
        time.sleep(args.warmup)  # a benchmark's warm-up period, not a test wait
        procs.check()
        t0 = time.time()
        cpu0 = {name: cpu_s(p.pid) for name, p in procs.all()}
        broker_cpu0, db_cpu0 = cpu_s(broker.proc.pid), cpu_s(db.proc.pid)
        rss: dict[str, list[float]] = {name: [] for name, _ in procs.all()}
        while time.time() - t0 < args.seconds:
            time.sleep(1)
            for name, p in procs.all():
                rss[name].append(rss_mb(p.pid))
        t1 = time.time()
        cpu = {name: cpu_s(p.pid) - cpu0[name] for name, p in procs.all()}
        broker_cpu, db_cpu = cpu_s(broker.proc.pid) - broker_cpu0, cpu_s(db.proc.pid) - db_cpu0
        procs.check()
        # the readings of the window still in flight are drained before counting
        time.sleep(min(15.0, 2 * args.interval))
        procs.stop()

        stored_at, latency = [], []
        for i in range(1, args.ingesters + 1):
            a = np.load(tmp / f"ingester-{i}.npy")
            stored_at.append(a[0])
            latency.append(a[1])
        at, lat = np.concatenate(stored_at), np.concatenate(latency)
        in_window = (at >= t0 * 1000) & (at < t1 * 1000)
        stored = int(in_window.sum())
        per_ingester = [int(((a >= t0 * 1000) & (a < t1 * 1000)).sum()) for a in stored_at]
        elapsed = t1 - t0
        total, gaps = stored_seq_gaps(url, int(t0 * 1000), int(t1 * 1000))
        rate = stored / elapsed
        offered = args.devices / args.interval
        print()
        print(f"stored               {rate:8.0f} readings/s  (offered {offered:.0f}/s; "
              f"{stored} in {elapsed:.0f} s; per ingester {per_ingester})")  # fmt: skip
        print(f"latency read->queryable p50 {np.percentile(lat[in_window], 50):6.0f} ms   "
              f"p99 {np.percentile(lat[in_window], 99):6.0f} ms")  # fmt: skip
        print(f"seq gaps             {gaps} (of {total} readings stored in the window, by seq)")
        print()
        print(f"{'component':<12} {'processes':>9} {'CPU cores':>9} {'CPU µs/reading':>15} {'RSS MB (max per process)':>26}")  # fmt: skip
        figures = {}
        for comp, ps in procs.by_component.items():
            c = sum(cpu[n] for n, _ in ps)
            per = c / stored * 1e6 if stored else float("nan")
            figures[comp] = per
            rs = ", ".join(f"{max(rss[n]):.0f}" for n, _ in ps)
            print(f"{comp:<12} {len(ps):>9} {c / elapsed:>9.2f} {per:>15.1f} {rs:>26}")
        for comp, c in (("mosquitto", broker_cpu), ("influxd", db_cpu)):
            figures[comp] = c / stored * 1e6
            print(f"{comp:<12} {1:>9} {c / elapsed:>9.2f} {figures[comp]:>15.1f}")
        print()
        m = bare["modbus"]
        print("bare, same machine, same run:")
        print(f"  pymodbus, same request sets  {m['rate']:8.0f} request sets/s at saturation, "
              f"{m['cpu_us']:.1f} CPU µs each   collector/bare CPU {figures['collector'] / m['cpu_us']:.2f}×")  # fmt: skip
        p = bare["paho"]
        paho_us = p["cpu_s"] / p["stored"] * 1e6
        print(f"  paho QoS 1 -> /write        {p['stored'] / p['elapsed_s']:8.0f} readings/s drained, "
              f"{paho_us:.1f} CPU µs each   ingester/bare CPU {figures['ingester'] / paho_us:.2f}×")  # fmt: skip
        print(
            f"  InfluxDB /write              {bare['write_lines_s']:8.0f} lines/s (batches of 5,000)"
        )
        print()
        print(
            "sizing (cores = readings/s × CPU-s per reading; rules scale with sites, not readings):"
        )
        print(f"  {'component':<12} {'per 1,000 devices at 5 s':>25} {'at 60 s':>9}")
        for comp, per in figures.items():
            print(f"  {comp:<12} {1000 / 5 * per / 1e6:>25.3f} {1000 / 60 * per / 1e6:>9.4f}")
        print(json.dumps({"rate": rate, "figures_us": figures, "bare": bare, "gaps": gaps}))
    finally:
        procs.stop()
        broker.stop()
        db.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
