"""The chaos scenarios (issue 12).  Each takes its size (``Size.ci()`` for the cheap CI
version, ``Size.full()`` for the figures) and returns a ``Result``; none asserts
anything itself, so the benchmark prints every figure and the tests decide.  See
tests/chaos/harness.py for how taken, stored, lost, duplicated, dead-lettered and the
longest stall are counted."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from foursave.core import glossary
from foursave.core.config import Config
from foursave.core.late import LATE
from foursave.core.reading import SEQ_FIELD
from foursave.localstack import LocalService, free_port
from tests.chaos.harness import (
    KINDS,
    PollTimes,
    Publisher,
    Result,
    Stack,
    SteppableClock,
    hold,
    log,
    rss_mb,
    sigkill,
    sim_devices,
    stopped,
    stored_counts,
    wait_for,
)
from tests.chaos.hostile_modbus import HostileFleet
from tests.chaos.mqtt_fuzz import FuzzCounts, hostile_status, payloads


@dataclass(frozen=True)
class Size:
    full: bool
    ingester_kills: int
    broker_kills: int
    influx_down_s: float
    influx_down_devices: int
    influx_down_interval_s: float
    http500_s: float
    mqtt_payloads: int
    modbus_exchanges: int
    hold_s: float  # how long the simple scenarios run under load
    settle_s: float  # how long to wait for the last readings
    quiet_s: float  # nothing more arriving for this long: the rest is lost

    @classmethod
    def ci(cls) -> Size:
        return cls(False, 3, 2, 4, 10, 0.2, 2, 2000, 1000, 1.5, 60, 3)

    @classmethod
    def full_size(cls) -> Size:
        return cls(True, 20, 10, 300, 105, 0.5, 60, 100_000, 100_000, 20.0, 600, 20)


def _finish(
    st: Stack,
    name: str,
    size: Size,
    t0: float,
    healthy: list[str] | None = None,
    only: Callable[[str], bool] | None = None,
) -> Result:
    """Let the spool empty, stop the collector cleanly (it flushes and hands over the
    rest), wait for InfluxDB, count."""
    assert st.collector is not None
    with contextlib.suppress(AssertionError):
        # every reading spooled so far gone: one the broker forgot in a kill leaves only
        # when republished (ack_timeout_s after the evidence); a stop before then would
        # keep it spooled.  Readings taken meanwhile, on a healthy broker, the stop flushes
        newest = st.spool_ids()[1]
        wait_for(
            lambda: st.spool_ids()[0] == 0 or st.spool_ids()[0] > newest,
            size.settle_s / 2,
            "the spool to empty",
        )
    code = st.collector.stop()
    until_ms = int(time.time() * 1000) - 1000  # its last poll: within an interval of this
    taken = {d: n for d, n in st.taken().items() if only is None or only(d)}
    stored = st.settle(taken, size.settle_s, size.quiet_s)
    healthy = healthy if healthy is not None else sorted(taken)[:3]
    r = st.result(name, taken, stored, healthy, until_ms)
    r.figures["collector exit"] = code
    r.figures["left in spool"] = st.spool_depth()
    r.wall_s = time.monotonic() - t0
    return r


def _stored_since(st: Stack, since_ms: int) -> dict[str, int]:
    out: dict[str, int] = {}
    for m in KINDS:
        q = f'SELECT count(*) FROM "{m}" WHERE time > {since_ms}ms GROUP BY "device"'
        for row in st.influx.rows(q):
            out[row["device"]] = max((v or 0) for k, v in row.items() if k.startswith("count_"))
    return out


def _grows(st: Stack, timeout_s: float, what: str) -> None:
    before = sum(st.stored().values())
    wait_for(lambda: sum(st.stored().values()) > before, timeout_s, what, interval_s=0.1)


# ------------------------------------------------------------------ process kills


def ingester_kill(size: Size, shared_influx: LocalService | None = None) -> Result:
    """The ingester SIGKILLed mid-batch, again and again, and restarted."""
    t0 = time.monotonic()
    rng = random.Random(12)
    with Stack("ingester-kill", shared_influx) as st:
        n, interval = (12, 0.1) if size.full else (6, 0.2)
        st.configure(sim_devices(n, interval))
        st.start_pipeline()
        ing = st.ingester
        assert ing is not None
        for i in range(size.ingester_kills):
            _grows(st, 60, f"writes before kill {i + 1}")
            # readings arrive every few ms and a batch closes every 100 ms: a kill at a
            # random instant lands in a batch being gathered, written or acknowledged
            time.sleep(rng.uniform(0.0, 0.4))  # a random instant, not a wait
            ing.kill()
            ing.start()
        _grows(st, 60, "writes after the last kill")
        r = _finish(st, "ingester-kill", size, t0)
        r.figures["kills"] = ing.kills
        return r


def collector_kill(size: Size, shared_influx: LocalService | None = None) -> Result:
    """The collector SIGKILLed while the broker is down, and again during the replay."""
    import sqlite3

    t0 = time.monotonic()
    with Stack("collector-kill", shared_influx) as st:
        st.configure(sim_devices(12 if size.full else 6, 0.1))
        st.start_pipeline()
        col = st.collector
        assert col is not None and st.config is not None
        _grows(st, 60, "the first readings")
        outage = 20.0 if size.full else 2.0
        st.broker.stop()
        hold(outage / 2)
        wait_for(lambda: st.spool_depth() > 0, 30, "readings waiting in the spool")
        col.kill()
        depth_at_kill_1 = st.spool_depth()
        col.start()
        hold(outage / 2)
        spool = sqlite3.connect(f"file:{st.config.services.collector.spool_path}?mode=ro", uri=True)
        try:

            def depth() -> int:
                return spool.execute("SELECT COUNT(*) FROM spool").fetchone()[0]

            depth_before = depth()
            st.broker.start()
            # during the replay: as soon as the spool has begun to shrink
            wait_for(lambda: depth() < depth_before, 60, "the replay to begin", 0.002)
            col.kill()
            depth_at_kill_2 = depth()
        finally:
            spool.close()
        col.start()
        _grows(st, 60, "readings after the second restart")
        hold(1.0)
        r = _finish(st, "collector-kill", size, t0)
        r.figures.update(
            {
                "spool at kill in outage": depth_at_kill_1,
                "spool before replay": depth_before,
                "spool at kill in replay": depth_at_kill_2,
            }
        )
        return r


def broker_kill(size: Size, shared_influx: LocalService | None = None) -> Result:
    """mosquitto SIGKILLed and restarted on its data directory (persistence as shipped:
    foursave.localstack.mosquitto); InfluxDB stalled (SIGSTOP) 3 s before every other
    kill and let go (SIGCONT) 2 s after the broker is back."""
    t0 = time.monotonic()
    rng = random.Random(10)
    with Stack("broker-kill") as st:  # its own influxd: it is stalled
        n, interval = (12, 0.1) if size.full else (6, 0.2)
        st.configure(sim_devices(n, interval))
        st.start_pipeline()
        assert st.influxd.proc is not None
        stalls = 0
        last_back_ms = 0
        for i in range(size.broker_kills):
            _grows(st, 90, f"writes before broker kill {i + 1}")
            time.sleep(rng.uniform(0.2, 1.0))  # a random instant, not a wait
            if i % 2 == 0:
                # stalled 3 s before the kill and 2 s past the restart: the ingester is
                # back on the broker before InfluxDB answers the batch it holds
                with stopped(st.influxd.proc.pid):
                    hold(3.0)
                    sigkill(st.broker)
                    st.broker.start()
                    hold(2.0)
                stalls += 1
            else:
                sigkill(st.broker)
                st.broker.start()
            last_back_ms = int(time.time() * 1000)
        taken_now = set(st.taken())
        try:
            wait_for(
                lambda: set(_stored_since(st, last_back_ms + 1000)) >= taken_now,
                90,
                "readings from every device after the last kill",
            )
            after_last = True
        except AssertionError:
            after_last = False
        r = _finish(st, "broker-kill", size, t0)
        r.figures.update({"kills": size.broker_kills, "influx stalls": stalls})
        r.figures["stored after last kill"] = after_last
        return r


# ------------------------------------------------------------------ InfluxDB


def influx_down(size: Size, shared_influx: LocalService | None = None) -> Result:
    """InfluxDB SIGKILLed, away for a while under load, restarted on its data."""
    t0 = time.monotonic()
    with Stack("influx-down") as st:
        n, interval = size.influx_down_devices, size.influx_down_interval_s
        st.configure(
            sim_devices(n, interval, per_endpoint=10 if n >= 50 else 1),
            services={"ingester": {"retry_max_s": 5}},
        )
        st.start_pipeline()
        assert st.ingester is not None and st.collector is not None
        _grows(st, 60, "the first readings")
        taken0 = sum(st.taken().values())
        m0 = time.monotonic()
        sigkill(st.influxd)
        rss = [rss_mb(st.ingester.pid)]
        end = time.monotonic() + size.influx_down_s
        while time.monotonic() < end:
            hold(min(5.0, max(0.0, end - time.monotonic())))
            if not (st.ingester.alive and st.collector.alive):
                break
            rss.append(rss_mb(st.ingester.pid))
            log(
                f"influx-down: {end - time.monotonic():.0f} s to go, taken {sum(st.taken().values())}"
            )
        rate = (sum(st.taken().values()) - taken0) / (time.monotonic() - m0)
        st.influxd.start(timeout_s=120)
        _grows(st, 120, "writes after InfluxDB came back")
        r = _finish(st, "influx-down", size, t0)
        r.figures.update(
            {
                "down s": size.influx_down_s,
                "readings/s taken in outage": round(rate, 1),
                "ingester RSS max MB": round(max(rss), 1),
            }
        )
        return r


class FailingProxy:
    """A tiny HTTP proxy in front of influxd that answers 500 while told to."""

    def __init__(self, upstream: str):
        self.upstream = httpx.Client(base_url=upstream, timeout=60)
        self.failing = False
        self.answered_500 = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _do(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if proxy.failing:
                    proxy.answered_500 += 1
                    msg = b'{"error":"chaos: internal error"}'
                    self.send_response(500)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(msg)))
                    self.end_headers()
                    self.wfile.write(msg)
                    return
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() in ("content-type", "authorization")
                }
                resp = proxy.upstream.request(
                    self.command, self.path, content=body, headers=headers
                )
                self.send_response(resp.status_code)
                for k, v in resp.headers.items():
                    if k.lower() in ("content-type", "x-influxdb-version", "x-influxdb-error"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(resp.content)))
                self.end_headers()
                self.wfile.write(resp.content)

            do_GET = do_POST = _do

            def log_message(self, *a: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FailingProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.upstream.close()


def influx_500(size: Size, shared_influx: LocalService | None = None) -> Result:
    """InfluxDB answering 500 for a while (a proxy in front of influxd)."""
    t0 = time.monotonic()
    with Stack("influx-500", shared_influx) as st, FailingProxy(st.influx_url) as proxy:
        st.configure(sim_devices(6, 0.2), influx_url=proxy.url)
        st.start_pipeline()
        _grows(st, 60, "the first readings")
        proxy.failing = True
        hold(size.http500_s)
        proxy.failing = False
        _grows(st, 60, "writes after the 500s")
        r = _finish(st, "influx-500", size, t0)
        r.figures.update({"500 s": size.http500_s, "answered 500": proxy.answered_500})
        return r


def partial_write(size: Size, shared_influx: LocalService | None = None) -> Result:
    """Some points of every batch conflict in type: InfluxDB 1.x answers 400 'partial
    write'; the ingester must store the good ones (and dead-letter the others)."""
    t0 = time.monotonic()
    with Stack("partial-write", shared_influx) as st:
        cfg = st.configure(sim_devices(6, 0.2))
        water = [d.id for d in cfg.devices if d.kind == "water"]
        now = int(time.time() * 1000)
        # flow_m3h is a float: one string in this shard makes every water point conflict
        st.influx.write([f'water,site=demo,device=ghost flow_m3h="x" {now}'])
        st.start_pipeline()
        _grows(st, 60, "the first readings")
        hold(size.hold_s)
        r = _finish(st, "partial-write", size, t0, only=lambda d: d not in water)
        water_taken = sum(n for d, n in st.taken().items() if d in water)
        errors = [e for (e,) in _dead_errors(st)]
        r.figures.update(
            {
                "conflicting (water) taken": water_taken,
                "conflicting stored": sum(
                    stored_counts(st.influx, ("water",)).get(d, 0) for d in water
                ),
                "'partial write' answers": sum("partial write" in e for e in errors),
            }
        )
        r.notes.append("taken/stored/lost count the good devices; the water meter's conflict")
        return r


