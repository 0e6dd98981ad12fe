"""Test helpers: configurations on free ports, the services in threads, waiting, and
the receivers the alert tests listen with.  Test modules import shared pieces from here
(or get them as fixtures from conftest.py), never from each other (checked by
tests/unit/test_tests_import_rules.py)."""

from __future__ import annotations

import asyncio
import copy
import email
import email.policy
import json
import os
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import yaml

from foursave import app
from foursave.app import load_config
from foursave.brokerconf import Grant, generate_missing, merged_grants, write_broker_files
from foursave.core.config import Config, MqttRole
from foursave.core.mqtt import mqtt_client
from foursave.core.secrets import Secrets
from foursave.localstack import BrokerTls, LocalService, free_port, mosquitto

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


@dataclass(frozen=True)
class CertFiles:
    """PEM files made by :func:`make_test_ca` (keys unencrypted, readable by the owner)."""

    ca_cert: Path  # the CA that signed both certificates: what clients trust
    server_cert: Path  # for 127.0.0.1 and localhost (subjectAltName), serverAuth
    server_key: Path
    client_cert: Path  # CN foursave-test-client, clientAuth (TLS client certificates)
    client_key: Path


def make_test_ca(directory: Path) -> CertFiles:
    """A throw-away CA, a server certificate for 127.0.0.1 / localhost and a client
    certificate, all signed by it, made with the ``openssl`` command (EC P-256, valid
    30 days from now) in ``directory``.  For the TLS tests of InfluxDB (https) and
    MQTT (mqtts)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    ca = CertFiles(
        *(d / n for n in ("ca.crt", "server.crt", "server.key", "client.crt", "client.key"))
    )
    ca_key = d / "ca.key"
    newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def openssl(*args: str | Path) -> None:
        p = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True, timeout=60)
        if p.returncode != 0:
            raise RuntimeError(f"openssl {' '.join(map(str, args[:2]))} failed:\n{p.stderr}")

    openssl(
        "req", "-x509", *newkey, "-keyout", ca_key, "-out", ca.ca_cert, "-days", "30",
        "-subj", "/CN=foursave test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    for cert, key, cn, ext in (
        (
            ca.server_cert,
            ca.server_key,
            "127.0.0.1",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth",
        ),
        (ca.client_cert, ca.client_key, "foursave-test-client", "extendedKeyUsage=clientAuth"),
    ):
        csr, extfile = cert.with_suffix(".csr"), cert.with_suffix(".ext")
        extfile.write_text(
            f"basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n{ext}\n"
        )
        openssl("req", *newkey, "-keyout", key, "-out", csr, "-subj", f"/CN={cn}")
        openssl(
            "x509", "-req", "-in", csr, "-CA", ca.ca_cert, "-CAkey", ca_key,
            "-CAcreateserial", "-out", cert, "-days", "30", "-extfile", extfile,
        )  # fmt: skip
    return ca


# passwords with both quotes and backslashes: InfluxQL's escaping is tried on every run
AUTH_PASSWORDS = {
    "foursave_admin": "ad'm\"in\\ pw",
    "foursave_writer": "wr\\it'er\"",
    "foursave_reader": "'rea\\d\"er",
}


@dataclass
class AuthInflux:
    """An influxd with authentication on (``localstack.influxd(auth=True)``) and its
    three users made by ``influx-setup`` from :data:`AUTH_PASSWORDS`, in the secrets
    file ``secrets_file`` (mode 600)."""

    server: Any  # foursave.localstack.LocalService
    url: str
    secrets_file: Path
    ca_file: Path | None = None

    def services(self, database: str, **influxdb: Any):
        from foursave.core.config import Services

        svc = {"url": self.url, "database": database, **influxdb}
        if self.ca_file is not None:
            svc.setdefault("ca_file", str(self.ca_file))
        return Services.model_validate({"influxdb": svc, "secrets_file": str(self.secrets_file)})

    def secrets(self):
        from foursave.core.secrets import Secrets

        return Secrets.load(str(self.secrets_file), env={})

    def grant(self, database: str) -> list[str]:
        """The database made, the writer given ALL and the reader READ on it."""
        from foursave.core.influxadmin import setup

        return setup(self.services(database), self.secrets())

    def client(self, database: str, role: str, **kw: Any):
        from foursave.core.influx import InfluxClient

        return InfluxClient.for_role(self.services(database), role, self.secrets(), **kw)  # type: ignore[arg-type]


def start_auth_influx(directory: Path, tls: CertFiles | None = None) -> AuthInflux:
    """:class:`AuthInflux` on a free port (https with ``tls``), users made."""
    from foursave.core.secrets import write_file
    from foursave.localstack import influxd

    secrets_file = directory / "secrets.yaml"
    write_file(secrets_file, {"influxdb": AUTH_PASSWORDS})
    port = free_port()
    server = influxd(
        port,
        directory / "influxd",
        auth=True,
        tls=(tls.server_cert, tls.server_key) if tls else None,
        ca_file=tls.ca_cert if tls else None,
    )
    server.start(timeout_s=60)
    scheme = "https" if tls else "http"
    auth = AuthInflux(
        server, f"{scheme}://127.0.0.1:{port}", secrets_file, tls.ca_cert if tls else None
    )
    try:
        auth.grant("foursave")
    except BaseException:
        server.stop()
        raise
    return auth


def demo_raw() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())


# The simulated site (Tainan city hall, nine devices, seed 7) that the physics, ledger
# and PV tests share; commissioned 2025-01-01 (the ledger test moves it a year back)
YONGHUA_CONFIG = """
services: {simulator: {seed: 7}}
sites: [{id: yonghua, name: 永華, lat: 22.992, lon: 120.185, pv_capacity_kwp: 24}]
devices:
  - {id: inv-a, site: yonghua, kind: inverter, profile: sunspec, host: h, port: 1,
     simulate: {model: pv, rated_power_w: 10000, dc_kwp: 14, commissioned: 2025-01-01}}
  - {id: inv-b, site: yonghua, kind: inverter, profile: sunspec, host: h, port: 2,
     simulate: {model: pv, rated_power_w: 10000, dc_kwp: 14, commissioned: 2025-01-01}}
  - {id: hvac, site: yonghua, kind: meter, role: hvac, profile: sunspec, host: h, port: 3,
     simulate: {model: hvac, rated_power_w: 80000, commissioned: 2025-01-01}}
  - {id: light, site: yonghua, kind: meter, role: lighting, profile: sunspec, host: h, port: 4,
     simulate: {model: lighting, rated_power_w: 20000, commissioned: 2025-01-01}}
  - {id: ev, site: yonghua, kind: meter, role: ev_charging, profile: sunspec, host: h, port: 5,
     simulate: {model: ev_charging, rated_power_w: 30000, commissioned: 2025-01-01}}
  - {id: main, site: yonghua, kind: meter, role: main, profile: sunspec, host: h, port: 6,
     simulate: {model: main, rated_power_w: 300000, unmetered_w: 30000, commissioned: 2025-01-01}}
  - {id: pvm, site: yonghua, kind: meter, role: pv, profile: sunspec, host: h, port: 7,
     simulate: {model: pv_meter, rated_power_w: 20000, commissioned: 2025-01-01}}
  - {id: wx, site: yonghua, kind: weather, profile: sunspec, host: h, port: 8,
     simulate: {model: weather, commissioned: 2025-01-01}}
  - {id: water, site: yonghua, kind: water, profile: generic_water_meter, host: h, port: 9,
     simulate: {model: water, commissioned: 2025-01-01}}
