"""Configuration: validated on load, every error names file, line, path and expectation.

The single-file error cases (a file in, its exact error lines out) are case folders in
tests/cases/config/, run by tests/unit/test_validation_cases.py; here: the shipped
configurations, the environment overrides and the check-config command."""

from __future__ import annotations

import subprocess
import sys

from foursave.app import load_config
from foursave.core.config import parse_config
from tests.helpers import ROOT

# the input of the case that pins the field errors' lines (tests/cases/README.md); here
# the check-config command is run on it
BAD = (ROOT / "tests/cases/config/field-errors-name-line-and-path/config.yaml").read_text(
    encoding="utf-8"
)


def test_demo_and_example_configs_are_valid():
    cfg = load_config(ROOT / "config" / "demo.yaml", env={})
    kinds = sorted(d.kind for d in cfg.devices)
    assert kinds == ["inverter", "inverter", "meter", "meter", "water", "weather"]
    assert {d.profile for d in cfg.devices} >= {"sunspec", "eastron_sdm630"}


def test_environment_overrides_service_addresses():
    text = "sites: [{id: s, name: S, lat: 1, lon: 2}]\n"
    cfg = parse_config(
        text,
        env={
            "FOURSAVE_MQTT_URL": "mqtt://broker:1884",
            "FOURSAVE_INFLUXDB_URL": "http://db:8087",
            "FOURSAVE_INFLUXDB_DATABASE": "city",
        },
    )
    assert (cfg.services.mqtt.host, cfg.services.mqtt.port) == ("broker", 1884)
    assert (cfg.services.influxdb.url, cfg.services.influxdb.database) == ("http://db:8087", "city")


def test_check_config_command_explains_without_a_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    out = subprocess.run(
        [sys.executable, "-m", "foursave", "check-config", str(bad)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert out.returncode == 2
    assert "Traceback" not in out.stdout + out.stderr
    assert f"{bad}:9: devices[3].port" in out.stdout
    # --config, as every other subcommand takes it (docs/design.md), says the same
    flag = subprocess.run(
        [sys.executable, "-m", "foursave", "check-config", "--config", str(bad)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert flag.returncode == 2 and flag.stdout == out.stdout
    ok = subprocess.run(
        [sys.executable, "-m", "foursave", "check-config", "config/demo.yaml"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert ok.returncode == 0 and "OK" in ok.stdout
    assert "collector spool: 500,000 readings hold" in ok.stdout
    ok_flag = subprocess.run(
        [sys.executable, "-m", "foursave", "check-config", "--config", "config/demo.yaml"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert ok_flag.returncode == 0 and ok_flag.stdout == ok.stdout
    missing = subprocess.run(
        [sys.executable, "-m", "foursave", "collect", "--config", str(tmp_path / "nope.yaml")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert missing.returncode == 2 and "file not found" in missing.stderr
    assert "Traceback" not in missing.stderr
