"""The chaos suite's machinery (issue 12): real mosquitto and influxd (foursave.localstack),
the collector and the ingester as their own OS processes (so they can be SIGKILLed), the
simulators over real Modbus TCP, and the counting every scenario reports.

How the figures are measured (the same in every scenario):

- taken: readings the collector enqueued, per device ``last seq + 1``: from the spool's
  ``device_seq`` table when the collector runs as its own process (a reading is taken
  once it is committed to the spool; a SIGKILL can end at most the readings of one
  uncommitted flush, and those are neither taken nor published: their seq numbers are
  handed out again), from the pollers' in-memory ``seq`` when it runs in this process.
- stored: distinct points per device in InfluxDB (one point per series and
  timestamp: ``count`` of each field, the largest per device).
- lost: ``taken - stored`` per device where positive; extra: ``stored - taken`` where
  positive (points InfluxDB holds beyond the readings taken: a duplicate stored as a
  new point would show here).
- duplicated: the ingester's own count of repeated seq numbers (its SeqTracker state,
  persisted in the dead-letter SQLite's ``seq_state`` table) -- redeliveries written
  again onto the same point.
- dead-lettered: rows in the dead-letter SQLite.
- longest stall: the largest gap between consecutive stored timestamps of the healthy
  devices during the run (scenarios with an in-process collector: between the starts
  of consecutive polls).

Used by tests/chaos/test_chaos.py (cheap sizes, CI) and bench/chaos.py (full sizes).
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import yaml

from foursave.app import load_config
from foursave.core.config import Config
from foursave.core.influx import InfluxClient
from foursave.localstack import LocalService, die_with_parent, free_port, influxd
from tests.helpers import ANYONE, ANYONE_PASSWORD, admit, auth_broker, broker_secrets, wait_for

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES: list[dict] = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())["devices"]
KINDS = ("inverter", "meter", "weather", "water")


def log(msg: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def hold(seconds: float, *, check: Callable[[], None] | None = None) -> None:
    """Let the pipeline run for ``seconds`` (the scenario's load period), checking
    ``check`` now and then."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if check:
            check()
        time.sleep(min(0.2, max(0.0, end - time.monotonic())))


# ------------------------------------------------------------------ results


@dataclass
class Result:
    scenario: str
    taken: int = 0
    stored: int = 0
    lost: int = 0
    extra: int = 0  # points stored beyond the readings taken
    duplicated: int = 0
    dead: int = 0
    stall_s: float = 0.0
    wall_s: float = 0.0
    figures: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        extra = ", ".join(f"{k}={v}" for k, v in self.figures.items())
        return (
            f"{self.scenario:<16} taken {self.taken:>7}  stored {self.stored:>7}  "
            f"lost {self.lost:>6}  extra {self.extra:>4}  duplicated {self.duplicated:>6}  "
            f"dead-lettered {self.dead:>7}  longest stall {self.stall_s:6.2f} s  "
            f"wall {self.wall_s:6.1f} s" + (f"\n{'':<17}{extra}" if extra else "")
        )

    def report(self) -> str:
        return "\n".join([self.line(), *(f"{'':<17}note: {n}" for n in self.notes)])


HEADER = (
    "scenario | taken | stored | lost | extra points | duplicated | dead-lettered | "
    "longest healthy stall [s] | wall [s]"
)


def table(results: list[Result]) -> str:
    rows = [HEADER, "|".join(["---"] * 9)]
    for r in results:
        rows.append(
            f"{r.scenario} | {r.taken} | {r.stored} | {r.lost} | {r.extra} | {r.duplicated} | "
            f"{r.dead} | {r.stall_s:.2f} | {r.wall_s:.1f}"
        )
    return "\n".join(rows)


# ------------------------------------------------------------------ configuration


def sim_devices(
    n: int, interval_s: float, per_endpoint: int = 1, prefix: str = "dev", timeout_s: float = 2.0
) -> list[dict]:
    """``n`` simulated devices cycling through the demo's six kinds (bench/pipeline.py),
    ``per_endpoint`` unit ids behind each TCP port."""
    out = []
    port = 0
    recent = (datetime.now(UTC).date() - timedelta(days=2)).isoformat()
    for i in range(n):
        t = copy.deepcopy(TEMPLATES[i % len(TEMPLATES)])
        if i % per_endpoint == 0:
            port = free_port()
        t.update(
            id=f"{prefix}-{i:03d}",
            host="127.0.0.1",
            port=port,
            unit_id=1 + i % per_endpoint,
            interval_s=interval_s,
            timeout_s=timeout_s,
        )
        t["simulate"] = {**t["simulate"], "commissioned": recent}
        out.append(t)
    return out


def write_config(
    tmp: Path,
    mqtt_port: int,
    influx_url: str,
    database: str,
    devices: list[dict],
    *,
    spool_dir: Path | None = None,
    services: dict | None = None,
    secrets_file: Path | None = None,
) -> tuple[Path, Config]:
    raw: dict[str, Any] = {
        "services": {
            **({"secrets_file": str(secrets_file)} if secrets_file else {}),
            "mqtt": {"url": f"mqtt://127.0.0.1:{mqtt_port}", "keepalive_s": 5},
            "influxdb": {"url": influx_url, "database": database},
            "collector": {
                "id": "chaos",
                "spool_path": str((spool_dir or tmp) / "spool.sqlite"),
                "status_interval_s": 2,
            },
            "ingester": {
                "id": "chaos",
                "client_id": f"chaos-ingester-{database}",
                "dead_letter_path": str(tmp / "dead.sqlite"),
                "batch_max_ms": 100,
                "retry_max_s": 2,
            },
            "simulator": {"control_port": None, "seed": 7},
        },
        "sites": [{"id": "demo", "name": "chaos", "lat": 22.99, "lon": 120.19}],
        "devices": devices,
    }
    for section, values in (services or {}).items():
        raw["services"].setdefault(section, {}).update(values)
    path = tmp / "chaos.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False))
    return path, load_config(path, env={})


# ------------------------------------------------------------------ processes


class Proc:
    """A ``foursave`` subcommand in its own process: SIGKILL-able, and ended with us
    (PR_SET_PDEATHSIG, its own session)."""

    def __init__(self, cmd: str, config_path: Path, log_path: Path, *extra: str):
        self.argv = [sys.executable, "-m", "foursave", cmd, "--config", str(config_path), *extra]
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.kills = 0
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("FOURSAVE_")}

    def start(self) -> Proc:
        assert not self.alive
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        self.starts += 1
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)
            self.kills += 1

    def stop(self, timeout_s: float = 60) -> int | None:
        """SIGTERM (the service stops cleanly), SIGKILL past the deadline."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        return self.proc.returncode

    def reap(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# ------------------------------------------------------------------ the stack


class Stack:
    """mosquitto (always this scenario's own: scenarios kill it) and influxd (the
    scenario's own, or a shared one with a fresh database), the simulators in a thread,
    and the collector / ingester processes of one configuration."""

    def __init__(self, name: str, shared_influx: LocalService | None = None, keep: bool = False):
        self.name = name
        self.tmp = Path(tempfile.mkdtemp(prefix=f"foursave-chaos-{name}-"))
        self.keep = keep
        self.broker = auth_broker(free_port(), self.tmp / "mosquitto")
        self.own_influx = shared_influx is None
        self.influxd = shared_influx or influxd(free_port(), self.tmp / "influxd")
        self.database = f"chaos_{name.replace('-', '_')}_{random.randrange(16**6):06x}"
        self.sim: Any = None
        self.collector: Proc | None = None
        self.ingester: Proc | None = None
        self.config_path: Path | None = None
        self.config: Config | None = None
        self._influx: InfluxClient | None = None
        self.exact: frozenset[str] = frozenset()  # devices counted by their timestamps
        self._exit = contextlib.ExitStack()

    @property
    def influx_url(self) -> str:
        return f"http://127.0.0.1:{self.influxd.port}"

    @property
    def influx(self) -> InfluxClient:
        if self._influx is None:
            self._influx = InfluxClient(self.influx_url, self.database, timeout_s=60)
        return self._influx

    def __enter__(self) -> Stack:
        self.broker.start()
        if self.own_influx:
            self.influxd.start(timeout_s=60)
        self.influx.create_database()
        return self

    def configure(
        self,
        devices: list[dict],
        influx_url: str | None = None,
        spool_dir: Path | None = None,
        services: dict | None = None,
    ) -> Config:
        self.config_path, self.config = write_config(
            self.tmp,
            self.broker.port,
            influx_url or self.influx_url,
            self.database,
            devices,
            spool_dir=spool_dir,
            services=services,
            secrets_file=broker_secrets(self.broker),
        )
        admit(self.broker, self.config)
        self.collector = Proc("collect", self.config_path, self.tmp / "collect.log")
        self.ingester = Proc("ingest", self.config_path, self.tmp / "ingest.log")
        return self.config

    def start_sim(self) -> None:
        from foursave.simulators.server import SimulatorThread

        assert self.config is not None
        self.sim = SimulatorThread(self.config)
        self._exit.enter_context(self.sim)

    def start_ingester(self) -> None:
        """The ingester's persistent session is made first (its client id, its
        subscriptions), as if it had run before: the broker queues readings for it from
        now on, so the collector can start at once instead of after the ingester
        subscribed (a PUBACK 'no matching subscribers' would hold it back by a retry)."""
        assert self.ingester is not None and self.config is not None
        prime_session(self.broker.port, self.config)
        self.ingester.start()

    def start_pipeline(self) -> None:
        """Simulators, the ingester (subscribed before the collector publishes) and
        the collector."""
        self.start_sim()
        self.start_ingester()
        assert self.collector is not None
        self.collector.start()

    def __exit__(self, *exc: object) -> None:
        for p in (self.collector, self.ingester):
            if p is not None:
                with contextlib.suppress(Exception):
                    if p.alive:
                        p.stop(30)
                p.reap()
        self._exit.close()
        if self._influx is not None:
            with contextlib.suppress(Exception):
                if not self.own_influx:  # a shared influxd: leave it as it was
                    q = f'DROP DATABASE "{self.database}"'
                    httpx.post(f"{self.influx_url}/query", params={"q": q}, timeout=30)
            self._influx.close()
        self.broker.stop()
        if self.own_influx:
            with contextlib.suppress(ProcessLookupError):
                if self.influxd.proc is not None:  # a stalled one stops too
                    os.kill(self.influxd.proc.pid, signal.SIGCONT)
            self.influxd.stop()
        if not self.keep and exc[0] is None:
            import shutil

            shutil.rmtree(self.tmp, ignore_errors=True)
        elif exc[0] is not None:
            log(f"{self.name}: left {self.tmp} for a look")

    # --------------------------------------------------------------- counting

    def taken(self) -> dict[str, int]:
        """Readings committed to the spool per device (``last seq + 1``)."""
        assert self.config is not None
        return spool_taken(Path(self.config.services.collector.spool_path))

    def spool_depth(self) -> int:
        assert self.config is not None
        return spool_depth(Path(self.config.services.collector.spool_path))

    def spool_ids(self) -> tuple[int, int]:
        assert self.config is not None
        return spool_ids(Path(self.config.services.collector.spool_path))

    def stored(self) -> dict[str, int]:
        return stored_counts(self.influx, exact=self.exact)

    def dead(self, topic_like: str = "%") -> int:
        assert self.config is not None
        return dead_count(Path(self.config.services.ingester.dead_letter_path), topic_like)

    def seq_state(self) -> dict[str, dict[str, int]]:
        assert self.config is not None
        return seq_state(Path(self.config.services.ingester.dead_letter_path))

    def settle(self, taken: dict[str, int], timeout_s: float, quiet_s: float) -> dict[str, int]:
        """Wait until InfluxDB holds every reading taken, or nothing more arrives for
        ``quiet_s`` (losses), or ``timeout_s``; the counts stored then."""
        deadline = time.monotonic() + timeout_s
        last: dict[str, int] = {}
        changed = time.monotonic()
        while time.monotonic() < deadline:
            now = self.stored()
            if all(now.get(d, 0) >= n for d, n in taken.items()):
                return now
            if now != last:
                last, changed = now, time.monotonic()
            elif time.monotonic() - changed > quiet_s:
                return now
            time.sleep(0.25)
        return self.stored()

    def result(
        self,
        scenario: str,
        taken: dict[str, int],
        stored: dict[str, int],
        healthy: list[str],
        until_ms: int | None = None,
    ) -> Result:
        r = Result(scenario)
        r.taken = sum(taken.values())
        r.stored = sum(stored.get(d, 0) for d in taken)
        r.lost = sum(max(0, n - stored.get(d, 0)) for d, n in taken.items())
        r.extra = sum(max(0, stored.get(d, 0) - n) for d, n in taken.items())
        r.duplicated = sum(s["duplicates"] for s in self.seq_state().values())
        r.dead = self.dead()
        r.stall_s = longest_stall(self.influx, self.kind_of(), healthy, until_ms)
        if r.lost:
            worst = sorted(
                ((n - stored.get(d, 0), d) for d, n in taken.items() if n > stored.get(d, 0)),
                reverse=True,
            )[:3]
            r.notes.append("most lost: " + ", ".join(f"{d} {k}" for k, d in worst))
        return r

    def kind_of(self) -> dict[str, str]:
        assert self.config is not None
        return {d.id: d.kind for d in self.config.devices}


def spool_taken(path: Path) -> dict[str, int]:
    if not path.exists():
        return {}
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        return {d: s + 1 for d, s in db.execute("SELECT device, seq FROM device_seq")}
    finally:
        db.close()


def spool_depth(path: Path) -> int:
    if not path.exists():
        return 0
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        return db.execute("SELECT COUNT(*) FROM spool").fetchone()[0]
    finally:
        db.close()


def spool_ids(path: Path) -> tuple[int, int]:
    """(oldest, newest) row id in the spool; (0, 0) when it is empty."""
    if not path.exists():
        return 0, 0
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        lo, hi = db.execute("SELECT MIN(id), MAX(id) FROM spool").fetchone()
        return lo or 0, hi or 0
    finally:
        db.close()


def dead_count(path: Path, topic_like: str = "%") -> int:
    """Dead letters, or those whose topic is LIKE ``topic_like`` (``%/reading``)."""
    if not path.exists():
        return 0
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        return db.execute(
            "SELECT COUNT(*) FROM dead_letters WHERE topic LIKE ?", (topic_like,)
        ).fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        db.close()


def seq_state(path: Path) -> dict[str, dict[str, int]]:
    if not path.exists():
        return {}
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        rows = db.execute("SELECT device, last_seq, received, gaps, duplicates FROM seq_state")
        return {
            r[0]: {"last_seq": r[1], "received": r[2], "gaps": r[3], "duplicates": r[4]}
            for r in rows
        }
    except sqlite3.OperationalError:
        return {}
    finally:
        db.close()


def stored_counts(
    influx: InfluxClient, kinds: tuple[str, ...] = KINDS, exact: frozenset[str] = frozenset()
) -> dict[str, int]:
    """Distinct points per device.  Each field's ``count`` is the number of points
    holding it; when every field of a device has the same count, that is its number of
    points (every reading of a healthy device carries the same fields); when they
    differ, and always for the devices in ``exact`` (hostile ones, whose readings carry
    random subsets of their fields), its points' timestamps are fetched and counted."""
    out: dict[str, int] = {}
    for m in kinds:
        for row in influx.rows(f'SELECT count(*) FROM "{m}" GROUP BY "device"'):
            counts = {v or 0 for k, v in row.items() if k.startswith("count_")} - {0}
            if len(counts) <= 1 and row["device"] not in exact:
                n = max(counts, default=0)
            else:
                n = len(set(stored_times(influx, m, row["device"])))
            out[row["device"]] = out.get(row["device"], 0) + n
    return out