"""


def make_config(
    tmp_path: Path,
    mqtt: LocalService | int,
    influx_url: str,
    database: str,
    *,
    interval_s: float = 0.2,
    devices: list[dict] | None = None,
    extra_services: dict | None = None,
    control_port: int | None = None,
    sites: list[dict] | None = None,
    commissioned: date | None = None,
    admitted: bool = True,
    secrets_file: Path | None = None,
) -> Config:
    """The demo configuration on free ports, with its files under ``tmp_path``; its
    services have their accounts on the broker ``mqtt`` (``auth_broker``; with
    ``admitted`` false they have the passwords but the ACL does not know this
    configuration), or talk to a port where no broker listens (an ``int``).
    ``secrets_file``: the services' passwords (core/secrets.py), when no broker's."""
    raw = demo_raw()
    broker = mqtt if isinstance(mqtt, LocalService) else None
    mqtt_port = broker.port if broker else int(mqtt)  # type: ignore[arg-type]
    if secrets_file is not None:
        if broker is not None:
            raise ValueError("one secrets file: the broker's (put InfluxDB's passwords in the env)")
        raw["services"]["secrets_file"] = str(secrets_file)
    raw["services"]["mqtt"]["url"] = f"mqtt://127.0.0.1:{mqtt_port}"
    if broker is not None:
        raw["services"]["secrets_file"] = str(broker_secrets(broker))
    raw["services"]["influxdb"] = {"url": influx_url, "database": database}
    raw["services"]["collector"]["spool_path"] = str(tmp_path / "spool.sqlite")
    raw["services"]["ingester"]["dead_letter_path"] = str(tmp_path / "dead.sqlite")
    raw["services"]["simulator"]["cache_dir"] = str(tmp_path / "sim-cache")
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
        if d.get("simulate") and "image" not in d["simulate"]:
            # counters start a few days back: no years of history to integrate per test
            d["simulate"] = {**d["simulate"], "commissioned": recent}
        if d.get("same_port_as"):
            pass  # a second logical device on another entry's unit: its port, below
        elif "port_fixed" in d:
            d["port"] = d.pop("port_fixed")  # a server the test starts itself
        elif d.get("transport", "tcp") != "rtu":
            d["port"] = free_port()
        d["interval_s"] = d.get("interval_s_override", interval_s)
        d.pop("interval_s_override", None)
        d.setdefault("timeout_s", 2.0)
    ports = {d["id"]: d.get("port") for d in devs}
    for d in devs:
        if d.get("same_port_as"):
            d["port"] = ports[d.pop("same_port_as")]
    raw["devices"] = devs
    if sites is not None:
        raw["sites"] = sites
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False))
    config = load_config(path, env={})
    if broker is not None and admitted:
        admit(broker, config)
    return config


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
            broker,
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


# ------------------------------------------------------------------ the broker, with accounts

# a test broker -> the configurations admitted to it (their accounts and ACL, merged)
_admitted: dict[Path, list[Config]] = {}

# the tests' stand-in for a client that publishes what no ACL would let a collector
# publish (poison payloads on any device's topics, forged statuses): the ingester and the
# API must survive those even from a broker whose ACL is laxer than ours
ANYONE = "test-anyone"
ANYONE_PASSWORD = os.urandom(12).hex()
ANYONE_GRANTS = [Grant("readwrite", "foursave/#")]


def auth_broker(port: int, datadir: Path, tls: BrokerTls | None = None) -> LocalService:
    """A mosquitto as the demo and production run it: every client logs in, and may do
    only what ``foursave broker-config``'s ACL grants.  It starts with no account at
    all; ``make_config(tmp, broker, ...)`` (or ``admit``) lets a configuration's services in."""
    auth = datadir / "auth"
    auth.mkdir(parents=True, exist_ok=True)
    _admitted[datadir] = []
    write_broker_files(
        [],
        Secrets(),
        auth,
        "no configuration yet",
        logins={ANYONE: (ANYONE_PASSWORD, ANYONE_GRANTS)},
    )
    return mosquitto(port, datadir, auth_dir=auth, tls=tls)


