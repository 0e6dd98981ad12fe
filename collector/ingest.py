"""``foursave ingest``: MQTT -> InfluxDB, acknowledging a message only once it is stored.

The ingester subscribes with a fixed client id and a persistent session, and paho's
``manual_ack``: a message is acknowledged only after InfluxDB answered 204 for the
batch that holds it, so a crash or an InfluxDB outage loses nothing (the broker keeps
and redelivers).  After each batch it also confirms to each collector which readings
it stored (``collector/ack.py``), so a reading leaves the collector's spool only once
it is in InfluxDB, whatever the broker forgets.  Messages that arrived on an earlier
broker connection are written and confirmed too; only their MQTT acknowledgement is
skipped (their ids mean nothing on the new connection).

Batches close at ``batch_max_lines`` or ``batch_max_ms``.  Network errors, 5xx and
refused credentials (401/403, counted in ``auth_failures``) are retried with capped
backoff; a 400 is never retried: the batch is split until the
offending lines are found, they go to the dead-letter store with the server's error
text, and the rest is written.  A message that cannot be stored (not JSON, not a
reading, dated beyond ``future_tolerance_s`` ahead of the ingester's clock, ...) goes
to the dead-letter store with its reason.  Every reading point holds its ``seq``
(field ``seq``); per-device ``seq`` gaps are counted (not in a shared subscription,
below).

Several ingesters (``foursave ingest --ingester ID``; the ids are
``services.ingester.id`` and ``services.ingester.instances``) each have their MQTT
account ``ingester-<ID>``, client id, session, dead-letter file (``{id}`` in the
settings: ``instance_settings``) and status topic.  The session is MQTT 5's with an
explicit Session Expiry Interval (``session_expiry_s``, 1 h: MQTT 5's default, 0,
would end it at every disconnect), or 3.1.1's (``mqtt_version``: never expires, and
paho reads each message for some 25 µs less CPU).  With the same ``shared_group``
they share one subscription, ``$share/<group>/foursave/v1/+/+/reading`` (and
``.../status``): the broker gives each message to one of them.

What a member that dies with messages in flight means, on mosquitto (2.0.11, Debian
12; by experiment, tests/test_shared_ingest.py, and in its source, src/subs.c
``subs__shared_process``, the same in 2.0.22, 2.1.2 and on its development branch):
mosquitto deals the messages out to the members in strict turn, connected or not.
What was in flight to the dead member is not given to another one: it stays in its
session, and so does its turn of every new message, until it comes back with the
same client id (then it gets them all, the ones in flight marked DUP) or its session
expires (then what it held is discarded, and the others get everything).  Its turns
beyond ``max_queued_messages`` are dropped, with the publisher's PUBACK a success all
the same.  So the broker alone would lose a member's share whenever that member never
comes back.  foursave does not depend on it: a reading leaves the collector's spool
only when an ingester confirmed it stored it, and one unconfirmed for
``ack_timeout_s`` while later readings are confirmed is published again
(``collector/publisher.py``); again the broker deals it to a member in turn, to a live
one with a chance of (N-1)/N, and so on until one stores it.  Nothing is lost, back or
gone; a dead member's share is late by about ``ack_timeout_s`` and sent twice, until
its session expires or ``--leave`` ends it.  What a returning member drains from its
session is mostly stored already: the same points again, harmless.  With every member
gone nothing is confirmed, so nothing is sent again: the readings wait in the
sessions and the spools until a member is back.

(Retained statuses: 2.0.11 hands them to a new shared subscription, 2.0.13 and later
do not, as MQTT 5 says; the members store the statuses published after they
subscribed, which collectors publish again on a change and every status interval.)

In a shared subscription a member sees only part of each device's seqs: it counts what
it received (``ingest_seq.received``, ``last_seq``), no gaps and no duplicates, which
it cannot tell apart from the other members' share.  The group's gaps are counted from
the stored points' ``seq`` (``core/seqgaps.py``; the pipeline dashboard's gap table).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from foursave.collector.ack import ack_key, encode_acks
from foursave.core.clock import Clock
from foursave.core.config import Config, IngesterService
from foursave.core.influx import InfluxClient, InfluxRejected, InfluxUnavailable
from foursave.core.late import late_marker
from foursave.core.mqtt import connect, mqtt_client, refusal
from foursave.core.reading import (
    INT_MAX,
    TS_MAX_MS,
    TS_MIN_MS,
    PayloadError,
    Value,
    decode_info,
    decode_reading,
    decode_status,
    load_json,
    reading_lines,
    to_line,
)
from foursave.core.store import hold, instance_path, open_db
from foursave.core.topics import (
    READINGS_FILTER,
    STATUS_FILTER,
    DeviceTopic,
    TopicError,
    ack_topic,
    ingester_topic,
    parse_device_topic,
)

log = logging.getLogger("foursave.ingest")
COLLECTOR_PREFIX = "foursave/v1/_collector/"
INGESTER_PREFIX = "foursave/v1/_ingester/"


def collector_status_line(topic: str, payload: bytes, not_after_ms: int = TS_MAX_MS) -> str:
    """A collector's retained presence -> ``collector_status`` (spool depth, drops)."""
    collector_id = topic[len(COLLECTOR_PREFIX) :].split("/", 1)[0]
    body = load_json(payload, "collector status")
    if not isinstance(body, dict) or body.get("state") not in ("online", "offline"):
        raise PayloadError("collector status: expected 'state' online or offline")
    ts = body.get("ts")
    if not isinstance(ts, int) or isinstance(ts, bool) or not TS_MIN_MS <= ts < TS_MAX_MS:
        raise PayloadError(f"collector status.ts: expected epoch milliseconds, got {ts!r}")
    check_not_ahead("collector status", ts, not_after_ms)
    fields: dict[str, Value] = {"online": body["state"] == "online"}
    for key in (
        "spool_depth",
        "spool_dropped",
        "spool_released",
        "spool_unconfirmed",
        "readings",
        "devices_online",
    ):
        v = body.get(key)
        if isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= INT_MAX:
            fields[key] = v
    return to_line("collector_status", {"collector": collector_id}, fields, ts)