def _dead_errors(st: Stack) -> list[tuple[str]]:
    import sqlite3

    assert st.config is not None
    db = sqlite3.connect(st.config.services.ingester.dead_letter_path)
    try:
        return db.execute("SELECT error FROM dead_letters").fetchall()
    finally:
        db.close()


# ------------------------------------------------------------------ in-process collector


class InProcessCollector:
    """The collector on its own event loop thread in this process, on a given clock
    (``foursave collect`` uses ``foursave.app.clock(config, 'collector')``)."""

    def __init__(self, config: Config, clock: Any = None, polls: PollTimes | None = None):
        import logging

        from foursave import app
        from foursave.collector.service import Collector

        # as `foursave collect` does (foursave/cli.py): pymodbus narrates every frame
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)

        self.collector = Collector(config, clock or app.clock(config, "collector"))
        self.polls = polls
        self.loop = asyncio.new_event_loop()
        self.stop_event: asyncio.Event | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="collector", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def main() -> None:
            self.stop_event = asyncio.Event()
            await self.collector.run(self.stop_event)

        try:
            self.loop.run_until_complete(main())
        except BaseException as exc:
            self.error = exc
            # the collector ended without closing its MQTT client (an exception out
            # of Collector.run): stop paho's thread before the loop it calls closes
            pub = getattr(self.collector, "publisher", None)
            if pub is not None:
                with contextlib.suppress(Exception):
                    pub.client.disconnect()
                    pub.client.loop_stop()
            links = {id(p.line): p.line for p in self.collector.pollers}
            for link in links.values():
                with contextlib.suppress(Exception):
                    self.loop.run_until_complete(link.close())
        finally:
            self.loop.close()

    def start(self) -> InProcessCollector:
        self.thread.start()
        n = len(self.collector.devices)
        wait_for(
            lambda: self.stop_event is not None and len(self.collector.pollers) == n,
            10,
            "collector start",
            0.01,
        )
        if self.polls is not None:
            for p in self.collector.pollers:
                self.polls.attach(p)
        return self

    def stop(self) -> BaseException | None:
        if self.thread.is_alive() and self.stop_event is not None:
            self.loop.call_soon_threadsafe(self.stop_event.set)
            self.thread.join(60)
        return self.error

    def taken(self) -> dict[str, int]:
        return {p.device.id: p.seq + 1 for p in self.collector.pollers if p.seq >= 0}