def broker_secrets(broker: LocalService) -> Path:
    """The secrets file (mode 600) with the passwords of the broker's accounts."""
    return broker.workdir / "secrets.yaml"


def admit(broker: LocalService, config: Config, context: Any = None) -> None:
    """Give ``config``'s services their accounts on ``broker`` (random passwords, in
    ``broker_secrets``) and the ACL ``foursave broker-config`` makes for them, merged
    with those of the configurations admitted before; a running broker reloads them
    (SIGHUP), and this returns once it has (a login made for this reload works, over
    TLS with the ``ssl.SSLContext`` ``context`` for a TLS listener)."""
    configs = _admitted.setdefault(broker.workdir, [])
    configs.append(config)
    path = broker_secrets(broker)
    generate_missing(path, merged_grants([config]))
    probe, password = f"reload-probe-{len(configs)}", f"probe-{os.urandom(8).hex()}"
    write_broker_files(
        configs,
        Secrets.load(str(path), env={}),
        broker.workdir / "auth",
        "the tests' configurations",
        logins={probe: (password, []), ANYONE: (ANYONE_PASSWORD, ANYONE_GRANTS)},
    )
    if broker.running:
        broker.reload()
        wait_for(
            lambda: mqtt_login(broker.port, probe, password, context=context) == 0,
            10,
            "mosquitto reloading its ACL",
        )


def mqtt_login(
    port: int, username: str | None, password: str | None, context: Any = None
) -> int | None:
    """The CONNACK reason code a login gets (0: accepted), ``None`` when none came (over
    TLS with the ``ssl.SSLContext`` ``context``)."""
    import paho.mqtt.client as mqtt

    got: list[int] = []
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    if username is not None:
        c.username_pw_set(username, password)
    if context is not None:
        c.tls_set_context(context)
    c.on_connect = lambda cl, ud, flags, rc, props: got.append(rc.value)
    try:
        c.connect("127.0.0.1", port)
        deadline = time.monotonic() + 5
        while not got and time.monotonic() < deadline:
            if c.loop(0.05) not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_AGAIN):
                break  # the broker closed the connection
        c.disconnect()
    except OSError:  # refused, or the TLS handshake failed (ssl.SSLError is an OSError)
        pass
    finally:
        sock = c.socket()
        if sock is not None:
            sock.close()
    return got[0] if got else None


