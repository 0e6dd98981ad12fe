"""Notifications of incident events: an MQTT event on
``foursave/v1/{site}/alert/{rule_id}``, a webhook (HTTP POST, JSON) and e-mail over
SMTP.  A failing channel is logged and counted, never fatal."""

from __future__ import annotations

import json
import logging
import smtplib
from email.message import EmailMessage
from typing import Any

import httpx
import paho.mqtt.client as mqtt

from foursave.core.topics import alert_topic
from foursave.rules.alerts.spec import AlertSettings, SmtpSettings

log = logging.getLogger("foursave.alerts")


class Notifier:
    """Delivers incident events; a failing channel is logged, never fatal."""

    def __init__(
        self,
        settings: AlertSettings,
        mqtt_client: mqtt.Client | None = None,
        smtp_password: str | None = None,
    ):
        self.s = settings
        self.mqtt = mqtt_client
        self.smtp_password = smtp_password
        self.failures = 0

    def send(self, event: dict[str, Any]) -> None:
        if self.s.mqtt and self.mqtt is not None and not self.mqtt.is_connected():
            self._failed("mqtt", ConnectionError("not connected to the broker"))
        elif self.s.mqtt and self.mqtt is not None:
            try:
                info = self.mqtt.publish(
                    alert_topic(event["site"], event["rule"]),
                    json.dumps(event, ensure_ascii=False),
                    qos=1,
                )
                info.wait_for_publish(5)
            except Exception as exc:
                self._failed("mqtt", exc)
        if self.s.webhook_url:
            try:
                r = httpx.post(self.s.webhook_url, json=event, timeout=5)
                r.raise_for_status()
            except httpx.HTTPError as exc:
                self._failed("webhook", exc)
        if self.s.smtp and self.s.smtp.to:
            try:
                self._email(self.s.smtp, event)
            except (OSError, smtplib.SMTPException) as exc:
                self._failed("email", exc)

    def _failed(self, channel: str, exc: Exception) -> None:
        self.failures += 1
        log.warning("alert notification over %s failed: %s", channel, exc)

    def _email(self, smtp: SmtpSettings, event: dict[str, Any]) -> None:
        msg = EmailMessage()
        state = {
            "firing": "告警 FIRING",
            "resolved": "解除 RESOLVED",
            "repeat": "告警 STILL FIRING",
        }[event["event"]]
        msg["Subject"] = f"[foursave] {state}: {event['title']} — {event['site']}/{event['device']}"
        msg["From"] = smtp.sender
        msg["To"] = ", ".join(smtp.to)
        body = json.dumps(event, ensure_ascii=False, indent=2)
        msg.set_content(f"{event['detail']}\n\n{body}" if event.get("detail") else body)
        with smtplib.SMTP(smtp.host, smtp.port, timeout=10) as s:
            if smtp.starttls:
                s.starttls()
            if smtp.username:
                s.login(smtp.username, self.smtp_password or "")
            s.send_message(msg)
