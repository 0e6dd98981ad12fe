"""The one place a paho MQTT client is made from the configuration (credentials, and
later TLS, are set here and nowhere else).  Callers add their callbacks and connect."""

from __future__ import annotations

from typing import Any

import paho.mqtt.client as mqtt

from foursave.core.config import MqttService


def mqtt_client(svc: MqttService, client_id: str, **kw: Any) -> mqtt.Client:
    """A paho client (callback API v2) for ``svc``'s broker; ``kw`` goes to
    ``paho.mqtt.client.Client`` (``protocol``, ``clean_session``, ``manual_ack`` ...)."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, **kw)
    if svc.username:
        client.username_pw_set(svc.username, svc.password)
    return client
