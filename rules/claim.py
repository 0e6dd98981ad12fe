"""A running rules partition's claim on its sites, on the broker: two partitions never
evaluate the same site, even when an operator starts one twice, or overlapping ones.

Each long-running ``foursave rules`` process (a partition, ``rules/partition.py``, or
``all``) holds a retained claim on ``foursave/v1/_rules/{partition}/{instance}/claim``
(JSON: partition, instance, host, pid, InfluxDB database, sites, since_ms, beat_ms),
published again every :data:`BEAT_S` seconds, with a last will that deletes it (an
empty retained message) when the broker loses the process; it deletes it itself when
it stops.  The topic names the process (``instance``: host, pid and a random part), so
no process ever overwrites another's claim.

Before evaluating anything a partition

1. subscribes to every claim, and waits for its own probe message to come back: the
   broker sends a subscriber the retained messages before anything published after
   the subscription, so every claim held at that moment has arrived;
2. refuses to start when a live claim for the same database shares a site with its own
   (naming the other partition, where it runs and the sites);
3. publishes its claim and waits for it to come back.  A claim for a shared site that
   arrived before its own (another process that passed step 2 at the same moment) was
   stored first by the broker: this process withdraws its claim and refuses to start.
   Of two racing processes the later is always the one that sees the other's claim
   first, so at most one of them runs.

A process that exits or is killed loses its claim at once (a clean stop deletes it; the
broker sends the will of a connection that ends otherwise), one whose machine or
network fails within about one and a half keepalive intervals.  A claim that outlived
its process all the same (the broker restarted while the process was gone) stops being
published again: a claim whose ``beat_ms`` is more than :data:`STALE_BEATS` beats old,
and that no new beat refreshes within one and a half beats of waiting (a clock that is
off must not make a live claim look dead), is deleted and does not count.  After a
reconnection (a broker restart may have lost retained messages) the claim is published
again and the same check made: a process that claimed a shared site meanwhile was
first, and this one stops.

Not covered: ``foursave rules --once`` (a one-off pass an operator runs by hand) claims
nothing; two deployments writing into databases of different names never conflict.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import paho.mqtt.client as mqtt

from foursave.core.config import Services
from foursave.core.mqtt import connect, mqtt_client, refusal
from foursave.core.topics import RULES_CLAIMS_FILTER, rules_claim_topic, rules_probe_topic
from foursave.rules.partition import Partition

log = logging.getLogger("foursave.rules")

CLAIM_TIMEOUT_S = 15.0  # to reach the broker and see a message come back
BEAT_S = 30.0  # a claim is published again this often
STALE_BEATS = 3  # a claim this many beats old may be a dead process's (then waited for)


class ClaimRefused(Exception):
    """This partition may not run (now, or any longer): the message says why."""


@dataclass(frozen=True)
class ClaimInfo:
    """One process's claim, as published."""

    topic: str
    partition: str
    instance: str
    host: str
    pid: int
    database: str
    sites: tuple[str, ...]
    since_ms: int
    beat_ms: int

    def payload(self) -> bytes:
        return json.dumps(
            {
                "state": "online",
                "partition": self.partition,
                "instance": self.instance,
                "host": self.host,
                "pid": self.pid,
                "database": self.database,
                "sites": list(self.sites),
                "since_ms": self.since_ms,
                "beat_ms": self.beat_ms,
            }
        ).encode()

    def where(self) -> str:
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.since_ms / 1000))
        return (
            f"partition {self.partition} (instance {self.instance} on host {self.host}, "
            f"pid {self.pid}, since {since})"
        )


def parse_claim(topic: str, payload: bytes) -> ClaimInfo | None:
    """The claim a message holds; None for a deleted claim (empty) or anything else."""
    if not payload:
        return None
    try:
        body = json.loads(payload)
        return ClaimInfo(
            topic=topic,
            partition=str(body["partition"]),
            instance=str(body["instance"]),
            host=str(body["host"]),
            pid=int(body["pid"]),
            database=str(body["database"]),
            sites=tuple(str(s) for s in body["sites"]),
            since_ms=int(body["since_ms"]),
            beat_ms=int(body["beat_ms"]),
        )
    except (ValueError, KeyError, TypeError):
        log.warning("not a rules partition claim on %s: %r", topic, payload[:200])
        return None


def shared_sites(mine: ClaimInfo, other: ClaimInfo) -> list[str]:
    """The sites both claims hold for the same database (none for the same process)."""
    if other.instance == mine.instance or other.database != mine.database:
        return []
    return sorted(set(mine.sites) & set(other.sites))