@functools.lru_cache(maxsize=65_536)
def device_topic(topic: str) -> DeviceTopic:
    """``parse_device_topic``, remembered per topic: a device publishes on the same one
    every time.  A topic it refuses raises each time (exceptions are not cached)."""
    return parse_device_topic(topic)


def check_not_ahead(what: str, ts_ms: int, not_after_ms: int) -> None:
    """A point dated beyond the receiver's clock and its tolerance is refused: one
    stray future point would otherwise be "the latest reading" for years and open a
    span the rules engine computes over."""
    if ts_ms > not_after_ms:
        raise PayloadError(
            f"{what}.ts: {ts_ms} is more than the tolerance ahead of the ingester's clock "
            f"(latest accepted {not_after_ms})"
        )


@dataclass
class Message:
    mid: int
    qos: int
    topic: str
    payload: bytes
    received: float
    connection: int = 0  # which broker connection delivered it (acks go on that one only)


class DeadLetters:
    """Messages that cannot be stored, kept with the reason, and the per-device ``seq``
    state (SQLite).  The file is held (``core/store.py`` ``hold``) until ``close``: a
    second ingester given the same file refuses to start (``InstanceBusy``)."""

    def __init__(self, path: str | Path, setting: str = "services.ingester.dead_letter_path"):
        self._held = contextlib.ExitStack()
        self._held.enter_context(hold(path, setting))
        try:
            self.db = self._open(path)
        except BaseException:
            self._held.close()
            raise

    @staticmethod
    def _open(path: str | Path) -> sqlite3.Connection:
        return open_db(
            path,
            """CREATE TABLE IF NOT EXISTS dead_letters (
                 id INTEGER PRIMARY KEY AUTOINCREMENT,
                 received_ms INTEGER NOT NULL,
                 topic TEXT NOT NULL,
                 payload BLOB NOT NULL,
                 line TEXT,
                 error TEXT NOT NULL);
               CREATE TABLE IF NOT EXISTS seq_state (
                 device TEXT PRIMARY KEY, last_seq INTEGER NOT NULL,
                 received INTEGER NOT NULL, gaps INTEGER NOT NULL, duplicates INTEGER NOT NULL);""",
        )

    def add(self, msg: Message, error: str, line: str | None = None) -> None:
        self.db.execute(
            "INSERT INTO dead_letters (received_ms, topic, payload, line, error) VALUES (?,?,?,?,?)",
            (int(msg.received * 1000), msg.topic, msg.payload, line, error),
        )

    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0]

    def rows(self) -> list[tuple[str, bytes, str | None, str]]:
        return self.db.execute(
            "SELECT topic, payload, line, error FROM dead_letters ORDER BY id"
        ).fetchall()

    def close(self) -> None:
        try:
            self.db.close()
        finally:
            self._held.close()