def stored_times(influx: InfluxClient, kind: str, device: str) -> list[int]:
    rows = influx.rows(f'SELECT * FROM "{kind}" WHERE "device" = \'{device}\'')
    return sorted(r["time"] for r in rows)


def longest_stall(
    influx: InfluxClient, kinds: dict[str, str], devices: list[str], until_ms: int | None = None
) -> float:
    """The largest gap between consecutive stored timestamps of ``devices``, the gap
    from the last one to ``until_ms`` (when the collector stopped) included."""
    worst = 0.0
    for d in devices:
        ts = stored_times(influx, kinds[d], d)
        if until_ms is not None and ts and until_ms > ts[-1]:
            ts.append(until_ms)
        for a, b in itertools.pairwise(ts):
            worst = max(worst, (b - a) / 1000)
    return worst


# ------------------------------------------------------------------ MQTT helpers


def prime_session(port: int, config: Config) -> None:
    """Create the ingester's persistent session (its account, its client id, its
    subscriptions)."""
    from foursave.core.mqtt import mqtt_client
    from foursave.core.topics import READINGS_FILTER, STATUS_FILTER

    subscribed = threading.Event()
    client_id = config.services.ingester.client_id
    c = mqtt_client(config.services, "ingester", client_id, clean_session=False)
    c.on_connect = lambda cl, *a: cl.subscribe([(READINGS_FILTER, 1), (STATUS_FILTER, 1)])
    c.on_subscribe = lambda *a: subscribed.set()
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        if not subscribed.wait(10):
            raise AssertionError("no SUBACK for the ingester's session")
    finally:
        c.disconnect()
        c.loop_stop()


