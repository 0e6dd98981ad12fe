"""The HTTP API over real HTTP (uvicorn), on a backfilled site in a real influxd, with a
real mosquitto for the live status: authorisation on every route, validation, records,
alerts, keys, metrics."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from foursave.api.keys import KeyRequestError, KeyStore
from foursave.api.main import create_app
from foursave.core.influxql import ALL, eq, select
from foursave.localstack import free_port
from foursave.rules.alerts import IncidentStore, write_pending_acks
from tests.api_fixtures import NOW, ServerThread, build_stack
from tests.helpers import auth_broker, mqtt_anyone, reap, wait_for

pytestmark = pytest.mark.integration

# Written out here, not read from the code: the matrix the code must implement.
READ = {"viewer", "engineer", "auditor", "admin"}
EXPECTED: dict[tuple[str, str], set[str]] = {
    ("GET", "/api/v1/sites"): READ,
    ("GET", "/api/v1/sites/{site_id}"): READ,
    ("GET", "/api/v1/devices"): READ,
    ("GET", "/api/v1/devices/{device_id}"): READ,
    ("GET", "/api/v1/devices/{device_id}/latest"): READ,
    ("GET", "/api/v1/series"): READ,
    ("GET", "/api/v1/ledger"): READ,
    ("GET", "/api/v1/ledger/daily"): READ,
    ("GET", "/api/v1/pv"): READ,
    ("GET", "/api/v1/demand"): READ,
    ("GET", "/api/v1/sites/{site_id}/contract"): READ,
    ("GET", "/api/v1/alerts"): READ,
    ("GET", "/api/v1/alerts/{incident_id}"): READ,
    ("POST", "/api/v1/alerts/{incident_id}/ack"): {"engineer", "admin"},
    ("GET", "/api/v1/records"): READ,
    ("GET", "/api/v1/records/{record_id}"): READ,
    ("POST", "/api/v1/records"): {"auditor", "admin"},
    ("POST", "/api/v1/records/{record_id}/correct"): {"auditor", "admin"},
    ("POST", "/api/v1/records/import"): {"auditor", "admin"},
    ("POST", "/api/v1/adjustments"): {"admin"},
    ("GET", "/api/v1/reports"): {"auditor", "admin"},
    ("GET", "/api/v1/reports/{year}"): {"auditor", "admin"},
    ("POST", "/api/v1/reports/{year}/recompute"): {"auditor", "admin"},
    ("GET", "/api/v1/keys"): {"admin"},
    ("POST", "/api/v1/keys"): {"admin"},
    ("DELETE", "/api/v1/keys/{key_id}"): {"admin"},
    ("GET", "/metrics"): READ,
}
PUBLIC = {("GET", "/health"), ("GET", "/display"), ("GET", "/display/data")}


@pytest.fixture(scope="module")
def stack(api_history, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("api")
    broker = auth_broker(free_port(), tmp / "mosquitto").start()
    # its own copy of the history: the acknowledgements write alert events to InfluxDB
    st = build_stack(tmp, broker, api_history, own_database=True)
    store = IncidentStore(st.config.services.rules.state_path)
    inc = store.create("inverter_trip", "demo", "inv-01", NOW.timestamp() - 600, 7.0)
    inc.state, inc.fired_at = "firing", NOW.timestamp() - 300
    store.update(inc)
    store.close()
    st.incident_id = inc.id
    st.broker = broker
    app = create_app(st.config, clock=st.clock, refresh=False)
    with ServerThread(app) as server:
        st.url = server.url
        st.app = app
        yield st
    broker.stop()
    st.influx.close()


def call(st, method: str, path: str, role: str | None = None, key: str | None = None, **kw):
    headers = kw.pop("headers", {})
    if role:
        headers["X-API-Key"] = st.keys[role]
    if key:
        headers["X-API-Key"] = key
    return httpx.request(method, st.url + path, headers=headers, timeout=120, **kw)


def series(st, params: dict) -> httpx.Response:
    return call(st, "GET", "/api/v1/series", "viewer", params=params)


def requests_for(st) -> dict[tuple[str, str], dict]:
    """A well-formed request for every route (so only the key decides)."""
    day = {"start": "2025-07-01", "end": "2025-07-08"}
    return {
        ("GET", "/api/v1/sites"): {},
        ("GET", "/api/v1/sites/{site_id}"): {"path": "/api/v1/sites/demo"},
        ("GET", "/api/v1/devices"): {},
        ("GET", "/api/v1/devices/{device_id}"): {"path": "/api/v1/devices/inv-01"},
        ("GET", "/api/v1/devices/{device_id}/latest"): {"path": "/api/v1/devices/inv-01/latest"},
        ("GET", "/api/v1/series"): {
            "params": {
                "device": "inv-01",
                "field": "ac_power_w",
                "start": "2026-01-20T00:00:00+08:00",
                "end": "2026-01-21T00:00:00+08:00",
                "interval": "1h",
            }
        },
        ("GET", "/api/v1/ledger"): {"params": {"site": "demo", "year": 2025}},
        ("GET", "/api/v1/ledger/daily"): {"params": {"site": "demo", **day}},
        ("GET", "/api/v1/pv"): {"params": {"site": "demo", **day}},
        ("GET", "/api/v1/demand"): {"params": {"site": "demo", "year": 2025, "month": 7}},
        ("GET", "/api/v1/sites/{site_id}/contract"): {
            "path": "/api/v1/sites/demo/contract",
            "params": {"until": "2025-12"},
        },
        ("GET", "/api/v1/alerts"): {},
        ("GET", "/api/v1/alerts/{incident_id}"): {"path": f"/api/v1/alerts/{st.incident_id}"},
        ("POST", "/api/v1/alerts/{incident_id}/ack"): {
            "path": f"/api/v1/alerts/{st.incident_id}/ack",
            "json": {"comment": "inverter reset on site"},
        },
        ("GET", "/api/v1/records"): {"params": {"site": "demo", "period": "2025-07"}},
        ("GET", "/api/v1/records/{record_id}"): {"path": "/api/v1/records/1"},
        ("POST", "/api/v1/records"): {
            "json": {"site": "demo", "period": "2026-01", "kind": "diesel_l", "value": 10}
        },
        ("POST", "/api/v1/records/{record_id}/correct"): {
            "path": "/api/v1/records/2/correct",
            "json": {"value": 931},
        },
        ("POST", "/api/v1/records/import"): {
            "content": b"site,period,kind,value\ndemo,2026-01,paper_reams,3\n",
            "headers": {"Content-Type": "text/csv"},
        },
        ("POST", "/api/v1/adjustments"): {
            "json": {
                "site": "demo",
                "period": "2026-01",
                "item": "water",
                "value": -2,
                "reason": "pipe burst repaired",
                "approved_by": "王科長",
                "approved_on": "2026-01-20",
            }
        },
        ("GET", "/api/v1/reports"): {},
        ("GET", "/api/v1/reports/{year}"): {
            "path": "/api/v1/reports/2025",
            "params": {"month": 1, "format": "csv"},
        },
        ("POST", "/api/v1/reports/{year}/recompute"): {
            "path": "/api/v1/reports/2025/recompute",
            "params": {"month": 1, "format": "csv"},
            "json": {"reason": "checking the authorisation"},
        },
        ("GET", "/api/v1/keys"): {},
        ("POST", "/api/v1/keys"): {"json": {"name": "grafana", "role": "viewer"}},
        ("DELETE", "/api/v1/keys/{key_id}"): {"path": "/api/v1/keys/ffffffff"},
        ("GET", "/metrics"): {},
    }


def test_every_route_is_in_the_authorisation_matrix(stack):
    spec = httpx.get(stack.url + "/openapi.json").json()
    routes = {(m.upper(), path) for path, ops in spec["paths"].items() for m in ops}
    assert routes == set(EXPECTED) | PUBLIC


def test_authorisation_matrix_over_every_route_and_role(stack):
    reqs = requests_for(stack)
    assert set(reqs) == set(EXPECTED)
    for (method, route), allowed in EXPECTED.items():
        spec = dict(reqs[(method, route)])
        path = spec.pop("path", route)
        where = f"{method} {path}"
        r = call(stack, method, path, **spec)
        assert r.status_code == 401, (where, r.status_code, r.text)
        assert "API key" in r.json()["detail"]
        r = call(stack, method, path, key="fsk_00000001_" + "x" * 43, **spec)
        assert r.status_code == 401, (where, "unknown key", r.text)
        for role in ("viewer", "engineer", "auditor", "admin"):
            r = call(stack, method, path, role=role, **spec)
            if role in allowed:
                assert r.status_code not in (401, 403), (where, role, r.status_code, r.text)
                assert r.status_code < 500, (where, role, r.status_code, r.text)
            else:
                assert r.status_code == 403, (where, role, r.status_code, r.text)
                assert role in r.json()["detail"]  # says which role was refused and why


def test_public_routes_need_no_key_and_bearer_works(stack):
    assert httpx.get(stack.url + "/health").json()["influxdb"] is True
    assert httpx.get(stack.url + "/display").status_code == 200
    assert httpx.get(stack.url + "/display/data").json()["site"]["id"] == "demo"
    r = httpx.get(
        stack.url + "/api/v1/sites", headers={"Authorization": f"Bearer {stack.keys['viewer']}"}
    )
    assert r.status_code == 200 and r.json()[0]["id"] == "demo"


def test_keys_are_stored_hashed_created_by_admin_and_revocable(stack):
    r = call(
        stack, "POST", "/api/v1/keys", "admin", json={"name": "ops-laptop", "role": "engineer"}
    )
    assert r.status_code == 201
    new = r.json()
    assert new["key"].startswith(f"fsk_{new['id']}_") and new["created_by"] == "test-admin"
    raw = (stack.tmp / "keys.sqlite").read_bytes()
    assert new["key"].split("_", 2)[2].encode() not in raw  # only the hash is stored
    assert call(stack, "GET", "/api/v1/alerts", key=new["key"]).status_code == 200
    assert call(stack, "DELETE", f"/api/v1/keys/{new['id']}", "admin").json()["revoked_at"]
    r = call(stack, "GET", "/api/v1/alerts", key=new["key"])
    assert r.status_code == 401 and "revoked" in r.json()["detail"]
    r = call(stack, "POST", "/api/v1/keys", "admin", json={"name": "x", "role": "root"})
    assert r.status_code == 422


def test_no_default_or_weak_bootstrap_key(tmp_path):
    for weak in ("changeme", "admin", "short-but-not-32-chars"):
        with pytest.raises(KeyRequestError, match="at least 32"):
            KeyStore(tmp_path / "k.sqlite", bootstrap_key=weak)
    store = KeyStore(tmp_path / "k.sqlite")
    for guess in ("", "admin", "changeme", "fsk_00000000_" + "a" * 43):
        assert store.authenticate(guess) is None
    strong = uuid.uuid4().hex + uuid.uuid4().hex
    assert (
        KeyStore(tmp_path / "k.sqlite", bootstrap_key=strong).authenticate(strong).role == "admin"
    )


def test_series_validation_is_a_clear_4xx(stack):
    base = {"device": "inv-01", "start": "2025-01-01T00:00:00+08:00"}
    r = series(
        stack,
        {**base, "field": "volume_m3", "end": "2025-01-02T00:00:00+08:00"},
    )
    assert (
        r.status_code == 422
        and "volume_m3" in r.json()["detail"]
        and "ac_power_w" in r.json()["detail"]
    )
    r = series(
        stack,
        {**base, "field": "ac_power_w", "end": "2024-12-01T00:00:00+08:00"},
    )
    assert r.status_code == 422 and "after start" in r.json()["detail"]
    r = series(
        stack,
        {
            **base,
            "field": "ac_power_w",
            "end": "2025-12-01T00:00:00+08:00",
            "interval": "1m",
        },
    )
    assert r.status_code == 413
    assert "points; the limit is 10000: ask for interval=" in r.json()["detail"]
    suggested = r.json()["detail"].split("interval=")[1].split()[0]
    r = series(
        stack,
        {
            **base,
            "field": "ac_power_w",
            "end": "2025-12-01T00:00:00+08:00",
            "interval": suggested,
        },
    )
    assert r.status_code == 200 and 0 < len(r.json()["points"]) <= 10000
    r = series(
        stack,
        {
            **base,
            "field": "ac_power_w",
            "end": "2026-12-01T00:00:00+08:00",
            "interval": "1d",
        },
    )
    assert r.status_code == 413 and "days" in r.json()["detail"]
    r = series(
        stack,
        {
            **base,
            "field": "ac_power_w",
            "end": "2025-01-02T00:00:00+08:00",
            "interval": "15min",
        },
    )
    assert r.status_code == 422 and "15m" in r.json()["detail"]
    r = series(
        stack,
        {**base, "field": "ac_power_w", "end": "2025-01-02T00:00:00"},
    )
    assert r.status_code == 422  # a time without its offset is ambiguous
    r = call(stack, "GET", "/api/v1/devices/nope/latest", "viewer")
    assert r.status_code == 404 and "nope" in r.json()["detail"]


def test_series_returns_what_is_stored(stack):
    params = {
        "device": "meter-main",
        "field": "import_energy_wh",
        "start": "2025-07-01T00:00:00+08:00",
        "end": "2025-07-02T00:00:00+08:00",
    }
    raw = series(stack, params).json()
    assert len(raw["points"]) == 96  # one a quarter hour, as backfilled
    stored = stack.influx.rows(
        'SELECT "import_energy_wh" FROM "meter" WHERE "device" = \'meter-main\' '
        "AND time >= '2025-06-30T16:00:00Z' AND time < '2025-07-01T16:00:00Z'"
    )
    assert [p[1] for p in raw["points"]] == [r["import_energy_wh"] for r in stored]
    agg = series(
        stack,
        {**params, "interval": "1d", "aggregate": "max"},
    ).json()
    assert agg["points"][0][1] == max(r["import_energy_wh"] for r in stored)


def test_ledger_endpoint_shows_the_engine_numbers(stack):
    out = call(
        stack, "GET", "/api/v1/ledger", "viewer", params={"site": "demo", "year": 2025, "month": 7}
    ).json()
    stored = {
        r["item"]: r
        for r in stack.influx.rows('SELECT * FROM "ledger" WHERE "period" = \'2025-07\'')
    }
    assert [e["item"] for e in out] == ["electricity", "water", "fuel", "paper"]
    for e in out:
        assert e["values"]["actual"] == stored[e["item"]]["actual"]
    assert out[0]["values"]["adjustments"] == -1500.0


def test_records_create_correct_import_with_audit_trail(stack):
    r = call(
        stack,
        "POST",
        "/api/v1/records",
        "auditor",
        json={
            "site": "demo",
            "period": "2026-02",
            "kind": "gasoline_l",
            "value": 50,
            "evidence": "INV-7",
        },
    )
    assert r.status_code == 201
    first = r.json()
    assert first["entered_by"] == "test-auditor"  # who: the key's name, not a free field
    r = call(stack, "POST", f"/api/v1/records/{first['id']}/correct", "auditor", json={"value": 55})
    fixed = r.json()
    assert (
        r.status_code == 201 and fixed["supersedes"] == first["id"] and fixed["evidence"] == "INV-7"
    )
    r = call(stack, "POST", f"/api/v1/records/{first['id']}/correct", "auditor", json={"value": 56})
    assert r.status_code == 409  # correct the latest, not a superseded one
    trail = call(stack, "GET", f"/api/v1/records/{first['id']}", "viewer").json()
    assert [t["value"] for t in trail] == [50, 55] and trail[0]["superseded_by"] == fixed["id"]
    current = call(
        stack, "GET", "/api/v1/records", "viewer", params={"site": "demo", "period": "2026-02"}
    ).json()
    assert [c["value"] for c in current] == [55]

    for bad, msg in (
        ({"site": "demo", "period": "2026-13", "kind": "gasoline_l", "value": 1}, "2025-07"),
        (
            {"site": "demo", "period": "2026-02", "kind": "gasoline_l", "value": -1},
            "greater than or equal",
        ),
        ({"site": "demo", "period": "2026-02", "kind": "adjustment", "value": 1}, "kind"),
        ({"site": "nowhere", "period": "2026-02", "kind": "gasoline_l", "value": 1}, "nowhere"),
    ):
        r = call(stack, "POST", "/api/v1/records", "auditor", json=bad)
        assert r.status_code in (404, 422) and msg in r.text, (bad, r.text)

    before = len(
        call(stack, "GET", "/api/v1/records", "viewer", params={"include_superseded": True}).json()
    )
    csv_bad = "site,period,kind,value\ndemo,2026-03,diesel_l,4\ndemo,2026-3,diesel_l,x\n"
    r = call(
        stack,
        "POST",
        "/api/v1/records/import",
        "auditor",
        content=csv_bad.encode(),
        headers={"Content-Type": "text/csv"},
    )
    assert r.status_code == 422
    errors = r.json()["detail"]["errors"]
    assert any(e.startswith("line 3: period") for e in errors) and any(
        e.startswith("line 3: value") for e in errors
    )
    after = len(
        call(stack, "GET", "/api/v1/records", "viewer", params={"include_superseded": True}).json()
    )
    assert after == before  # all or nothing
    adj = "site,period,kind,value,item,reason,approved_by,approved_on\ndemo,2026-03,adjustment,-5,water,leak,lee,2026-03-05\n"
    r = call(
        stack,
        "POST",
        "/api/v1/records/import",
        "auditor",
        content=adj.encode(),
        headers={"Content-Type": "text/csv"},
    )
    assert r.status_code == 422 and "admin" in r.text
    r = call(
        stack,
        "POST",
        "/api/v1/records/import",
        "admin",
        content=adj.encode(),
        headers={"Content-Type": "text/csv"},
    )
    assert r.status_code == 201 and len(r.json()["added"]) == 1


def test_alerts_filter_and_acknowledge_into_history(stack):
    firing = call(
        stack, "GET", "/api/v1/alerts", "viewer", params={"status": "firing", "device": "inv-01"}
    ).json()
    assert [a["id"] for a in firing] == [stack.incident_id]
    assert call(stack, "GET", "/api/v1/alerts", "viewer", params={"device": "inv-02"}).json() == []
    r = call(
        stack,
        "POST",
        f"/api/v1/alerts/{stack.incident_id}/ack",
        "engineer",
        json={"comment": "breaker reset, string 2 checked"},
    )
    assert r.status_code == 200
    a = r.json()
    assert (
        a["acked_by"] == "test-engineer" and a["ack_comment"] == "breaker reset, string 2 checked"
    )
    # the API only reads InfluxDB: the rules engine's next pass writes the acknowledgement
    acks = select(ALL, "alert_events", where=[eq("event", "acknowledged")])
    assert stack.influx.rows(acks) == []
    store = IncidentStore(stack.config.services.rules.state_path)
    try:
        assert write_pending_acks(store, stack.influx) == 1
        assert write_pending_acks(store, stack.influx) == 0  # once
    finally:
        store.close()
    events = stack.influx.rows(acks)
    assert [(e["by"], e["comment"]) for e in events] == [
        ("test-engineer", "breaker reset, string 2 checked")
    ]
    r = call(
        stack,
        "POST",
        f"/api/v1/alerts/{stack.incident_id}/ack",
        "engineer",
        json={"comment": "two\nlines"},
    )
    assert r.status_code == 422
    assert (
        call(
            stack, "POST", "/api/v1/alerts/99999/ack", "engineer", json={"comment": "x"}
        ).status_code
        == 404
    )
    acked = call(stack, "GET", "/api/v1/alerts", "viewer", params={"acknowledged": True}).json()
    assert stack.incident_id in [x["id"] for x in acked]


def test_devices_show_live_status_and_metrics_from_the_broker(stack):
    pub = mqtt_anyone(stack.broker)
    now_ms = int(NOW.timestamp() * 1000)
    status = {
        "ts": now_ms,
        "online": False,
        "poll_ms": 1250.0,
        "errors": 4,
        "last_error": "timeout",
        "last_reading_ts": now_ms - 90_000,
        "collector": "c1",
    }
    pub.publish(
        "foursave/v1/demo/inv-02/status", json.dumps(status), qos=1, retain=True
    ).wait_for_publish()
    pub.publish(
        "foursave/v1/_collector/c1/status",
        json.dumps(
            {
                "state": "online",
                "collector": "c1",
                "ts": now_ms,
                "spool_depth": 17,
                "spool_dropped": 0,
                "spool_unconfirmed": 12,
                "spool_released": 3,
            }
        ),
        qos=1,
        retain=True,
    ).wait_for_publish()
    pub.publish(
        "foursave/v1/_ingester/i1/status",
        json.dumps({"written": 1000, "dead_letters": 2, "queue": 0, "lag_ms": 180.0, "ts": now_ms}),
        qos=1,
        retain=True,
    ).wait_for_publish()
    pub.loop_stop()
    pub.disconnect()

    def device_status():
        return call(stack, "GET", "/api/v1/devices/inv-02", "viewer").json()["status"]

    st = wait_for(device_status, 10, "inv-02 status via MQTT")
    assert st["online"] is False and st["errors"] == 4 and st["last_error"] == "timeout"

    def scraped():
        t = call(stack, "GET", "/metrics", "viewer").text
        return t if "spool_depth{" in t and "ingest_lag" in t else None

    text = wait_for(scraped, 10, "metrics")
    assert 'foursave_device_online{device="inv-02",site="demo"} 0.0' in text
    assert 'foursave_device_poll_seconds{device="inv-02",site="demo"} 1.25' in text
    assert 'foursave_device_reading_age_seconds{device="inv-02",site="demo"} 90.0' in text
    assert 'foursave_collector_spool_depth{collector="c1"} 17.0' in text
    assert 'foursave_collector_spool_unconfirmed{collector="c1"} 12.0' in text
    assert 'foursave_collector_spool_released{collector="c1"} 3.0' in text
    assert 'foursave_ingest_lag_seconds{ingester="i1"} 0.18' in text
    assert 'foursave_ingest_dead_letters{ingester="i1"} 2.0' in text
    assert 'foursave_alerts_firing{site="demo"}' in text
    assert 'foursave_completeness_ratio{site="demo"}' in text


def test_api_command_serves_and_stops_cleanly_on_sigterm(stack):
    import os
    import signal
    import subprocess
    import sys

    from foursave.localstack import port_open
    from tests.helpers import ROOT

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FOURSAVE_")}
    cmd = [sys.executable, "-m", "foursave", "api", "--config", str(stack.tmp / "config.yaml")]
    proc = subprocess.Popen(
        [*cmd, "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(lambda: port_open("127.0.0.1", port), 60, "foursave api listening")
        r = httpx.get(
            f"http://127.0.0.1:{port}/api/v1/sites", headers={"X-API-Key": stack.keys["viewer"]}
        )
        assert r.status_code == 200 and r.json()[0]["id"] == "demo"
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        reap(proc)
    assert proc.returncode == 0 and "Traceback" not in out, out
    weak = subprocess.run(
        [*cmd, "--port", str(free_port())],
        cwd=ROOT,
        env={**env, "FOURSAVE_API_BOOTSTRAP_KEY": "changeme"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert weak.returncode == 2 and "at least 32" in weak.stderr and "Traceback" not in weak.stderr
