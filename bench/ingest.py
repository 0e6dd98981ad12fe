"""The ingester against a bare paho -> /write drain (run on demand, never in CI).

Both drain the same backlog of reading messages from the same mosquitto into the same
influxd, one after the other, each in a process of its own so that its CPU time
(``resource.getrusage``) is its own:

- **bare**: a paho client (QoS 1, persistent session, paho's automatic PUBACK) whose
  writer thread batches the messages like the ingester does (``batch_max_lines`` /
  ``batch_max_ms``), ``json.loads`` each one, formats its line(s) from the Python types
  of the values and POSTs them to ``/write`` with the same ``InfluxClient``.  No
  checks, no acknowledgements to collectors, no sequence tracking, no dead letters.
- **ingester**: ``foursave.app.ingester`` as ``foursave ingest`` runs it: every check
  (glossary, types, bounds, future timestamps), ``seq`` tracking, MQTT acknowledgement
  after the write, confirmations to the collector.

The backlog is published first with the consumer offline (its session subscribed), so
the broker holds it and the figure is the consumer's own drain rate, not the
publisher's.  Printed from one run: readings/s, CPU µs per reading and both as
a ratio to bare, per round, and the median over the rounds.

``--mqtt 5`` (the default) or ``3.1.1``: the protocol of both sides (paho reads an MQTT
5 PUBLISH with a ``Properties`` object made for each, some 25 µs of CPU more than a
3.1.1 one here, whoever reads it).

With ``--ingesters 2 --shared`` the ingester side is two ``foursave ingest`` processes
in one shared subscription (``$share/bench/...``; mosquitto deals the backlog out to
their sessions in turn, half each): their combined rate, from the first one's start
to the last one's end, against the one bare subscriber; CPU is both processes' sum.

    .venv/bin/python bench/ingest.py --devices 600 --readings 60000 --rounds 3
    .venv/bin/python bench/ingest.py --ingesters 2 --shared --rounds 3
    .venv/bin/python bench/ingest.py --profile      # cProfile of the ingester's writer
"""

from __future__ import annotations

import argparse
import json
import queue
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from foursave.core.influx import InfluxClient  # noqa: E402
from foursave.core.reading import SEQ_FIELD  # noqa: E402
from foursave.core.topics import READINGS_FILTER, reading_topic  # noqa: E402

GROUP = "bench"  # --shared: the ingesters' shared subscription group

COLLECTOR = "bench"
# what the demo site's devices send (config/demo.yaml: two SunSpec inverters with two
# MPPT strings each, a main and an HVAC meter, a weather station, a water meter)
INVERTER = {
    "ac_power_w": (0, 9000),
    "ac_energy_wh": (1e6, 9e7),
    "dc_power_w": (0, 9500),
    "dc_voltage_v": (300, 800),
    "dc_current_a": (0, 25),
    "ac_voltage_v": (215, 235),
    "ac_current_a": (0, 40),
    "ac_frequency_hz": (59.9, 60.1),
    "power_factor": (0.9, 1.0),
    "cabinet_temp_c": (20, 60),
    "ac_apparent_power_va": (0, 9500),
    "ac_reactive_power_var": (-500, 500),
    "heatsink_temp_c": (20, 70),
}
METER = {
    "active_power_w": (-20000, 80000),
    "import_energy_wh": (1e6, 9e8),
    "export_energy_wh": (0, 1e7),
    "apparent_power_va": (0, 90000),
    "reactive_power_var": (-5000, 5000),
    "voltage_v": (215, 235),
    "current_a": (0, 200),
    "power_factor": (0.8, 1.0),
    "frequency_hz": (59.9, 60.1),
}
WEATHER = {
    "poa_irradiance_wm2": (0, 1100),
    "ghi_wm2": (0, 1000),
    "module_temp_c": (15, 65),
    "ambient_temp_c": (15, 38),
    "wind_speed_ms": (0, 12),
}
WATER = {"volume_m3": (100, 90000), "flow_m3h": (0, 30)}
STRING = {"dc_current_a": (0, 12), "dc_voltage_v": (300, 800), "dc_power_w": (0, 4800)}
TEMPLATES = [
    ("inverter", None, INVERTER),
    ("inverter", None, INVERTER),
    ("meter", "main", METER),
    ("meter", "hvac", METER),
    ("weather", None, WEATHER),
    ("water", None, WATER),
]