@dataclass
class SeqStats:
    last_seq: int
    received: int = 1
    gaps: int = 0  # seq numbers never (yet) received
    duplicates: int = 0
    resets: int = 0  # the sender started counting again (a new spool)
    missing: set[int] = field(default_factory=set)


class SeqTracker:
    """Counts missing and repeated ``seq`` numbers per device (end-to-end completeness).

    A late message that fills a gap closes it; one already seen counts as a duplicate.
    Every message is written either way: InfluxDB keeps one point per series and time.

    With ``count_gaps`` false (a member of a shared subscription) only ``received`` and
    the highest ``seq`` are kept: the member gets every other reading or so of each
    device, the rest go to the other members, so what it misses says nothing about
    what the group missed (and a seq below its last one may be a late fill or a
    repeat: it cannot tell).  The group's gaps are counted from what is stored: every
    reading point holds its ``seq`` (``core/seqgaps.py``).
    """

    MAX_MISSING = 100_000  # remembered gap numbers per device, to recognise late fills
    RESET_BELOW = 10_000  # a seq this far below the last one means the sender restarted

    def __init__(self, state: dict[str, SeqStats] | None = None, count_gaps: bool = True):
        self.devices: dict[str, SeqStats] = state or {}
        self.count_gaps = count_gaps
        # devices seen since their state was last saved: only those are written again
        self.changed: set[str] = set(self.devices)

    def see(self, device_key: str, seq: int) -> None:
        self.changed.add(device_key)
        s = self.devices.get(device_key)
        if s is None:
            self.devices[device_key] = SeqStats(seq)
            return
        if not self.count_gaps:
            s.received += 1
            if seq > s.last_seq:
                s.last_seq = seq
            elif seq < s.last_seq - self.RESET_BELOW:
                s.resets += 1
                s.last_seq = seq
            return
        if seq > s.last_seq:
            gap = seq - s.last_seq - 1
            if gap:
                s.gaps += gap
                if len(s.missing) + gap <= self.MAX_MISSING:
                    s.missing.update(range(s.last_seq + 1, seq))
            s.last_seq = seq
            s.received += 1
        elif seq in s.missing:
            s.missing.discard(seq)
            s.gaps -= 1
            s.received += 1
        elif seq < s.last_seq - self.RESET_BELOW:
            s.resets += 1  # far below anything recent: the collector lost its spool
            s.last_seq = seq
            s.received += 1
            s.missing.clear()
        else:
            s.duplicates += 1


class UnknownIngester(ValueError):
    """``--ingester ID`` names no ingester of the configuration."""


def instance_settings(cfg: IngesterService, instance: str | None = None) -> IngesterService:
    """The settings of ingester ``instance`` (``foursave ingest --ingester ID``; None:
    the configured ``services.ingester.id``), one of ``services.ingester.ids``: its id
    (hence its MQTT account ``ingester-<ID>`` and status topic), its MQTT client id
    (``{id}`` replaced; without ``{id}`` another ingester's is the configured one
    followed by ``-<ID>``, so that two never share a session) and its dead-letter file
    (``{id}`` replaced; without it every ingester of the file has the same one, and a
    second on the same machine refuses to start)."""
    iid = cfg.id if instance is None else instance
    if iid not in cfg.ids:
        raise UnknownIngester(
            f"no ingester {iid!r}: services.ingester.id and services.ingester.instances "
            f"name {', '.join(repr(i) for i in cfg.ids)}"
        )
    client_id = cfg.client_id
    if "{id}" in client_id:
        client_id = client_id.replace("{id}", iid)
    elif iid != cfg.id:
        client_id = f"{client_id}-{iid}"
    return cfg.model_copy(
        update={
            "id": iid,
            "client_id": client_id,
            "dead_letter_path": instance_path(cfg.dead_letter_path, iid),
        }
    )


