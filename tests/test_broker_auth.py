"""Every service logs in to a real mosquitto with its own account and may do only its
job (``foursave broker-config``'s password file and ACL): the whole matrix of accounts
against topics, a forged reading refused and counted, and MQTT over TLS."""

from __future__ import annotations

import base64
import json
import socket
import ssl
import subprocess
import sys
import threading

import paho.mqtt.client as mqtt
import pytest
import yaml

from foursave.app import load_config
from foursave.brokerconf import hash_password
from foursave.collector.spool import Spool
from foursave.core.mqtt import tls_context
from foursave.core.secrets import Secrets
from foursave.core.tls import TlsSettingsError
from foursave.core.topics import (
    ack_topic,
    alert_topic,
    collector_topic,
    ingester_topic,
    reading_topic,
    rules_claim_topic,
    status_topic,
)
from foursave.localstack import BrokerTls, free_port, mosquitto
from foursave.simulators.server import SimulatorThread
from tests.helpers import (
    ANYONE,
    ANYONE_PASSWORD,
    ROOT,
    CollectorThread,
    IngesterThread,
    admit,
    auth_broker,
    broker_secrets,
    demo_raw,
    make_config,
    make_test_ca,
    mqtt_login,
    on_broker,
    wait_for,
)

pytestmark = pytest.mark.integration

INV, METER = "inv-01", "meter-main"  # north's device, south's device (site demo)


def device(name: str) -> dict:
    return next(d for d in demo_raw()["devices"] if d["id"] == name)


def two_collectors(tmp_path, broker, influx_url="http://127.0.0.1:1", database="x"):
    """Two configurations on one broker: collector north owns inv-01, south meter-main;
    one ingester (central) serves both."""
    out = {}
    for name, dev in (("north", INV), ("south", METER)):
        (tmp_path / name).mkdir()
        out[name] = make_config(
            tmp_path / name,
            broker,
            influx_url,
            database,
            devices=[device(dev)],
            extra_services={"collector": {"id": name}, "ingester": {"id": "central"}},
        )
    return out["north"], out["south"]


# ------------------------------------------------------------------ the ACL matrix

PUBLISH = [
    reading_topic("demo", INV),
    status_topic("demo", INV),
    reading_topic("demo", METER),
    status_topic("demo", METER),
    reading_topic("demo", "nobodys-device"),
    collector_topic("north"),
    collector_topic("south"),
    ack_topic("north"),
    ack_topic("south"),
    ingester_topic("central"),
    ingester_topic("another"),
    alert_topic("demo", "inverter_trip"),
    rules_claim_topic("shard-1-of-2", "host-1-abc"),
    "foursave/v1/demo/inv-01/command",
    "elsewhere/entirely",
]
STATUSES = {status_topic("demo", INV), status_topic("demo", METER)}
STATUSES |= {collector_topic("north"), collector_topic("south")}
STATUSES |= {ingester_topic("central"), ingester_topic("another")}
READINGS = {reading_topic("demo", d) for d in (INV, METER, "nobodys-device")}
FOURSAVE = {t for t in PUBLISH if t.startswith("foursave/")}

# written from the words, not from the code that makes the ACL
MAY_PUBLISH = {
    # readings and status for the devices it owns, and its own presence
    "collector-north": {
        reading_topic("demo", INV),
        status_topic("demo", INV),
        collector_topic("north"),
    },
    "collector-south": {
        reading_topic("demo", METER),
        status_topic("demo", METER),
        collector_topic("south"),
    },
    # its own status and the acknowledgements
    "ingester-central": {ingester_topic("central"), ack_topic("north"), ack_topic("south")},
    # alerts, and the claims of rules partitions on their sites
    "rules": {
        alert_topic("demo", "inverter_trip"),
        rules_claim_topic("shard-1-of-2", "host-1-abc"),
    },
    "api": set(),
    "reader": set(),  # people: read-only
}
# what each receives of a message on each topic, subscribed to everything ('#'):
# mosquitto grants any subscription and checks each message against the ACL's reads
MAY_READ = {
    "collector-north": {ack_topic("north")},  # the acknowledgements meant for it
    "collector-south": {ack_topic("south")},
    "ingester-central": READINGS | STATUSES,  # readings, device status and presence
    "rules": {rules_claim_topic("shard-1-of-2", "host-1-abc")},  # the other partitions' claims
    "api": STATUSES,  # the live device and service statuses it shows
    "reader": FOURSAVE,  # people: everything foursave publishes
}