def _values(rng: random.Random, spec: dict[str, tuple[float, float]]) -> dict[str, float]:
    return {k: round(rng.uniform(lo, hi), 3) for k, (lo, hi) in spec.items()}


def backlog(devices: int, readings: int, seed: int = 1) -> list[tuple[str, bytes]]:
    """``readings`` reading messages (topic, payload) from ``devices`` devices, one per
    device per second, in the order a collector publishes them."""
    rng = random.Random(seed)
    ts0 = int(time.time() * 1000) - readings // devices * 1000 - 60_000
    out: list[tuple[str, bytes]] = []
    for i in range(readings):
        d, tick = i % devices, i // devices
        kind, role, spec = TEMPLATES[d % len(TEMPLATES)]
        body: dict = {"ts": ts0 + tick * 1000 + d, "seq": tick + 1, "kind": kind}
        if role:
            body["role"] = role
        body["collector"] = COLLECTOR
        body["fields"] = _values(rng, spec)
        if kind == "inverter":
            body["fields"].update(state=4, events=0)
            body["parts"] = [
                {
                    "measurement": "inverter_string",
                    "tags": {"string": str(s)},
                    "fields": _values(rng, STRING),
                }
                for s in (1, 2)
            ]
        topic = reading_topic("demo", f"dev-{d:04d}")
        out.append((topic, json.dumps(body, separators=(",", ":")).encode()))
    return out


def lines_of(messages: list[tuple[str, bytes]]) -> int:
    return sum(1 + len(json.loads(p).get("parts", ())) for _, p in messages)


# ------------------------------------------------------------------ the broker side


def _client(port: int, client_id: str, clean: bool) -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


def prime(port: int, client_id: str, group: str | None = None) -> None:
    """The consumer's persistent session, subscribed (in shared subscription ``group``),
    then offline: the broker keeps what is published meanwhile for it."""
    c = _client(port, client_id, clean=False)
    done = threading.Event()
    c.on_subscribe = lambda *a: done.set()
    c.subscribe(f"$share/{group}/{READINGS_FILTER}" if group else READINGS_FILTER, 1)
    if not done.wait(10):
        raise RuntimeError("no SUBACK from the broker")
    c.disconnect()
    c.loop_stop()


def forget(port: int, client_id: str) -> None:
    """End the consumer's session (a clean session replaces it and ends with it): what
    it left unacknowledged is not handed to the next round, and no session of an
    earlier round keeps taking copies of the backlog."""
    c = _client(port, client_id, clean=True)
    c.disconnect()
    c.loop_stop()


def publish(port: int, messages: list[tuple[str, bytes]]) -> None:
    c = _client(port, "bench-publisher", clean=True)
    infos = [c.publish(t, p, qos=1) for t, p in messages]
    for info in infos:
        info.wait_for_publish(60)
    c.disconnect()
    c.loop_stop()


def cpu_s(pid: int) -> float:
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------ the consumers


def _self_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _bare_value(v: object) -> str:
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, int):
        return f"{v}i"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(v)


def _bare_line(measurement: str, tags: dict[str, str], fields: dict, ts: int) -> str:
    tag = "".join(f",{k}={v}" for k, v in sorted(tags.items()))
    return f"{measurement}{tag} {','.join(f'{k}={_bare_value(v)}' for k, v in fields.items())} {ts}"


def bare_lines(topic: str, payload: bytes) -> list[str]:
    _, _, site, device, _ = topic.split("/")
    body = json.loads(payload)
    tags = {"site": site, "device": device}
    if body.get("role"):
        tags["role"] = body["role"]
    # the same point as the ingester's: the reading's fields and its seq
    fields = {**body["fields"], SEQ_FIELD: body["seq"]}
    lines = [_bare_line(body["kind"], tags, fields, body["ts"])]
    for p in body.get("parts", ()):
        ptags = {"site": site, "device": device, **p.get("tags", {})}
        lines.append(_bare_line(p["measurement"], ptags, p["fields"], body["ts"]))
    return lines