def _finish_in_process(
    st: Stack,
    col: InProcessCollector,
    name: str,
    size: Size,
    t0: float,
    healthy: list[str],
    polls: PollTimes | None = None,
) -> Result:
    def emptied() -> bool:
        # a forwarder that has ended (asyncio.all_tasks: the tasks not done) empties nothing
        alive = any(t.get_name() == "forwarder" for t in list(asyncio.all_tasks(col.loop)))
        return col.collector.spool.depth < 100 or not alive

    with contextlib.suppress(AssertionError):
        wait_for(emptied, size.settle_s / 2, "the spool to empty")
    error = col.stop()
    until_ms = int(time.time() * 1000) - 1000
    taken = col.taken()
    stored = st.settle(taken, size.settle_s, size.quiet_s)
    r = st.result(name, taken, stored, healthy, until_ms)
    if polls is not None:
        r.figures["longest gap between polls s"] = round(max(polls.max_gap(d) for d in healthy), 3)
    r.figures["collector error"] = repr(error)[:200] if error else None
    r.figures["collector stopped cleanly"] = error is None and not col.thread.is_alive()
    r.wall_s = time.monotonic() - t0
    return r


def spool_full(size: Size, shared_influx: LocalService | None = None) -> Result:
    """The spool's disk full: a small tmpfs mounted for the spool directory (a real
    ENOSPC, as a full disk gives it; needs root), with the broker away so the spool
    grows until the disk is full; then the broker comes back.  The collector runs in
    this process: readings are counted from its pollers (``taken``), because what the
    spool can no longer hold it cannot count either.  1 MiB (CI) is less than the
    SQLite write-ahead log takes before its first checkpoint (1000 pages, ~4 MB), so
    the disk is full within seconds, broker or not; 8 MiB (full size) fills during the
    outage.  Once the broker is back the disk is made larger (remount), as an operator
    would free space: nothing may be lost then."""
    t0 = time.monotonic()
    if os.geteuid() != 0:
        r = Result("spool-full")
        r.notes.append("not root: no tmpfs mounted, scenario not run")
        return r
    with Stack("spool-full", shared_influx) as st:
        mnt = st.tmp / "spool-disk"
        mnt.mkdir()
        disk = "8m" if size.full else "1m"
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={disk}", "tmpfs", str(mnt)], check=True
        )
        col: InProcessCollector | None = None
        try:
            cfg = st.configure(sim_devices(6, 0.1), spool_dir=mnt)
            st.start_sim()
            st.start_ingester()
            polls = PollTimes()
            col = InProcessCollector(cfg, polls=polls).start()
            _grows(st, 60, "the first readings")
            st.broker.stop()
            down_ms = int(time.time() * 1000)

            def full() -> bool:
                s = os.statvfs(mnt)
                return s.f_bavail * s.f_frsize < 16384

            wait_for(full, 900, "the spool's disk full", 0.5)
            before_hold = col.taken()
            hold(size.hold_s)
            taken_at_full = sum(col.taken().values())
            # every device polled on while the disk stayed full (counted, not timed)
            polled_while_full = min(n - before_hold.get(d, 0) for d, n in col.taken().items())
            # all_tasks: the tasks not done yet
            forwarder_alive = any(
                t.get_name() == "forwarder" for t in list(asyncio.all_tasks(col.loop))
            )
            st.broker.start()
            hold(size.hold_s)
            depth_full = col.collector.spool.depth
            errors_full = col.collector.publisher.spool_errors
            # the operator makes room (a tmpfs grows in place): what waited in memory
            # is written, and everything flows again
            subprocess.run(["mount", "-o", "remount,size=256m", str(mnt)], check=True)
            wait_for(
                lambda: not col.collector.publisher._pending, 120, "the readings held in memory"
            )
            hold(size.hold_s)
            depth = col.collector.spool.depth
            r = _finish_in_process(
                st, col, "spool-full", size, t0, [d.id for d in cfg.devices][:3], polls
            )
            col = None
            r.figures.update(
                {
                    "tmpfs": disk,
                    "taken when full": taken_at_full,
                    "fewest polls of a device while full": polled_while_full,
                    "forwarder alive while full": forwarder_alive,
                    "spool write errors while full": errors_full,
                    "spool rows while full": depth_full,
                    "spool rows before stop": depth,
                }
            )
            r.figures["stored after the outage began"] = sum(_stored_since(st, down_ms).values())
            return r
        finally:
            if col is not None:
                col.stop()
            subprocess.run(["umount", "-l", str(mnt)], check=False)


