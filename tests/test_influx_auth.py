"""InfluxDB with authentication on: each service logs in as the user with the least
rights it needs (core/influxadmin.py, ``foursave influx-setup``), and https with a CA.

Real influxd 1.6 with ``auth-enabled`` (the session's ``influx_auth``, or one of the
test's own where it needs an empty server), real mosquitto, the API over real HTTP.
The passwords hold quotes and backslashes (tests/helpers.py AUTH_PASSWORDS): InfluxQL's
escaping is tried against the real server.  The same end-to-end pipeline tests run
with and without authentication in tests/test_pipeline.py (``-m influx_auth``).
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import uuid
from datetime import date

import httpx
import pytest

from foursave import cli
from foursave.api.keys import KeyStore
from foursave.api.main import create_app
from foursave.core.clock import ManualClock
from foursave.core.influx import (
    InfluxClient,
    InfluxReadOnly,
    InfluxTLSError,
    InfluxUnavailable,
)
from foursave.core.influxadmin import InfluxAdmin, InfluxSetupError, setup
from foursave.core.influxql import ALL, agg, eq, select
from foursave.core.secrets import SECRETS_FILE_ENV, Secrets, read_file, write_file
from foursave.core.topics import ingester_topic
from foursave.localstack import free_port, influxd
from foursave.rules.alerts import AlertEngine, AlertSettings, IncidentStore, Notifier
from foursave.rules.engine import run_once
from foursave.rules.records import RecordStore
from foursave.rules.rollup import ROLLUP
from foursave.simulators.backfill import run_backfill
from tests.api_fixtures import NOW, ServerThread, records, stack_config
from tests.helpers import (
    AUTH_PASSWORDS,
    ROOT,
    IngesterThread,
    Watcher,
    broker_secrets,
    make_config,
    make_test_ca,
    mqtt_anyone,
    start_auth_influx,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.influx_auth]

ADMIN, WRITER, READER = "foursave_admin", "foursave_writer", "foursave_reader"


def _no_password_in(text: str, passwords=AUTH_PASSWORDS) -> None:
    for pw in passwords.values():
        assert pw not in text


# ------------------------------------------------------------------ influx-setup


def test_influx_setup_makes_three_users_with_least_rights_and_can_run_again(tmp_path):
    server = influxd(free_port(), tmp_path / "influxd", auth=True).start(timeout_s=60)
    try:
        url = f"http://127.0.0.1:{server.port}"
        secrets = tmp_path / "secrets.yaml"
        write_file(secrets, {"influxdb": AUTH_PASSWORDS})
        cfg = make_config(tmp_path, 1, url, "foursave", secrets_file=secrets)
        env = {k: v for k, v in os.environ.items() if not k.startswith("FOURSAVE_")}
        argv = [sys.executable, "-m", "foursave", "influx-setup", "--config"]
        first = subprocess.run(
            [*argv, str(tmp_path / "config.yaml")],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert first.returncode == 0, first.stderr
        assert f"admin  {ADMIN}: created (the server had no admin)" in first.stdout
        assert f"writer {WRITER}: created; ALL on foursave" in first.stdout
        assert f"reader {READER}: created; READ on foursave" in first.stdout
        _no_password_in(first.stdout + first.stderr)

        with InfluxAdmin(url, username=ADMIN, password=AUTH_PASSWORDS[ADMIN]) as admin:
            assert admin.users() == {ADMIN: True, WRITER: False, READER: False}
            assert admin.grants(WRITER) == {"foursave": "ALL PRIVILEGES"}
            assert admin.grants(READER) == {"foursave": "READ"}

        # again, with the reader's password changed in the secrets: the same users,
        # the new password in force and the old one refused
        changed = {**AUTH_PASSWORDS, READER: "new \\' pass\"word"}
        write_file(secrets, {"influxdb": changed})
        again = setup(cfg.services, Secrets.load(str(secrets), env={}))
        assert again == [
            f"admin  {ADMIN}: password set from the secrets",
            "database foursave: present",
            f"writer {WRITER}: password set from the secrets; ALL on foursave",
            f"reader {READER}: password set from the secrets; READ on foursave",
        ]
        with InfluxAdmin(url, username=ADMIN, password=AUTH_PASSWORDS[ADMIN]) as admin:
            assert admin.users() == {ADMIN: True, WRITER: False, READER: False}
        for password, answer in ((changed[READER], None), (AUTH_PASSWORDS[READER], 401)):
            client = InfluxClient(url, "foursave", username=READER, password=password)
            try:
                client.rows(select(ALL, "nothing"))
                status = None
            except InfluxUnavailable as exc:
                status = exc.status
            finally:
                client.close()
            assert status == answer
    finally:
        server.stop()


def test_influx_setup_says_what_is_missing_or_wrong(tmp_path, influx_auth, capsys):
    secrets = tmp_path / "secrets.yaml"
    config = tmp_path / "config.yaml"
    make_config(tmp_path, 1, influx_auth.url, "foursave", secrets_file=secrets)

    write_file(secrets, {"influxdb": {ADMIN: AUTH_PASSWORDS[ADMIN], READER: "r"}})
    assert cli.main(["influx-setup", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "no password for foursave_writer (writer)" in err
    assert "FOURSAVE_INFLUXDB_PASSWORD_FOURSAVE_WRITER" in err and str(secrets) in err

    wrong = {**AUTH_PASSWORDS, ADMIN: "not the admin's"}
    write_file(secrets, {"influxdb": wrong})
    assert cli.main(["influx-setup", "--config", str(config)]) == 2
    out = capsys.readouterr()
    assert f"refused the admin user {ADMIN} (HTTP 401)" in out.err
    _no_password_in(out.out + out.err, wrong)

    secrets.chmod(0o644)
    assert cli.main(["influx-setup", "--config", str(config)]) == 2
    assert "chmod 600" in capsys.readouterr().err

    one = influx_auth.services("foursave", username="everyone")
    with pytest.raises(InfluxSetupError, match="makes every role one user"):
        setup(one, influx_auth.secrets())


# ------------------------------------------------------------------ 401 and 403


def test_the_reader_cannot_write_and_nobody_anonymous_gets_in(influx_auth, database):
    influx_auth.grant(database)
    with influx_auth.client(database, "writer") as writer:
        writer.write(["m,site=s v=1 1700000000000"])
        assert writer.create_database() is False  # not an admin: influx-setup makes it
    with influx_auth.client(database, "reader") as reader:
        assert reader.read_only
        assert reader.rows(select(ALL, "m"))[0]["v"] == 1
        with pytest.raises(InfluxReadOnly):
            reader.write(["m,site=s v=2 1700000001000"])  # refused before asking
    # the reader user itself, asked to write: the server refuses (403)
    raw = InfluxClient(influx_auth.url, database, username=READER, password=AUTH_PASSWORDS[READER])
    with raw, pytest.raises(InfluxUnavailable, match="not authorized to write") as refused:
        raw.write(["m,site=s v=2 1700000001000"])
    assert refused.value.status == 403 and f"user {READER}" in str(refused.value)
    anonymous = InfluxClient(influx_auth.url, database)
    with anonymous:
        for attempt in (
            lambda: anonymous.rows(select(ALL, "m")),
            lambda: anonymous.write(["m,site=s v=3 1700000002000"]),
        ):
            with pytest.raises(InfluxUnavailable, match="no credentials sent") as exc:
                attempt()
            assert exc.value.status == 401
    wrong = InfluxClient(influx_auth.url, database, username=WRITER, password="wrong")
    with wrong, pytest.raises(InfluxUnavailable, match="authorization failed") as exc:
        wrong.rows(select(ALL, "m"))
    assert exc.value.status == 401


def test_a_refused_ingester_retries_counts_and_stores_everything_once_fixed(
    tmp_path, broker, influx_auth, database
):
    """401 (no such user / wrong password) and 403 (no right to write) are retried,
    counted in ``auth_failures`` (the ingester's MQTT status while it waits, and
    ``ingest_stats`` after), never dead-lettered; once fixed, every reading is stored."""
    influx_auth.grant(database)
    writer = f"writer_{uuid.uuid4().hex[:8]}"
    ingester_pw = "the ingester's 'own' \\ password"
    # the broker's secrets file holds the services' MQTT passwords: InfluxDB's go beside
    secrets = broker_secrets(broker)
    current = read_file(secrets) if secrets.exists() else {}
    write_file(secrets, {**current, "influxdb": {**AUTH_PASSWORDS, writer: ingester_pw}})
    cfg = make_config(
        tmp_path,
        broker,
        influx_auth.url,
        database,
        devices=[],
        extra_services={
            "influxdb": {"users": {"writer": writer}},
            "ingester": {"retry_max_s": 0.5},
        },
    )
    admin = InfluxAdmin(influx_auth.url, username=ADMIN, password=AUTH_PASSWORDS[ADMIN])
    watch = Watcher(broker)
    pub = mqtt_anyone(broker, f"pub-{database}")
    status_topic = ingester_topic(cfg.services.ingester.id)
    n = 20
    try:
        with IngesterThread(cfg) as ing:
            for seq in range(n):
                reading = {
                    "ts": 1_700_000_000_000 + seq * 1000,
                    "seq": seq,
                    "kind": "meter",
                    "role": "main",
                    "fields": {"active_power_w": float(seq)},
                }
                topic = "foursave/v1/demo/m1/reading"
                pub.publish(topic, json.dumps(reading), qos=1).wait_for_publish(5)
            # the user does not exist yet: 401, and the status says so while it waits
            wait_for(
                lambda: (watch.last(status_topic) or {}).get("auth_failures", 0) >= 2,
                30,
                "auth_failures in the ingester's MQTT status",
            )
            # the user exists, without the right to write: 403
            from foursave.core import influxql

            admin.execute(influxql.create_user(writer, ingester_pw), "make the writer")
            with (
                InfluxClient(
                    influx_auth.url, database, username=writer, password=ingester_pw
                ) as probe,
                pytest.raises(InfluxUnavailable) as refused,
            ):
                probe.write(["probe v=1 1"])
            assert refused.value.status == 403
            before = ing.ingester.auth_failures
            wait_for(lambda: ing.ingester.auth_failures >= before + 2, 30, "403s counted")
            assert ing.ingester.written == 0 and ing.ingester.dead.count() == 0
            # fixed as an operator fixes it: influx-setup with the ingester's secrets
            setup(cfg.services, Secrets.load(str(secrets), env={}))
            with influx_auth.client(database, "reader") as reader:
                count = select(agg("count", "active_power_w"), "meter")
                wait_for(
                    lambda: (reader.rows(count) or [{}])[0].get("count") == n,
                    30,
                    f"all {n} readings stored",
                )
                wait_for(
                    lambda: reader.rows(select(agg("last", "auth_failures"), "ingest_stats")),
                    30,
                    "ingest_stats written",
                )
                stats = reader.rows(select(agg("last", "auth_failures"), "ingest_stats"))
            failures = ing.ingester.auth_failures
            assert stats[0]["last"] == failures >= 4
            assert ing.ingester.dead.count() == 0
            assert all(s.gaps == 0 for s in ing.ingester.seq.devices.values())
    finally:
        pub.loop_stop()
        pub.disconnect()
        watch.close()
        admin.close()


# ------------------------------------------------------------------ the API as the reader


def test_the_api_as_the_reader_acknowledges_and_builds_reports(tmp_path, influx_auth, monkeypatch):
    """The API logs in as the reader: an acknowledgement (API or CLI) reaches alert
    history through the rules engine's next pass, exactly once, and a report computed
    from the raw readings (nothing in the rollup yet, and the reader may not fill it)
    carries the same numbers as the engine's ledger."""
    database = f"t_{uuid.uuid4().hex[:12]}"
    influx_auth.grant(database)
    monkeypatch.setenv(SECRETS_FILE_ENV, str(influx_auth.secrets_file))
    cfg = stack_config(tmp_path, 1, influx_auth.url, database)
    clock = ManualClock(NOW.timestamp())
    writer = influx_auth.client(database, "writer", timeout_s=60)
    reader = influx_auth.client(database, "reader", timeout_s=60)
    rec = RecordStore(cfg.services.rules.records_path)
    records(rec)
    keys = KeyStore(cfg.services.api.keys_path)
    engineer = keys.create("eng", "engineer", "test")[1]
    auditor = keys.create("aud", "auditor", "test")[1]
    keys.close()
    store = IncidentStore(cfg.services.rules.state_path)
    try:
        run_backfill(cfg, date(2025, 11, 1), date(2026, 1, 21), step_s=900, influx=writer)
        incidents = []
        for device in ("inv-01", "inv-02"):
            inc = store.create("inverter-fault", "demo", device, clock.time() - 600, 7.0)
            inc.state, inc.fired_at = "firing", clock.time() - 300
            store.update(inc)
            incidents.append(inc.id)

        with ServerThread(create_app(cfg, clock=clock, refresh=False)) as server:
            r = httpx.post(
                f"{server.url}/api/v1/alerts/{incidents[0]}/ack",
                json={"comment": "string 2 fuse replaced"},
                headers={"X-API-Key": engineer},
                timeout=30,
            )
            assert r.status_code == 200, r.text
            report = httpx.get(
                f"{server.url}/api/v1/reports/2025",
                params={"month": 12, "format": "csv", "lang": "en"},
                headers={"X-API-Key": auditor},
                timeout=300,
            )
            assert report.status_code == 200, report.text
        # the CLI acknowledges with no InfluxDB user at all
        config_path = str(tmp_path / "config.yaml")
        assert cli.main(["alerts", "ack", str(incidents[1]), "--config", config_path]) == 0

        acks = select(ALL, "alert_events", where=[eq("event", "acknowledged")])
        assert reader.rows(acks) == []  # neither wrote to InfluxDB
        assert reader.rows(select(agg("count", "*"), ROLLUP)) == []  # nor to the rollup
        engine = AlertEngine(
            cfg, AlertSettings(mqtt=False), writer, store, Notifier(AlertSettings()), clock
        )
        for _ in range(2):  # the rules engine's passes: the second writes nothing again
            engine.evaluate()
        events = sorted(reader.rows(acks), key=lambda e: e["incident"])
        assert [(e["incident"], e["comment"]) for e in events] == [
            (incidents[0], "string 2 fuse replaced"),
            (incidents[1], ""),
        ]
        assert store.pending_acks() == []

        # the engine's ledger over the same readings: the report's numbers, exactly
        run_once(cfg, writer, rec, date(2025, 11, 1), date(2026, 1, 21), clock)
        assert reader.rows(select(agg("count", "*"), ROLLUP))  # the writer fills it
        ledger = {
            row["item"]: row
            for row in reader.rows(
                select(ALL, "ledger", where=[eq("granularity", "month"), eq("period", "2025-12")])
            )
        }
        summary = report.content.decode("utf-8-sig").split("\r\n\r\n")[0]
        rows = {row["Item"]: row for row in csv.DictReader(io.StringIO(summary))}
        for item in ("Electricity", "Water"):
            assert float(rows[item]["Actual"]) == pytest.approx(
                ledger[item.lower()]["actual"], rel=1e-12
            )
    finally:
        store.close()
        rec.close()
        writer.close()
        reader.close()


