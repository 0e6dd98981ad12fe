"""The command line and the demo, run as a user runs them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from core.cli import build_parser
from core.services import free_port, port_open
from tests.helpers import ROOT, demo_raw, reap, wait_for

CONTRACT_SUBCOMMANDS = {
    "sim",
    "collect",
    "ingest",
    "rules",
    "api",
    "backfill",
    "report",
    "dashboards",
    "check-config",
    "demo",
}


def test_every_contract_subcommand_exists():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(sub.choices) >= CONTRACT_SUBCOMMANDS


def test_compose_file_runs_the_services_with_real_subcommands():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"mosquitto", "influxdb", "sim", "collect", "ingest", "rules", "api", "grafana"} <= set(
        services
    )
    graf = services["grafana"]
    assert graf["environment"]["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    for mount in graf["volumes"][:3]:  # the provisioning it mounts exists in the repository
        assert (ROOT / mount.split(":")[0].removeprefix("./")).exists(), mount
    assert services["influxdb"]["image"] == "influxdb:1.8"
    for name in ("sim", "collect", "ingest", "rules", "api"):
        assert services[name]["command"][0] in CONTRACT_SUBCOMMANDS
    for name in ("mosquitto", "influxdb", "sim", "api"):
        assert "healthcheck" in services[name]
    # no default secret: compose refuses to start the API without a bootstrap key
    assert services["api"]["environment"]["FOURSAVE_API_BOOTSTRAP_KEY"].startswith(
        "${FOURSAVE_API_BOOTSTRAP_KEY:?"
    )
    assert "rules-data:/app/var" in services["api"]["volumes"]  # same records as the engine


@pytest.mark.integration
@pytest.mark.slow
def test_demo_runs_everything_and_stops_cleanly_on_ctrl_c(tmp_path):
    raw = demo_raw()
    mqtt_port, influx_port = free_port(), free_port()
    raw["services"]["mqtt"]["url"] = f"mqtt://127.0.0.1:{mqtt_port}"
    raw["services"]["influxdb"]["url"] = f"http://127.0.0.1:{influx_port}"
    raw["services"]["collector"]["spool_path"] = str(tmp_path / "spool.sqlite")
    raw["services"]["ingester"]["dead_letter_path"] = str(tmp_path / "dead.sqlite")
    raw["services"]["rules"] = {
        "records_path": str(tmp_path / "records.sqlite"),
        "state_path": str(tmp_path / "rules.sqlite"),
    }
    api_port = free_port()
    raw["services"]["api"] = {
        "port": api_port,
        "keys_path": str(tmp_path / "keys.sqlite"),
        "reports_path": str(tmp_path / "reports.sqlite"),
    }
    for d in raw["devices"]:
        d["port"] = free_port()
        d["interval_s"] = 0.5
    cfg = tmp_path / "demo.yaml"
    cfg.write_text(yaml.safe_dump(raw, allow_unicode=True))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FOURSAVE_")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "core.cli",
            "demo",
            "--config",
            str(cfg),
            "--var",
            str(tmp_path / "var"),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:

        def stored() -> int:
            try:
                r = httpx.post(
                    f"http://127.0.0.1:{influx_port}/query",
                    data={"db": "foursave", "q": "SELECT count(ac_power_w) FROM inverter"},
                    timeout=2,
                )
                series = r.json()["results"][0].get("series")
                return series[0]["values"][0][1] if series else 0
            except (httpx.HTTPError, KeyError, ValueError):
                return 0

        wait_for(lambda: stored() >= 6, 90, "the demo to store inverter readings")
        api = f"http://127.0.0.1:{api_port}"
        wait_for(lambda: port_open("127.0.0.1", api_port), 60, "the demo's API")
        display = wait_for(
            lambda: httpx.get(f"{api}/display/data", timeout=5).json()["values"]["pv_power_w"][
                "ts"
            ],
            60,
            "the display snapshot to show PV data",
        )
        assert display > 0
        assert httpx.get(f"{api}/api/v1/sites", timeout=5).status_code == 401
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        reap(proc)
    assert proc.returncode == 0, out
    assert "foursave demo is running" in out and "stopped." in out
    assert f"mqtt://127.0.0.1:{mqtt_port}" in out
    assert "Traceback" not in out
    viewer = next(line.split()[-1] for line in out.splitlines() if "viewer key" in line)
    assert viewer.startswith("fsk_") and f"{api}/display" in out
    assert not port_open("127.0.0.1", mqtt_port) and not port_open("127.0.0.1", influx_port)
    collect_log = Path(tmp_path / "var" / "collect.log").read_text()
    assert "collector stopped" in collect_log
