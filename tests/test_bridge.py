"""District brokers bridged to a central one (``services.mqtt.bridge``: the mosquitto
bridge ``foursave broker-config`` writes, docs/scale.md).  Two real mosquitto processes
on loopback: a real collector polls simulators over Modbus TCP into the district broker,
a real ingester on the central broker (TLS only) writes to a real influxd.  The link
between the brokers runs through a TCP relay, and the test cuts it for 30 s while the
collector goes on publishing: afterwards every reading is stored once and confirmed back
to the collector, whose spool is empty."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from foursave.app import load_config
from foursave.core.config import Config
from foursave.core.influx import InfluxClient
from foursave.core.topics import alert_topic, bridge_topic, collector_topic
from foursave.localstack import BrokerTls, free_port, mosquitto
from foursave.simulators.server import SimulatorThread
from tests.helpers import (
    ROOT,
    CollectorThread,
    IngesterThread,
    demo_raw,
    make_config,
    make_test_ca,
    mqtt_as,
    wait_for,
)

pytestmark = pytest.mark.integration

CUT_S = 30  # the outage: the one real wait of this module
ALWAYS = {"inverter": "ac_energy_wh", "meter": "import_energy_wh"}  # day or night


class Relay:
    """A TCP relay from 127.0.0.1:``port`` to 127.0.0.1:``upstream``: the link between
    the brokers.  ``stop()`` closes the listener and every connection through it (the
    link is down: connections refused); ``start()`` listens on the same port again."""

    def __init__(self, port: int, upstream: int):
        self.port, self.upstream = port, upstream
        self.listener: socket.socket | None = None
        self.socks: list[socket.socket] = []
        self.threads: list[threading.Thread] = []
        self.lock = threading.Lock()

    def start(self) -> Relay:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen()
        self.listener = s
        self._spawn(self._accept, s)
        return self

    def _spawn(self, target, *args) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)
        with self.lock:
            self.threads.append(t)
        t.start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                near, _ = listener.accept()
            except OSError:  # stop(): the listener was shut down
                return
            try:
                far = socket.create_connection(("127.0.0.1", self.upstream), timeout=5)
            except OSError:
                near.close()
                continue
            far.settimeout(None)
            with self.lock:
                self.socks += [near, far]
            self._spawn(self._pump, near, far)
            self._spawn(self._pump, far, near)

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):  # one side gone: the other learns it at once
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def stop(self) -> None:
        if self.listener is not None:
            try:
                self.listener.shutdown(socket.SHUT_RDWR)  # wakes accept()
            except OSError:
                pass
            self.listener.close()
            self.listener = None
        with self.lock:
            socks, self.socks = self.socks, []
            threads, self.threads = self.threads, []
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        for t in threads:
            t.join(10)


class Listener:
    """A client logged in as ``role`` of ``config``, keeping what each topic it
    subscribed to said last (and whether that came retained)."""

    def __init__(self, config: Config, role, *topics: str):
        self.last: dict[str, tuple[bytes, bool]] = {}
        self.c = mqtt_as(config, role)
        self.c.on_message = lambda c, u, m: self.last.__setitem__(m.topic, (m.payload, m.retain))
        for topic in topics:
            self.c.subscribe(topic, qos=1)

    def said(self, topic: str) -> bytes | None:
        got = self.last.get(topic)
        return got[0] if got else None

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def two_devices() -> list[dict]:
    raw = demo_raw()["devices"]
    return [next(d for d in raw if d["kind"] == kind) for kind in ALWAYS]


def stored(influx: InfluxClient, cfg: Config) -> dict[str, int]:
    out = {}
    for d in cfg.devices:
        rows = influx.rows(
            f'SELECT count("{ALWAYS[d.kind]}") AS n FROM "{d.kind}" WHERE "device" = \'{d.id}\''
        )
        out[d.id] = rows[0]["n"] if rows else 0
    return out


def broker_config(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """``foursave broker-config`` as an operator runs it (no FOURSAVE_* variables)."""
    cmd = [sys.executable, "-m", "foursave", "broker-config", *map(str, args)]
    return subprocess.run(
        cmd, env={"PATH": "/usr/bin:/bin"}, text=True, capture_output=True, cwd=ROOT, timeout=120
    )


def test_readings_taken_while_the_bridge_is_cut_for_30_s_are_all_stored_and_confirmed(
    tmp_path, influx_url, database, influx
):
    """The district's collector publishes on through a 30 s cut of the link to the
    central broker: its district broker takes every reading (PUBACK), none is confirmed
    meanwhile, and once the link is back the bridge forwards what waited, the central
    ingester stores it, its acknowledgements come back through the bridge and the
    collector's spool empties.  No reading is lost, none is missing a seq."""
    ca = make_test_ca(tmp_path / "ca")
    central_port, district_port, relay_port = free_port(), free_port(), free_port()
    secrets = tmp_path / "secrets.yaml"  # both sides' passwords: the bridge's is shared
    for d in ("district", "central"):
        (tmp_path / d).mkdir()
    district = make_config(
        tmp_path / "district",
        district_port,
        influx_url,
        database,
        devices=two_devices(),
        secrets_file=secrets,
        extra_services={
            "mqtt": {
                "bridge": {
                    "name": "north",
                    "url": f"mqtts://127.0.0.1:{relay_port}",
                    "ca_file": str(ca.ca_cert),
                    "restart_timeout_s": [1, 2],
                    "keepalive_s": 5,
                }
            }
        },
    )
    central = make_config(
        tmp_path / "central",
        central_port,
        influx_url,
        database,
        devices=two_devices(),
        secrets_file=secrets,
        extra_services={
            "mqtt": {"url": f"mqtts://127.0.0.1:{central_port}", "ca_file": str(ca.ca_cert)}
        },
    )
    d_yaml, c_yaml = tmp_path / "district" / "config.yaml", tmp_path / "central" / "config.yaml"
    made = broker_config(
        "--config", c_yaml, "--bridged", d_yaml, "--out", tmp_path / "c-auth", "--generate-missing"
    )
    assert made.returncode == 0, made.stderr
    made = broker_config("--config", d_yaml, "--out", tmp_path / "d-auth", "--generate-missing")
    assert made.returncode == 0, made.stderr
    bridge_conf = (tmp_path / "d-auth" / "bridge.conf").read_text()

    central_mq = mosquitto(
        central_port,
        tmp_path / "central-mq",
        auth_dir=tmp_path / "c-auth",
        tls=BrokerTls(ca.ca_cert, ca.server_cert, ca.server_key),
    ).start()
    relay = Relay(relay_port, central_port).start()
    district_mq = mosquitto(
        district_port,
        tmp_path / "district-mq",
        auth_dir=tmp_path / "d-auth",
        extra_conf=bridge_conf,
    ).start()
    link = bridge_topic("north")
    presence = collector_topic(district.services.collector.id)
    alert = alert_topic("demo", "bridge-test")
    at_centre = Listener(central, "reader", link, presence)
    at_district = Listener(district, "reader", alert)
    sim = SimulatorThread(district).__enter__()
    sim_running = True
    ing = IngesterThread(central).start()
    col = CollectorThread(district).start()
    try:
        pub = col.collector.publisher
        wait_for(lambda: pub.confirmed >= 10, 60, "readings confirmed across the bridge")
        wait_for(lambda: at_centre.said(link) == b"1", 10, "the bridge's state at the centre")
        wait_for(lambda: presence in at_centre.last, 10, "the collector's presence at the centre")
        late = Listener(central, "reader", presence)  # subscribes now: gets what is retained
        try:
            wait_for(lambda: presence in late.last, 10, "the presence retained at the centre")
            assert late.last[presence][1], "retained through the bridge (try_private)"
        finally:
            late.close()

        relay.stop()  # the link is down: the district broker cannot reach the centre
        wait_for(lambda: at_centre.said(link) == b"0", 30, "the bridge's last will at the centre")
        taken_before, confirmed = pub.acked, []
        deadline = time.monotonic() + CUT_S
        while time.monotonic() < deadline:  # the outage lasts CUT_S: a duration, not a condition
            confirmed.append(pub.confirmed)
            time.sleep(0.5)
        taken_during = pub.acked - taken_before
        assert taken_during >= 50, "the district broker took readings all along"
        # acknowledgements already on their way may land in the first seconds, then none
        assert len(set(confirmed[len(confirmed) // 4 :])) == 1, "nothing crossed the cut link"

        relay.start()
        back = time.monotonic()
        wait_for(lambda: at_centre.said(link) == b"1", 60, "the bridge back")
        rules = mqtt_as(central, "rules")
        try:
            rules.publish(alert, json.dumps({"state": "firing"}), qos=1).wait_for_publish(10)
            wait_for(lambda: at_district.said(alert) is not None, 30, "the alert in the district")
        finally:
            rules.loop_stop()
            rules.disconnect()

        sim.__exit__(None, None, None)  # the devices fall silent: no more readings
        sim_running = False
        wait_for(
            lambda: (
                col.collector.spool.depth == 0
                and pub.confirmed == sum(col.published_counts().values())
            ),
            120,
            "every reading confirmed back to the collector",
        )
        drained_s = time.monotonic() - back
        col.stop()
        taken = col.published_counts()
        wait_for(lambda: stored(influx, district) == taken, 60, f"all of {taken} stored")
        gaps = [s.gaps for s in ing.ingester.seq.devices.values()]
    finally:
        col.stop()
        ing.stop()
        if sim_running:
            sim.__exit__(None, None, None)
        at_centre.close()
        at_district.close()
        district_mq.stop()
        relay.stop()
        central_mq.stop()
    assert col.collector.spool.depth == 0
    assert gaps == [0, 0]
    assert pub.confirmed == sum(taken.values())
    assert pub.refused == 0
    # the bridge's persistent sessions kept every reading of the cut: the collector's own
    # safety net (publishing again what stays unconfirmed) was not needed
    assert pub.republished == 0
    print(  # shown with pytest -s: the figures docs/scale.md quotes
        f"bridge cut {CUT_S} s: {taken_during} readings taken meanwhile, all confirmed "
        f"{drained_s:.1f} s after the link came back; {sum(taken.values())} stored once"
    )


def test_a_bridge_that_would_bring_back_what_it_forwards_is_refused(tmp_path):
    """A device named ``alert`` publishes on ``<site>/alert/reading``: the bridge would
    forward it and bring it back with the site's alerts, a loop; ``broker-config``
    refuses, naming the topic.  A ``--bridged`` configuration without a bridge is
    refused too."""
    raw = demo_raw()
    raw["devices"] = [{**two_devices()[1], "id": "alert"}]
    raw["services"]["mqtt"] = {"bridge": {"name": "south", "url": "mqtt://central:1883"}}
    raw["services"]["secrets_file"] = str(tmp_path / "secrets.yaml")
    looped = tmp_path / "looped.yaml"
    looped.write_text(yaml.safe_dump(raw, allow_unicode=True))
    load_config(looped, env={})  # a valid configuration: only the bridge cannot be made
    got = broker_config("--config", looped, "--out", tmp_path / "out", "--generate-missing")
    assert got.returncode == 2
    assert "foursave/v1/demo/alert/reading" in got.stderr
    assert "a loop" in got.stderr and "alerts: false" in got.stderr
    assert "Traceback" not in got.stderr
    assert not (tmp_path / "out" / "bridge.conf").exists()

    raw["services"]["mqtt"] = {}
    plain = tmp_path / "plain.yaml"
    plain.write_text(yaml.safe_dump(raw, allow_unicode=True))
    got = broker_config(
        "--config", plain, "--bridged", plain, "--out", tmp_path / "out", "--generate-missing"
    )
    assert got.returncode == 2
    assert f"{plain}: a bridged district's configuration needs services.mqtt.bridge" in got.stderr
    assert "Traceback" not in got.stderr
