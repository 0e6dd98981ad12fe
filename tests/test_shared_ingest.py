"""Ingesters scaled out with an MQTT 5 shared subscription (collector/ingest.py): two
``foursave ingest --ingester ID`` processes from one configuration in one group, real
mosquitto (Debian's 2.0.11 here), real influxd, a real collector polling simulators
over Modbus TCP.

What is shown: the readings are split between the two and each is stored, all of them,
one point each (the stored ``seq`` field is the witness, core/seqgaps.py); a member
SIGKILLed with readings in flight loses none, whether it comes back (mosquitto kept its
share in its persistent session and hands it over) or never does (mosquitto keeps
routing a share of the readings to its session, where nobody takes them: the
collector publishes what stays unconfirmed again, collector/publisher.py, until the
survivor has stored it)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from foursave.collector.ack import decode_ack
from foursave.collector.ingest import instance_settings, session_properties
from foursave.core.config import Config
from foursave.core.influx import InfluxClient
from foursave.core.influxql import column, eq, select
from foursave.core.mqtt import mqtt_client
from foursave.core.reading import SEQ_FIELD
from foursave.core.seqgaps import seq_gaps
from foursave.core.topics import ack_topic
from foursave.localstack import die_with_parent
from foursave.simulators.server import SimulatorThread
from tests.helpers import (
    ANYONE,
    ANYONE_PASSWORD,
    ROOT,
    CollectorThread,
    make_config,
    mqtt_anyone,
    mqtt_as,
    reap,
    wait_for,
)

pytestmark = pytest.mark.integration

A, B = "ing-a", "ing-b"
MEMBER = [sys.executable, "-m", "foursave", "ingest"]


def shared_config(tmp_path: Path, broker, influx_url: str, database: str) -> Config:
    """The demo's six devices every 0.2 s; ingesters ing-a and ing-b in group ``city``,
    each with its own client id and dead-letter file ({id}); unconfirmed readings are
    published again after 1 s once later ones are confirmed."""
    return make_config(
        tmp_path,
        broker,
        influx_url,
        database,
        extra_services={
            "ingester": {
                "id": A,
                "instances": [B],
                "shared_group": "city",
                "client_id": f"ingest-{database}-{{id}}",
                "dead_letter_path": str(tmp_path / "dead-{id}.sqlite"),
            },
            "collector": {"ack_timeout_s": 1.0},
        },
    )


class Member:
    """``foursave ingest --ingester ID`` as its own process, its log in a file."""

    def __init__(self, tmp_path: Path, iid: str, run: int = 1):
        self.iid = iid
        self.log = tmp_path / f"{iid}-{run}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("FOURSAVE_")}
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [*MEMBER, "--ingester", iid, "--config", str(tmp_path / "config.yaml")],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )
        wait_for(self._subscribed, 60, f"{iid} subscribed")

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def _subscribed(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.iid} exited {self.proc.returncode}:\n{self.text()}")
        return f"ingester {self.iid} subscribed" in self.text()

    def kill_in_flight(self) -> None:
        """Frozen first (SIGSTOP: the broker goes on sending it readings it never
        acknowledges, so some are surely in flight), then SIGKILL."""
        self.proc.send_signal(signal.SIGSTOP)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                pass
        reap(self.proc)


class Acks:
    """What each ingester confirmed to the collector (the reader account listening
    on the collector's acknowledgement topic): ingester -> {(device, seq)}."""

    def __init__(self, cfg: Config):
        self.by: dict[str, set[tuple[str, int]]] = {}
        self.lock = threading.Lock()
        self.client = mqtt_as(cfg, "reader")
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.subscribe(ack_topic(cfg.services.collector.id), 1)
        assert subscribed.wait(10), "no SUBACK for the acknowledgement topic"

    def _on_message(self, client, userdata, msg):
        who = json.loads(msg.payload)["ingester"]
        got = {
            (d, s)
            for d, rs in decode_ack(msg.payload).items()
            for lo, hi in rs
            for s in range(lo, hi + 1)
        }
        with self.lock:
            self.by.setdefault(who, set()).update(got)

    def count(self, who: str) -> int:
        with self.lock:
            return len(self.by.get(who, ()))

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def session_present(cfg: Config, client_id: str) -> bool:
    """Whether the broker holds a session for ``client_id``: resumed for a moment (no
    clean start, an ingester's expiry), so what it held is handed over and acknowledged
    meanwhile; ask only once those readings are stored."""
    got: list[bool] = []
    answered = threading.Event()
    c = mqtt_client(cfg.services, "reader", client_id, protocol=mqtt.MQTTv5)

    def on_connect(client, userdata, flags, reason_code, properties):
        got.append(not reason_code.is_failure and flags.session_present)
        answered.set()

    c.on_connect = on_connect
    c.connect(
        cfg.services.mqtt.host,
        cfg.services.mqtt.port,
        clean_start=False,
        properties=session_properties(3600),
    )
    c.loop_start()
    try:
        assert answered.wait(10), "no CONNACK"
    finally:
        c.disconnect()
        c.loop_stop()
    return got[0]


def stored_seqs(influx: InfluxClient, cfg: Config) -> dict[str, list[int]]:
    """Per device, the seq of every reading point stored (duplicates would show)."""
    out = {}
    for d in cfg.devices:
        rows = influx.rows(select(column(SEQ_FIELD), d.kind, where=[eq("device", d.id)]))
        out[d.id] = sorted(r[SEQ_FIELD] for r in rows if r.get(SEQ_FIELD) is not None)
    return out


def all_stored(influx: InfluxClient, cfg: Config, taken: dict[str, int]) -> bool:
    """Every reading taken (seq 0 .. taken - 1 of each device) is stored."""
    have = stored_seqs(influx, cfg)
    return all(set(range(n)) <= set(have[d]) for d, n in taken.items())


def test_two_ingesters_in_a_shared_group_split_the_readings_and_store_each_once(
    tmp_path, broker, influx_url, database, influx
):
    cfg = shared_config(tmp_path, broker, influx_url, database)
    acks = Acks(cfg)
    members: list[Member] = []
    try:
        members = [Member(tmp_path, A), Member(tmp_path, B)]
        with SimulatorThread(cfg):
            with CollectorThread(cfg) as col:
                wait_for(
                    lambda: acks.count(A) >= 30 and acks.count(B) >= 30,
                    60,
                    "both ingesters storing",
                )
            taken = col.published_counts()
            wait_for(lambda: all_stored(influx, cfg, taken), 60, f"all of {taken} stored")
        have = stored_seqs(influx, cfg)
        gaps = seq_gaps(influx, 0, int(time.time() * 1000) + 86_400_000)
    finally:
        for m in members:
            m.stop()
        acks.close()
    assert {d: seqs for d, seqs in have.items()} == {d: list(range(n)) for d, n in taken.items()}
    # the split: each stored a share; and the group's gaps, from the stored seqs, are none
    assert acks.count(A) > 0 and acks.count(B) > 0
    assert acks.count(A) + acks.count(B) >= sum(taken.values())
    assert {g.device: (g.stored, g.gaps) for g in gaps} == {d: (n, 0) for d, n in taken.items()}
    assert col.collector.spool.depth == 0
    for m in members:
        assert m.proc.returncode == 0, m.text()


def test_a_member_killed_with_readings_in_flight_loses_nothing_back_or_gone(
    tmp_path, broker, influx_url, database, influx
):
    """ing-a is killed with readings in flight and comes back: its persistent session
    gave it what mosquitto kept for it (the readings in flight, and its share of those
    published while it was away).  Then ing-b is killed for good: mosquitto goes on
    giving its session a share of the new readings, and the collector publishes them
    again until ing-a confirms them."""
    cfg = shared_config(tmp_path, broker, influx_url, database)
    acks = Acks(cfg)
    members: list[Member] = []
    try:
        members = [Member(tmp_path, A), Member(tmp_path, B)]
        a, b = members
        with SimulatorThread(cfg), CollectorThread(cfg) as col:
            pub = col.collector.publisher
            wait_for(lambda: acks.count(A) >= 20 and acks.count(B) >= 20, 60, "both storing")

            # ing-a dies with readings in flight, readings go on, ing-a comes back
            a.kill_in_flight()
            b_before = acks.count(B)
            wait_for(lambda: acks.count(B) >= b_before + 30, 30, "ing-b storing alone")
            a.kill()
            a_before = acks.count(A)
            wait_for(lambda: acks.count(B) >= b_before + 60, 30, "readings while ing-a is away")
            a = Member(tmp_path, A, run=2)
            members.append(a)
            assert "session present: True" in a.text()  # its session, kept by the broker
            wait_for(lambda: acks.count(A) > a_before, 30, "ing-a storing again")
            cut = col.published_counts()
            wait_for(lambda: all_stored(influx, cfg, cut), 60, f"all of {cut} stored")

            # ing-b dies for good: its session stays and keeps taking a share
            republished = pub.republished
            b.kill_in_flight()
            a_now = acks.count(A)
            wait_for(lambda: acks.count(A) >= a_now + 30, 30, "ing-a storing alone")
            b.kill()
            wait_for(lambda: acks.count(A) >= a_now + 90, 30, "readings after ing-b's death")
            gone = col.published_counts()
            wait_for(lambda: all_stored(influx, cfg, gone), 60, f"all of {gone} stored")
            republished_since = pub.republished - republished
        have = stored_seqs(influx, cfg)
        # taken out of service for good: --leave ends its session (and its share)
        b_client = instance_settings(cfg.services.ingester, B).client_id
        assert session_present(cfg, b_client)
        left = subprocess.run(
            [*MEMBER, "--ingester", B, "--config", str(tmp_path / "config.yaml"), "--leave"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
        )
        assert left.returncode == 0, left.stderr
        assert not session_present(cfg, b_client)
    finally:
        for m in members:
            m.stop()
        acks.close()
    print(
        f"\ntaken {sum(gone.values())} readings; confirmed by ing-a {acks.count(A)}, by "
        f"ing-b {acks.count(B)}; published again after ing-b's death: {republished_since}"
    )
    # nothing lost: every reading taken until then is stored, one point each
    for d, n in gone.items():
        assert have[d][:n] == list(range(n)), d
    # ing-b's share after its death reached InfluxDB only by being published again
    assert republished_since > 0


class Sub:
    """mosquitto's own ``mosquitto_sub`` as a member of a shared subscription: MQTT 5,
    persistent session (1 h), QoS 1; its debug lines say which PUBLISH came with DUP."""

    def __init__(self, broker, client_id: str):
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [
                *("stdbuf", "-oL", "mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.port)),
                *("-u", ANYONE, "-P", ANYONE_PASSWORD, "-V", "mqttv5", "-c", "-x", "3600"),
                *("-i", client_id, "-q", "1", "-d", "-t", "$share/g/foursave/t/#"),
            ],
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=die_with_parent,
        )
        threading.Thread(target=self._read, daemon=True).start()
        wait_for(lambda: any("received SUBACK" in x for x in self.lines), 10, "SUBACK")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.strip())

    def payloads(self) -> list[str]:
        return [x for x in list(self.lines) if x[:1] in ("m", "n") and x[1:].isdigit()]

    def dups(self) -> int:
        return sum(1 for x in list(self.lines) if "received PUBLISH (d1," in x)


def test_mosquitto_keeps_a_dead_members_share_for_its_session(broker):
    """What the delivery above stands on, on the broker itself (Debian 12's mosquitto
    2.0.11): a member that dies with messages in flight does not lose them to the group
    and does not pass them on either; they stay in its session, and so does its share
    of every new message (strict round robin over the members, connected or not:
    src/subs.c subs__shared_process), until it comes back and gets them all, those that
    were in flight marked DUP.  (Under ``max_queued_messages`` its share beyond the
    limit is dropped, PUBACK'd to the publisher all the same; after its session
    expires the survivors get everything and what it held is gone: in both cases only
    the collector's spool still has those readings.)"""
    a, b = Sub(broker, "member-a"), Sub(broker, "member-b")
    pub = mqtt_anyone(broker, protocol=mqtt.MQTTv5)
    a2: Sub | None = None
    try:
        a.proc.send_signal(signal.SIGSTOP)  # connected, reading nothing: all in flight
        for info in [pub.publish(f"foursave/t/{i}", f"m{i:02d}", qos=1) for i in range(20)]:
            info.wait_for_publish(10)
        wait_for(lambda: len(b.payloads()) >= 10, 10, "member-b's half")
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait(10)
        for info in [pub.publish(f"foursave/t/{i}", f"n{i:02d}", qos=1) for i in range(20)]:
            info.wait_for_publish(10)
        wait_for(lambda: len(b.payloads()) >= 20, 10, "member-b's half of the new ones")
        a2 = Sub(broker, "member-a")  # comes back: its session, with what it held
        wait_for(lambda: len(a2.payloads()) >= 20, 10, "member-a's session")
        got_b, got_a = set(b.payloads()), set(a2.payloads())
        dups = a2.dups()
    finally:
        pub.loop_stop()
        pub.disconnect()
        for s in (a, b, a2):
            if s is not None:
                reap(s.proc)
    sent = {f"m{i:02d}" for i in range(20)} | {f"n{i:02d}" for i in range(20)}
    assert len(got_b) == 20 and len(got_a) == 20  # half each, nothing passed on to b
    assert got_a | got_b == sent and not got_a & got_b
    assert len(got_a & {f"m{i:02d}" for i in range(20)}) == 10 and dups == 10
