"""Retained device status and collector presence with a last will, seen by a plain
MQTT client, with the collector running as its own process."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
import yaml

from foursave.simulators.server import SimulatorThread
from tests.helpers import ROOT, Watcher, demo_raw, make_config, reap, wait_for

pytestmark = pytest.mark.integration


def test_status_is_retained_and_the_last_will_says_offline(tmp_path, broker):
    raw = demo_raw()["devices"]
    devices = [dict(raw[0]), dict(raw[1], id="inv-dead", simulate=None)]
    cfg = make_config(tmp_path, broker, "http://127.0.0.1:1", "x", devices=devices)
    cfg_path = tmp_path / "collect.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), allow_unicode=True))
    watcher = Watcher(broker)
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
    late = Watcher(broker)  # a newcomer sees the retained state at once
    try:
        wait_for(lambda: late.last(presence), 10, "retained presence")
        assert late.last(presence)["state"] == "offline" and late.retained[presence]
        assert late.last("foursave/v1/demo/inv-01/status")["online"] is True
    finally:
        late.close()
