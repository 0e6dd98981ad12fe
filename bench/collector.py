"""The collector alone at saturation against bare pymodbus (run on demand, never in CI).

N simulated devices (``foursave sim`` in processes of their own, several unit ids per
TCP endpoint), a real mosquitto, and in the same run, one after the other:

- **bare**: a process of plain pymodbus clients, one per TCP endpoint (as the
  collector has one connection per endpoint), each reading in turn, back to back,
  every unit's request set: the same register blocks the collector reads for that
  device (its reader's plan, ``collector/plan.py``, after SunSpec discovery).  No
  decoding, no MQTT.  A request set per device is the bare counterpart of a reading.
- **bare paho**: a process publishing the collector's readings (one of each device
  kind, taken from its round) at QoS 1 with its in-flight window, as fast as the
  PUBACKs come: what one reading's message costs with the library alone.
- **collector**: ``foursave collect`` in its own process, every device polled at an
  interval far shorter than a round of its endpoint takes (so each endpoint is polled
  back to back: saturation), publishing to mosquitto with its spool and everything.
  A consumer in this process (a paho subscriber) counts the readings and confirms
  them to the collector the way an ingester does (``collector/ack.py``, every
  100 ms), so that the spool stays at its steady state.

Printed per round: readings/s and the collector's CPU µs per reading
(``/proc/<pid>/stat`` utime + stime over the measured window), the bare request sets/s
and CPU µs per set, and the ratios (rate: collector / bare, the bar is >= 0.6; CPU:
collector / bare, the bar is <= 2), the ratio to bare pymodbus + bare paho (what
the libraries alone spend per reading), with the simulators', mosquitto's and the
consumer's CPU beside them.  Each collector round is compared with the mean of the bare runs before and
after it: the machine is shared, compare within a run.

    .venv/bin/python bench/collector.py --devices 400 --seconds 20 --rounds 2
    .venv/bin/python bench/collector.py --profile cprofile   # the event loop's thread
    .venv/bin/python bench/collector.py --profile py-spy     # every thread (py-spy on PATH
                                                             # or --py-spy PATH)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from datetime import date, timedelta
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from foursave.app import load_config  # noqa: E402
from foursave.localstack import free_port, mosquitto, port_open, wait_until  # noqa: E402

TEMPLATES = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())["devices"]
COLLECTOR = "bench"
BAR_CPU = 2.0  # collector CPU per reading within 2x bare pymodbus's per request set
BAR_RATE = 0.6  # readings/s at least 0.6x bare request sets/s


def bench_config(tmp: Path, n: int, per_endpoint: int, interval_s: float, mqtt_port: int) -> Path:
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
            "influxdb": {"url": "http://127.0.0.1:1", "database": "bench"},
            "collector": {"id": COLLECTOR, "spool_path": str(tmp / "spool.sqlite")},
            # several simulator processes: none serves the fault-control page
            "simulator": {"control_port": None, "cache_dir": str(tmp / "sim-cache")},
        },
        "sites": [{"id": "demo", "name": "bench", "lat": 22.99, "lon": 120.19}],
        "devices": devices,
    }
    path = tmp / "bench.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def child_env() -> dict[str, str]:
    """This environment less foursave's overrides: the bench's config is the one."""
    return {k: v for k, v in os.environ.items() if not k.startswith("FOURSAVE_")}


def cpu_s(pid: int) -> float:
    return sum(user_sys_s(pid))


def user_sys_s(pid: int) -> tuple[float, float]:
    """utime and stime of a process [s]."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


# --- bare pymodbus (a child process) ----------------------------------------------