def clock_step(size: Size, shared_influx: LocalService | None = None) -> Result:
    """The collector's clock stepped back 1 h, forward 1 h (real time again), forward
    1 h more and back to real time (a steppable clock injected where
    ``foursave.app.clock(config, 'collector')`` would give the system clock)."""
    t0 = time.monotonic()
    with Stack("clock-step", shared_influx) as st:
        cfg = st.configure(sim_devices(6, 0.2))
        st.start_sim()
        st.start_ingester()
        clock = SteppableClock()
        polls = PollTimes()
        col = InProcessCollector(cfg, clock, polls).start()
        try:
            _grows(st, 60, "the first readings")
            fewest = None  # polls of the least-polled device after a step (a count)
            for step in (-3600, +3600, +3600, -3600):
                before = col.taken()
                clock.step(step)
                hold(max(1.0, size.hold_s / 2))
                after = col.taken()
                n = min(after.get(d.id, 0) - before.get(d.id, 0) for d in cfg.devices)
                fewest = n if fewest is None else min(fewest, n)
            r = _finish_in_process(
                st, col, "clock-step", size, t0, [d.id for d in cfg.devices], polls
            )
            r.figures["fewest polls of a device after a step"] = fewest
        finally:
            col.stop()
        now = time.time() * 1000
        span = st.influx.rows(
            f'SELECT count(*) FROM "inverter" WHERE time < {int(now - 1800_000)}ms'
        )
        ahead = st.influx.rows(
            f'SELECT count(*) FROM "inverter" WHERE time > {int(now + 1800_000)}ms'
        )
        r.stall_s = r.figures["longest gap between polls s"]
        r.figures["inverter points 1 h back"] = _count(span)
        r.figures["inverter points 1 h ahead"] = _count(ahead)
        # statuses and presence are stamped by the same clock: refused as well
        r.figures["readings dead-lettered"] = st.dead("%/reading")
        r.notes.append("stall: the longest gap between poll starts (stored times jump by 1 h)")
        return r