def in_process(cfg_path: Path, messages: list[tuple[str, bytes]]) -> tuple[float, float]:
    """CPU µs per reading of turning the messages into lines, no broker, no database:
    the bare drain's ``json.loads`` and format against the ingester's ``_to_lines``
    (every check, seq tracking, acknowledgement bookkeeping)."""
    from foursave.app import ingester, load_config
    from foursave.collector.ingest import Message

    ing = ingester(load_config(cfg_path, env={}))
    msgs = [Message(i + 1, 1, t, p, time.time()) for i, (t, p) in enumerate(messages)]
    t0 = time.process_time()
    bare = [bare_lines(t, p) for t, p in messages]
    t1 = time.process_time()
    ours = [ing._to_lines(m) for m in msgs]
    t2 = time.process_time()
    ing.dead.close()
    ing.influx.close()
    assert all(error is None for _, error in ours)
    assert [sorted(b) for b in bare] == [sorted(lines) for lines, _ in ours]  # the same points
    return (t1 - t0) / len(messages) * 1e6, (t2 - t1) / len(messages) * 1e6


def consume_bare(cfg_path: Path, count: int) -> dict:
    raw = yaml.safe_load(cfg_path.read_text())["services"]
    port = int(raw["mqtt"]["url"].rsplit(":", 1)[1])
    influx = InfluxClient(raw["influxdb"]["url"], raw["influxdb"]["database"])
    influx.create_database()
    max_lines = raw["ingester"].get("batch_max_lines", 5000)
    max_s = raw["ingester"].get("batch_max_ms", 250) / 1000
    q: queue.Queue[tuple[str, bytes]] = queue.Queue()
    # the ingester's protocol: paho reads an MQTT 5 message for more CPU than a 3.1.1 one
    v5 = raw["ingester"].get("mqtt_version", "5") == "5"
    kw: dict = {"protocol": mqtt.MQTTv5} if v5 else {"clean_session": False}
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-bare", **kw)
    c.on_connect = lambda cl, *a: cl.subscribe(READINGS_FILTER, 1)
    c.on_message = lambda cl, u, msg: q.put((msg.topic, msg.payload))
    stored = 0
    t0, cpu0 = time.monotonic(), _self_cpu_s()
    c.connect("127.0.0.1", port, **({"clean_start": False} if v5 else {}))
    c.loop_start()
    while stored < count:
        batch = [q.get()]
        deadline = time.monotonic() + max_s
        while len(batch) < max_lines:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                batch.append(q.get(timeout=left))
            except queue.Empty:
                break
        lines = []
        for topic, payload in batch:
            lines.extend(bare_lines(topic, payload))
        influx.write(lines)
        stored += len(batch)
    elapsed, cpu = time.monotonic() - t0, _self_cpu_s() - cpu0
    c.disconnect()
    c.loop_stop()
    return {"stored": stored, "elapsed_s": elapsed, "cpu_s": cpu}


def consume_ingester(
    cfg_path: Path, count: int, profile: Path | None, instance: str | None = None
) -> dict:
    from foursave.app import ingester, load_config

    ing = ingester(load_config(cfg_path, env={}), instance=instance)
    stored = [0]
    done = threading.Event()

    def on_batch(ts_list):
        stored[0] += len(ts_list)
        if stored[0] >= count:
            done.set()
            ing.stop()

    ing.on_batch = on_batch
    t0, cpu0, wall0 = time.monotonic(), _self_cpu_s(), time.time()
    if profile:
        import cProfile

        prof = cProfile.Profile()
        prof.runcall(ing.run, stats_interval_s=3600)
        prof.dump_stats(profile)
    else:
        ing.run(stats_interval_s=3600)
    if not done.is_set():
        raise RuntimeError(f"ingester stopped after {stored[0]} of {count} readings")
    # the moment the last batch was stored: on_batch ran; run() then only disconnects
    elapsed, cpu = time.monotonic() - t0, _self_cpu_s() - cpu0
    ing.influx.close()
    import sqlite3

    with sqlite3.connect(ing.cfg.dead_letter_path) as dl:  # run() closed its own
        dead = dl.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0]
    if dead or ing.unknown_fields or ing.out_of_bounds:
        raise RuntimeError(
            f"{dead} dead letters, {ing.unknown_fields} unknown fields, "
            f"{ing.out_of_bounds} out of bounds: the backlog is not what a collector sends"
        )
    return {
        "stored": stored[0],
        "elapsed_s": elapsed,
        "cpu_s": cpu,
        "start": wall0,
        "end": wall0 + elapsed,
    }


# ------------------------------------------------------------------ the run


def ingester_ids(n: int) -> list[str]:
    return ["bench"] + [f"bench-{i}" for i in range(2, n + 1)]