async def _plans(cfg) -> dict[int, list[tuple[int, list[tuple[int, int, int]]]]]:
    """Per TCP port: (unit id, the collector's request set for it) for each device,
    from the collector's own readers (SunSpec discovery first)."""
    from foursave.collector.modbus import ModbusLink, SunSpecReader, reader_for

    by_port: dict[int, list] = defaultdict(list)
    links: dict[int, ModbusLink] = {}
    for d in cfg.devices:
        reader = reader_for(d)
        link = links.setdefault(d.port, ModbusLink(d))
        if isinstance(reader, SunSpecReader):
            await reader.discover(link)
        by_port[d.port].append((d.unit_id, [(s.function, s.address, s.count) for s in reader.plan]))
    for link in links.values():
        await link.close()
    return by_port


def bare_child(config_path: str, seconds: float) -> int:
    """Discover the plans, say ``ready``, wait for ``go`` on stdin, read back to back
    for ``seconds`` and print the counts as JSON."""
    from pymodbus.client import AsyncModbusTcpClient

    cfg = load_config(config_path, env={})

    async def main() -> dict:
        plans = await _plans(cfg)
        clients = {}
        for port in plans:
            c = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)
            await c.connect()
            clients[port] = c
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        sets, requests = [0], [0]
        stop = time.monotonic() + seconds
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.monotonic()

        async def worker(port: int) -> None:
            c = clients[port]
            units = plans[port]
            while time.monotonic() < stop:
                for unit, spans in units:
                    for fc, address, count in spans:
                        call = c.read_holding_registers if fc == 3 else c.read_input_registers
                        resp = await call(address, count=count, device_id=unit)
                        if resp.isError():
                            raise RuntimeError(f"port {port} unit {unit}: {resp}")
                        requests[0] += 1
                    sets[0] += 1

        await asyncio.gather(*(worker(p) for p in plans))
        elapsed = time.monotonic() - t0
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
        for c in clients.values():
            c.close()
        return {
            "sets": sets[0],
            "requests": requests[0],
            "seconds": elapsed,
            "cpu_s": cpu,
            "sys_s": r1.ru_stime - r0.ru_stime,
        }

    print(json.dumps(asyncio.run(main())), flush=True)
    return 0


def run_bare(config_path: Path, seconds: float, sims: list[subprocess.Popen]) -> dict:
    p = subprocess.Popen(
        [sys.executable, __file__, "--bare-child", str(config_path), str(seconds)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    assert p.stdin is not None and p.stdout is not None
    line = p.stdout.readline()
    if line.strip() != "ready":
        p.kill()
        raise RuntimeError(f"bare pymodbus did not start: {line!r}")
    sim0 = sum(cpu_s(s.pid) for s in sims)
    p.stdin.write("go\n")
    p.stdin.flush()
    out = json.loads(p.stdout.readline())
    out["sim_cpu_s"] = sum(cpu_s(s.pid) for s in sims) - sim0
    p.wait(30)
    return out


# --- bare paho (a child process) ---------------------------------------------------


def paho_child(port: int, seconds: float, samples_path: str, max_inflight: int) -> int:
    """Publish the collector's readings (samples of each kind, in turn) at QoS 1 with
    the collector's in-flight window, as fast as PUBACKs come, for ``seconds``."""
    import paho.mqtt.client as mqtt

    samples = [(t, p.encode("latin-1")) for t, p in json.loads(Path(samples_path).read_text())]
    window = threading.Semaphore(max_inflight)
    acked = [0]

    def on_publish(client, userdata, mid, reason_code, properties):
        acked[0] += 1
        window.release()

    connected = threading.Event()
    c = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-bare-paho-{port}", protocol=mqtt.MQTTv5
    )
    c.max_inflight_messages_set(max_inflight)
    c.on_publish = on_publish
    c.on_connect = lambda *a: connected.set()
    c.connect("127.0.0.1", port)
    c.loop_start()
    connected.wait(30)
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    stop = t0 + seconds
    i = 0
    while time.monotonic() < stop:
        if not window.acquire(timeout=0.5):
            continue
        topic, payload = samples[i % len(samples)]
        c.publish(topic, payload, qos=1)
        i += 1
    while acked[0] < i and time.monotonic() < stop + 10:
        time.sleep(0.01)  # the last PUBACKs
    elapsed = time.monotonic() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    c.disconnect()
    c.loop_stop()
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    sys_s = r1.ru_stime - r0.ru_stime
    print(json.dumps({"messages": acked[0], "seconds": elapsed, "cpu_s": cpu, "sys_s": sys_s}))
    return 0


def run_paho(broker, seconds: float, samples: dict, tmp: Path, max_inflight: int) -> dict:
    path = tmp / "samples.json"
    path.write_text(json.dumps([(t, p.decode("latin-1")) for t, p in samples.values()]))
    consumer = Consumer(broker.port)  # a subscriber, as when the collector publishes
    wait_until(consumer.subscribed.is_set, 30, "consumer subscribed")
    try:
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--paho-child",
                str(broker.port),
                str(seconds),
                str(path),
                str(max_inflight),
            ],
            capture_output=True,
            text=True,
            env=child_env(),
            check=True,
            timeout=seconds + 60,
        )
    finally:
        consumer.close()
    return json.loads(out.stdout.splitlines()[-1])