def session_properties(expiry_s: int | None) -> Properties:
    """CONNECT properties of the ingester's persistent session: its Session Expiry
    Interval, given explicitly (MQTT 5's default, 0, ends a session at disconnect);
    ``None``: 0xFFFFFFFF, the session never expires."""
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 0xFFFFFFFF if expiry_s is None else expiry_s
    return props


class Ingester:
    def __init__(
        self, config: Config, influx: InfluxClient, clock: Clock, instance: str | None = None
    ):
        svc = config.services
        self.clock = clock  # the readings' clock (foursave.app.clock)
        self.cfg = instance_settings(svc.ingester, instance)
        # the services as this instance sees them: its MQTT account is ingester-<ID>
        svc = svc.model_copy(update={"ingester": self.cfg})
        self.services = svc
        self.influx = influx  # the caller's (foursave.app.ingester), who closes it
        # in a shared subscription each member sees only part of each device's seqs
        self.shared = self.cfg.shared_group is not None
        self.filters = [
            f"$share/{self.cfg.shared_group}/{f}" if self.shared else f
            for f in (READINGS_FILTER, STATUS_FILTER)
        ]
        # the last device_info written per (site, device): written again only on a change
        self._info_seen: dict[tuple[str, str], dict] = {}
        self.q: queue.Queue[Message] = queue.Queue()
        self.stop_event = threading.Event()
        self.written = 0
        self.batches = 0
        self.write_retries = 0
        # writes InfluxDB refused for the credentials (401) or the user's rights (403):
        # retried like an outage, never dead-lettered (the data is not at fault)
        self.auth_failures = 0
        self.unknown_fields = 0  # field values left out of readings: not in the glossary
        self.out_of_bounds = 0  # field values left out of readings: outside their bounds
        self.confirmations = 0  # acknowledgement messages sent to collectors
        self.store_errors = 0  # the dead-letter / seq-state SQLite could not be written
        self.earlier_connection = 0  # written, but arrived on a broker connection since lost
        # per batch: collector -> device -> seqs stored (or dead-lettered) to confirm
        self._batch_acks: dict[str, dict[str, list[int]]] = {}
        self.last_lag_ms: float | None = None
        self.connected = threading.Event()
        self._closed = threading.Event()  # the connection closed (ours or the broker's)
        self.connection = 0
        self._stats_interval_s = 10.0  # run() sets both
        self._next_stats = time.monotonic() + self._stats_interval_s
        # called after each stored batch with (reading ts, received) [epoch ms] per reading
        self.on_batch: Callable[[list[tuple[int, float]]], None] | None = None
        self._batch_ts: list[tuple[int, float]] = []
        # MQTT 5: the session's expiry is ours to set (and must be set: 0 by default),
        # SUBACK says why a subscription is refused (ACL, no shared subscriptions).
        # 3.1.1: a persistent session is clean_session false, and never expires
        self.v5 = self.cfg.mqtt_version == "5"
        c = mqtt_client(
            svc,
            "ingester",
            self.cfg.client_id,
            manual_ack=True,
            **({"protocol": mqtt.MQTTv5} if self.v5 else {"clean_session": False}),
        )
        # paho annotates the delays as int; it only does arithmetic with them, 0.2 s works
        c.reconnect_delay_set(0.2, 5)  # type: ignore[arg-type]
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message
        self.client = c
        # last: held until closed (run() closes it), refused when another process has it
        self.dead = DeadLetters(self.cfg.dead_letter_path)
        try:
            self.seq = SeqTracker(self._load_seq_state(), count_gaps=not self.shared)
        except BaseException:
            self.dead.close()
            raise

    def _load_seq_state(self) -> dict[str, SeqStats]:
        rows = self.dead.db.execute(
            "SELECT device, last_seq, received, gaps, duplicates FROM seq_state"
        ).fetchall()
        return {r[0]: SeqStats(r[1], r[2], r[3], r[4]) for r in rows}

    def _save_seq_state(self) -> None:
        """The state of the devices seen since the last save (all of them the first
        time); forgotten as changed only once written."""
        changed = self.seq.changed
        if not changed:
            return
        devices = self.seq.devices
        with self.dead.db:
            self.dead.db.execute("BEGIN")
            self.dead.db.executemany(
                "INSERT INTO seq_state VALUES (?,?,?,?,?) ON CONFLICT(device) DO UPDATE SET "
                "last_seq=excluded.last_seq, received=excluded.received, gaps=excluded.gaps, "
                "duplicates=excluded.duplicates",
                [
                    (k, s.last_seq, s.received, s.gaps, s.duplicates)
                    for k in changed
                    if (s := devices.get(k)) is not None
                ],
            )
        changed.clear()

    # paho thread ------------------------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            log.error("%s", refusal(self.services, "ingester", reason_code))
            return
        # messages from an earlier connection are written and confirmed to their
        # collectors, but their ids mean nothing now: they get no MQTT acknowledgement
        self.connection += 1
        client.subscribe([(f, 1) for f in self.filters])
        self.connected.set()
        log.info(
            "ingester %s connected as %s, subscribing to %s (session present: %s)",
            self.cfg.id,
            self.cfg.client_id,
            ", ".join(self.filters),
            flags.session_present,
        )
        if self.connection > 1 and not flags.session_present:
            log.warning(
                "the broker had no session for %s any more (away longer than "
                "services.ingester.session_expiry_s, or the broker lost it): what it "
                "queued for this ingester is gone, and the collectors publish those "
                "readings again (they keep them until an ingester confirms them)",
                self.cfg.client_id,
            )

    def _on_disconnect(self, *args) -> None:
        self.connected.clear()
        self._closed.set()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        refused = [
            (t, rc) for t, rc in zip(self.filters, reason_codes, strict=False) if rc.is_failure
        ]
        for topic, rc in refused:
            log.error("the MQTT broker refused the subscription %s: %s", topic, rc)
        if not refused:
            log.info("ingester %s subscribed", self.cfg.id)

    def _on_message(self, client, userdata, msg):
        self.q.put(Message(msg.mid, msg.qos, msg.topic, msg.payload, time.time(), self.connection))

    # writer thread ----------------------------------------------------------------
    def _to_lines(self, msg: Message) -> tuple[list[str], str | None]:
        """Line protocol for a message, or an error for the dead-letter store.  Whatever
        a message holds, it ends here: a failure no check foresaw is its reason too, so
        one message never stops the writer (and with it every later reading)."""
        try:
            return self._decode(msg)
        except Exception as exc:
            log.exception("unexpected failure decoding a message from %s", msg.topic)
            return [], f"unexpected {type(exc).__name__}: {str(exc)[:200]}"

    def _not_after_ms(self) -> int:
        return int((self.clock.time() + self.cfg.future_tolerance_s) * 1000)

    def _confirm(self, collector: str | None, device: str, seq: int) -> None:
        if collector is not None:
            self._batch_acks.setdefault(collector, {}).setdefault(device, []).append(seq)

    def _decode(self, msg: Message) -> tuple[list[str], str | None]:
        not_after = self._not_after_ms()
        if msg.topic.startswith(COLLECTOR_PREFIX):
            try:
                return [collector_status_line(msg.topic, msg.payload, not_after)], None
            except PayloadError as exc:
                return [], str(exc)
        if msg.topic.startswith(INGESTER_PREFIX):
            return [], None  # our own kind's counters are written directly
        try:
            t = device_topic(msg.topic)
            if t.kind == "reading":
                r = decode_reading(msg.payload)
                check_not_ahead("reading", r.ts_ms, not_after)
                if r.dropped:
                    self.unknown_fields += len(r.dropped)
                    log.debug(
                        "%s/%s: fields not in the glossary left out: %s",
                        t.site,
                        t.device,
                        r.dropped,
                    )
                self.out_of_bounds += len(r.out_of_bounds)
                self.seq.see(f"{t.site}/{t.device}", r.seq)
                self._confirm(r.collector, t.device, r.seq)
                self._batch_ts.append((r.ts_ms, msg.received * 1000))
                self.last_lag_ms = msg.received * 1000 - r.ts_ms
                return reading_lines(t.site, t.device, r, seq=True), None
            status = decode_status(msg.payload)
            ts = int(status.pop("ts"))
            check_not_ahead("status", ts, not_after)
            tags = {"site": t.site, "device": t.device}
            lines = [to_line("device_status", tags, status, ts)]
            info = decode_info(msg.payload)
            if info is not None and self._info_seen.get((t.site, t.device)) != info:
                # nameplate and identity: a point when they first arrive and when they
                # change (a new serial or firmware), not with every status
                self._info_seen[(t.site, t.device)] = info
                lines.append(to_line("device_info", tags, info, ts))
            return lines, None
        except (TopicError, PayloadError) as exc:
            return [], str(exc)

    def _write(self, lines: list[str], owners: list[Message]) -> None:
        """Write until stored; on 400 bisect and dead-letter the offending lines."""
        if not lines:
            return
        delay = 0.2
        while True:
            try:
                self.influx.write(lines)
                self.written += len(lines)
                return
            except InfluxRejected as exc:
                if exc.status == 404 or "database not found" in exc.text:
                    self._ensure_database()
                    if self.stop_event.wait(delay):
                        raise InfluxUnavailable("stopping while the database is missing") from None
                    delay = min(delay * 2, self.cfg.retry_max_s)
                    continue
                if len(lines) == 1:
                    log.warning("InfluxDB refused %s: %s", owners[0].topic, exc.text)
                    self.dead.add(owners[0], f"InfluxDB HTTP {exc.status}: {exc.text}", lines[0])
                    return
                mid = len(lines) // 2
                self._write(lines[:mid], owners[:mid])
                self._write(lines[mid:], owners[mid:])
                return
            except InfluxUnavailable as exc:
                if self.stop_event.is_set():
                    raise
                self.write_retries += 1
                if exc.auth:
                    self.auth_failures += 1
                if "retention policy not found" in str(exc) and delay == 0.2:
                    log.error(
                        "InfluxDB has no retention policy for the readings "
                        "(services.influxdb.retention): foursave influx-setup makes it; "
                        "retrying: %s",
                        exc,
                    )
                    self._ensure_retention()
                elif delay == 0.2:
                    if exc.auth:
                        log.error(
                            "InfluxDB refused the ingester's user, retrying until its "
                            "password or rights are fixed (foursave influx-setup): %s",
                            exc,
                        )
                    else:
                        log.warning("InfluxDB unavailable, retrying: %s", exc)
                self._status_while_retrying()
                self.stop_event.wait(delay)
                delay = min(delay * 2, self.cfg.retry_max_s)

    def _ensure_database(self) -> None:
        """CREATE DATABASE (idempotent), waiting for InfluxDB; a user without the right
        to create databases (the writer) is told once and writes to an existing one
        (``foursave influx-setup`` creates it).  The same for the retention policies
        when ``services.influxdb.retention.raw_days`` is set (core/retention.py)."""
        delay = 0.2
        while not self.stop_event.is_set():
            try:
                if not self.influx.create_database():
                    log.info(
                        "user %s may not create databases; writing to %r",
                        self.influx.username,
                        self.influx.database,
                    )
                self._ensure_retention()
                return
            except InfluxRejected as exc:
                log.warning(
                    "cannot create database %r (%s); assuming it exists", self.influx.database, exc
                )
                return
            except InfluxUnavailable as exc:
                if exc.auth:  # the writes say so again, and are retried
                    log.warning(
                        "InfluxDB refused the credentials (%s); assuming database %r exists",
                        exc,
                        self.influx.database,
                    )
                    return
                if delay == 0.2:
                    log.warning("waiting for InfluxDB: %s", exc)
                self.stop_event.wait(delay)
                delay = min(delay * 2, self.cfg.retry_max_s)

    def _ensure_retention(self) -> None:
        try:
            done = self.influx.ensure_retention(int(time.time() * 1000))  # the server's time
        except InfluxRejected as exc:
            log.warning("retention policies of %r not set up: %s", self.influx.database, exc)
            return
        if done is None:
            if self.influx.retention is not None and self.influx.retention.enabled:
                log.info(
                    "user %s may not manage retention policies; foursave influx-setup does",
                    self.influx.username,
                )
            return
        for line in done:
            log.info("%s", line)

    def _next_batch(self) -> list[Message]:
        try:
            first = self.q.get(timeout=0.2)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self.cfg.batch_max_ms / 1000
        get_nowait, most = self.q.get_nowait, self.cfg.batch_max_lines
        while len(batch) < most:  # what is waiting already, without a clock per message
            try:
                batch.append(get_nowait())
            except queue.Empty:
                break
        while len(batch) < self.cfg.batch_max_lines:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                batch.append(self.q.get(timeout=left))
            except queue.Empty:
                break
        return batch

    def process(self, batch: list[Message]) -> None:
        lines: list[str] = []
        owners: list[Message] = []
        self._batch_ts = []
        self._batch_acks = {}
        for msg in batch:
            msg_lines, error = self._to_lines(msg)
            if error is not None:
                log.warning("dead letter from %s: %s", msg.topic, error)
                self.dead.add(msg, error)
                self._confirm_dead_letter(msg)
                continue
            for line in msg_lines:
                lines.append(line)
                owners.append(msg)
        self._write(lines, owners)  # returns only when stored (or dead-lettered)
        self._mark_late()
        self._save_seq_state()
        for msg in batch:
            if msg.connection != self.connection:
                self.earlier_connection += 1
            elif msg.qos > 0:
                self.client.ack(msg.mid, msg.qos)
        self._send_confirmations()
        self.batches += 1
        if self.on_batch:
            self.on_batch(self._batch_ts)

    def _mark_late(self) -> None:
        """After a batch is stored: a ``late_data`` marker when it held readings older
        than a day, which may fall on a day the rollup has closed (core/late.py)."""
        line = late_marker((ts for ts, _ in self._batch_ts), int(self.clock.time() * 1000))
        if line is None:
            return
        try:
            self.influx.write([line])
        except (InfluxUnavailable, InfluxRejected) as exc:
            log.warning(
                "late readings stored, their late_data marker not (%s): the rollup will not "
                "notice them; run foursave rules --once --rebuild",
                exc,
            )

    def _confirm_dead_letter(self, msg: Message) -> None:
        """A collector's reading that ends in the dead-letter store is confirmed too:
        that store is its final home, and the collector must not send it forever."""
        try:
            t = parse_device_topic(msg.topic)
        except TopicError:
            return
        key = ack_key(msg.payload) if t.kind == "reading" else None
        if key is not None:
            self._confirm(key[0], t.device, key[1])

    def _send_confirmations(self) -> None:
        """QoS 1 to each collector: which of its readings this batch stored.  paho keeps
        them queued while the broker is away; one lost (a broker crash) only means the
        collector publishes those readings again, and they are stored once."""
        now_ms = int(time.time() * 1000)
        for collector, seqs in self._batch_acks.items():
            for payload in encode_acks(self.cfg.id, now_ms, seqs):
                self.client.publish(ack_topic(collector), payload, qos=1)
                self.confirmations += 1
        self._batch_acks = {}

    def _process_until_done(self, batch: list[Message]) -> bool:
        """Process a batch, again while the dead-letter store cannot be written (its
        disk full, ...): nothing is acknowledged before it is stored or set aside, and
        writing the batch again is harmless.  False when told to stop meanwhile."""
        delay = 0.2
        while True:
            try:
                self.process(batch)
                return True
            except InfluxUnavailable:
                return False
            except sqlite3.Error as exc:
                self.store_errors += 1
                if delay == 0.2:
                    log.error("cannot write %s (%s): retrying", self.cfg.dead_letter_path, exc)
                if self.stop_event.wait(delay):
                    return False
                delay = min(delay * 2, self.cfg.retry_max_s)

    def _counters(self) -> dict[str, Value]:
        ingest: dict[str, Value] = {
            "written": self.written,
            "batches": self.batches,
            "dead_letters": self.dead.count(),
            "write_retries": self.write_retries,
            "auth_failures": self.auth_failures,
            "unknown_fields": self.unknown_fields,
            "out_of_bounds": self.out_of_bounds,
            "confirmations": self.confirmations,
            "earlier_connection": self.earlier_connection,
            "queue": self.q.qsize(),
        }
        if self.last_lag_ms is not None:
            ingest["lag_ms"] = float(self.last_lag_ms)
        return ingest

    def _publish_status(self, ingest: dict[str, Value], now_ms: int) -> None:
        if self.connected.is_set():
            self.client.publish(
                ingester_topic(self.cfg.id), json.dumps({**ingest, "ts": now_ms}).encode(), 1, True
            )

    def _status_while_retrying(self) -> None:
        """The counters over MQTT while a batch waits for InfluxDB (an outage, refused
        credentials): stats cannot be written there then, and the status shows why."""
        if time.monotonic() >= self._next_stats:
            self._publish_status(self._counters(), int(time.time() * 1000))
            self._next_stats = time.monotonic() + self._stats_interval_s

    def write_stats(self) -> None:
        now_ms = int(time.time() * 1000)
        lines = []
        for key, s in self.seq.devices.items():
            site, device = key.split("/", 1)
            fields: dict[str, Value] = {"received": s.received, "last_seq": s.last_seq}
            if self.seq.count_gaps:  # a shared subscription's member cannot tell
                fields |= {"gaps": s.gaps, "duplicates": s.duplicates}
            lines.append(
                to_line(
                    "ingest_seq",
                    {"site": site, "device": device, "ingester": self.cfg.id},
                    fields,
                    now_ms,
                )
            )
        ingest = self._counters()
        lines.append(to_line("ingest_stats", {"ingester": self.cfg.id}, ingest, now_ms))
        try:
            self.influx.write(lines)
        except (InfluxUnavailable, InfluxRejected) as exc:
            log.debug("stats not written: %s", exc)
        self._publish_status(ingest, now_ms)

    def run(self, stats_interval_s: float = 10.0) -> None:
        """Blocking: until ``stop_event`` is set."""
        self._ensure_database()
        if self.v5:
            props = session_properties(self.cfg.session_expiry_s)
            connect(self.client, self.services, clean_start=False, properties=props)
        else:
            connect(self.client, self.services)
        self.client.loop_start()
        self._stats_interval_s = stats_interval_s
        self._next_stats = time.monotonic() + stats_interval_s
        try:
            while not self.stop_event.is_set():
                batch = self._next_batch()
                if batch and not self._process_until_done(batch):
                    break  # stopping while InfluxDB is away: unacked, redelivered later
                if time.monotonic() >= self._next_stats:
                    self.write_stats()
                    self._next_stats = time.monotonic() + stats_interval_s
        finally:
            # the last batch's PUBACKs go out before the DISCONNECT queued after them:
            # wait for the close, or the broker hands those readings out again
            was_connected = self.connected.is_set()
            self._closed.clear()
            self.client.disconnect()
            if was_connected:
                self._closed.wait(5)
            self.client.loop_stop()
            self.dead.close()
            log.info("ingester stopped: %d lines written in %d batches", self.written, self.batches)

    def stop(self) -> None:
        self.stop_event.set()

    def leave(self, timeout_s: float = 10.0) -> None:
        """End this ingester's session on the broker and clear its retained status
        (``foursave ingest --ingester ID --leave``): for an ingester taken out of
        service for good, which would otherwise keep receiving its share of a shared
        subscription until its session expires.  What the broker held for it is
        dropped; the collectors publish those readings again (unconfirmed).  Closes the
        dead-letter store; ``ConnectionError`` when the broker cannot be reached."""
        v5 = {"protocol": mqtt.MQTTv5} if self.v5 else {"clean_session": True}
        c = mqtt_client(self.services, "ingester", self.cfg.client_id, **v5)
        answer: list = []
        connected = threading.Event()

        def on_connect(client, userdata, flags, reason_code, properties):
            answer.append(reason_code)
            connected.set()

        c.on_connect = on_connect
        # a clean start discards the old session; no expiry given: 0, gone at disconnect
        # (3.1.1: a clean session is discarded at connect and at disconnect)
        connect(c, self.services, **({"clean_start": True} if self.v5 else {}))
        c.loop_start()
        try:
            if not connected.wait(timeout_s):
                raise ConnectionError(
                    f"no answer from the MQTT broker {self.services.mqtt.host}:"
                    f"{self.services.mqtt.port} within {timeout_s:.0f} s"
                )
            if answer[0].is_failure:
                raise ConnectionError(refusal(self.services, "ingester", answer[0]))
            info = c.publish(ingester_topic(self.cfg.id), b"", qos=1, retain=True)
            info.wait_for_publish(timeout_s)
            c.disconnect()
        finally:
            c.loop_stop()
            self.dead.close()
        log.info("ingester %s left: session %s ended", self.cfg.id, self.cfg.client_id)