def on_broker(broker: LocalService, text: str) -> Config:
    """The configuration in YAML ``text``, its MQTT services on ``broker`` (admitted)."""
    from foursave.core.config import parse_config

    raw = yaml.safe_load(text)
    services = raw.setdefault("services", {})
    services.setdefault("mqtt", {})["url"] = f"mqtt://127.0.0.1:{broker.port}"
    services["secrets_file"] = str(broker_secrets(broker))
    config = parse_config(yaml.safe_dump(raw, allow_unicode=True), env={})
    admit(broker, config)
    return config


def mosquitto_sub(port: int, *args: str, wait_s: int = 10) -> subprocess.CompletedProcess[str]:
    """Mosquitto's own client reading one ``$SYS`` message (``*args``: its login and TLS
    options): a liveness probe as the health checks run it."""
    argv = ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-t", "$SYS/broker/uptime"]
    argv += ["-C", "1", "-W", str(wait_s), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30)


def mqtt_anyone(broker: LocalService, client_id: str | None = None, **kw: Any):
    """A paho client (connected, loop running) logged in as ``ANYONE`` on ``broker``."""
    import paho.mqtt.client as mqtt

    c = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id or f"anyone-{os.urandom(4).hex()}",
        **kw,
    )
    c.username_pw_set(ANYONE, ANYONE_PASSWORD)
    connected = threading.Event()
    c.on_connect = lambda cl, ud, flags, rc, props: rc == 0 and connected.set()
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    if not connected.wait(10):
        c.loop_stop()
        raise AssertionError(f"{ANYONE} cannot log in to the broker on port {broker.port}")
    return c


def mqtt_as(config: Config, role: MqttRole, client_id: str | None = None, **kw: Any):
    """A paho client logged in as ``role``'s account of ``config`` (connected, its
    network loop running); the tests' raw publishers and listeners."""
    c = mqtt_client(config.services, role, client_id or f"test-{role}-{os.urandom(4).hex()}", **kw)
    connected = threading.Event()
    c.on_connect = lambda cl, ud, flags, rc, props: rc == 0 and connected.set()
    c.connect(config.services.mqtt.host, config.services.mqtt.port)
    c.loop_start()
    if not connected.wait(10):
        c.loop_stop()
        raise AssertionError(f"MQTT account {config.services.mqtt_account(role)!r} cannot log in")
    return c


# ------------------------------------------------------------------ receivers


class Watcher:
    """A plain MQTT client subscribed to ``foursave/v1/#``: the messages per topic, and
    whether the last one came retained."""

    def __init__(self, broker: LocalService):
        self.messages: dict[str, list[dict]] = {}
        self.retained: dict[str, bool] = {}
        self.lock = threading.Lock()
        self.c = mqtt_anyone(broker, f"watch-{id(self)}")
        self.c.on_message = self._on_message
        self.c.on_connect = lambda c, *a: c.subscribe("foursave/v1/#", qos=1)
        self.c.subscribe("foursave/v1/#", qos=1)

    def _on_message(self, client, userdata, msg):
        with self.lock:
            self.messages.setdefault(msg.topic, []).append(json.loads(msg.payload))
            self.retained[msg.topic] = msg.retain

    def last(self, topic: str) -> dict | None:
        with self.lock:
            msgs = self.messages.get(topic)
            return msgs[-1] if msgs else None

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


class Webhook:
    """A real HTTP server on a free port that keeps each JSON body POSTed to it."""

    def __init__(self):
        self.bodies: list[dict] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.bodies.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = HTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Mailbox:
    """A real SMTP server (aiosmtpd) on a free port; each message as subject + body."""

    def __init__(self):
        from aiosmtpd.controller import Controller

        self.messages: list[str] = []
        box = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
                box.messages.append(f"{msg['Subject']}\n{msg.get_content()}")
                return "250 OK"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def close(self):
        self.controller.stop()


# ------------------------------------------------------------------ real devices' dumps

DEVICE_DUMPS = ROOT / "tests" / "devices"  # copies, provenance in its README