# --- the collector (a child process) and its consumer -----------------------------


class Consumer:
    """Counts the readings that reach the broker and confirms them to the collector
    every 100 ms, as an ingester does once they are stored."""

    def __init__(self, port: int):
        import paho.mqtt.client as mqtt

        from foursave.core.topics import READINGS_FILTER

        self.lock = threading.Lock()
        self.counting = False
        self.received = 0  # distinct readings within the window
        self.total = 0  # every reading message
        self.seen: set[tuple[str, int]] = set()
        self.duplicates = 0
        self._pending: dict[str, list[int]] = defaultdict(list)
        self.samples: dict[str, tuple[str, bytes]] = {}  # a reading per device kind
        self._stop = threading.Event()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-consumer-{port}")
        c.on_message = self._on_message
        self.subscribed = threading.Event()
        c.on_subscribe = lambda *a: self.subscribed.set()
        c.on_connect = lambda client, *a: client.subscribe(READINGS_FILTER, qos=1)
        c.connect("127.0.0.1", port)
        c.loop_start()
        self.client = c
        self._acker = threading.Thread(target=self._ack_loop, daemon=True)
        self._acker.start()

    def _on_message(self, client, userdata, msg) -> None:
        device = msg.topic.split("/")[3]
        body = json.loads(msg.payload)
        seq = body["seq"]
        if body.get("kind") not in self.samples:
            self.samples[body.get("kind")] = (msg.topic, bytes(msg.payload))
        with self.lock:
            self.total += 1
            self._pending[device].append(seq)
            if self.counting:
                key = (device, seq)
                if key in self.seen:
                    self.duplicates += 1
                else:
                    self.seen.add(key)
                    self.received += 1

    def _ack_loop(self) -> None:
        from foursave.collector.ack import encode_acks
        from foursave.core.topics import ack_topic

        while not self._stop.wait(0.1):
            with self.lock:
                pending, self._pending = self._pending, defaultdict(list)
            if pending:
                for payload in encode_acks("bench", int(time.time() * 1000), pending):
                    self.client.publish(ack_topic(COLLECTOR), payload, qos=1)

    def window(self, on: bool) -> int:
        with self.lock:
            if on:
                self.received, self.duplicates = 0, 0
                self.seen = set()
            self.counting = on
            return self.received

    def close(self) -> None:
        self._stop.set()
        self._acker.join(5)
        self.client.disconnect()
        self.client.loop_stop()


def collector_child(config_path: str, profile_out: str) -> int:
    """``foursave collect`` under cProfile, profiling between SIGUSR1 and SIGUSR2."""
    import cProfile
    import logging

    from foursave import app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    cfg = load_config(config_path, env={})
    col = app.collector(cfg)
    prof = cProfile.Profile()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGUSR1, prof.enable)

        def done() -> None:
            prof.disable()
            prof.dump_stats(profile_out)

        loop.add_signal_handler(signal.SIGUSR2, done)
        await col.run(stop)

    asyncio.run(main())
    return 0


