"""Test helpers: configurations on free ports, the services in threads, waiting."""

from __future__ import annotations

import asyncio
import copy
import re
import shutil
import subprocess
import threading
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from foursave.core.config import Config

from foursave import app
from foursave.app import load_config
from foursave.localstack import free_port

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"  # screenshots and rendered pages a person can look at

# Debian's Chromium (never a downloaded browser), started without its background
# networking: this machine has no network but the package registries
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROME_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def wait_for(predicate, timeout_s: float, what: str, interval_s: float = 0.05):
    """Wait on a condition with a deadline (never a bare sleep)."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what} (last: {last!r})")


def reap(proc: subprocess.Popen, timeout_s: float = 30) -> None:
    """End a child process on every path: killed if still running, always waited for and
    its pipes closed (no zombie, no ResourceWarning, whatever the test's outcome)."""
    if proc.poll() is None:
        proc.kill()
    try:
        proc.wait(timeout_s)
    finally:
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def demo_raw() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())


def make_config(
    tmp_path: Path,
    mqtt_port: int,
    influx_url: str,
    database: str,
    *,
    interval_s: float = 0.2,
    devices: list[dict] | None = None,
    extra_services: dict | None = None,
    control_port: int | None = None,
    sites: list[dict] | None = None,
    commissioned: date | None = None,
) -> Config:
    """The demo configuration on free ports, with its files under ``tmp_path``."""
    raw = demo_raw()
    raw["services"]["mqtt"]["url"] = f"mqtt://127.0.0.1:{mqtt_port}"
    raw["services"]["influxdb"] = {"url": influx_url, "database": database}
    raw["services"]["collector"]["spool_path"] = str(tmp_path / "spool.sqlite")
    raw["services"]["ingester"]["dead_letter_path"] = str(tmp_path / "dead.sqlite")
    raw["services"]["ingester"]["client_id"] = f"ingest-{database}"
    raw["services"]["ingester"]["batch_max_ms"] = 100
    raw["services"]["collector"]["status_interval_s"] = 1
    for section, values in (extra_services or {}).items():
        raw["services"].setdefault(section, {}).update(values)
    devs = copy.deepcopy(devices if devices is not None else raw["devices"])
    # counters start a few days before the simulated time: no years of history per test
    # (in UTC, not the machine's zone: three days' margin either way)
    recent = (commissioned or datetime.now(UTC).date() - timedelta(days=3)).isoformat()
    raw["services"]["simulator"]["control_port"] = control_port
    for d in devs:
        if d.get("simulate"):
            # counters start a few days back: no years of history to integrate per test
            d["simulate"] = {**d["simulate"], "commissioned": recent}
        if d.get("transport", "tcp") != "rtu":
            d["port"] = free_port()
        d["interval_s"] = d.get("interval_s_override", interval_s)
        d.pop("interval_s_override", None)
        d.setdefault("timeout_s", 2.0)
    raw["devices"] = devs
    if sites is not None:
        raw["sites"] = sites
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False))
    return load_config(path, env={})


