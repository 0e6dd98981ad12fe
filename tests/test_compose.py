"""docker-compose.yml opens nothing it needn't: only the API and Grafana publish ports,
the broker and the database sit on an internal network, every secret is required
(never defaulted) and each service gets the passwords of its own accounts only.

No Docker engine runs here, so the file is read as compose reads it (YAML, then
``${...}`` interpolation); docker/mosquitto.conf is run by a real mosquitto.
"""

from __future__ import annotations

import getpass
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from foursave.app import load_config
from foursave.core.secrets import env_name
from foursave.localstack import LocalService, free_port
from tests.helpers import ROOT, mosquitto_sub

COMPOSE_FILE = ROOT / "docker-compose.yml"
MOSQUITTO_CONF = ROOT / "docker" / "mosquitto.conf"
COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
# ${NAME} / ${NAME:-default} / ${NAME:?message} ...; "$$" is a literal dollar
INTERPOLATION = re.compile(r"(?<!\$)\$\{([^}]*)\}")
BARE_INTERPOLATION = re.compile(r"(?<!\$)\$(?=[A-Za-z_])")
REQUIRED = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*):\?(.+)$")
PASSWORD_VAR = re.compile(r"^FOURSAVE_(MQTT|INFLUXDB)_PASSWORD_[A-Z0-9_]+$")


