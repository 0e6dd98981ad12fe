"""Live status from the broker: the retained device status, collector presence and
ingester status messages (docs/design.md, "MQTT"), kept in memory for ``/devices`` and
``/metrics``.  The API only subscribes; it never publishes."""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from foursave.core.config import Services
from foursave.core.mqtt import connect, mqtt_client, refusal
from foursave.core.reading import PayloadError, load_json
from foursave.core.topics import PREFIX, STATUS_FILTER

log = logging.getLogger("foursave.api.live")


@dataclass
class LiveStatus:
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)  # "site/device" -> body
    collectors: dict[str, dict[str, Any]] = field(default_factory=dict)
    ingesters: dict[str, dict[str, Any]] = field(default_factory=dict)
    received: int = 0
    rejected: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, topic: str, payload: bytes) -> None:
        """File one status message by its topic; bad payloads are counted, not kept."""
        parts = topic.split("/")
        if len(parts) != 5 or "/".join(parts[:2]) != PREFIX or parts[4] != "status":
            return
        try:
            body = load_json(payload, "status")
        except PayloadError:
            body = None
        if not isinstance(body, dict):
            with self.lock:
                self.rejected += 1
            return
        body["_received_at"] = time.time()
        with self.lock:
            self.received += 1
            if parts[2] == "_collector":
                self.collectors[parts[3]] = body
            elif parts[2] == "_ingester":
                self.ingesters[parts[3]] = body
            else:
                self.devices[f"{parts[2]}/{parts[3]}"] = body

    def device(self, site: str, device: str) -> dict[str, Any] | None:
        with self.lock:
            return self.devices.get(f"{site}/{device}")

    def copy(self) -> tuple[dict, dict, dict]:
        with self.lock:
            return dict(self.devices), dict(self.collectors), dict(self.ingesters)


class LiveSubscriber:
    """A paho client in its own network thread, subscribed to the status topics."""

    def __init__(self, services: Services, status: LiveStatus):
        self.status = status
        self.connected = threading.Event()
        self.client = mqtt_client(
            services, "api", f"foursave-api-{os.getpid()}-{id(self) & 0xFFFF:x}", clean_session=True
        )
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *a: self.connected.clear()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 30)
        self.services = services
        connect(self.client, services)

    def _on_message(self, client: object, userdata: object, msg: Any) -> None:
        """paho's callback: an exception escaping it ends the network thread, and with
        it every later status; so whatever one message does, it is counted and dropped."""
        try:
            self.status.take(msg.topic, msg.payload)
        except Exception:
            log.exception("status message on %s not taken", msg.topic)
            with self.status.lock:
                self.status.rejected += 1

    def _on_connect(self, client, userdata, flags, reason_code, properties=None) -> None:
        if reason_code.is_failure:
            log.error("%s", refusal(self.services, "api", reason_code))
            return
        client.subscribe(STATUS_FILTER, qos=0)  # devices, _collector and _ingester
        self.connected.set()

    def start(self) -> LiveSubscriber:
        self.client.loop_start()
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