def _count(rows: list[dict]) -> int:
    if not rows:
        return 0
    return max((v or 0) for k, v in rows[0].items() if k.startswith("count_"))


# ------------------------------------------------------------------ fuzzers


def check_stored_values(st: Stack) -> dict[str, Any]:
    """Field keys outside the glossary, measurements nobody writes, and stored values
    outside the glossary's physical bounds (``Bounds.admits``: ranges, enumerations and
    the single values that mean something), over the whole database."""
    own = {"ingest_seq", "ingest_stats", LATE}  # LATE: readings older than a day (core/late.py)
    measurements = {r["name"] for r in st.influx.rows("SHOW MEASUREMENTS")}
    unknown_measurements = sorted(measurements - set(glossary.FIELDS) - own)
    unknown_fields = []
    out_of_bounds = 0
    examples: list[str] = []
    for m in sorted(measurements & set(glossary.FIELDS)):
        for row in st.influx.rows(f'SHOW FIELD KEYS FROM "{m}"'):
            if row["fieldKey"] not in glossary.FIELDS[m] and row["fieldKey"] != SEQ_FIELD:
                unknown_fields.append(f"{m}.{row['fieldKey']}")
        for point in st.influx.rows(f'SELECT * FROM "{m}"'):
            for name, value in point.items():
                fdef = glossary.FIELDS[m].get(name)
                if fdef is not None and value is not None and not fdef.bounds.admits(value):
                    out_of_bounds += 1
                    if len(examples) < 5:
                        examples.append(f"{m}.{name}={value!r}")
    return {
        "unknown measurements": unknown_measurements,
        "unknown fields": unknown_fields,
        "out of bounds": out_of_bounds,
        "out of bounds examples": examples,
    }