class Account:
    """MQTT 5 clients logged in as ``name``: the PUBACK and SUBACK reason codes it
    gets.  mosquitto 2.0 drops a client's connection after refusing its publish
    (eclipse-mosquitto/mosquitto#2579): each try after a refusal logs in afresh."""

    def __init__(self, port: int, name: str, password: str):
        self.port, self.name, self.password = port, name, password
        self.c: mqtt.Client | None = None
        self.acks: dict[int, int] = {}
        self.received: set[str] = set()

    def _client(self) -> mqtt.Client:
        if self.c is not None and self.c.is_connected():
            return self.c
        self.close()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        c.username_pw_set(self.name, self.password)
        c.reconnect_delay_set(0.01, 0.05)  # type: ignore[arg-type]  # close() need not wait
        connected = threading.Event()
        c.on_connect = lambda cl, ud, fl, rc, pr: rc == 0 and connected.set()
        c.on_publish = lambda cl, ud, mid, rc, pr: self.acks.__setitem__(mid, rc.value)
        c.on_subscribe = lambda cl, ud, mid, rcs, pr: self.acks.__setitem__(mid, rcs[0].value)
        c.on_message = lambda cl, ud, msg: self.received.add(msg.topic)
        self.acks = {}  # message ids start again with a new client
        c.connect("127.0.0.1", self.port)
        c.loop_start()
        assert connected.wait(10), f"{self.name} cannot log in"
        self.c = c
        return c

    def _code(self, mid: int, what: str) -> int:
        wait_for(lambda: mid in self.acks, 10, f"{self.name}'s answer to {what}", 0.002)
        return self.acks[mid]

    def publish(self, topic: str) -> int:
        code = self._code(self._client().publish(topic, b"{}", qos=1).mid, f"publish {topic}")
        if code == 0x87:
            self.close()  # the broker is dropping this connection
        return code

    def fence(self) -> None:
        """Once this returns, every message the broker sent before has arrived: it
        answers a SUBSCRIBE after what it queued for us already."""
        self.subscribe(f"fence/{self.name}")

    def subscribe(self, topic: str) -> int:
        return self._code(self._client().subscribe(topic, qos=1)[1], f"subscribe {topic}")

    def close(self) -> None:
        if self.c is not None:
            self.c.disconnect()
            self.c.loop_stop()
            self.c = None


def test_every_account_may_publish_and_read_only_what_its_job_needs(tmp_path, broker):
    """Every account against every topic: a publish taken or refused (PUBACK 0x87),
    and a message on it delivered to the account or not."""
    two_collectors(tmp_path, broker)
    secrets = Secrets.load(str(broker_secrets(broker)), env={})
    accounts = {n: Account(broker.port, n, secrets.password("mqtt", n) or "") for n in MAY_PUBLISH}
    wrong: list[str] = []
    try:
        for name, acct in accounts.items():
            for topic in PUBLISH:
                code = acct.publish(topic)
                # 0: taken, 0x10: taken and nobody subscribes; 0x87: not authorised
                allowed = code in (0x00, 0x10)
                assert allowed or code == 0x87, f"{name} publish {topic}: reason {code:#x}"
                if allowed != (topic in MAY_PUBLISH[name]):
                    wrong.append(f"{name} {'may' if allowed else 'may not'} publish {topic}")
        for acct in accounts.values():
            acct.received.clear()
            assert acct.subscribe("#") in (0, 1)
        sender = Account(broker.port, ANYONE, ANYONE_PASSWORD)
        for topic in sorted(FOURSAVE):
            assert sender.publish(topic) == 0
        sender.close()
        for name, acct in accounts.items():
            acct.fence()
            for topic in sorted(FOURSAVE):
                if (topic in acct.received) != (topic in MAY_READ[name]):
                    got = "receives" if topic in acct.received else "does not receive"
                    wrong.append(f"{name} {got} {topic}")
    finally:
        for acct in accounts.values():
            acct.close()
    assert wrong == []
    assert accounts["reader"].received == FOURSAVE  # the check can see a delivery