# ------------------------------------------------------------------ https


@pytest.fixture(scope="module")
def https_influx(tmp_path_factory):
    """influxd over https (a test CA's certificate for 127.0.0.1) with authentication
    on; its users made by influx-setup over https, trusting the CA."""
    tmp = tmp_path_factory.mktemp("influxd-https")
    auth = start_auth_influx(tmp, tls=make_test_ca(tmp / "ca"))
    yield auth
    auth.server.stop()


def test_https_with_the_ca_file_works(https_influx):
    assert https_influx.url.startswith("https://")
    with https_influx.client("foursave", "writer") as writer:
        writer.write(["tls_check,site=s v=1 1700000000000"])
    with https_influx.client("foursave", "reader") as reader:
        assert reader.rows(select(ALL, "tls_check"))[0]["v"] == 1


def test_https_with_an_unknown_ca_fails_saying_the_certificate_is_not_verified(
    https_influx,
):
    svc = https_influx.services("foursave", ca_file=None)  # verify on, the system's CAs
    client = InfluxClient.for_role(svc, "reader", https_influx.secrets())
    with client, pytest.raises(InfluxUnavailable, match="certificate could not be verified") as exc:
        client.rows(select(ALL, "tls_check"))
    assert "services.influxdb.ca_file" in str(exc.value)
    with pytest.raises(InfluxUnavailable, match="certificate could not be verified"):
        setup(svc, https_influx.secrets())


def test_https_without_verification_works_when_asked(https_influx):
    svc = https_influx.services("foursave", ca_file=None, tls_verify=False)
    with InfluxClient.for_role(svc, "reader", https_influx.secrets()) as client:
        assert client.ping()
        client.rows(select(ALL, "tls_check"))


def test_an_unreadable_ca_file_is_named(https_influx, tmp_path):
    missing = tmp_path / "no-such-ca.pem"
    svc = https_influx.services("foursave", ca_file=str(missing))
    with pytest.raises(InfluxTLSError, match=f"ca_file {missing}: cannot be used"):
        InfluxClient.for_role(svc, "reader", https_influx.secrets())
    make_config(
        tmp_path,
        1,
        https_influx.url,
        "foursave",
        secrets_file=https_influx.secrets_file,
        extra_services={"influxdb": {"ca_file": str(missing)}},
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("FOURSAVE_")}
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "foursave",
            "influx-setup",
            "--config",
            str(tmp_path / "config.yaml"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 2, p.stderr
    assert f"ca_file {missing}: cannot be used" in p.stderr and "Traceback" not in p.stderr