def mqtt_fuzz(size: Size, shared_influx: LocalService | None = None) -> Result:
    """Hostile payloads on the readings, status and collector topics, published as
    fast as paho goes, while a real collector publishes valid readings."""
    t0 = time.monotonic()
    with Stack("mqtt-fuzz", shared_influx) as st:
        cfg = st.configure(sim_devices(4, 0.2))
        real = [d.id for d in cfg.devices]
        st.start_pipeline()
        assert st.ingester is not None
        _grows(st, 60, "the first readings")
        counts = FuzzCounts()
        fz_meter = 0
        pub = Publisher(st.broker.port, "chaos-fuzzer")
        try:
            p0 = time.monotonic()
            for h in payloads(size.mqtt_payloads, 2026, real):
                pub.publish(h.topic, h.payload)
                counts.sent += 1
                counts.kinds[h.kind] += 1
                if h.refused:
                    counts.expect_refused += 1
                else:
                    counts.expect_stored += 1
                    if h.topic.endswith("/reading") and h.kind != "int extremes":
                        fz_meter += 1
                if counts.sent - pub.acked > 2000:  # paho's own queue stays bounded
                    wait_for(
                        lambda: counts.sent - pub.acked <= 2000, 60, "the broker's acks", 0.005
                    )
                if counts.sent % 20_000 == 0:
                    log(f"mqtt-fuzz: {counts.sent} sent, {st.dead()} dead-lettered")
            wait_for(lambda: pub.acked >= counts.sent, 120, "every hostile payload acknowledged")
            publish_rate = counts.sent / (time.monotonic() - p0)
        finally:
            pub.close()
        with contextlib.suppress(AssertionError):
            wait_for(
                lambda: st.dead() >= counts.expect_refused,
                max(60.0, size.mqtt_payloads / 200),
                "every refused payload dead-lettered",
                0.5,
            )
        ingester_alive = st.ingester.alive
        r = _finish(st, "mqtt-fuzz", size, t0, only=lambda d: d in real)
        fz_stored = sum(
            n for d, n in stored_counts(st.influx, ("meter",)).items() if d.startswith("fz-")
        )
        r.figures.update(
            {
                "hostile sent": counts.sent,
                "publish rate /s": round(publish_rate),
                "expected refused": counts.expect_refused,
                "legal-but-hostile sent": counts.expect_stored,
                "fz meter points stored/expected": f"{fz_stored}/{fz_meter}",
                "ingester alive": ingester_alive,
                **check_stored_values(st),
            }
        )
        return r