def run_collector(
    cfg_path: Path,
    broker,
    sims: list[subprocess.Popen],
    args,
    tmp: Path,
    round_no: int,
) -> dict:
    # a fresh spool per round: seq numbers from 0, nothing to replay from the last
    raw = yaml.safe_load(cfg_path.read_text())
    spool_dir = Path(args.spool_dir) if args.spool_dir else tmp
    raw["services"]["collector"]["spool_path"] = str(spool_dir / f"spool-{round_no}.sqlite")
    path = tmp / f"collector-{round_no}.yaml"
    path.write_text(yaml.safe_dump(raw))
    consumer = Consumer(broker.port)
    wait_until(consumer.subscribed.is_set, 30, "consumer subscribed")
    prof_out = tmp / f"collector-{round_no}.prof"
    if args.profile == "cprofile":
        cmd = [sys.executable, __file__, "--collector-child", str(path), str(prof_out)]
    else:
        cmd = [sys.executable, "-m", "foursave", "collect", "--config", str(path)]
    log_path = tmp / f"collect-{round_no}.log"
    col = subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=open(log_path, "wb"),  # noqa: SIM115 - owned by the child
        env=child_env(),
    )
    spy = None
    try:
        wait_until(lambda: consumer.total, 120, "first readings", col)
        consumer.window(True)  # the first readings: discovery is over
        time.sleep(args.warmup)  # a benchmark's warm-up period, not a test wait
        consumer.window(True)
        if args.profile == "cprofile":
            col.send_signal(signal.SIGUSR1)
        elif args.profile == "py-spy":
            spy = subprocess.Popen(
                [
                    args.py_spy,
                    "record",
                    "--pid",
                    str(col.pid),
                    "--duration",
                    str(int(args.seconds)),
                    "--rate",
                    "200",
                    "--format",
                    "raw",
                    "--threads",
                    "--gil",  # CPU in Python: the thread holding the GIL
                    "--output",
                    str(tmp / f"collector-{round_no}.pyspy.txt"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        t0 = time.monotonic()
        u0 = user_sys_s(col.pid)
        c0, s0, b0 = cpu_s(col.pid), sum(cpu_s(s.pid) for s in sims), cpu_s(broker.proc.pid)
        k0 = cpu_s(os.getpid())  # the consumer's threads; the main one sleeps
        time.sleep(args.seconds)  # the measured window
        elapsed = time.monotonic() - t0
        u1 = user_sys_s(col.pid)
        c1, s1, b1 = cpu_s(col.pid), sum(cpu_s(s.pid) for s in sims), cpu_s(broker.proc.pid)
        k1 = cpu_s(os.getpid())
        received = consumer.window(False)
        duplicates = consumer.duplicates
        if args.profile == "cprofile":
            col.send_signal(signal.SIGUSR2)
            wait_until(prof_out.exists, 60, "the profile written", col)
        if spy is not None:
            spy.wait(120)
    finally:
        col.terminate()
        col.wait(60)
        consumer.close()
    errors = [ln for ln in log_path.read_text().splitlines() if " ERROR " in ln or "WARNING" in ln]
    return {
        "readings": received,
        "duplicates": duplicates,
        "seconds": elapsed,
        "cpu_s": c1 - c0,
        "sim_cpu_s": s1 - s0,
        "broker_cpu_s": b1 - b0,
        "consumer_cpu_s": k1 - k0,
        "sys_s": u1[1] - u0[1],
        "warnings": errors[:5],
        "samples": consumer.samples,
        "profile": prof_out if args.profile == "cprofile" else None,
        "pyspy": tmp / f"collector-{round_no}.pyspy.txt" if spy is not None else None,
    }


# --- profiles ----------------------------------------------------------------------


def print_cprofile(path: Path, top: int) -> None:
    import pstats

    st = pstats.Stats(str(path))
    st.strip_dirs()
    for key, title in (("tottime", "self"), ("cumulative", "cumulative")):
        print(f"\n-- cProfile of the event loop's thread, top {top} by {title} time --")
        st.sort_stats(key).print_stats(top)


def print_pyspy(path: Path, top: int) -> None:
    """Self and inclusive sample shares per function from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack:
            continue
        count = int(n)
        frames = stack.split(";")
        total += count
        threads[frames[0]] += count
        frames = [f for f in frames[1:] if f] or ["(idle)"]
        own[frames[-1]] += count
        for f in set(frames):
            incl[f] += count
    if not total:
        print("py-spy: no samples")
        return
    print(f"\n-- py-spy, {total} samples of the collector (the thread holding the GIL) --")
    for t, n in threads.most_common():
        print(f"  {100 * n / total:5.1f} %  {t}")
    for title, counter in (("self", own), ("inclusive", incl)):
        print(f"\n-- top {top} by {title} samples --")
        for f, n in counter.most_common(top):
            print(f"  {100 * n / total:5.1f} %  {f}")


# --- main --------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--devices", type=int, default=400)
    ap.add_argument("--per-endpoint", type=int, default=10, help="unit ids behind one TCP endpoint")
    ap.add_argument(
        "--interval",
        type=float,
        default=0.05,
        help="poll interval per device [s] (0.05 at least): shorter than an endpoint's round",
    )
    ap.add_argument("--seconds", type=float, default=20.0, help="measured period of each run")
    ap.add_argument("--warmup", type=float, default=5.0, help="collector runs before measuring")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument(
        "--spool-dir",
        help="where the collector's spool goes (default: the run's folder, on disk as a "
        "real spool is; /dev/shm shows what the fsyncs cost)",
    )
    ap.add_argument("--sim-procs", type=int, default=2, help="simulator processes")
    ap.add_argument("--profile", choices=("none", "cprofile", "py-spy"), default="none")
    ap.add_argument("--py-spy", default=shutil.which("py-spy") or "py-spy")
    ap.add_argument("--top", type=int, default=25, help="functions listed per profile")
    ap.add_argument("--bare-child", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--paho-child", nargs=4, help=argparse.SUPPRESS)
    ap.add_argument("--collector-child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.bare_child:
        return bare_child(args.bare_child[0], float(args.bare_child[1]))
    if args.paho_child:
        port, seconds, samples, inflight = args.paho_child
        return paho_child(int(port), float(seconds), samples, int(inflight))
    if args.collector_child:
        return collector_child(*args.collector_child)

    tmp = Path(tempfile.mkdtemp(prefix="foursave-bench-collector-"))
    broker = mosquitto(free_port(), tmp / "mosquitto", anonymous_dev=True).start()
    sims: list[subprocess.Popen] = []
    try:
        cfg_path = bench_config(tmp, args.devices, args.per_endpoint, args.interval, broker.port)
        cfg = load_config(cfg_path, env={})
        ports = sorted({d.port for d in cfg.devices})
        for i in range(args.sim_procs):
            mine = [d.id for d in cfg.devices if ports.index(d.port) % args.sim_procs == i]
            if not mine:
                continue
            sims.append(
                subprocess.Popen(
                    [sys.executable, "-m", "foursave", "sim", "--config", str(cfg_path)]
                    + [a for d in mine for a in ("--device", d)],
                    cwd=ROOT,
                    stdout=subprocess.DEVNULL,
                    stderr=open(tmp / f"sim-{i}.log", "wb"),  # noqa: SIM115 - the child's
                    env=child_env(),
                )
            )
        for p in ports:
            wait_until(lambda p=p: port_open("127.0.0.1", p), 180, f"simulator on {p}")
        print(
            f"devices {args.devices} ({args.per_endpoint} per TCP endpoint, {len(ports)} "
            f"endpoints, {len(sims)} simulator processes), interval {args.interval} s, "
            f"{args.seconds:g} s measured per run"
        )
        bares = [run_bare(cfg_path, args.seconds, sims)]
        cols, pahos = [], []
        for r in range(args.rounds):
            cols.append(run_collector(cfg_path, broker, sims, args, tmp, r))
            bares.append(run_bare(cfg_path, args.seconds, sims))
            inflight = cfg.services.collector.max_inflight
            pahos.append(run_paho(broker, args.seconds, cols[-1]["samples"], tmp, inflight))
    finally:
        for p in sims:
            p.terminate()
            p.wait(30)
        broker.stop()

    def fmt_bare(b: dict) -> str:
        rate = b["sets"] / b["seconds"]
        return (
            f"bare      {rate:8.0f} sets/s  {1e6 * b['cpu_s'] / b['sets']:6.1f} µs CPU/set  "
            f"(of it {1e6 * b['sys_s'] / b['sets']:.0f} in the kernel; "
            f"{b['requests'] / b['sets']:.2f} requests/set, "
            f"{b['cpu_s'] / b['seconds']:.2f} cores; simulators "
            f"{1e6 * b['sim_cpu_s'] / b['sets']:.0f} µs/set, {b['sim_cpu_s'] / b['seconds']:.2f} cores)"
        )

    print()
    ratios = []
    for i, c in enumerate(cols):
        before, after = bares[i], bares[i + 1]
        bare_rate = statistics.mean(b["sets"] / b["seconds"] for b in (before, after))
        bare_cpu = statistics.mean(b["cpu_s"] / b["sets"] for b in (before, after))
        rate = c["readings"] / c["seconds"]
        cpu = c["cpu_s"] / c["readings"] if c["readings"] else float("nan")
        ratios.append((cpu / bare_cpu, rate / bare_rate))
        print(f"round {i + 1}")
        print("  " + fmt_bare(before))
        print(
            f"  collector {rate:8.0f} readings/s  {1e6 * cpu:6.1f} µs CPU/reading  "
            f"(of it {1e6 * c['sys_s'] / max(c['readings'], 1):.0f} in the kernel; "
            f"{c['cpu_s'] / c['seconds']:.2f} cores; simulators "
            f"{1e6 * c['sim_cpu_s'] / max(c['readings'], 1):.0f} µs/reading, "
            f"{c['sim_cpu_s'] / c['seconds']:.2f} cores; mosquitto "
            f"{1e6 * c['broker_cpu_s'] / max(c['readings'], 1):.0f} µs/reading; consumer "
            f"{1e6 * c['consumer_cpu_s'] / max(c['readings'], 1):.0f} µs/reading; "
            f"{c['duplicates']} published twice)"
        )
        print("  " + fmt_bare(after))
        p = pahos[i]
        paho_cpu = p["cpu_s"] / p["messages"]
        print(
            f"  bare paho {p['messages'] / p['seconds']:8.0f} msgs/s    {1e6 * paho_cpu:6.1f} µs CPU/msg  "
            f"(of it {1e6 * p['sys_s'] / p['messages']:.0f} in the kernel; QoS 1, the collector's "
            f"readings, its in-flight window; {p['cpu_s'] / p['seconds']:.2f} cores)"
        )
        print(
            f"  ratios    CPU per reading {cpu / bare_cpu:5.2f}x bare pymodbus (bar <= {BAR_CPU:g}x), "
            f"{cpu / (bare_cpu + paho_cpu):5.2f}x bare pymodbus + bare paho; "
            f"rate {rate / bare_rate:5.2f}x bare (bar >= {BAR_RATE:g}x)"
        )
        for w in c["warnings"]:
            print(f"  collector log: {w}")
    if len(ratios) > 1:
        print(
            f"median    CPU {statistics.median(r[0] for r in ratios):.2f}x, "
            f"rate {statistics.median(r[1] for r in ratios):.2f}x"
        )
    for c in cols:
        if c["profile"] is not None:
            print_cprofile(c["profile"], args.top)
        if c["pyspy"] is not None and c["pyspy"].exists():
            print_pyspy(c["pyspy"], args.top)
    print(f"\nfiles (logs, profiles): {tmp}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