def test_no_login_without_an_account_or_with_a_wrong_password(tmp_path, broker):
    two_collectors(tmp_path, broker)
    secrets = Secrets.load(str(broker_secrets(broker)), env={})
    good = secrets.password("mqtt", "collector-north")
    assert mqtt_login(broker.port, "collector-north", good) == 0
    assert mqtt_login(broker.port, None, None) == 135  # anonymous: not authorised
    # mosquitto answers a wrong password as it answers no account: 0x87 not authorised
    assert mqtt_login(broker.port, "collector-north", good + "x") == 135
    assert mqtt_login(broker.port, "nobody", good) == 135


def test_broker_config_writes_what_mosquitto_reads_and_refuses_missing_passwords(tmp_path):
    """The command as an operator runs it: passwords from the environment, then a
    mosquitto started on its files lets each account in; a missing password is named."""
    config = tmp_path / "c.yaml"
    raw = demo_raw()
    raw["services"].pop("mqtt", None)
    config.write_text(yaml.safe_dump(raw, allow_unicode=True))
    cmd = [sys.executable, "-m", "foursave", "broker-config", "--config", str(config)]
    env = {"PATH": "/usr/bin:/bin"}
    missing = subprocess.run(
        [*cmd, "--out", str(tmp_path / "x")], env=env, text=True, capture_output=True, cwd=ROOT
    )
    assert missing.returncode == 2
    assert "no password for MQTT account(s) collector-demo-collector" in missing.stderr
    assert "FOURSAVE_MQTT_PASSWORD_INGESTER_DEMO_INGESTER" in missing.stderr
    assert "Traceback" not in missing.stderr
    accounts = ["collector-demo-collector", "ingester-demo-ingester", "rules", "api", "reader"]
    pw = {a: f"pw-{i}-'\"$:\\" for i, a in enumerate(accounts)}
    env |= {f"FOURSAVE_MQTT_PASSWORD_{a.upper().replace('-', '_')}": p for a, p in pw.items()}
    done = subprocess.run(
        [*cmd, "--out", str(tmp_path / "gen")], env=env, text=True, capture_output=True, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "gen" / "passwd").stat().st_mode & 0o077 == 0o040  # owner rw, group r
    assert "pw-0" not in (tmp_path / "gen" / "passwd").read_text()  # hashed
    port = free_port()
    svc = mosquitto(port, tmp_path / "mq", auth_dir=tmp_path / "gen").start()
    try:
        for account, password in pw.items():
            assert mqtt_login(port, account, password) == 0, account
        assert mqtt_login(port, None, None) == 135
    finally:
        svc.stop()


def test_password_hash_is_mosquitto_passwds_format(tmp_path):
    """mosquitto_passwd (the broker's own tool) and ours hash the same way: given the
    salt, the same string."""
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(tmp_path / "p"), "alice", "s3cr:et"], check=True
    )
    line = (tmp_path / "p").read_text().strip()
    _, stored = line.split(":", 1)
    _, alg, iterations, salt, _digest = stored.split("$")
    assert alg == "7"
    ours = hash_password("s3cr:et", base64.b64decode(salt), int(iterations))
    assert ours == stored


# ------------------------------------------------------------------ a forged reading


