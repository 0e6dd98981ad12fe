"""MQTT publishing with store-and-forward.

Every reading goes to the disk spool first; a forwarder hands spooled readings to the
broker in order (QoS 1) and deletes each one only when the broker's PUBACK arrived.
While the broker is away readings pile up in the spool (bounded) and are replayed in
order when it is back.  Device status and collector presence are retained messages;
presence has a last will of ``offline``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque

import paho.mqtt.client as mqtt

from foursave.collector.spool import Spool
from foursave.core.config import Config
from foursave.core.mqtt import mqtt_client
from foursave.core.topics import collector_topic

log = logging.getLogger("foursave.collector.mqtt")


def presence(state: str, collector_id: str, **counters: int) -> bytes:
    return json.dumps(
        {"state": state, "collector": collector_id, "ts": int(time.time() * 1000), **counters}
    ).encode()


class Publisher:
    def __init__(self, config: Config, spool: Spool):
        svc = config.services
        self.collector_id = svc.collector.id
        self.spool = spool
        self.max_inflight = svc.collector.max_inflight
        self._pending: list[tuple[str, bytes]] = []
        self._seqs: dict[str, int] = {}
        self._acked: deque[tuple[int, int]] = deque()  # (mid, PUBACK reason code)
        self._retry_from: int | None = None  # spool id to publish again from
        self._retry_at = 0.0
        self._retry_delay = 1.0
        self.refused = 0  # PUBACKs that did not accept the reading
        self._inflight: dict[int, int] = {}  # mqtt mid -> spool id
        self._cursor = 0  # last spool id handed to the client
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self.connected = False
        self.published = 0
        self.acked = 0
        # MQTT 5: a PUBACK carries a reason code, so "no subscriber" or "not authorised"
        # keeps the reading in the spool instead of deleting it (3.1.1 acks them all)
        c = mqtt_client(svc.mqtt, f"foursave-collector-{self.collector_id}", protocol=mqtt.MQTTv5)
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
        self.client = c
        self._host, self._port, self._keepalive = svc.mqtt.host, svc.mqtt.port, svc.mqtt.keepalive_s

    # paho's network thread ------------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            log.warning("broker refused the connection: %s", reason_code)
            return
        client.publish(collector_topic(self.collector_id), self._online(), 1, True)
        self._loop.call_soon_threadsafe(self._set_connected, True)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self._loop.call_soon_threadsafe(self._set_connected, False)

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        self._acked.append((mid, reason_code.value))
        self._loop.call_soon_threadsafe(self._wake.set)

    # the event loop -------------------------------------------------------------
    def _set_connected(self, value: bool) -> None:
        if value != self.connected:
            log.info("broker %s:%d %s", self._host, self._port, "connected" if value else "lost")
        self.connected = value
        self._wake.set()

    def start(self) -> None:
        self.client.connect_async(self._host, self._port, self._keepalive, clean_start=True)
        self.client.loop_start()

    def enqueue(self, topic: str, payload: bytes, device: str, seq: int) -> None:
        self._pending.append((topic, payload))
        self._seqs[device] = seq
        self._wake.set()

    def _online(self, **counters: int) -> bytes:
        return presence(
            "online",
            self.collector_id,
            spool_depth=self.spool.depth,
            spool_dropped=self.spool.dropped,
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
        if self._pending or self._seqs:
            dropped = self.spool.append(self._pending, self._seqs, protect_upto=self._cursor)
            if dropped:
                log.warning(
                    "spool full (%d readings): dropped the %d oldest, %d dropped in all",
                    self.spool.max_rows,
                    dropped,
                    self.spool.dropped,
                )
            self._pending = []
            self._seqs = {}

    def _process_acks(self) -> None:
        done = []
        while self._acked:
            mid, code = self._acked.popleft()
            sid = self._inflight.pop(mid, None)
            if sid is None:
                continue
            if code == 0:
                done.append(sid)
                continue
            # 0x10 no matching subscribers (no ingester session yet), 0x87 not
            # authorised, ...: the broker did not take it; keep it and try again later
            self.refused += 1
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
        if done:
            self.spool.delete(done)
            self.acked += len(done)
            if self._retry_from is None:
                self._retry_delay = 1.0

    def _feed(self) -> None:
        if self._retry_from is not None:
            if time.monotonic() < self._retry_at:
                return
            self._cursor = min(self._cursor, self._retry_from - 1)  # publish again, in order
            self._retry_from = None
        room = self.max_inflight - len(self._inflight)
        if not self.connected or room <= 0:
            return
        for sid, topic, payload in self.spool.after(self._cursor, room):
            info = self.client.publish(topic, payload, qos=1)
            if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                break  # paho queues QoS 1 while reconnecting; anything else: retry later
            self._inflight[info.mid] = sid
            self._cursor = sid
            self.published += 1

    def step(self) -> None:
        self._flush()
        self._process_acks()
        self._feed()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(self._wake.wait(), 0.05)
            except TimeoutError:
                pass
            self._wake.clear()
            self.step()

    async def close(self, drain_s: float = 5.0) -> None:
        """Keep what is accepted: spool pending readings, hand over what the broker can
        take within ``drain_s``, and leave the rest in the spool for the next start."""
        self._flush()
        deadline = time.monotonic() + drain_s
        while (
            self.connected and (self._inflight or self.spool.depth) and time.monotonic() < deadline
        ):
            self._wake.clear()
            self.step()
            try:
                await asyncio.wait_for(self._wake.wait(), 0.1)
            except TimeoutError:
                pass
        self._process_acks()
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
