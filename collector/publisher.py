"""MQTT publishing with store-and-forward and end-to-end acknowledgement.

Every reading goes to the disk spool first; a forwarder hands spooled readings to the
broker in order (QoS 1).  The broker's PUBACK only marks a reading accepted; it leaves
the spool when an ingester confirms it stored it (``collector/ack.py``).  While the
broker is away readings pile up in the spool (bounded) and are replayed in order when
it is back.

The forwarder works in rounds (``Publisher.run``): a round writes what came since the
last, readings taken, PUBACKs and confirmations, in one spool transaction (one fsync),
in a thread so that the polls go on meanwhile, then hands the broker what it can take.
A reading is published only once its round is committed.

A reading handed to the broker and not confirmed within ``ack_timeout_s`` is published
again once there is evidence it was lost:
- the broker connection was lost and made again since it was sent (a broker that
  crashed and restarted from its snapshot forgot what it took after it), or
- a reading sent after it has been confirmed (the pipeline is flowing, this one is not).
Without either (an ingester or InfluxDB away) nothing is sent twice: the broker holds
the readings for the ingesters' sessions, and the spool keeps them until confirmed.

Device status and collector presence are retained messages; presence has a last will
of ``offline``.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import logging
import sqlite3
import time
from collections import deque
from typing import NamedTuple

import paho.mqtt.client as mqtt

from foursave.collector.ack import decode_ack
from foursave.collector.spool import Committed, Spool, Spooled
from foursave.core.config import Config
from foursave.core.mqtt import connect, mqtt_client, refusal
from foursave.core.reading import PayloadError
from foursave.core.topics import ack_topic, collector_topic

log = logging.getLogger("foursave.collector.mqtt")

NOT_AUTHORISED = 0x87  # MQTT 5 reason code: the broker's ACL does not let us publish there
DENIED_RETRY_S = (10.0, 300.0)  # a refused topic is tried again after this, doubling


class Denied:
    """Topics the broker refused as "not authorised", and the readings held for them.

    mosquitto 2.0 answers such a publish with PUBACK 0x87 and then drops the client's
    connection (eclipse-mosquitto/mosquitto#2579), so after the first refusal nothing
    more is published on that topic: its readings stay in the spool, held, and one of
    them is tried again after 10 s, then 20 s ... up to 5 min (the ACL may be fixed).
    When that one is taken, the topic's held readings are published again in order."""

    def __init__(self) -> None:
        self.held: dict[str, list[int]] = {}  # topic -> spool ids, in order
        self.probe: int | None = None  # the spool id tried again, until its PUBACK
        self._last: str | None = None  # the topic tried last: the next try is another's
        self.at = 0.0
        self.delay = DENIED_RETRY_S[0]

    def __contains__(self, topic: str) -> bool:
        return topic in self.held

    @property
    def count(self) -> int:
        return sum(len(v) for v in self.held.values())

    def refuse(self, topic: str, sid: int, now: float) -> bool:
        """Hold ``sid``, refused on ``topic``; true when the topic was not refused before."""
        new = topic not in self.held
        if not self.held:
            self.at = now + self.delay
        self.hold(topic, sid)
        if sid == self.probe:  # still refused: wait longer before the next try
            self.probe = None
            self.delay = min(self.delay * 2, DENIED_RETRY_S[1])
            self.at = now + self.delay
        return new

    def reconnected(self, now: float) -> None:
        """A probe's PUBACK lost with the connection (mosquitto drops it after refusing)
        is as good as a refusal: tried again after the wait."""
        if self.probe is not None:
            self.probe = None
            self.at = now + self.delay

    def forget(self, sid: int) -> None:
        """``sid`` left the spool (its bound): no longer held, nor tried."""
        if sid == self.probe:
            self.probe = None
        for topic, ids in list(self.held.items()):
            if sid in ids:
                ids.remove(sid)
                if not ids:
                    del self.held[topic]

    def hold(self, topic: str, sid: int) -> None:
        ids = self.held.setdefault(topic, [])
        if sid not in ids:
            bisect.insort(ids, sid)

    def due(self, now: float) -> int | None:
        """The spool id to try again now, if any: the oldest of the next topic in turn."""
        if self.probe is not None or not self.held or now < self.at:
            return None
        topics = list(self.held)
        after = topics.index(self._last) + 1 if self._last in self.held else 0
        self._last = topics[after % len(topics)]
        self.probe = self.held[self._last][0]
        return self.probe

    def taken(self, sid: int) -> list[int]:
        """``sid`` was taken: if it was the probe, its topic is released and its other
        held readings are returned, to be published again."""
        if sid != self.probe:
            return []
        self.probe = None
        self.delay = DENIED_RETRY_S[0]
        for topic, ids in list(self.held.items()):
            if sid in ids:
                del self.held[topic]
                return [i for i in ids if i != sid]
        return []


def presence(state: str, collector_id: str, **counters: int) -> bytes:
    return json.dumps(
        {"state": state, "collector": collector_id, "ts": int(time.time() * 1000), **counters}
    ).encode()


ROUND_S = 0.01  # the forwarder's rounds (one spool transaction each) at most this often


class _Round(NamedTuple):
    """What one round of the forwarder writes to the spool (``Spool.commit``)."""

    rows: list[Spooled]
    seqs: dict[str, int]
    accepted: list[int]
    legacy: list[int]
    acks: dict[str, list[tuple[int, int]]]
    unspooled_dropped: int

    @property
    def writes(self) -> bool:
        return bool(
            self.rows
            or self.seqs
            or self.accepted
            or self.legacy
            or self.acks
            or self.unspooled_dropped
        )


class Publisher:
    def __init__(self, config: Config, spool: Spool):
        svc = config.services
        self.collector_id = svc.collector.id
        self.spool = spool
        self.max_inflight = svc.collector.max_inflight
        self.ack_timeout_s = svc.collector.ack_timeout_s
        self._pending: list[Spooled] = []
        self._seqs: dict[str, int] = {}
        # PUBACKed, to be written in the next round: spool ids accepted, rows from
        # before acknowledgements to delete, readings refused as not authorised
        self._accepting: list[int] = []
        self._deleting: list[int] = []
        self._denying: list[int] = []
        self._acked: deque[tuple[int, int]] = deque()  # (mid, PUBACK reason code)
        self._retry_from: int | None = None  # spool id to publish again from
        self._retry_at = 0.0
        self._retry_delay = 1.0
        self.refused = 0  # PUBACKs that did not accept the reading
        # of them, "not authorised": the ACL refuses this collector those devices' topics.
        # Kept in the spool and tried again now and then (the ACL may be fixed), on their
        # own, so that they hold nothing else up
        self.not_authorised = 0
        self.denied = Denied()
        self._released: list[int] = []  # held readings whose topic the broker takes again
        self._suspects: list[int] = []  # in flight when the connection dropped: one by one
        self._inflight: dict[int, int] = {}  # mqtt mid -> spool id, until the PUBACK
        # spool id -> when it was last handed to the broker (monotonic), oldest first,
        # until an ingester confirms it
        self._sent: dict[int, float] = {}
        self._legacy: set[int] = set()
        self._confirms: deque[bytes] = deque()  # acknowledgement payloads from ingesters
        self._confirmed_sent = float("-inf")  # latest send time of a confirmed reading
        self._connected_at = float("-inf")  # when the current broker connection began
        self._cursor = 0  # last spool id handed to the client
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self.connected = False
        self.published = 0
        self.acked = 0  # PUBACKs: the broker took it
        self.confirmed = 0  # an ingester stored it: it left the spool
        self.republished = 0  # sent again, unconfirmed and probably lost
        self.bad_acks = 0
        self.spool_errors = 0  # spool writes that failed (disk full, ...): retried
        self._spool_failing: str | None = None
        # readings kept in memory while the spool cannot be written; beyond this the
        # oldest go (counted as dropped), so a full disk cannot exhaust memory too
        self.max_pending = min(svc.collector.spool_max_readings, 100_000)
        self._unspooled_dropped = 0
        # MQTT 5: a PUBACK carries a reason code, so "no subscriber" or "not authorised"
        # keeps the reading in the spool instead of deleting it (3.1.1 acks them all)
        c = mqtt_client(
            svc, "collector", f"foursave-collector-{self.collector_id}", protocol=mqtt.MQTTv5
        )
        c.will_set(
            collector_topic(self.collector_id), presence("offline", self.collector_id), 1, True
        )
        c.max_inflight_messages_set(self.max_inflight)
        c.max_queued_messages_set(0)
        # paho annotates the delays as int; it only does arithmetic with them, 0.2 s works
        c.reconnect_delay_set(0.2, 5)  # type: ignore[arg-type]
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        c.on_message = self._on_message
        self.client = c
        self._services = svc
        self._host, self._port = svc.mqtt.host, svc.mqtt.port

    # paho's network thread ------------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            log.error("%s", refusal(self._services, "collector", reason_code))
            return
        client.subscribe(ack_topic(self.collector_id), qos=1)
        client.publish(collector_topic(self.collector_id), self._online(), 1, True)
        self._loop.call_soon_threadsafe(self._set_connected, True)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        # paho would send its unacknowledged messages again first thing after the
        # reconnect, all at once; the spool is what counts here, and the readings in
        # flight go again one by one (``_suspects``).  paho has no call for "forget what
        # you were sending", so its queue is emptied under its own lock.
        with client._out_message_mutex:
            client._out_messages.clear()
            client._inflight_messages = 0
        self._loop.call_soon_threadsafe(self._set_connected, False)

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        self._acked.append((mid, reason_code.value))
        self._loop.call_soon_threadsafe(self._wake.set)

    def _on_message(self, client, userdata, msg):
        self._confirms.append(msg.payload)
        self._loop.call_soon_threadsafe(self._wake.set)

    # the event loop -------------------------------------------------------------
    def _set_connected(self, value: bool) -> None:
        if value != self.connected:
            log.info("broker %s:%d %s", self._host, self._port, "connected" if value else "lost")
            if not value:
                # what was in flight without a PUBACK goes again one at a time: when the
                # broker dropped us for a publish it refused, the refusal's PUBACK may
                # have been lost with the connection (mosquitto closes with our later
                # publishes unread: a reset), and only a lone publish gets it back
                self._process_acks()
                self._suspects = sorted(set(self._suspects) | set(self._inflight.values()))
            if value:
                self._connected_at = time.monotonic()
                # PUBACKs of the lost connection will not come: those readings wait
                # for an ingester's confirmation like the others
                self._inflight.clear()
                self.denied.reconnected(self._connected_at)
        self.connected = value
        self._wake.set()

    def start(self) -> None:
        connect(self.client, self._services, clean_start=True)
        self.client.loop_start()

    def enqueue(self, topic: str, payload: bytes, device: str, seq: int) -> None:
        self._pending.append(Spooled(topic, payload, device, seq))
        self._seqs[device] = seq
        self._wake.set()

    def _online(self, **counters: int) -> bytes:
        return presence(
            "online",
            self.collector_id,
            spool_depth=self.spool.depth,
            spool_dropped=self.spool.dropped,
            spool_released=self.spool.released,
            spool_unconfirmed=len(self._sent),
            refused=self.refused,
            refused_not_authorised=self.not_authorised,
            held_not_authorised=self.denied.count,
            **counters,
        )

    def publish_presence(self, **counters: int) -> None:
        """Retained collector status: online, with the spool's depth and drops."""
        self.publish_status(collector_topic(self.collector_id), self._online(**counters))

    def publish_status(self, topic: str, payload: bytes) -> None:
        """Retained, not spooled: a status is only worth its latest value."""
        if self.connected:
            self.client.publish(topic, payload, 1, True)

    def _flush(self) -> None:
        if not (self._pending or self._seqs):
            return
        try:
            dropped = self.spool.append(self._pending, self._seqs)
            if self._unspooled_dropped:
                self.spool.drop_unspooled(self._unspooled_dropped)
                self._unspooled_dropped = 0
        except sqlite3.Error as exc:
            self._spool_failed(exc)
            excess = len(self._pending) - self.max_pending
            if excess > 0:
                del self._pending[:excess]
                self._unspooled_dropped += excess
            return
        self._spool_ok()
        if dropped:
            log.warning(
                "spool full (%d readings): dropped the %d oldest, %d dropped in all",
                self.spool.max_rows,
                dropped,
                self.spool.dropped,
            )
        self._pending = []
        self._seqs = {}

    def _spool_failed(self, exc: sqlite3.Error) -> None:
        self.spool_errors += 1
        if self._spool_failing is None:
            log.error(
                "cannot write the spool %s (%s): keeping up to %d readings in memory and "
                "retrying (logged once while it lasts)",
                self.spool.path,
                exc,
                self.max_pending,
            )
        self._spool_failing = str(exc)

    def _spool_ok(self) -> None:
        if self._spool_failing is not None:
            log.info(
                "spool %s writable again (%d readings dropped from memory meanwhile)",
                self.spool.path,
                self.spool.dropped,
            )
            self._spool_failing = None

    def _process_acks(self) -> None:
        """The PUBACKs received, in memory: what they mean for the spool is written in
        the next round (``_round``), so this may run while a round is being written."""
        accepted, legacy, denied = [], [], []
        while self._acked:
            mid, code = self._acked.popleft()
            sid = self._inflight.pop(mid, None)
            if sid is None:
                continue
            if code == 0 and sid == self.denied.probe:
                self._released += self.denied.taken(sid)
            if code == NOT_AUTHORISED:
                self.refused += 1
                self.not_authorised += 1
                self._sent.pop(sid, None)
                self._legacy.discard(sid)
                denied.append(sid)
                continue
            if code == 0:
                if sid in self._legacy:
                    self._legacy.discard(sid)
                    legacy.append(sid)
                else:
                    accepted.append(sid)
                continue
            # 0x10 no matching subscribers (no ingester session yet), 0x87 not
            # authorised, ...: the broker did not take it; keep it and try again later
            self.refused += 1
            self._sent.pop(sid, None)
            self._legacy.discard(sid)
            if self._retry_from is None:
                log.warning(
                    "broker did not accept readings (PUBACK reason 0x%02x); keeping them in "
                    "the spool and retrying in %.0f s",
                    code,
                    self._retry_delay,
                )
                self._retry_at = time.monotonic() + self._retry_delay
                self._retry_delay = min(self._retry_delay * 2, 60.0)
            self._retry_from = sid if self._retry_from is None else min(self._retry_from, sid)
        self._denying += denied
        self.acked += len(accepted) + len(legacy)
        self._accepting += accepted  # written in the round's transaction
        self._deleting += legacy  # spooled before acknowledgements: the PUBACK is all
        if (accepted or legacy) and self._retry_from is None:
            self._retry_delay = 1.0

    def _deny(self, ids: list[int]) -> None:
        now = time.monotonic()
        for row in self.spool.rows(ids):
            if self.denied.refuse(row.topic, row.id, now):
                log.error(
                    "the broker refused readings on %s: not authorised (its ACL does not give "
                    "account %r this device; `foursave broker-config` makes the ACL from the "
                    "configuration).  Its readings stay in the spool; tried again in %.0f s",
                    row.topic,
                    self._services.mqtt_account("collector"),
                    self.denied.delay,
                )

    def _retry_denied(self, room: int) -> int:
        """Publish the readings of a topic the broker takes again, and now and then one
        reading of a refused topic, to see whether its ACL was fixed."""
        if self._released and room > 0:
            ids, self._released = self._released[:room], self._released[room:]
            for row in self.spool.rows(ids):
                if self._publish(row.id, row.topic, row.payload, row.device):
                    room -= 1
        sid = self.denied.due(time.monotonic()) if room > 0 else None
        if sid is not None:
            rows = self.spool.rows([sid])
            if not rows:  # left the spool's bound meanwhile: the topic stays refused
                self.denied.forget(sid)
                return room
            if self._publish(rows[0].id, rows[0].topic, rows[0].payload, rows[0].device):
                room -= 1
        return room

    def _take_confirms(self) -> dict[str, list[tuple[int, int]]]:
        """The acknowledgements received, decoded: seq ranges per device."""
        out: dict[str, list[tuple[int, int]]] = {}
        while self._confirms:
            payload = self._confirms.popleft()
            try:
                acks = decode_ack(payload)
            except PayloadError as exc:
                self.bad_acks += 1
                log.warning("acknowledgement ignored: %s", exc)
                continue
            for device, rs in acks.items():
                out.setdefault(device, []).extend(rs)
        return out

    def _confirmed(self, sids: list[int]) -> None:
        """``sids`` left the spool, confirmed by an ingester."""
        for sid in sids:
            self.confirmed += 1
            sent = self._sent.pop(sid, None)
            if sent is not None and sent > self._confirmed_sent:
                self._confirmed_sent = sent

    def _overdue(self, room: int) -> list[int]:
        """Spool ids sent at least ``ack_timeout_s`` ago, unconfirmed, and sent before
        the evidence of their loss (a reconnect, or a later reading confirmed)."""
        now = time.monotonic()
        before = min(max(self._confirmed_sent, self._connected_at), now - self.ack_timeout_s)
        out: list[int] = []
        for sid, sent in self._sent.items():  # oldest send first
            if sent >= before or len(out) >= room:
                break
            out.append(sid)
        return out

    def _publish(self, sid: int, topic: str, payload: bytes, device: str | None) -> bool:
        info = self.client.publish(topic, payload, qos=1)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            return False  # paho queues QoS 1 while reconnecting; anything else: retry later
        self._inflight[info.mid] = sid
        if device is None:  # a row from before acknowledgements leaves on PUBACK
            self._legacy.add(sid)
        else:  # (re)inserted last: the dict stays in order of sending
            self._sent.pop(sid, None)
            self._sent[sid] = time.monotonic()
        self.published += 1
        return True

    def _feed(self) -> None:
        if self._retry_from is not None:
            if time.monotonic() < self._retry_at:
                return
            self._cursor = min(self._cursor, self._retry_from - 1)  # publish again, in order
            self._retry_from = None
        room = self.max_inflight - len(self._inflight)
        if not self.connected or room <= 0:
            return
        if self._suspects:
            self._feed_suspects()
            return
        room = self._retry_denied(room)
        overdue = self._overdue(room)
        if overdue:
            again = self.spool.rows(overdue)
            present = {row.id for row in again}
            for sid in overdue:
                if sid not in present:  # left the bound meanwhile
                    del self._sent[sid]
            if again:
                log.info(
                    "publishing again %d readings not confirmed within %.0f s",
                    len(again),
                    self.ack_timeout_s,
                )
            for row in again:
                if row.topic in self.denied:
                    del self._sent[row.id]
                    self.denied.hold(row.topic, row.id)
                    continue
                if not self._publish(row.id, row.topic, row.payload, row.device):
                    return
                self.republished += 1
                room -= 1
        for row in self.spool.after(self._cursor, room):
            if row.topic in self.denied:  # held, not handed to a broker that refuses it
                self.denied.hold(row.topic, row.id)
            elif not self._publish(row.id, row.topic, row.payload, row.device):
                break
            self._cursor = row.id

    def _feed_suspects(self) -> None:
        """One reading in flight at a time until every suspect has had its PUBACK."""
        while self._suspects and not self._inflight:
            sid = self._suspects.pop(0)
            rows = self.spool.rows([sid])
            if not rows:
                continue  # confirmed or dropped meanwhile
            row = rows[0]
            if row.topic in self.denied:
                self._sent.pop(sid, None)
                self.denied.hold(row.topic, sid)
                continue
            if not self._publish(row.id, row.topic, row.payload, row.device):
                self._suspects.insert(0, sid)
            return

    def _round(self) -> _Round:
        """What this round writes to the spool, taken from memory: the readings taken,
        the PUBACKs and the confirmations received since the last."""
        self._process_acks()
        r = _Round(
            self._pending,
            self._seqs,
            self._accepting,
            self._deleting,
            self._take_confirms(),
            self._unspooled_dropped,
        )
        self._pending, self._seqs, self._accepting, self._deleting = [], {}, [], []
        self._unspooled_dropped = 0
        return r

    def _write(self, r: _Round) -> Committed | sqlite3.Error | None:
        """The round's writes in one transaction (one fsync); may run in a thread of its
        own, nothing else touching the spool meanwhile."""
        if not r.writes:
            return None
        try:
            return self.spool.commit(
                r.rows, r.seqs, r.accepted, r.legacy, r.acks, r.unspooled_dropped
            )
        except sqlite3.Error as exc:
            return exc

    def _written(self, r: _Round, result: Committed | sqlite3.Error | None) -> None:
        """Account for the round's writes, then hand the broker what it can take."""
        if isinstance(result, sqlite3.Error):
            # the round's writes one by one, as they can be: a confirmation deletes
            # even while a full disk takes no new reading
            self._pending = r.rows + self._pending
            self._seqs = {**r.seqs, **self._seqs}
            self._unspooled_dropped += r.unspooled_dropped
            try:
                self.spool.accept(r.accepted)
                self.spool.delete(r.legacy)
                self._confirmed(self.spool.confirm(r.acks))
            except sqlite3.Error as exc:  # a confirmation not recorded: sent again later
                self._spool_failed(exc)
            self._flush()
        elif result is not None:
            if r.rows or r.seqs:
                self._spool_ok()
            if result.dropped:
                log.warning(
                    "spool full (%d readings): dropped the %d oldest, %d dropped in all",
                    self.spool.max_rows,
                    result.dropped,
                    self.spool.dropped,
                )
            self._confirmed(result.confirmed)
        try:
            if self._denying:
                denied, self._denying = self._denying, []
                self._deny(denied)
            self._feed()
        except sqlite3.Error as exc:
            self._spool_failed(exc)

    def step(self) -> None:
        """One round, written here and now (``run`` writes in a thread)."""
        r = self._round()
        self._written(r, self._write(r))

    async def run(self, stop: asyncio.Event) -> None:
        """Rounds while the collector runs: each writes in a thread (the fsync does
        not hold up the polls), and the next begins ``ROUND_S`` after it at the
        soonest, so that a round's transaction carries what came meanwhile."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.05):
                    await self._wake.wait()
            self._wake.clear()
            started = time.monotonic()
            r = self._round()
            if r.writes:
                task = asyncio.ensure_future(asyncio.to_thread(self._write, r))
                try:
                    result = await asyncio.shield(task)
                except asyncio.CancelledError:
                    # stopping: the write goes on in its thread; account for it before
                    # close() writes
                    await asyncio.wait([task])
                    self._written(r, task.result())
                    raise
            else:
                result = None
            self._written(r, result)
            pause = started + ROUND_S - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)

    async def close(self, drain_s: float = 5.0) -> None:
        """Keep what is accepted: spool pending readings, hand the broker what it can
        take within ``drain_s``, and leave everything unconfirmed in the spool for the
        next start.  While ingesters are confirming, wait (within the same deadline)
        for their confirmations too, so the next start publishes little twice."""
        self._flush()
        deadline = time.monotonic() + drain_s

        def busy() -> bool:
            if self._inflight or self._suspects or self._retry_from is not None:
                return True
            if self.spool.after(self._cursor, 1):
                return True  # not yet handed to the broker
            return bool(self._sent) and self.confirmed > 0

        while self.connected and busy() and time.monotonic() < deadline:
            self._wake.clear()
            self.step()
            try:
                await asyncio.wait_for(self._wake.wait(), 0.1)
            except TimeoutError:
                pass
        self._process_acks()
        r = _Round([], {}, self._accepting, self._deleting, self._take_confirms(), 0)
        self._accepting, self._deleting = [], []
        result = self._write(r)
        if isinstance(result, sqlite3.Error):
            self._spool_failed(result)
        elif result is not None:
            self._confirmed(result.confirmed)
        if self.connected:
            info = self.client.publish(
                collector_topic(self.collector_id), presence("offline", self.collector_id), 1, True
            )
            try:
                info.wait_for_publish(2)
            except (ValueError, RuntimeError):
                pass
        self.client.disconnect()
        self.client.loop_stop()
        self.spool.close()

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    @property
    def unconfirmed(self) -> int:
        """Readings handed to the broker that no ingester has confirmed yet."""
        return len(self._sent)