def test_a_collector_publishing_for_another_collectors_device_is_refused_and_counts_it(
    tmp_path, broker, influx_url, database, influx
):
    """South is configured (by mistake or by an intruder) with north's inverter too.
    The broker refuses those readings (PUBACK 0x87), InfluxDB stores none of them,
    south's own meter flows on, and south's status counts the refusals."""
    north, south = two_collectors(tmp_path, broker, influx_url, database)
    (tmp_path / "forged").mkdir()
    forged = make_config(
        tmp_path / "forged",
        broker,
        influx_url,
        database,
        devices=[device(METER), device(INV)],
        extra_services={"collector": {"id": "south"}, "ingester": {"id": "central"}},
        admitted=False,  # the broker's ACL is still the one made for south's real list
    )
    presence: list[dict] = []
    watcher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="watch-presence")
    secrets = Secrets.load(str(broker_secrets(broker)), env={})
    watcher.username_pw_set("reader", secrets.password("mqtt", "reader"))
    watcher.on_message = lambda c, u, m: presence.append(json.loads(m.payload))
    watcher.on_connect = lambda c, *a: c.subscribe(collector_topic("south"), qos=1)
    watcher.connect("127.0.0.1", broker.port)
    watcher.loop_start()
    try:
        with SimulatorThread(forged), IngesterThread(south), CollectorThread(forged) as col:
            pub = col.collector.publisher
            wait_for(lambda: pub.denied.count >= 5, 30, "5 of north's readings held")
            wait_for(lambda: pub.confirmed >= 5, 30, "south's meter readings stored")
            wait_for(
                lambda: any(p.get("held_not_authorised", 0) >= 5 for p in presence),
                30,
                "the refusals in south's status",
            )
            # refused once, then held: mosquitto drops a client it refused a publish
            assert 1 <= pub.not_authorised <= 3
            assert presence[-1]["refused_not_authorised"] >= 1
    finally:
        watcher.loop_stop()
        watcher.disconnect()

    def stored(measurement: str, field: str) -> int:
        rows = influx.rows(f'SELECT count("{field}") AS n FROM "{measurement}"')
        return rows[0]["n"] if rows else 0

    counts = {INV: stored("inverter", "ac_power_w"), METER: stored("meter", "active_power_w")}
    assert counts.get(INV, 0) == 0
    assert counts[METER] >= 5
    # the refused readings are kept (a fixed ACL lets them through), and only they
    left = Spool(forged.services.collector.spool_path, 10**6)
    kept = left.after(0, 10**6)
    left.close()
    held = [row for row in kept if row.topic == reading_topic("demo", INV)]
    assert len(held) == col.published_counts()[INV] >= 5
    assert north.services.collector.id == "north"


# ------------------------------------------------------------------ one configuration, two collectors

CITY = """
collector_rule: by_site
sites:
  - {id: east, name: E, lat: 23, lon: 120}
  - {id: west, name: W, lat: 23, lon: 120}
devices:
  - {id: e-water, site: east, kind: water, profile: generic_water_meter, host: 10.0.0.1}
  - {id: w-water, site: west, kind: water, profile: generic_water_meter, host: 10.0.0.2}
"""


def test_each_collector_of_one_configuration_may_publish_only_its_own_share(tmp_path, broker):
    """A city-wide configuration with a collector per site: each logs in with its own
    account, and mosquitto refuses collector east a reading, a status and the presence
    of west's (PUBACK 0x87) while taking its own, and the other way round."""
    on_broker(broker, CITY)
    secrets = Secrets.load(str(broker_secrets(broker)), env={})
    east, west = (
        Account(broker.port, f"collector-{c}", secrets.password("mqtt", f"collector-{c}") or "")
        for c in ("east", "west")
    )
    try:
        own = {
            east: ("east", "e-water", "west", "w-water"),
            west: ("west", "w-water", "east", "e-water"),
        }
        for acct, (site, device, other_site, other_device) in own.items():
            for topic in (reading_topic(site, device), status_topic(site, device)):
                assert acct.publish(topic) in (0x00, 0x10), f"{acct.name} {topic}"
            assert acct.publish(collector_topic(site)) in (0x00, 0x10)
            refused = (
                reading_topic(other_site, other_device),
                status_topic(other_site, other_device),
                collector_topic(other_site),
            )
            for topic in refused:
                assert acct.publish(topic) == 0x87, f"{acct.name} may publish {topic}"
    finally:
        east.close()
        west.close()