def strings(node: Any) -> Iterator[str]:
    """Every string in a parsed YAML tree, keys included."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from strings(k)
            yield from strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from strings(v)


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the "KEY=value" form
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def referenced(node: Any) -> set[str]:
    """The variables a part of the file interpolates."""
    return {
        m.group(1).split(":")[0].split("-")[0]
        for s in strings(node)
        for m in INTERPOLATION.finditer(s)
    }


def networks_of(service: dict[str, Any]) -> list[str]:
    nets = service.get("networks") or []
    return list(nets) if isinstance(nets, dict | list) else []


def expected_passwords() -> dict[str, set[str]]:
    """Service -> the password variables it needs, from config/demo.yaml's accounts
    (core/secrets.py's table)."""
    svc = load_config(ROOT / "config" / "demo.yaml", env={}).services

    def mqtt(role: Any) -> str:
        return env_name("mqtt", svc.mqtt_account(role))

    def influx(role: Any) -> str:
        return env_name("influxdb", svc.influx_user(role))

    return {
        "broker-config": {mqtt(r) for r in ("collector", "ingester", "rules", "api", "reader")},
        "mosquitto": {mqtt("reader")},  # its health check logs in as the reader
        "influxdb": {influx("admin"), influx("writer"), influx("reader")},
        "sim": set(),
        "collect": {mqtt("collector")},
        "ingest": {mqtt("ingester"), influx("writer")},
        "rules": {mqtt("rules"), influx("writer")},
        "api": {mqtt("api"), influx("reader")},
        "grafana": {influx("reader")},
    }


# ------------------------------------------------------------------ what is reachable


def test_only_the_api_and_grafana_publish_ports():
    published = {name: s["ports"] for name, s in SERVICES.items() if s.get("ports")}
    assert published == {"api": ["8000:8000"], "grafana": ["3000:3000"]}
    for name, s in SERVICES.items():
        assert "expose" not in s, name
        assert s.get("network_mode") != "host", f"{name} shares the host's network"


def test_the_broker_and_the_database_are_on_internal_networks_only():
    nets = COMPOSE["networks"]
    for name in ("mosquitto", "influxdb"):
        on = networks_of(SERVICES[name])
        assert on, f"{name} has no networks: compose would put it on 'default'"
        assert "network_mode" not in SERVICES[name]
        assert all((nets[n] or {}).get("internal") is True for n in on), (name, on)


def test_only_what_publishes_is_on_a_network_with_a_way_out():
    """Every service names its networks (none lands on compose's 'default', which is
    not internal); only the API and Grafana join one that is not internal."""
    nets = COMPOSE["networks"]
    open_to = {}
    for name, s in SERVICES.items():
        mode = s.get("network_mode")
        if mode is not None:
            assert mode == "none" or mode.startswith("service:"), (name, mode)
            if mode.startswith("service:"):  # shares that service's namespace
                shared = mode.removeprefix("service:")
                assert "network_mode" not in SERVICES[shared]
                assert SERVICES[shared].get("ports") is None, (name, shared)
            continue
        on = networks_of(s)
        assert on, f"{name} names no network: compose would put it on 'default'"
        open_to[name] = {n for n in on if not (nets[n] or {}).get("internal")}
    assert {name for name, outside in open_to.items() if outside} == {"api", "grafana"}
    # and they reach the broker and the database on the internal one
    for name in ("api", "grafana"):
        assert set(networks_of(SERVICES[name])) & set(networks_of(SERVICES["influxdb"]))


# ------------------------------------------------------------------ secrets


def test_every_variable_is_required_and_none_has_a_default():
    found = []
    for s in strings(COMPOSE):
        assert not BARE_INTERPOLATION.search(s.replace("${", "")), (
            f"{s!r}: $NAME without braces cannot say it is required; write ${{NAME:?...}}"
        )
        for m in INTERPOLATION.finditer(s):
            req = REQUIRED.match(m.group(1))
            assert req, f"${{{m.group(1)}}}: give no default; require it with ${{NAME:?message}}"
            found.append(req.group(1))
    assert {"FOURSAVE_API_BOOTSTRAP_KEY", "GRAFANA_ADMIN_PASSWORD"} <= set(found)
    assert len(set(found)) == 10  # 5 MQTT accounts, 3 InfluxDB users, API key, Grafana


def test_every_secret_in_an_environment_comes_from_a_required_variable():
    secretish = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY$")
    for name, s in SERVICES.items():
        for key, value in environment(s).items():
            if secretish.search(key):
                m = INTERPOLATION.fullmatch(value)
                assert m and REQUIRED.match(m.group(1)), f"{name}: {key}={value!r} is a default"


def test_no_service_lets_anyone_in_anonymously():
    for s in strings(COMPOSE):
        assert "allow_anonymous" not in s.lower()
        assert "mosquitto-no-auth" not in s  # the image's anonymous development config
    assert environment(SERVICES["grafana"])["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert environment(SERVICES["influxdb"])["INFLUXDB_HTTP_AUTH_ENABLED"] == "true"


def test_each_service_gets_the_passwords_of_its_own_accounts_only():
    expected = expected_passwords()
    assert set(SERVICES) == set(expected), "a new service: say which accounts it needs"
    for name, s in SERVICES.items():
        used = {v for v in referenced(s) if PASSWORD_VAR.match(v)}
        assert used == expected[name], name
    # foursave's own services read each password under its own name
    for name in ("broker-config", "collect", "ingest", "rules", "api"):
        for key, value in environment(SERVICES[name]).items():
            if PASSWORD_VAR.match(key):
                assert referenced(value) == {key}, (name, key, value)


def test_the_database_creates_the_users_the_services_log_in_as():
    svc = load_config(ROOT / "config" / "demo.yaml", env={}).services
    env = environment(SERVICES["influxdb"])
    # the image's first start: admin; INFLUXDB_USER gets ALL on the database (the rules
    # engine reads what it derives from); INFLUXDB_READ_USER gets READ
    for user_key, password_key, role in (
        ("INFLUXDB_ADMIN_USER", "INFLUXDB_ADMIN_PASSWORD", "admin"),
        ("INFLUXDB_USER", "INFLUXDB_USER_PASSWORD", "writer"),
        ("INFLUXDB_READ_USER", "INFLUXDB_READ_USER_PASSWORD", "reader"),
    ):
        assert env[user_key] == svc.influx_user(role)
        assert referenced(env[password_key]) == {env_name("influxdb", svc.influx_user(role))}
    assert "INFLUXDB_WRITE_USER" not in env  # write-only: the rules engine could not read
    assert env["INFLUXDB_DB"] == svc.influxdb.database


def test_grafanas_data_source_queries_as_the_reader():
    svc = load_config(ROOT / "config" / "demo.yaml", env={}).services
    env = environment(SERVICES["grafana"])
    ds_file = ROOT / "dashboards" / "provisioning" / "datasources" / "foursave.yaml"
    (ds,) = yaml.safe_load(ds_file.read_text(encoding="utf-8"))["datasources"]
    user_var = referenced(ds["user"])
    password_var = referenced(ds["secureJsonData"]["password"])
    assert len(user_var) == len(password_var) == 1
    assert env[user_var.pop()] == svc.influx_user("reader")
    assert referenced(env[password_var.pop()]) == {env_name("influxdb", svc.influx_user("reader"))}
    assert "password" not in ds and "basicAuthPassword" not in ds  # never in clear


def test_the_broker_starts_after_its_password_file_is_written():
    one_shot, broker = SERVICES["broker-config"], SERVICES["mosquitto"]
    script = " ".join(one_shot["command"])
    assert (
        "foursave broker-config --config config/demo.yaml --out /mosquitto/config/generated"
        in " ".join(script.split())
    )
    assert one_shot["network_mode"] == "none"
    assert "mosquitto-auth:/mosquitto/config/generated" in one_shot["volumes"]
    assert "mosquitto-auth:/mosquitto/config/generated:ro" in broker["volumes"]
    assert broker["depends_on"]["broker-config"] == {"condition": "service_completed_successfully"}
    directives = mosquitto_directives(MOSQUITTO_CONF.read_text(encoding="utf-8"))
    for key, name in (("password_file", "passwd"), ("acl_file", "acl")):
        assert directives[key] == [f"/mosquitto/config/generated/{name}"]


def test_health_checks_log_in():
    svc = load_config(ROOT / "config" / "demo.yaml", env={}).services
    check = " ".join(SERVICES["mosquitto"]["healthcheck"]["test"])
    reader = svc.mqtt_account("reader")
    assert f"-u {reader} " in check
    assert f'-P "$${env_name("mqtt", reader)}"' in check  # read in the container
    assert env_name("mqtt", reader) in environment(SERVICES["mosquitto"])
    # /ping answers without credentials in InfluxDB 1.x (ping-auth-enabled = false)
    assert SERVICES["influxdb"]["healthcheck"]["test"][-1].endswith("/ping")
    assert "/health" in " ".join(SERVICES["api"]["healthcheck"]["test"])


def test_make_env_writes_every_required_variable_and_keeps_what_is_there(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("GRAFANA_ADMIN_PASSWORD=chosen-by-hand\n")
    run = [str(ROOT / "docker" / "make-env.sh"), str(env_file)]
    subprocess.run(run, check=True, capture_output=True)
    first = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
    required = {
        REQUIRED.match(m.group(1)).group(1)  # type: ignore[union-attr]
        for s in strings(COMPOSE)
        for m in INTERPOLATION.finditer(s)
    }
    assert set(first) == required
    assert first["GRAFANA_ADMIN_PASSWORD"] == "chosen-by-hand"
    assert all(
        re.fullmatch(r"[A-Za-z0-9]{40}", v)
        for k, v in first.items()
        if k != "GRAFANA_ADMIN_PASSWORD"
    )
    assert len(set(first.values())) == len(first)
    assert env_file.stat().st_mode & 0o077 == 0
    out = subprocess.run(run, check=True, capture_output=True, text=True).stdout
    assert "every secret already set" in out
    assert dict(line.split("=", 1) for line in env_file.read_text().splitlines()) == first


# ------------------------------------------------------------------ docker/mosquitto.conf


def mosquitto_directives(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            out.setdefault(key, []).append(value.strip())
    return out


def test_the_brokers_configuration_refuses_anonymous_clients():
    text = MOSQUITTO_CONF.read_text(encoding="utf-8")
    d = mosquitto_directives(text)
    assert d["allow_anonymous"] == ["false"]
    assert len(d["password_file"]) == len(d["acl_file"]) == 1
    assert d.get("per_listener_settings", ["false"]) == ["false"]  # one rule for all
    # a TLS listener for collectors outside the stack, ready to switch on
    for commented in ("#listener 8883", "#cafile ", "#certfile ", "#keyfile "):
        assert commented in text


@pytest.fixture
def docker_broker(tmp_path: Path):
    """docker/mosquitto.conf itself, on a free port, with its paths moved into tmp_path
    and a password file made by mosquitto_passwd."""
    auth = tmp_path / "generated"
    auth.mkdir()
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(auth / "passwd"), "reader", "reader-pw"], check=True
    )
    (auth / "acl").write_text("user reader\ntopic read $SYS/#\n")
    port = free_port()
    text = (
        MOSQUITTO_CONF.read_text(encoding="utf-8")
        .replace("/mosquitto/config/generated/", f"{auth}/")
        .replace("/mosquitto/data/", f"{tmp_path}/")
        # as root mosquitto would drop to user mosquitto, who cannot read tmp_path
        .replace("listener 1883\n", f"listener {port} 127.0.0.1\nuser {getpass.getuser()}\n")
    )
    assert f"listener {port} 127.0.0.1" in text and str(auth) in text
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(text)
    svc = LocalService(
        "mosquitto",
        ["mosquitto", "-c", str(conf)],
        "127.0.0.1",
        port,
        tmp_path,
        tmp_path / "mosquitto.log",
    )
    svc.start()
    yield port
    svc.stop()


def test_the_broker_lets_in_only_accounts_with_their_password(docker_broker):
    assert mosquitto_sub(docker_broker, "-u", "reader", "-P", "reader-pw").returncode == 0
    for creds in ([], ["-u", "reader", "-P", "wrong"], ["-u", "nobody", "-P", "reader-pw"]):
        refused = mosquitto_sub(docker_broker, *creds)
        assert refused.returncode != 0 and "not authorised" in refused.stderr, creds