def device_dumps() -> list[Path]:
    """Register dumps of real devices: the copies in tests/devices/, the team's shared
    folder beside the checkout (../shared/devices/) when there is one, and any folders
    in ``FOURSAVE_DEVICE_DUMPS`` (``:``-separated): a dump added there is tested too.
    A file of the same name in a later folder replaces the copy."""

    folders = [DEVICE_DUMPS, ROOT.parent / "shared" / "devices"]
    folders += [Path(p) for p in os.environ.get("FOURSAVE_DEVICE_DUMPS", "").split(":") if p]
    found: dict[str, Path] = {}
    for folder in folders:
        if folder.is_dir():
            for path in sorted(folder.glob("*.regs.json")):
                found[path.name] = path
    return [found[name] for name in sorted(found)]


@dataclass
class Expected:
    """What a device's readings must hold, computed by pysunspec2 from the dump's
    registers (``point.cvalue``): fields of the reading, parts, and the fields the
    device leaves not implemented."""

    fields: dict[str, Any]
    parts: dict[tuple[str, tuple[tuple[str, str], ...]], dict[str, Any]]
    absent: set[str]
    # power factor: the value pysunspec2 computes (a ratio or a percentage) with W and VA
    pf: tuple[float, float | None, float | None] | None = None


def pysunspec2_models(dump: dict) -> list:
    """pysunspec2's models of a dump's chain, each built from its registers
    (``sunspec2.device.Model``), in chain order."""
    import struct

    from sunspec2 import device as ss_device

    block = dump["blocks"][0]
    regs = [0xFFFF if r is None else r for r in block["registers"]]
    models, i = [], 2
    while regs[i] != 0xFFFF:
        mid, length = regs[i], regs[i + 1]
        body = regs[i : i + 2 + length]
        data = struct.pack(f">{len(body)}H", *body)
        models.append(
            ss_device.Model(
                model_id=mid, model_addr=block["address"] + i, model_len=length, data=data
            )
        )
        i += 2 + length
    return models


def expected_readings(dump: dict, kind: str) -> Expected | None:
    """The reading a device of ``kind`` must give for ``dump``: each field of the SunSpec
    map (collector/profiles/sunspec.yaml: the naming is ours) with pysunspec2's value;
    the first model in the chain that implements a field gives it."""
    from foursave.collector.profiles import load_sunspec_map
    from foursave.core.glossary import PARTS

    smap = load_sunspec_map()
    out = Expected({}, {}, set())
    found = False

    def value(point) -> Any:
        v = point.cvalue if point is not None else None
        return None if isinstance(v, str) else v

    def symbol(point) -> str | None:
        for s in point.pdef.get("symbols", []):
            if s["value"] == point.value:
                return s["name"]
        return None

    for m in pysunspec2_models(dump):
        mm = smap.models.get(m.model_id)
        if mm is None or mm.measurement != kind:
            continue
        found = True
        got: dict[str, Any] = {}
        for p in mm.points:
            group = m.groups.get(p.group) if p.group else None
            scope = (group[0] if isinstance(group, list) else group) if p.group else m
            v = value(scope.points.get(p.point)) if scope is not None else None
            if v is not None and p.field not in got:
                got[p.field] = v * p.scale + p.offset
        if "power_factor" in got:
            w = got.get("ac_power_w", got.get("active_power_w"))
            va = got.get("ac_apparent_power_va", got.get("apparent_power_va"))
            if out.pf is None:
                out.pf = (got["power_factor"], w, va)
        target = out.fields if mm.part is None else out.parts.setdefault((mm.part, ()), {})
        for f, v in got.items():
            target.setdefault(f, v)
        for gm in mm.groups:
            instances = m.groups.get(gm.group) or []
            for i, inst in enumerate(instances if isinstance(instances, list) else [instances]):
                if any(symbol(inst.points[k]) != sym for k, sym in gm.when.items()):
                    continue
                ident = value(inst.points.get(gm.id)) if gm.id else None
                tag = str(ident) if isinstance(ident, int) else str(i + 1)
                tags = (("string", tag),) if PARTS[kind][gm.part] else ()
                part = out.parts.setdefault((gm.part, tags), {})
                for p in gm.points:
                    v = value(inst.points.get(p.point))
                    if v is not None:
                        part.setdefault(p.field, v * p.scale + p.offset)
    if not found:
        return None
    out.parts = {k: v for k, v in out.parts.items() if v}
    mapped = {
        p.field
        for mm in smap.models.values()
        if mm.measurement == kind and not mm.part
        for p in mm.points
    }
    out.absent = mapped - set(out.fields)
    return out