def live_status(size: Size, shared_influx: LocalService | None = None) -> Result:
    """Hostile status messages (retained and live) against the API's live-status
    subscriber (api/live.py); a good status after them must still be taken."""
    from foursave.api.live import LiveStatus, LiveSubscriber

    t0 = time.monotonic()
    r = Result("live-status")
    with Stack("live-status", shared_influx) as st:
        pub = Publisher(st.broker.port, "chaos-status")
        bad = hostile_status()
        for topic, payload in bad:
            pub.publish(topic, payload, retain=True)
        wait_for(lambda: pub.acked >= len(bad), 10, "retained hostile statuses")
        live = LiveStatus()
        cfg = st.configure([])  # the API's account on the broker
        sub = LiveSubscriber(cfg.services, live).start()
        try:
            wait_for(sub.connected.is_set, 10, "the live subscriber")
            for topic, payload in bad:  # and again while it listens
                pub.publish(topic, payload)
            good = json.dumps({"online": True, "ts": int(time.time() * 1000)}).encode()
            pub.publish("foursave/v1/demo/good/status", good)
            wait_for(lambda: live.device("demo", "good"), 20, "the good status taken")
            thread = sub.client._thread
            r.figures.update(
                {
                    "hostile statuses": 2 * len(bad),
                    "received": live.received,
                    "rejected": live.rejected,
                    "network thread alive": bool(thread and thread.is_alive()),
                    "good status taken": live.device("demo", "good") is not None,
                }
            )
        finally:
            sub.stop()
            pub.close()
    r.wall_s = time.monotonic() - t0
    return r


HOSTILE_SPECS = [
    ("sunspec", "inverter"),
    ("sunspec", "inverter"),
    ("sunspec", "inverter"),
    ("sunspec", "inverter"),
    ("sunspec", "meter"),
    ("sunspec", "meter"),
    ("eastron_sdm630", "meter"),
    ("eastron_sdm630", "meter"),
    ("eastron_sdm630", "meter"),
    ("generic_water_meter", "water"),
    ("generic_water_meter", "water"),
    ("generic_water_meter", "water"),
]


