"""The one place a paho MQTT client is made from the configuration: the service's own
account and password (``core/secrets.py``), and TLS for ``mqtts://``.  Callers add their
callbacks, then ``connect(client, services)``."""

from __future__ import annotations

import ssl
from typing import Any

import paho.mqtt.client as mqtt

from foursave.core.config import MqttRole, Services
from foursave.core.secrets import Secrets, env_name
from foursave.core.tls import client_context

# CONNACK reasons that mean "these credentials will not do" (MQTT 5 codes; paho maps a
# 3.1.1 refusal 4 / 5 onto 134 / 135)
CREDENTIALS_REFUSED = {134, 135, 140}


def mqtt_client(
    services: Services,
    role: MqttRole,
    client_id: str,
    secrets: Secrets | None = None,
    **kw: Any,
) -> mqtt.Client:
    """A paho client (callback API v2) that logs in as ``role``'s account; ``kw`` goes
    to ``paho.mqtt.client.Client`` (``protocol``, ``clean_session``, ``manual_ack`` ...)."""
    svc = services.mqtt
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, **kw)
    account = services.mqtt_account(role)
    if svc.username and svc.password_env:
        password = svc.password
    else:
        secrets = secrets if secrets is not None else Secrets.load(services.secrets_file)
        password = secrets.password("mqtt", account)
    if password is not None:
        client.username_pw_set(account, password)
    if svc.tls:
        client.tls_set_context(
            tls_context(svc.ca_file, svc.cert_file, svc.key_file, svc.tls_verify)
        )
    return client


def tls_context(
    ca_file: str | None, cert_file: str | None, key_file: str | None, verify: bool
) -> ssl.SSLContext:
    """The broker's certificate and host name checked against ``ca_file`` (or else the
    system's CAs) unless ``verify`` is false; a client certificate when given."""
    ctx = client_context("services.mqtt", ca_file, cert_file, key_file)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def connect(client: mqtt.Client, services: Services, **kw: Any) -> None:
    """Connect in the background (paho reconnects by itself afterwards)."""
    svc = services.mqtt
    client.connect_async(svc.host, svc.port, svc.keepalive_s, **kw)


def refusal(services: Services, role: MqttRole, reason: object) -> str:
    """What to tell the operator when the broker refused ``role``'s connection."""
    account = services.mqtt_account(role)
    code = getattr(reason, "value", None)
    if code in CREDENTIALS_REFUSED:
        return (
            f"the MQTT broker refused account {account!r} ({reason}): its password is taken "
            f"from {env_name('mqtt', account)} or the secrets file's mqtt.{account}; the "
            "broker's password file comes from `foursave broker-config`"
        )
    return f"the MQTT broker refused the connection of account {account!r}: {reason}"
