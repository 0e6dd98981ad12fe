"""deploy/: the no-Docker production install on Debian 12 (deploy/README.md).

The systemd units are checked by systemd itself (``systemd-analyze verify`` and
``security``), the broker and database snippets by a real mosquitto and a real influxd
running them, the certificate and password helpers by running them.  install.sh is
only parsed: it changes the machine (packages, a user, /etc), which a test may not.
"""

from __future__ import annotations

import getpass
import re
import shutil
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from foursave.app import load_config
from foursave.cli import build_parser
from foursave.core.secrets import Secrets, read_file
from foursave.localstack import LocalService, free_port
from tests.helpers import ROOT, mosquitto_sub

DEPLOY = ROOT / "deploy"
UNIT_DIR = DEPLOY / "systemd"
VENV_BIN = "/opt/foursave/venv/bin/foursave"
SERVICES = {
    "foursave-collect.service": "collect",
    "foursave-ingest.service": "ingest",
    "foursave-rules.service": "rules",
    "foursave-api.service": "api",
}
STATE = "/var/lib/foursave"


def unit_settings(path: Path) -> dict[str, dict[str, list[str]]]:
    """section -> key -> values (in order) of a systemd unit file."""
    out: dict[str, dict[str, list[str]]] = {}
    section = None
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
            out.setdefault(section, {})
            continue
        assert section is not None, f"{path.name}: {line!r} before any section"
        key, _, value = line.partition("=")
        out[section].setdefault(key, []).append(value)
    return out


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"
    assert Path(found).exists(), "systemd-analyze not found: install the Debian package systemd"
    return found


def runnable_copies(tmp_path: Path) -> list[Path]:
    """The unit files with ExecStart's venv binary (absent here) replaced by one that
    exists, so that verify judges the files' own content."""
    out = []
    for unit in sorted(UNIT_DIR.iterdir()):
        text = unit.read_text(encoding="utf-8")
        if unit.suffix == ".service":
            assert VENV_BIN in text, unit.name
            text = text.replace(VENV_BIN, sys.executable)
        copy = tmp_path / unit.name
        copy.write_text(text)
        out.append(copy)
    return out


# ------------------------------------------------------------------ systemd units


def test_the_unit_files_are_the_four_services_and_their_target():
    assert {p.name for p in UNIT_DIR.iterdir()} == {*SERVICES, "foursave.target"}