def modbus_fuzz(size: Size, shared_influx: LocalService | None = None) -> Result:
    """Twelve hostile Modbus devices beside one healthy simulator, polled by a real
    collector (in this process, so poll times are measured); the servers count every
    exchange and function code."""
    t0 = time.monotonic()
    timeout_s = 0.05
    healthy_interval = 0.5
    with (
        Stack("modbus-fuzz", shared_influx) as st,
        HostileFleet(HOSTILE_SPECS, seed=4, late_s=timeout_s * 1.5 + 0.05) as fleet,
    ):
        healthy = sim_devices(1, healthy_interval, prefix="healthy", timeout_s=1.0)
        hostile = []
        for i, ((profile, kind), dev) in enumerate(zip(HOSTILE_SPECS, fleet.devices, strict=True)):
            d = {
                "id": f"hostile-{i:02d}",
                "site": "demo",
                "kind": kind,
                "profile": profile,
                "host": "127.0.0.1",
                "port": dev.port,
                "unit_id": 1,
                "interval_s": 0.05,
                "timeout_s": timeout_s,
                "retries": 1,
                "backoff_max_s": 0.3,
            }
            if kind == "meter" and profile != "sunspec":
                d["role"] = "hvac"
            if kind == "meter" and profile == "sunspec":
                d["role"] = "main"
            hostile.append(d)
        cfg = st.configure(healthy + hostile)
        st.exact = frozenset(str(d["id"]) for d in hostile)
        st.start_sim()
        st.start_ingester()
        polls = PollTimes()
        col = InProcessCollector(cfg, polls=polls).start()
        try:
            last_log = time.monotonic()

            def progress() -> bool:
                nonlocal last_log
                if not col.thread.is_alive():
                    raise AssertionError(f"the collector died: {col.error!r}")
                if time.monotonic() - last_log > 30:
                    last_log = time.monotonic()
                    log(f"modbus-fuzz: {fleet.stats.total} exchanges")
                return fleet.stats.total >= size.modbus_exchanges

            x0 = time.monotonic()
            wait_for(progress, 3600, f"{size.modbus_exchanges} hostile exchanges", 0.2)
            rate = fleet.stats.total / (time.monotonic() - x0)
            end = time.monotonic()
            # every poller still polling: its last poll started within a few backoffs
            stale = [
                d.id
                for d in cfg.devices
                if not polls.times.get(d.id) or end - polls.times[d.id][-1] > 3.0
            ]
            r = _finish_in_process(st, col, "modbus-fuzz", size, t0, [healthy[0]["id"]], polls)
        finally:
            col.stop()
        healthy_id = healthy[0]["id"]
        r.stall_s = polls.max_gap(healthy_id)
        r.figures.update(
            {
                "hostile exchanges": fleet.stats.total,
                "exchanges/s": round(rate),
                "function codes received": dict(fleet.stats.function_codes),
                "connections": fleet.stats.connections,
                "pollers not polling": stale,
                "healthy interval s": healthy_interval,
                "healthy max poll gap s": round(polls.max_gap(healthy_id), 3),
                "hostile readings taken": sum(
                    n for d, n in col.taken().items() if d.startswith("hostile")
                ),
                **check_stored_values(st),
            }
        )
        r.notes.append("taken/stored/lost over every device (hostile ones included)")
        r.notes.append("stall: the healthy device's longest gap between poll starts")
        return r


SCENARIOS: dict[str, Callable[[Size, LocalService | None], Result]] = {
    "ingester-kill": ingester_kill,
    "collector-kill": collector_kill,
    "broker-kill": broker_kill,
    "influx-down": influx_down,
    "influx-500": influx_500,
    "partial-write": partial_write,
    "spool-full": spool_full,
    "clock-step": clock_step,
    "mqtt-fuzz": mqtt_fuzz,
    "modbus-fuzz": modbus_fuzz,
    "live-status": live_status,
}
