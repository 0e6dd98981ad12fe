"""Retained device status and collector presence with a last will, seen by a plain
MQTT client, with the collector running as its own process."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading

import paho.mqtt.client as mqtt
import pytest
import yaml
from foursave.simulators.server import SimulatorThread

from tests.helpers import ROOT, demo_raw, make_config, reap, wait_for

pytestmark = pytest.mark.integration


class Watcher:
    def __init__(self, port: int):
        self.messages: dict[str, list[dict]] = {}
        self.retained: dict[str, bool] = {}
        self.lock = threading.Lock()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"watch-{port}-{id(self)}")
        self.c.on_message = self._on_message
        self.c.on_connect = lambda c, *a: c.subscribe("foursave/v1/#", qos=1)
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def _on_message(self, client, userdata, msg):
        with self.lock:
            self.messages.setdefault(msg.topic, []).append(json.loads(msg.payload))
            self.retained[msg.topic] = msg.retain

    def last(self, topic: str) -> dict | None:
        with self.lock:
            msgs = self.messages.get(topic)
            return msgs[-1] if msgs else None

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


def test_status_is_retained_and_the_last_will_says_offline(tmp_path, broker):
    raw = demo_raw()["devices"]
    devices = [dict(raw[0]), dict(raw[1], id="inv-dead", simulate=None)]
    cfg = make_config(tmp_path, broker.port, "http://127.0.0.1:1", "x", devices=devices)
    cfg_path = tmp_path / "collect.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), allow_unicode=True))
    watcher = Watcher(broker.port)
    with SimulatorThread(cfg):
        proc = subprocess.Popen(
            [sys.executable, "-m", "foursave", "collect", "--config", str(cfg_path)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            presence = "foursave/v1/_collector/demo-collector/status"
            wait_for(lambda: (watcher.last(presence) or {}).get("state") == "online", 30, "online")
            assert "spool_depth" in watcher.last(presence)
            wait_for(lambda: watcher.last("foursave/v1/demo/inv-01/status"), 30, "inv-01 status")
            wait_for(lambda: watcher.last("foursave/v1/demo/inv-dead/status"), 30, "dead status")
            assert watcher.last("foursave/v1/demo/inv-01/status")["online"] is True
            dead = watcher.last("foursave/v1/demo/inv-dead/status")
            assert dead["online"] is False and "refused" in dead["last_error"]
            proc.send_signal(signal.SIGKILL)  # no goodbye: the broker publishes the will
            proc.wait(10)
            wait_for(lambda: watcher.last(presence)["state"] == "offline", 30, "last will")
        finally:
            reap(proc)
    watcher.close()
    late = Watcher(broker.port)  # a newcomer sees the retained state at once
    try:
        wait_for(lambda: late.last(presence), 10, "retained presence")
        assert late.last(presence)["state"] == "offline" and late.retained[presence]
        assert late.last("foursave/v1/demo/inv-01/status")["online"] is True
    finally:
        late.close()
