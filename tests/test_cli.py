"""The command line and the demo, run as a user runs them."""

from __future__ import annotations

import yaml

from foursave.cli import build_parser
from tests.helpers import ROOT

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