def instance_name() -> str:
    """This process, unique on the broker: host, pid and a random part."""
    host = re.sub(r"[^a-z0-9-]+", "-", socket.gethostname().lower()).strip("-") or "host"
    return f"{host[:40]}-{os.getpid()}-{secrets.token_hex(3)}"


Clash = list[tuple[ClaimInfo, list[str]]]


class Claim:
    """The claim of ``partition`` on the broker of ``services``, for ``database``;
    ``on_lost`` is called (from paho's thread) when it is lost after it was held."""

    def __init__(
        self,
        services: Services,
        partition: Partition,
        database: str,
        on_lost: Callable[[], None] | None = None,
        beat_s: float = BEAT_S,
        timeout_s: float = CLAIM_TIMEOUT_S,
    ):
        self.services = services
        self.partition = partition
        self.beat_s = beat_s
        self.timeout_s = timeout_s
        self.instance = instance_name()
        now_ms = int(time.time() * 1000)
        self.mine = ClaimInfo(
            topic=rules_claim_topic(partition.id, self.instance),
            partition=partition.id,
            instance=self.instance,
            host=socket.gethostname(),
            pid=os.getpid(),
            database=database,
            sites=partition.sites,
            since_ms=now_ms,
            beat_ms=now_ms,
        )
        self.on_lost = on_lost
        self.lost: str | None = None  # why the claim was lost after it was held
        self._lock = threading.Lock()
        self._seen: dict[str, ClaimInfo] = {}  # topic -> live claim
        self._beats: dict[str, float] = {}  # topic -> when a claim last came live (monotonic)
        self._snapshot: dict[str, ClaimInfo] = {}  # _seen when a probe or echo came back
        self._probe = rules_probe_topic(partition.id, self.instance)
        self._token = b""
        self._probed = threading.Event()
        self._echoed = threading.Event()
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._stop = threading.Event()
        self._refused: str | None = None
        self._held = False
        self._rechecking = False
        self._beater: threading.Thread | None = None
        self.client = mqtt_client(
            services, "rules", f"foursave-rules-claim-{self.instance}", protocol=mqtt.MQTTv5
        )
        self.client.will_set(self.mine.topic, b"", qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.on_disconnect = lambda *a: self._connected.clear()
        self.client.reconnect_delay_set(1, 30)

    # ------------------------------------------------------------------ paho callbacks
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any):
        if rc.is_failure:
            self._refused = refusal(self.services, "rules", rc)
            self._connected.set()
            return
        with self._lock:
            self._seen.clear()  # a claim deleted meanwhile is not sent again
            held = self._held
            self._rechecking = held
        client.subscribe(RULES_CLAIMS_FILTER, qos=1)
        client.subscribe(self._probe, qos=1)
        if held:  # again after a reconnection: the same check, the same claim
            self._publish_mine()
        self._connected.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == self._probe:
            if msg.payload == self._token:
                with self._lock:
                    self._snapshot = dict(self._seen)
                self._probed.set()
            return
        info = parse_claim(msg.topic, msg.payload)
        with self._lock:
            if info is None:
                self._seen.pop(msg.topic, None)
            else:
                self._seen[msg.topic] = info
                if not msg.retain:  # published now, not a retained copy: a beat
                    self._beats[msg.topic] = time.monotonic()
            # its own claim coming back live (not the retained copy a resubscription
            # sends): every claim the broker stored before it has arrived
            echo = msg.topic == self.mine.topic and info is not None and not msg.retain
            recheck = echo and self._rechecking
            if echo:
                self._snapshot = dict(self._seen)
                self._rechecking = False
            snapshot = self._snapshot
        if echo:
            self._echoed.set()
        if recheck:
            clash = [(c, s) for c, s in self._clash(snapshot) if not self._old(c)]
            if clash:
                self.lost = self._message(clash, "claimed them while this one was away")
                log.error("rules partition %s stops: %s", self.partition.id, self.lost)
                client.publish(self.mine.topic, b"", qos=1, retain=True)
                if self.on_lost is not None:
                    self.on_lost()

    # ------------------------------------------------------------------ the check
    def _clash(self, seen: dict[str, ClaimInfo]) -> Clash:
        """The claims among ``seen`` of other processes sharing a site with this one."""
        out = []
        for c in seen.values():
            shared = shared_sites(self.mine, c) if c.topic != self.mine.topic else []
            if shared:
                out.append((c, shared))
        return out

    def _old(self, c: ClaimInfo) -> bool:
        return time.time() * 1000 - c.beat_ms > STALE_BEATS * self.beat_s * 1000

    def _without_the_dead(self, clash: Clash) -> Clash:
        """``clash`` less the claims that look dead (old beats) and are not published
        again within one and a half beats; those are deleted."""
        old = [c for c, _ in clash if self._old(c)]
        if not old or len(old) < len(clash):
            return clash  # a live one among them: refused anyway
        t0 = time.monotonic()
        deadline = t0 + 1.5 * self.beat_s
        while time.monotonic() < deadline:
            with self._lock:
                beaten = [c for c in old if self._beats.get(c.topic, 0.0) > t0]
            if beaten:
                return clash  # alive (its clock is off)
            time.sleep(0.05)
        for c in old:
            log.warning(
                "deleting the claim of %s: not published again for %.0f s, its process is gone",
                c.where(),
                (time.time() * 1000 - c.beat_ms) / 1000,
            )
            self.client.publish(c.topic, b"", qos=1, retain=True)
        return []

    def _message(self, clash: Clash, how: str) -> str:
        parts = [f"{c.where()} {how}: site(s) {', '.join(s)}" for c, s in clash]
        return (
            f"rules partition {self.partition.id} would evaluate sites another partition "
            f"evaluates, {'; '.join(parts)} (database {self.mine.database!r}).  Stop that "
            "process, or choose partitions that do not overlap (`foursave rules --shard "
            "i/n --list` shows each shard's sites)"
        )

    def _wait(self, event: threading.Event, what: str, deadline: float) -> None:
        while not event.wait(0.05):
            if self._refused:
                raise ClaimRefused(self._refused)
            if time.monotonic() > deadline:
                raise ClaimRefused(
                    f"rules partition {self.partition.id}: {what} within "
                    f"{self.timeout_s:.0f} s on the MQTT broker {self.services.mqtt.url}; a "
                    "partition claims its sites there before evaluating them (the rules "
                    "account must read and write foursave/v1/_rules/#: `foursave "
                    "broker-config` grants it)"
                )
        if self._refused:
            raise ClaimRefused(self._refused)

    def acquire(self) -> None:
        """Check and claim (module docstring), or ``ClaimRefused``."""
        deadline = time.monotonic() + self.timeout_s
        connect(self.client, self.services, clean_start=True)
        self.client.loop_start()
        try:
            self._wait(self._connected, "no connection", deadline)
            self._wait(self._subscribed, "no subscription to the claims", deadline)
            self._token = secrets.token_hex(8).encode()
            self.client.publish(self._probe, self._token, qos=1)
            self._wait(self._probed, "the claims were not read", deadline)
            clash = self._without_the_dead(self._clash(self._snapshot))
            if clash:
                raise ClaimRefused(self._message(clash, "holds them"))
            self._publish_mine()
            self._wait(self._echoed, "its claim did not come back", deadline + 1.5 * self.beat_s)
            clash = self._clash(self._snapshot)
            if clash:
                self._withdraw()
                raise ClaimRefused(self._message(clash, "claimed them a moment before"))
        except BaseException:
            self._stop_client()
            raise
        with self._lock:
            self._held = True
        self._beater = threading.Thread(target=self._beat, name="rules-claim", daemon=True)
        self._beater.start()
        log.info("rules partition %s claimed on %s", self.partition.describe(), self.mine.topic)

    def _publish_mine(self) -> None:
        self.mine = replace(self.mine, beat_ms=int(time.time() * 1000))
        self.client.publish(self.mine.topic, self.mine.payload(), qos=1, retain=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.beat_s):
            if self.client.is_connected():
                self._publish_mine()

    def _withdraw(self) -> None:
        info = self.client.publish(self.mine.topic, b"", qos=1, retain=True)
        try:
            info.wait_for_publish(5)
        except (RuntimeError, ValueError):  # not connected: the will deletes it
            pass

    def _stop_client(self) -> None:
        self._stop.set()
        self.client.disconnect()
        self.client.loop_stop()

    def release(self) -> None:
        """Delete the claim and disconnect (a clean disconnection sends no will)."""
        self._stop.set()
        if self._beater is not None:
            self._beater.join(5)
        with self._lock:
            held, self._held = self._held, False
        if held and self.client.is_connected():
            self._withdraw()
        self._stop_client()