class CollectorThread:
    """``foursave collect`` on its own event loop thread."""

    def __init__(self, config: Config, **kw):
        self.collector = app.collector(config, **kw)
        self.loop = asyncio.new_event_loop()
        self.stop_event: asyncio.Event | None = None
        self.thread = threading.Thread(target=self._run, name="collector", daemon=True)
        self.error: BaseException | None = None

    def _run(self):
        asyncio.set_event_loop(self.loop)

        async def main():
            self.stop_event = asyncio.Event()
            await self.collector.run(self.stop_event)

        try:
            self.loop.run_until_complete(main())
        except BaseException as exc:  # surfaced by stop()
            self.error = exc
        finally:
            self.loop.close()

    def start(self) -> CollectorThread:
        self.thread.start()
        n = len(self.collector.devices)
        wait_for(
            lambda: self.stop_event is not None and len(self.collector.pollers) == n,
            10,
            "collector start",
        )
        return self

    def stop(self) -> None:
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.stop_event.set)
            self.thread.join(30)
        assert not self.thread.is_alive(), "collector did not stop"
        if self.error:
            raise self.error

    def published_counts(self) -> dict[str, int]:
        """Readings taken per device = last seq + 1 (seq starts at 0)."""
        return {p.device.id: p.seq + 1 for p in self.collector.pollers}

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class IngesterThread:
    def __init__(self, config: Config):
        self.ingester = app.ingester(config)
        self.thread = threading.Thread(target=self._run, name="ingester", daemon=True)
        self.error: BaseException | None = None

    def _run(self):
        try:
            self.ingester.run(stats_interval_s=1.0)
        except BaseException as exc:
            self.error = exc

    def start(self) -> IngesterThread:
        self.thread.start()
        wait_for(self.ingester.connected.is_set, 20, "ingester connected")
        return self

    def stop(self) -> None:
        self.ingester.stop()
        self.thread.join(30)
        assert not self.thread.is_alive(), "ingester did not stop"
        self.ingester.influx.close()
        if self.error:
            raise self.error

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class Pipeline:
    """Simulators (with their HTTP fault control), ingester and collector, all real."""

    def __init__(self, tmp_path, broker, influx_url, database, devices=None, clock=None, **kw):
        from foursave.core.influx import InfluxClient
        from foursave.simulators.server import SimulatorThread

        self.control_port = free_port()
        self.config = make_config(
            tmp_path,
            broker.port,
            influx_url,
            database,
            devices=devices,
            control_port=self.control_port,
            **kw,
        )
        self.sim = SimulatorThread(self.config, clock=clock)
        self.ingester = IngesterThread(self.config)
        self.collector = CollectorThread(self.config)
        self.influx = InfluxClient(influx_url, database)
        self.control = f"http://127.0.0.1:{self.control_port}"

    def __enter__(self) -> Pipeline:
        import httpx

        self.sim.__enter__()
        wait_for(lambda: _answers(httpx, self.control + "/devices"), 20, "fault control")
        self.ingester.start()
        self.collector.start()
        return self

    def __exit__(self, *exc) -> None:
        self.collector.stop()
        self.ingester.stop()
        self.sim.__exit__(*exc)
        self.influx.close()

    def fault(self, device_id: str, **update) -> dict:
        import httpx

        r = httpx.patch(f"{self.control}/devices/{device_id}/faults", json=update, timeout=10)
        assert r.status_code == 200, r.text
        return r.json()

    def clear(self, device_id: str) -> None:
        import httpx

        r = httpx.delete(f"{self.control}/devices/{device_id}/faults", timeout=10)
        assert r.status_code == 200, r.text

    def rows(self, q: str) -> list[dict]:
        return self.influx.rows(q)

    def latest(self, measurement: str, device_id: str, n: int = 1) -> list[dict]:
        return self.influx.rows(
            f'SELECT * FROM "{measurement}" WHERE "device" = \'{device_id}\' '
            f"ORDER BY time DESC LIMIT {n}"
        )


def _answers(httpx, url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


# ------------------------------------------------------------------ Grafana dashboards


def panels(d: dict) -> list[dict]:
    """Every panel of a dashboard's JSON, those inside rows included."""
    out = []
    for p in d.get("panels", []):
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def expand(
    query: str, start_ms: int, end_ms: int, site: str, devices: list[str], interval: str = "1h"
) -> str:
    """Grafana's InfluxQL macro and template-variable expansion."""
    q = query.replace("$timeFilter", f"time >= {start_ms}ms and time <= {end_ms}ms")
    q = q.replace("$__interval", interval)
    q = q.replace("/^$site$/", f"/^{re.escape(site)}$/").replace("$site", site)
    q = q.replace("/^$device$/", "/^(" + "|".join(re.escape(d) for d in devices) + ")$/")
    assert "$" not in q.replace("$/", ""), q
    return q