# ------------------------------------------------------------------ TLS


@pytest.fixture
def tls_broker(tmp_path):
    ca = make_test_ca(tmp_path / "ca")
    svc = auth_broker(
        free_port(),
        tmp_path / "mosquitto",
        tls=BrokerTls(ca.ca_cert, ca.server_cert, ca.server_key),
    )
    svc.start()
    yield svc, ca
    svc.stop()


def test_readings_flow_over_mqtts_with_the_brokers_certificate_checked(
    tmp_path, tls_broker, influx_url, database, influx
):
    """Collector and ingester on a TLS-only listener, the broker's certificate checked
    against the CA file: readings stored."""
    broker, ca = tls_broker
    cfg = make_config(
        tmp_path, broker.port, influx_url, database, devices=[device(METER)], admitted=False
    )
    raw = cfg.model_dump(mode="json", exclude_none=True)
    raw["services"]["mqtt"].update(url=f"mqtts://127.0.0.1:{broker.port}", ca_file=str(ca.ca_cert))
    raw["services"]["secrets_file"] = str(broker_secrets(broker))
    path = tmp_path / "tls.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    tls = load_config(path, env={})
    admit(broker, tls, tls_context(str(ca.ca_cert), None, None, True))
    with SimulatorThread(tls), IngesterThread(tls), CollectorThread(tls) as col:
        wait_for(lambda: col.collector.publisher.confirmed >= 5, 30, "5 readings over TLS")
    assert influx.rows('SELECT count("active_power_w") AS n FROM "meter"')[0]["n"] >= 5


def test_tls_refuses_an_unknown_certificate_unless_verification_is_turned_off(tls_broker):
    broker, ca = tls_broker

    def login(context) -> int | None:
        return mqtt_login(broker.port, ANYONE, ANYONE_PASSWORD, context=context)

    # the system's CAs do not know the test CA: the handshake fails, nothing is sent
    with (
        socket.create_connection(("127.0.0.1", broker.port), timeout=5) as raw,
        pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"),
    ):
        tls_context(None, None, None, True).wrap_socket(raw, server_hostname="127.0.0.1")
    assert login(tls_context(str(ca.ca_cert), None, None, True)) == 0  # with the CA file
    assert login(tls_context(None, None, None, False)) == 0  # explicitly unverified
    assert login(None) is None  # plain text on the TLS port


def test_a_listener_that_requires_client_certificates(tmp_path):
    ca = make_test_ca(tmp_path / "ca")
    port = free_port()
    svc = auth_broker(
        port,
        tmp_path / "mq",
        tls=BrokerTls(ca.ca_cert, ca.server_cert, ca.server_key, require_certificate=True),
    ).start()
    try:
        with_cert = tls_context(str(ca.ca_cert), str(ca.client_cert), str(ca.client_key), True)
        without = tls_context(str(ca.ca_cert), None, None, True)
        assert mqtt_login(port, ANYONE, ANYONE_PASSWORD, context=with_cert) == 0
        assert mqtt_login(port, ANYONE, ANYONE_PASSWORD, context=without) is None
    finally:
        svc.stop()


def test_tls_settings_that_cannot_work_are_named(tmp_path):
    with pytest.raises(TlsSettingsError, match=r"ca_file /nonexistent\.pem"):
        tls_context("/nonexistent.pem", None, None, True)
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(TlsSettingsError, match="cert_file"):
        tls_context(None, str(tmp_path / "junk.pem"), str(tmp_path / "junk.pem"), True)
