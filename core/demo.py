"""``foursave demo``: the whole system on one machine with simulated devices.

Starts mosquitto and influxd on the configured ports unless something already answers
there, then the simulators, the ingester, the collector, the rules engine and the API as
separate processes (as they run in production), prints what runs where (with a fresh
API key per role) and a live line of counts, and stops everything cleanly on Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

from core.config import Config
from core.influx import InfluxClient, InfluxUnavailable
from core.services import LocalService, influxd, mosquitto, port_open


def _spawn(name: str, args: list[str], var: Path) -> subprocess.Popen:
    log = open(var / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        [sys.executable, "-m", "core.cli", *args],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    return proc


def _counts(influx: InfluxClient) -> dict[str, int]:
    out: dict[str, int] = {}
    for m in ("inverter", "meter", "weather", "water"):
        try:
            rows = influx.rows(f'SELECT count(*) FROM "{m}"')
        except Exception:
            continue
        if rows:
            out[m] = max((v for k, v in rows[0].items() if k.startswith("count_")), default=0)
    return out


def _demo_keys(cfg: Config) -> dict[str, str]:
    """Fresh random keys, one per role, for this demo run (the last run's are revoked):
    there is no default key, in the demo either."""
    from api.keys import ROLES, KeyStore

    store = KeyStore(cfg.services.api.keys_path)
    try:
        for k in store.all():
            if k.created_by == "foursave demo" and k.revoked_at is None:
                store.revoke(k.id)
        return {r: store.create(f"demo-{r}", r, "foursave demo")[1] for r in ROLES}
    finally:
        store.close()


def run_demo(cfg: Config, config_path: str, var: Path) -> int:
    var.mkdir(parents=True, exist_ok=True)
    svc = cfg.services
    started: list[LocalService] = []
    mq_host, mq_port = svc.mqtt.host, svc.mqtt.port
    if not port_open(mq_host, mq_port):
        started.append(mosquitto(mq_port, (var / "mosquitto").resolve(), mq_host).start())
    influx_host = svc.influxdb.url.split("//", 1)[1].split(":", 1)[0]
    if not port_open(influx_host, svc.influxdb.port):
        started.append(
            influxd(svc.influxdb.port, (var / "influxdb").resolve(), influx_host).start()
        )

    # one simulated clock for every process (matters when simulated time runs fast)
    os.environ.setdefault("FOURSAVE_SIM_ANCHOR", datetime.now(UTC).isoformat())
    keys = _demo_keys(cfg)
    procs: dict[str, subprocess.Popen] = {}
    for name in ("sim", "ingest", "collect", "rules", "api"):
        procs[name] = _spawn(name, [name, "--config", config_path], var)

    print("foursave demo is running (Ctrl-C stops everything)\n")
    print(
        f"  MQTT broker   {svc.mqtt.url}"
        + (
            "  (started here)"
            if any(s.name == "mosquitto" for s in started)
            else "  (already running)"
        )
    )
    print(
        f"  InfluxDB      {svc.influxdb.url}  database '{svc.influxdb.database}'"
        + (
            "  (started here)"
            if any(s.name == "influxd" for s in started)
            else "  (already running)"
        )
    )
    for d in cfg.devices:
        if d.simulate:
            print(
                f"  simulator     {d.id:<12} {d.kind:<9} modbus {d.transport} {d.host}:{d.port} unit {d.unit_id} ({d.profile})"
            )
    if svc.simulator.control_port:
        host, port = svc.simulator.control_host, svc.simulator.control_port
        print(f"  faults        http://{host}:{port}/devices  (README: Faults on demand)")
    api = f"http://{svc.api.host}:{svc.api.port}"
    print(f"  display       {api}/display   (public lobby screen, no login)")
    print(f"  API           {api}/docs      (OpenAPI at {api}/openapi.json)")
    for role, key in keys.items():
        print(f"  {role + ' key':<13} {key}")
    print(
        f"  report        curl -H 'X-API-Key: <auditor key>' '{api}/api/v1/reports/2026?format=pdf' -o report.pdf"
    )
    print("  alerts        mqtt topic foursave/v1/+/alert/#; foursave alerts list")
    print(f"  logs          {var}/{{sim,collect,ingest,rules,api}}.log")
    print(f"  try           mosquitto_sub -p {mq_port} -t 'foursave/v1/#' -v")
    print(
        f"                influx -port {svc.influxdb.port} -database {svc.influxdb.database} -execute 'SELECT * FROM inverter ORDER BY time DESC LIMIT 3'\n"
    )

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    influx = InfluxClient.from_config(svc.influxdb, timeout_s=2)
    rc = 0
    try:
        while not stop.wait(2.0):
            dead = [n for n, p in procs.items() if p.poll() is not None]
            if dead:
                print(
                    f"\n{', '.join(dead)} stopped unexpectedly; see {var}/<name>.log",
                    file=sys.stderr,
                )
                rc = 1
                break
            try:
                counts = _counts(influx)
            except InfluxUnavailable:
                counts = {}
            line = "  stored points: " + "  ".join(f"{k} {v}" for k, v in counts.items())
            print(f"\r{line:<100}", end="", flush=True)
    finally:
        print("\nstopping ...")
        for name in ("api", "rules", "collect", "ingest", "sim"):  # collector before ingester
            p = procs[name]
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
        for s in reversed(started):
            s.stop()
        influx.close()
        print("stopped.")
    return rc
