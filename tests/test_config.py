"""Configuration: validated on load, every error names file, line, path and expectation."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from foursave.collector.profiles import check_profile
from foursave.core.config import ConfigError, parse_config

from foursave.app import load_config
from tests.helpers import ROOT

BAD = textwrap.dedent(
    """\
    services:
      mqtt: {url: "tcp://broker:1883"}
    sites:
      - {id: yonghua, name: 永華市政中心, lat: 22.99, lon: 120.19}
    devices:
      - {id: inv-01, site: yonghua, kind: inverter, profile: sunspec, host: 10.0.0.5}
      - {id: inv-01, site: yonghua, kind: inverter, profile: sunspec, host: 10.0.0.6}
      - {id: m-1, site: minzhi, kind: meter, role: main, profile: sunspec, host: 10.0.0.7}
      - {id: m-2, site: yonghua, kind: meter, profile: eastron_sdm630, host: 10.0.0.8, port: 70000}
      - {id: m-3, site: yonghua, kind: meter, role: hvac, profile: acme_9000, host: 10.0.0.9}
      - {id: w-1, site: yonghua, kind: water, profile: generic_water_meter, transport: rtu}
      - {id: x-1, site: yonghua, kind: weather, profile: sunspec, host: h, intervall_s: 5}
    """
)


def issues_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        parse_config(text, "bad.yaml", env={}, check_profile=check_profile)
    return [str(i) for i in exc.value.issues]


def test_demo_and_example_configs_are_valid():
    cfg = load_config(ROOT / "config" / "demo.yaml", env={})
    kinds = sorted(d.kind for d in cfg.devices)
    assert kinds == ["inverter", "inverter", "meter", "meter", "water", "weather"]
    assert {d.profile for d in cfg.devices} >= {"sunspec", "eastron_sdm630"}


def test_field_errors_name_the_file_line_and_path():
    issues = issues_of(BAD)
    assert (
        "bad.yaml:2: services.mqtt.url: expected mqtt://host:port (got 'tcp://broker:1883')"
        in issues
    )
    port = next(i for i in issues if "devices[3].port" in i)
    assert (
        port.startswith("bad.yaml:9:") and "less than or equal to 65535" in port and "70000" in port
    )
    assert any("devices[3]" in i and "needs a 'role'" in i for i in issues)
    assert any("devices[5]" in i and "needs a 'serial' section" in i for i in issues)
    assert any("devices[6].intervall_s: unknown key" in i for i in issues)


def test_cross_reference_errors_come_after_the_fields_are_fixed():
    text = BAD.replace("port: 70000", "port: 502").replace(
        "kind: meter, profile", "kind: meter, role: main, profile"
    )
    text = text.replace(", transport: rtu", ", host: 10.0.0.10").replace(
        "intervall_s", "interval_s"
    )
    text = text.replace("tcp://", "mqtt://")
    issues = issues_of(text)
    assert "bad.yaml:7: devices[1].id: duplicate device id 'inv-01' (also devices[0])" in issues
    assert any(i.startswith("bad.yaml:8: devices[2].site: unknown site 'minzhi'") for i in issues)
    assert any(
        i.startswith("bad.yaml:10: devices[4].profile: unknown profile 'acme_9000'")
        and "eastron_sdm630" in i
        for i in issues
    )


def test_yaml_syntax_error_has_a_line():
    issues = issues_of("sites:\n  - id: a\n   name: [unclosed\n")
    assert issues[0].startswith("bad.yaml:3: (top level): not valid YAML")


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
