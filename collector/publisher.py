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

from collector.spool import Spool
from core.config import Config
from core.topics import collector_topic

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
        self._acked: deque[int] = deque()
        self._inflight: dict[int, int] = {}  # mqtt mid -> spool id
        self._cursor = 0  # last spool id handed to the client
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self.connected = False
        self.published = 0
        self.acked = 0
        c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"foursave-collector-{self.collector_id}",
            clean_session=True,
        )
        if svc.mqtt.username:
            c.username_pw_set(svc.mqtt.username, svc.mqtt.password)
        c.will_set(
            collector_topic(self.collector_id), presence("offline", self.collector_id), 1, True
        )
        c.max_inflight_messages_set(self.max_inflight)
        c.max_queued_messages_set(0)
        c.reconnect_delay_set(0.2, 5)
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
        self._acked.append(mid)
        self._loop.call_soon_threadsafe(self._wake.set)

    # the event loop -------------------------------------------------------------
    def _set_connected(self, value: bool) -> None:
        if value != self.connected:
            log.info("broker %s:%d %s", self._host, self._port, "connected" if value else "lost")
        self.connected = value
        self._wake.set()

    def start(self) -> None:
        self.client.connect_async(self._host, self._port, self._keepalive)
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
            sid = self._inflight.pop(self._acked.popleft(), None)
            if sid is not None:
                done.append(sid)
        if done:
            self.spool.delete(done)
            self.acked += len(done)

    def _feed(self) -> None:
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