def wait_subscribed(port: int, proc: Proc | None, timeout_s: float) -> None:
    """Until a subscriber takes messages on the status topics: an MQTT 5 PUBACK with
    reason 0 (0x10 means no matching subscriber).  The probe goes to
    ``_ingester/chaos-probe/status``, which the ingester reads and ignores."""
    acks: list[int] = []
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.username_pw_set(ANYONE, ANYONE_PASSWORD)
    c.on_publish = lambda cl, ud, mid, rc, props: acks.append(rc.value)
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:

        def probe() -> bool:
            if proc is not None and not proc.alive:
                raise AssertionError(f"ingester exited:\n{proc.tail()}")
            n = len(acks)
            c.publish("foursave/v1/_ingester/chaos-probe/status", b"{}", qos=1)
            end = time.monotonic() + 1
            while len(acks) == n and time.monotonic() < end:
                time.sleep(0.02)
            return bool(acks) and acks[-1] == 0

        wait_for(probe, timeout_s, "the ingester's subscription", interval_s=0.2)
    finally:
        c.loop_stop()
        c.disconnect()


class Publisher:
    """A plain paho client publishing many messages quickly (the MQTT fuzzer)."""

    def __init__(self, port: int, client_id: str):
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        # the fuzzer publishes what no collector's ACL allows: the test stand-in account
        self.c.username_pw_set(ANYONE, ANYONE_PASSWORD)
        self.c.max_inflight_messages_set(1000)
        self.c.max_queued_messages_set(0)
        self.acked = 0
        self.c.on_publish = self._on_publish
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def _on_publish(self, *a: Any) -> None:
        self.acked += 1

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        info = self.c.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise AssertionError(f"publish to {topic!r}: rc {info.rc}")

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