def test_systemd_finds_nothing_wrong_in_the_units(tmp_path):
    copies = runnable_copies(tmp_path)
    done = subprocess.run(
        [systemd_analyze(), "verify", *map(str, copies)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_verify_would_report_a_mistake(tmp_path):
    """The check above can fail: a misspelt setting is reported (and systemd would
    ignore it, silently dropping the protection)."""
    (copy,) = [c for c in runnable_copies(tmp_path) if c.name == "foursave-api.service"]
    copy.write_text(copy.read_text().replace("ProtectSystem=strict", "ProtectSytem=strict"))
    done = subprocess.run(
        [systemd_analyze(), "verify", str(copy)], capture_output=True, text=True, timeout=120
    )
    assert "Unknown key 'ProtectSytem'" in done.stdout + done.stderr


@pytest.mark.parametrize("unit", sorted(SERVICES))
def test_each_service_runs_confined_as_foursave(unit):
    s = unit_settings(UNIT_DIR / unit)
    svc, install = s["Service"], s["Install"]
    hardening = {
        "User": ["foursave"],
        "Group": ["foursave"],
        "NoNewPrivileges": ["yes"],
        "ProtectSystem": ["strict"],
        "ReadWritePaths": [STATE],  # the var dir and nothing else
        "ProtectHome": ["yes"],
        "PrivateTmp": ["yes"],
        "CapabilityBoundingSet": [""],
        "Restart": ["on-failure"],
        "KillSignal": ["SIGTERM"],
        "WorkingDirectory": [STATE],
    }
    assert {k: svc.get(k) for k in hardening} == hardening
    # stops cleanly on SIGTERM: at least compose's stop_grace_period before a SIGKILL
    assert int(svc["TimeoutStopSec"][0]) >= 30
    (command,) = svc["ExecStart"]
    binary, sub, *args = command.split()
    assert (binary, sub, args) == (
        VENV_BIN,
        SERVICES[unit],
        ["--config", "/etc/foursave/foursave.yaml"],
    )
    commands = next(a for a in build_parser()._actions if a.dest == "command").choices
    assert sub in commands
    # its own passwords, from a root-only file systemd hands over
    assert svc["LoadCredential"] == [f"secrets.yaml:/etc/foursave/credentials/{sub}.yaml"]
    assert "FOURSAVE_SECRETS_FILE=%d/secrets.yaml" in svc["Environment"]
    assert not any("PASSWORD" in e for e in svc.get("Environment", []))
    assert s["Unit"]["PartOf"] == ["foursave.target"]
    assert install["WantedBy"] == ["foursave.target"]


@pytest.mark.parametrize("unit", sorted(SERVICES))
def test_systemd_rates_each_service_well_confined(unit, tmp_path):
    """``systemd-analyze security``: exposure 0 (locked down) to 10 (unprotected);
    each unit stays at 2.0 or below ("OK")."""
    (copy,) = [c for c in runnable_copies(tmp_path) if c.name == unit]
    done = subprocess.run(
        [systemd_analyze(), "security", "--offline=yes", "--threshold=20", str(copy)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d)", done.stdout)
    assert m, done.stdout + done.stderr
    assert done.returncode == 0 and float(m.group(1)) <= 2.0, m.group(0)


def test_only_the_collector_reaches_devices():
    for unit in SERVICES:
        svc = unit_settings(UNIT_DIR / unit)["Service"]
        if unit == "foursave-collect.service":  # Modbus RTU serial lines
            assert svc["SupplementaryGroups"] == ["dialout"]
            assert "PrivateDevices" not in svc
        else:
            assert svc["PrivateDevices"] == ["yes"]
            assert "SupplementaryGroups" not in svc


# ------------------------------------------------------------------ install.sh


def test_install_script_parses_and_is_strict():
    script = DEPLOY / "install.sh"
    for path in (script, DEPLOY / "make-certs.sh", ROOT / "docker" / "make-env.sh"):
        subprocess.run(["bash", "-n", str(path)], check=True)
        assert "set -euo pipefail" in path.read_text(), path.name
        assert path.stat().st_mode & 0o111, f"{path.name} is not executable"
        if shutil.which("shellcheck"):  # not installed on the development machines
            subprocess.run(["shellcheck", str(path)], check=True)


def test_install_script_uses_what_exists():
    text = (DEPLOY / "install.sh").read_text()
    for rel in re.findall(r'"\$SRC/([^"$*]+)"', text):
        assert (ROOT / rel).exists(), f"install.sh installs $SRC/{rel}, which does not exist"
    assert re.search(r'"\$SRC"/deploy/systemd/foursave-\*\.service', text)
    (services,) = re.findall(r"^SERVICES=\(([^)]*)\)", text, re.M)
    assert {f"{s}.service" for s in services.split()} == set(SERVICES)
    # the broker's and the database's set-up commands, by their contract names
    assert re.search(r'"\$FOURSAVE" broker-config --config "\$ETC/foursave.yaml" --out ', text)
    assert re.search(r'"\$FOURSAVE" influx-setup --config "\$ETC/foursave.yaml"', text)
    # the paths the units and the snippets name are the ones it creates
    for path in ("/etc/foursave", "/var/lib/foursave", "/opt/foursave", "/etc/mosquitto/foursave"):
        assert path in text
    # every file the snippets name is one it installs (the broker's password file and
    # ACL: broker-config writes them into $MOSQUITTO_AUTH)
    snippets = [DEPLOY / "mosquitto" / "foursave.conf", DEPLOY / "influxdb" / "foursave.conf"]
    named = [
        path
        for snippet in snippets
        for line in snippet.read_text().splitlines()
        if not line.lstrip().startswith("#")
        for path in re.findall(r"/etc/\S+", line)
    ]
    assert len(named) == 7, named
    (auth,) = re.findall(r"^MOSQUITTO_AUTH=(\S+)$", text, re.M)
    for path in named:
        if path.startswith(auth + "/"):
            assert path.removeprefix(auth + "/") in ("passwd", "acl"), path
        else:
            assert path in text, f"{path}: install.sh does not install it"


# ------------------------------------------------------------------ the configuration


def test_the_example_configuration_writes_only_where_the_units_may():
    cfg = load_config(DEPLOY / "foursave.example.yaml", env={})
    svc = cfg.services
    written = [
        svc.collector.spool_path,
        svc.ingester.dead_letter_path,
        svc.rules.records_path,
        svc.rules.state_path,
        svc.api.keys_path,
        svc.api.reports_path,
    ]
    assert all(p.startswith(STATE + "/") for p in written), written
    assert svc.rules.alerts_path.startswith("/etc/foursave/")
    assert svc.influxdb.url.startswith("https://") and svc.influxdb.ca_file == (
        "/etc/foursave/tls/ca.crt"
    )
    assert svc.mqtt.host == "127.0.0.1" and svc.mqtt.port == 1883  # the loopback listener
    assert svc.api.host == "127.0.0.1"


# ------------------------------------------------------------------ certificates


def _make_certs(out: Path, *names: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(DEPLOY / "make-certs.sh"), str(out), *names],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )


def test_make_certs_makes_a_ca_and_a_server_certificate_once(tmp_path):
    tls = tmp_path / "tls"
    _make_certs(tls, "energy.example.gov.tw", "10.20.0.5")
    files = {p.name: p.read_bytes() for p in tls.iterdir()}
    assert {"ca.crt", "ca.key", "server.crt", "server.key"} <= set(files)
    for key in ("ca.key", "server.key"):
        assert (tls / key).stat().st_mode & 0o077 == 0, key
    verified = subprocess.run(
        ["openssl", "verify", "-CAfile", str(tls / "ca.crt"), str(tls / "server.crt")],
        capture_output=True,
        text=True,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    san = subprocess.run(
        ["openssl", "x509", "-in", str(tls / "server.crt"), "-noout", "-ext", "subjectAltName"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for entry in (
        "DNS:energy.example.gov.tw",
        "IP Address:10.20.0.5",
        "DNS:localhost",
        "IP Address:127.0.0.1",
    ):
        assert entry in san
    # a second run keeps everything: the clients' copies of ca.crt stay valid
    again = _make_certs(tls, "energy.example.gov.tw")
    assert {p.name: p.read_bytes() for p in tls.iterdir()} == files
    assert again.stdout == ""


# ------------------------------------------------------------------ passwords


def _credentials(config: Path, secrets: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            str(DEPLOY / "credentials.py"),
            "--config",
            str(config),
            "--secrets",
            str(secrets),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin"},
    )


def test_each_unit_gets_only_its_own_passwords(tmp_path):
    config = DEPLOY / "foursave.example.yaml"
    svc = load_config(config, env={}).services
    secrets, out = tmp_path / "secrets.yaml", tmp_path / "credentials"
    # a password set by hand beforehand is kept
    secrets.write_text(yaml.safe_dump({"mqtt": {"reader": "chosen-by-hand"}}))
    secrets.chmod(0o600)
    first = _credentials(config, secrets, out)
    assert first.returncode == 0, first.stderr
    everything = read_file(secrets)
    mqtt = [svc.mqtt_account(r) for r in ("collector", "ingester", "rules", "api", "reader")]
    influx = [svc.influx_user(r) for r in ("admin", "writer", "reader")]
    assert sorted(everything["mqtt"]) == sorted(mqtt)
    assert sorted(everything["influxdb"]) == sorted(influx)
    assert everything["mqtt"]["reader"] == "chosen-by-hand"
    assert len({*everything["mqtt"].values(), *everything["influxdb"].values()}) == 8
    wanted = {
        "collect": ({"mqtt": [svc.mqtt_account("collector")]}),
        "ingest": {"mqtt": [svc.mqtt_account("ingester")], "influxdb": [svc.influx_user("writer")]},
        "rules": {"mqtt": [svc.mqtt_account("rules")], "influxdb": [svc.influx_user("writer")]},
        "api": {"mqtt": [svc.mqtt_account("api")], "influxdb": [svc.influx_user("reader")]},
    }
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{u}.yaml" for u in wanted)
    for unit, accounts in wanted.items():
        path = out / f"{unit}.yaml"
        assert path.stat().st_mode & 0o077 == 0
        mine = read_file(path)
        assert {k: sorted(v) for k, v in mine.items()} == accounts, unit
        seen = Secrets.load(None, env={"FOURSAVE_SECRETS_FILE": str(path)})
        for kind, names in accounts.items():
            for name in names:
                assert seen.password(kind, name) == everything[kind][name]  # type: ignore[arg-type]
    # again: nothing new, the same passwords
    second = _credentials(config, secrets, out)
    assert second.returncode == 0 and "random passwords" not in second.stdout
    assert read_file(secrets) == everything


def test_credentials_names_a_bad_configuration(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("services:\n  mqtt: {url: ftp://nowhere}\nsites: []\n")
    done = _credentials(bad, tmp_path / "s.yaml", tmp_path / "c")
    assert done.returncode == 2
    assert str(bad) in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "s.yaml").exists()


# ------------------------------------------------------------------ mosquitto


@pytest.fixture
def debian_broker(tmp_path):
    """Debian's mosquitto.conf (persistence, include_dir conf.d) with
    deploy/mosquitto/foursave.conf in conf.d, its paths moved into tmp_path and its
    listeners on free loopback ports; the password file from mosquitto_passwd."""
    tls = tmp_path / "tls"
    _make_certs(tls, "broker.example")
    auth = tmp_path / "auth"
    auth.mkdir()
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(auth / "passwd"), "reader", "reader-pw"], check=True
    )
    (auth / "acl").write_text("user reader\ntopic read $SYS/#\n")
    plain, secure = free_port(), free_port()
    text = (DEPLOY / "mosquitto" / "foursave.conf").read_text()
    for old, new in (
        ("/etc/mosquitto/foursave/", f"{auth}/"),
        ("/etc/mosquitto/certs/foursave-server.crt", str(tls / "server.crt")),
        ("/etc/mosquitto/certs/foursave-server.key", str(tls / "server.key")),
        ("/etc/mosquitto/certs/foursave-ca.crt", str(tls / "ca.crt")),
        ("listener 1883 127.0.0.1\n", f"listener {plain} 127.0.0.1\n"),
        ("listener 8883\n", f"listener {secure} 127.0.0.1\n"),
    ):
        assert old in text, old
        text = text.replace(old, new)
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "foursave.conf").write_text(text)
    main = tmp_path / "mosquitto.conf"
    main.write_text(
        "persistence true\n"
        f"persistence_location {tmp_path}/\n"
        "log_dest stderr\n"
        # as root mosquitto would drop to user mosquitto, who cannot read tmp_path
        f"user {getpass.getuser()}\n"
        f"include_dir {tmp_path / 'conf.d'}\n"
    )
    svc = LocalService(
        "mosquitto",
        ["mosquitto", "-c", str(main)],
        "127.0.0.1",
        secure,
        tmp_path,
        tmp_path / "mosquitto.log",
    )
    svc.start()
    yield plain, secure, tls
    svc.stop()


def test_the_broker_asks_everyone_to_log_in_on_both_listeners(debian_broker):
    plain, secure, tls = debian_broker
    ca = ["--cafile", str(tls / "ca.crt")]
    assert mosquitto_sub(plain, "-u", "reader", "-P", "reader-pw").returncode == 0
    assert mosquitto_sub(secure, *ca, "-u", "reader", "-P", "reader-pw").returncode == 0
    for port, extra in ((plain, []), (secure, ca)):
        for creds in ([], ["-u", "reader", "-P", "wrong"]):
            refused = mosquitto_sub(port, *extra, *creds)
            assert refused.returncode != 0 and "not authorised" in refused.stderr, (port, creds)


def test_the_tls_listener_speaks_only_tls_with_its_certificate(debian_broker, tmp_path):
    _, secure, _ = debian_broker
    creds = ["-u", "reader", "-P", "reader-pw"]
    # plain MQTT on the TLS port: no answer it understands (it gives up after 3 s)
    assert mosquitto_sub(secure, *creds, wait_s=3).returncode != 0
    other = tmp_path / "other-ca"
    _make_certs(other, "elsewhere.example")
    untrusted = mosquitto_sub(secure, "--cafile", str(other / "ca.crt"), *creds)
    # a certificate this CA did not sign
    assert untrusted.returncode != 0 and "TLS error" in untrusted.stderr


# ------------------------------------------------------------------ InfluxDB


def dropin_environment() -> dict[str, str]:
    svc = unit_settings(DEPLOY / "influxdb" / "foursave.conf")["Service"]
    return dict(e.split("=", 1) for e in svc["Environment"])


def test_the_influxdb_snippet_turns_on_login_and_https_and_keeps_to_loopback():
    env = dropin_environment()
    assert env["INFLUXDB_HTTP_AUTH_ENABLED"] == "true"
    assert env["INFLUXDB_HTTP_HTTPS_ENABLED"] == "true"
    assert env["INFLUXDB_HTTP_BIND_ADDRESS"].startswith("127.0.0.1:")
    assert env["INFLUXDB_BIND_ADDRESS"].startswith("127.0.0.1:")  # backup/restore RPC
    assert env["INFLUXDB_REPORTING_DISABLED"] == "true"


@pytest.fixture
def debian_influxd(tmp_path, monkeypatch):
    """influxd with deploy/influxdb/foursave.conf's environment (certificates, ports and
    data moved into tmp_path) over a minimal configuration file."""
    tls = tmp_path / "tls"
    _make_certs(tls, "influx.example")
    http, rpc = free_port(), free_port()
    env = dropin_environment()
    env |= {
        "INFLUXDB_HTTP_HTTPS_CERTIFICATE": str(tls / "server.crt"),
        "INFLUXDB_HTTP_HTTPS_PRIVATE_KEY": str(tls / "server.key"),
        "INFLUXDB_HTTP_BIND_ADDRESS": f"127.0.0.1:{http}",
        "INFLUXDB_BIND_ADDRESS": f"127.0.0.1:{rpc}",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    conf = tmp_path / "influxdb.conf"
    conf.write_text(
        f'[meta]\n  dir = "{tmp_path}/meta"\n'
        f'[data]\n  dir = "{tmp_path}/data"\n  wal-dir = "{tmp_path}/wal"\n'
        "[monitor]\n  store-enabled = false\n"
    )
    svc = LocalService(
        "influxd",
        ["influxd", "-config", str(conf)],
        "127.0.0.1",
        http,
        tmp_path,
        tmp_path / "influxd.log",
    )
    svc.start()
    yield f"https://localhost:{http}", ssl.create_default_context(cafile=str(tls / "ca.crt"))
    svc.stop()


def test_influxdb_answers_over_https_and_only_to_users(debian_influxd):
    url, ca = debian_influxd
    with httpx.Client(base_url=url, verify=ca, timeout=10) as c:
        assert c.get("/ping").status_code == 204  # what install.sh waits on: no login
        # no user yet: only creating the first admin is allowed
        assert c.post("/query", data={"q": "SHOW DATABASES"}).status_code == 403
        create = c.post(
            "/query", data={"q": "CREATE USER root_test WITH PASSWORD 'pw' WITH ALL PRIVILEGES"}
        )
        assert create.status_code == 200, create.text
        assert c.post("/query", data={"q": "SHOW DATABASES"}).status_code == 401
        assert c.post("/write", params={"db": "foursave"}, content=b"m v=1").status_code == 401
        ok = c.post("/query", data={"q": "SHOW DATABASES"}, auth=("root_test", "pw"))
        assert ok.status_code == 200, ok.text
        assert c.get("/debug/pprof/").status_code == 404  # profiling off
    plain = httpx.get(url.replace("https://", "http://") + "/ping", timeout=10)
    assert plain.status_code == 400  # HTTP to an HTTPS server