def client_ids(n: int) -> list[str]:
    """The ingesters' MQTT client ids (``bench-ingester`` for one, as before)."""
    return ["bench-ingester"] if n == 1 else [f"bench-ingester-{i}" for i in ingester_ids(n)]


def bench_config(
    tmp: Path, name: str, mqtt_port: int, influx_port: int, ingesters: int = 1, mqtt_version="5"
) -> Path:
    ingester: dict = {
        "mqtt_version": mqtt_version,
        "id": "bench",
        "client_id": "bench-ingester",
        "dead_letter_path": str(tmp / f"{name}-dead.sqlite"),
    }
    if ingesters > 1:
        ingester |= {
            "instances": ingester_ids(ingesters)[1:],
            "shared_group": GROUP,
            "client_id": "bench-ingester-{id}",
            "dead_letter_path": str(tmp / f"{name}-dead-{{id}}.sqlite"),
        }
    raw = {
        "services": {
            "mqtt": {"url": f"mqtt://127.0.0.1:{mqtt_port}"},
            "influxdb": {"url": f"http://127.0.0.1:{influx_port}", "database": name},
            "ingester": ingester,
        },
        "sites": [{"id": "demo", "name": "bench", "lat": 22.99, "lon": 120.19}],
        "devices": [],
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def run_consumer(
    role: str,
    cfg_path: Path,
    count: int,
    pids: dict[str, int],
    profile: Path | None = None,
    ingesters: int = 1,
) -> dict:
    """One consumer process (``ingesters`` > 1: that many ingester processes at once, in
    one shared group, each draining its share): stored, elapsed (first start to last
    end), CPU (their sum), and the broker's and influxd's CPU meanwhile."""
    shares = [count // ingesters + (i < count % ingesters) for i in range(ingesters)]
    cmds = []
    for i, share in enumerate(shares):
        cmd = [sys.executable, __file__, "--consume", role, "--config", str(cfg_path)]
        cmd += ["--count", str(share)] + (["--profile-out", str(profile)] if profile else [])
        if ingesters > 1:
            cmd += ["--instance", ingester_ids(ingesters)[i]]
        cmds.append(cmd)
    before = {k: cpu_s(p) for k, p in pids.items()}
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        for cmd in cmds
    ]
    results = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=1800)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise RuntimeError("a consumer did not drain its share within 30 min") from None
        if proc.returncode:
            raise RuntimeError(f"consumer failed ({proc.returncode}):\n{err[-2000:]}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    result = results[0]
    if len(results) > 1:
        result = {
            "stored": sum(r["stored"] for r in results),
            "elapsed_s": max(r["end"] for r in results) - min(r["start"] for r in results),
            "cpu_s": sum(r["cpu_s"] for r in results),
            "shares": [r["stored"] for r in results],
        }
    # the broker's and influxd's CPU over the whole consumer process (start-up included)
    result.update({f"{k}_cpu_s": cpu_s(p) - before[k] for k, p in pids.items()})
    return result


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--devices", type=int, default=600)
    ap.add_argument("--readings", type=int, default=60_000, help="messages per drain")
    ap.add_argument("--rounds", type=int, default=3, help="bare and ingester drains each")
    ap.add_argument("--profile", action="store_true", help="one ingester drain under cProfile")
    ap.add_argument("--ingesters", type=int, default=1, help="ingester processes (with --shared)")
    ap.add_argument(
        "--shared", action="store_true", help="the ingesters in one shared subscription group"
    )
    ap.add_argument("--instance", help=argparse.SUPPRESS)
    ap.add_argument(
        "--mqtt",
        choices=("5", "3.1.1"),
        default="5",
        help="the protocol of the ingester (services.ingester.mqtt_version) and of the bare "
        "subscriber alike (5)",
    )
    ap.add_argument("--consume", choices=("bare", "ingester"), help=argparse.SUPPRESS)
    ap.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--count", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--profile-out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.consume == "bare":
        print(json.dumps(consume_bare(args.config, args.count)))
        return 0
    if args.consume == "ingester":
        print(
            json.dumps(consume_ingester(args.config, args.count, args.profile_out, args.instance))
        )
        return 0
    if args.ingesters < 1 or (args.ingesters > 1) != args.shared:
        ap.error("--ingesters N (N > 1) goes with --shared: they share one subscription")
    if args.profile and args.ingesters > 1:
        ap.error("--profile profiles one ingester")

    from foursave.localstack import free_port, influxd, mosquitto

    tmp = Path(tempfile.mkdtemp(prefix="foursave-bench-ingest-"))
    broker = mosquitto(free_port(), tmp / "mosquitto", anonymous_dev=True).start()
    db = influxd(free_port(), tmp / "influxd").start(60)
    try:
        assert broker.proc and db.proc
        pids = {"broker": broker.proc.pid, "influxd": db.proc.pid}
        messages = backlog(args.devices, args.readings)
        n_lines = lines_of(messages)
        print(
            f"{args.readings} readings ({n_lines} lines) from {args.devices} devices per drain, "
            f"{sum(len(p) for _, p in messages) / len(messages):.0f} bytes each on average"
        )
        bare_us, ours_us = in_process(bench_config(tmp, "offline", broker.port, db.port), messages)
        print(
            f"in process, messages to lines: bare {bare_us:.1f} µs/reading, ingester "
            f"{ours_us:.1f} µs/reading ({ours_us / bare_us:.2f}x)"
        )
        if args.profile:
            cfg = bench_config(tmp, "profiled", broker.port, db.port, mqtt_version=args.mqtt)
            prime(broker.port, "bench-ingester")
            publish(broker.port, messages)
            out = tmp / "ingester.prof"
            r = run_consumer("ingester", cfg, len(messages), pids, out)
            print(f"ingester {r['stored'] / r['elapsed_s']:.0f} readings/s under cProfile")
            import pstats

            pstats.Stats(str(out)).sort_stats("tottime").print_stats(35)
            pstats.Stats(str(out)).sort_stats("cumulative").print_stats(45)
            return 0
        n = args.ingesters
        print(f"MQTT {args.mqtt} for the ingester and the bare subscriber")
        if n > 1:
            print(f"ingester side: {n} foursave ingest processes in shared group {GROUP!r}")
        results: dict[str, list[dict]] = {"bare": [], "ingester": []}
        for i in range(args.rounds):
            for role, ids in (("bare", ["bench-bare"]), ("ingester", client_ids(n))):
                k = n if role == "ingester" else 1
                cfg = bench_config(tmp, f"{role}_{i}", broker.port, db.port, k, args.mqtt)
                for client_id in ids:
                    prime(broker.port, client_id, GROUP if k > 1 else None)
                publish(broker.port, messages)
                results[role].append(run_consumer(role, cfg, len(messages), pids, ingesters=k))
                for client_id in ids:
                    forget(broker.port, client_id)
                if "shares" in results[role][-1]:
                    print(f"round {i + 1}: the members stored {results[role][-1]['shares']}")
        print(
            f"{'round':>5} {'consumer':>9} {'readings/s':>11} {'CPU us/rdg':>10} "
            f"{'rate/bare':>10} {'CPU/bare':>9} {'broker s':>9} {'influxd s':>9}"
        )
        ratios: dict[str, list[float]] = {"rate": [], "cpu": []}
        for i in range(args.rounds):
            b = results["bare"][i]
            for role in ("bare", "ingester"):
                r = results[role][i]
                rate = r["stored"] / r["elapsed_s"]
                cpu_us = r["cpu_s"] / r["stored"] * 1e6
                rate_x = rate / (b["stored"] / b["elapsed_s"])
                cpu_x = r["cpu_s"] / r["stored"] / (b["cpu_s"] / b["stored"])
                if role == "ingester":
                    ratios["rate"].append(rate_x)
                    ratios["cpu"].append(cpu_x)
                print(
                    f"{i + 1:>5} {role:>9} {rate:>11.0f} {cpu_us:>10.1f} {rate_x:>9.2f}x "
                    f"{cpu_x:>8.2f}x {r['broker_cpu_s']:>9.2f} {r['influxd_cpu_s']:>9.2f}"
                )
        if not args.rounds:
            return 0
        print(
            f"median over {args.rounds} rounds: ingester rate {statistics.median(ratios['rate']):.2f}x "
            f"bare, CPU per reading {statistics.median(ratios['cpu']):.2f}x bare "
            "(goal: rate >= 0.90x, CPU <= 1.30x; issue 16's bar: rate >= 0.8x)"
        )
    finally:
        broker.stop()
        db.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