@contextlib.contextmanager
def stopped(pid: int) -> Iterator[None]:
    """SIGSTOP a process (InfluxDB stalled), SIGCONT on the way out."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def sigkill(svc: LocalService) -> None:
    assert svc.proc is not None
    svc.proc.send_signal(signal.SIGKILL)
    svc.proc.wait(30)


# ------------------------------------------------------------------ steppable clock


class SteppableClock:
    """The system clock plus an offset a scenario steps (the collector's clock, as
    ``foursave.app.clock`` would hand it, stepped back or forward like ntpd -s would)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def time(self) -> float:
        return time.time() + self.offset

    def step(self, seconds: float) -> None:
        self.offset += seconds


class PollTimes:
    """Wraps a DevicePoller's ``poll_once`` to record when each poll starts (monotonic)."""

    def __init__(self) -> None:
        self.times: dict[str, list[float]] = {}
        self.lock = threading.Lock()

    def attach(self, poller: Any) -> None:
        original = poller.poll_once
        times = self.times.setdefault(poller.device.id, [])

        async def poll_once() -> bool:
            with self.lock:
                times.append(time.monotonic())
            return await original()

        poller.poll_once = poll_once

    def max_gap(self, device: str) -> float:
        with self.lock:
            t = list(self.times.get(device, []))
        return max((b - a for a, b in itertools.pairwise(t)), default=0.0)

    def count(self, device: str) -> int:
        with self.lock:
            return len(self.times.get(device, []))
