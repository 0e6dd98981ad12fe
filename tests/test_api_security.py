"""The API's defences over real HTTP: bodies refused before they are read (measured in
the server's resident memory), per-key limits on expensive routes, proxy headers
believed only from configured proxies, a cached /health, error bodies without URLs,
credentials or queries, expiring and revocable keys (the bootstrap key too), and
report exports whose text cells are never formulas."""

from __future__ import annotations

import csv
import io
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import yaml
from openpyxl import load_workbook

from foursave.api.main import create_app
from foursave.core.clock import ManualClock
from foursave.core.config import Config
from foursave.localstack import free_port, port_open
from tests.api_fixtures import NOW, ServerThread, build_stack
from tests.helpers import ROOT, auth_broker, reap, wait_for

pytestmark = pytest.mark.integration

MiB = 1_048_576
CHUNK = b"1," * (32 * 1024)  # 64 KiB, sent again and again: the client allocates nothing
API = [sys.executable, "-m", "foursave", "api"]
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@pytest.fixture(scope="module")
def stack(api_history, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("apisec")
    broker = auth_broker(free_port(), tmp / "mosquitto").start()
    # the shared history: this module writes records, keys and reports (SQLite), never
    # InfluxDB
    st = build_stack(tmp, broker, api_history)
    st.broker = broker
    st.history = api_history
    yield st
    broker.stop()
    st.influx.close()


def with_api(config: Config, **api) -> Config:
    """``config`` with some ``services.api`` settings changed."""
    svc = config.services
    return config.model_copy(
        update={"services": svc.model_copy(update={"api": svc.api.model_copy(update=api)})}
    )


def with_influx(config: Config, **influx) -> Config:
    svc = config.services
    return config.model_copy(
        update={
            "services": svc.model_copy(update={"influxdb": svc.influxdb.model_copy(update=influx)})
        }
    )


def body(total_bytes: int, head: bytes = b'{"x": [', tail: bytes = b"1]}") -> Iterator[bytes]:
    """A request body of about ``total_bytes``, streamed (chunked) in 64 KiB pieces."""
    yield head
    for _ in range(total_bytes // len(CHUNK)):
        yield CHUNK
    yield tail


def csv_body(total_bytes: int) -> Iterator[bytes]:
    row = b"demo,2026-03,paper_reams,1\n" * 2000
    yield b"site,period,kind,value\n"
    for _ in range(total_bytes // len(row)):
        yield row


def rss_kib(pid: int) -> int:
    """The process's resident set size [KiB] (/proc/<pid>/status, VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS in /proc/{pid}/status")


class Served:
    """``foursave api`` as its own process (its memory is its own to measure)."""

    def __init__(self, stack, name: str, **api):
        raw = yaml.safe_load((stack.tmp / "config.yaml").read_text())
        raw["services"]["api"].update(api)
        self.config = stack.tmp / f"{name}.yaml"
        self.config.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = stack.tmp / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Served:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FOURSAVE_")}
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(
                [
                    *API,
                    "--config",
                    str(self.config),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                ],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_for(lambda: port_open("127.0.0.1", self.port), 60, "foursave api listening")
        return self

    def __exit__(self, *exc) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        finally:
            reap(self.proc)

    @property
    def rss_kib(self) -> int:
        assert self.proc is not None
        return rss_kib(self.proc.pid)


@pytest.fixture(scope="module")
def served(stack):
    # no display refresh while memory is measured; a display burst of 3 that a client
    # would need 1000 s to earn back
    with Served(
        stack, "served", display_refresh_s=3600, display_burst=3, display_rate_per_s=0.001
    ) as server:
        yield server


def post(url: str, content, key: str | None = None, **headers) -> httpx.Response:
    if key:
        headers["X-API-Key"] = key
    return httpx.post(url, content=content, headers=headers, timeout=120)


def test_large_bodies_are_refused_before_they_are_read(stack, served, capsys):
    records, imports = served.url + "/api/v1/records", served.url + "/api/v1/records/import"
    json_type = {"Content-Type": "application/json"}
    # warm up every path measured below (imports, handlers, buffers) with small bodies
    for _ in range(3):
        assert post(records, body(2 * MiB), **json_type).status_code == 401
        assert post(records, body(2 * MiB), stack.keys["auditor"], **json_type).status_code == 413
        r = post(imports, csv_body(21 * MiB), stack.keys["auditor"], **{"Content-Type": "text/csv"})
        assert r.status_code == 413
    measured = {}

    def growth(what: str, response: httpx.Response, status: int, before: int) -> None:
        assert response.status_code == status, (what, response.status_code, response.text)
        measured[what] = (served.rss_kib - before) / 1024

    before = served.rss_kib
    r = post(records, body(200 * MiB), **json_type)
    growth("200 MB JSON, no key, chunked", r, 401, before)
    assert "API key" in r.json()["detail"] and r.headers["connection"] == "close"

    before = served.rss_kib
    r = post(records, body(200 * MiB), **json_type, **{"Content-Length": str(200 * MiB + 10)})
    growth("200 MB JSON, no key, Content-Length", r, 401, before)

    before = served.rss_kib
    r = post(records, body(200 * MiB), "fsk_00000001_" + "x" * 43, **json_type)
    growth("200 MB JSON, unknown key, chunked", r, 401, before)
    assert "unknown, revoked or expired" in r.json()["detail"]

    before = served.rss_kib
    r = post(records, body(200 * MiB), stack.keys["auditor"], **json_type)
    growth("200 MB JSON, valid key, chunked", r, 413, before)
    assert "max_body_bytes" in r.json()["detail"] and str(MiB) in r.json()["detail"]

    before = served.rss_kib
    csv_type = {"Content-Type": "text/csv"}
    r = post(imports, csv_body(100 * MiB), stack.keys["auditor"], **csv_type)
    growth("100 MB CSV import, valid key, chunked", r, 413, before)
    assert "max_import_bytes" in r.json()["detail"]

    before = served.rss_kib
    r = post(
        imports,
        csv_body(100 * MiB),
        stack.keys["auditor"],
        **csv_type,
        **{"Content-Length": str(100 * MiB)},
    )
    growth("100 MB CSV import, valid key, Content-Length", r, 413, before)

    with capsys.disabled():
        print(f"\nserver RSS {served.rss_kib / 1024:.1f} MiB; growth per refused request:")
        for what, mib in measured.items():
            print(f"  {what}: {mib:+.2f} MiB")
    for what, mib in measured.items():
        assert mib <= 10, (what, measured)
    # and the server still serves
    r = httpx.get(served.url + "/api/v1/sites", headers={"X-API-Key": stack.keys["viewer"]})
    assert r.status_code == 200


def test_forwarded_for_is_ignored_unless_from_a_trusted_proxy(stack, served):
    codes = [
        httpx.get(
            served.url + "/display/data", headers={"X-Forwarded-For": f"10.9.8.{i}"}
        ).status_code
        for i in range(6)
    ]
    assert codes == [200, 200, 200, 429, 429, 429]  # one client, whatever it claims to be
    with Served(
        stack,
        "proxied",
        display_refresh_s=3600,
        display_burst=3,
        display_rate_per_s=0.001,
        trusted_proxies=["127.0.0.1"],
    ) as proxied:
        codes = [
            httpx.get(
                proxied.url + "/display/data", headers={"X-Forwarded-For": f"10.9.8.{i}"}
            ).status_code
            for i in range(6)
        ]
        assert codes == [200] * 6  # a trusted proxy's clients are told apart
        same = [
            httpx.get(
                proxied.url + "/display/data", headers={"X-Forwarded-For": "10.9.7.1"}
            ).status_code
            for _ in range(4)
        ]
        assert same == [200, 200, 200, 429]


def test_body_limits_are_per_route_and_a_key_is_checked_first(stack):
    cfg = with_api(stack.config, max_body_bytes=2048, max_import_bytes=16384)
    with ServerThread(create_app(cfg, clock=stack.clock, refresh=False)) as server:
        adj = server.url + "/api/v1/adjustments"
        big = b'{"site": "demo", "reason": "' + b"x" * 3000 + b'"}'
        r = post(adj, big, **{"Content-Type": "application/json"})
        assert r.status_code == 401  # no key: refused before its size is looked at
        r = post(adj, big, stack.keys["admin"], **{"Content-Type": "application/json"})
        assert r.status_code == 413 and "2048 bytes (services.api.max_body_bytes)" in r.text
        r = post(adj, iter([big]), stack.keys["admin"], **{"Content-Type": "application/json"})
        assert r.status_code == 413  # streamed: counted and cut off
        rows = "".join(f"demo,2026-03,paper_reams,{i}\n" for i in range(400))
        csv_text = ("site,period,kind,value\n" + rows).encode()
        assert 2048 < len(csv_text) < 16384
        r = post(
            server.url + "/api/v1/records/import",
            iter([csv_text[:5000], csv_text[5000:]]),
            stack.keys["auditor"],
            **{"Content-Type": "text/csv"},
        )
        assert r.status_code == 201 and len(r.json()["added"]) == 400
        r = post(
            server.url + "/api/v1/records/import",
            iter([csv_text] * 2),
            stack.keys["auditor"],
            **{"Content-Type": "text/csv"},
        )
        assert r.status_code == 413 and "16384 bytes (services.api.max_import_bytes)" in r.text
        # a small JSON body still reaches its route and its validation
        r = post(adj, b"{}", stack.keys["admin"], **{"Content-Type": "application/json"})
        assert r.status_code == 422


def test_expensive_routes_are_rate_limited_per_key(stack):
    t = [0.0]
    cfg = with_api(stack.config, heavy_rate_per_s=0.5, heavy_burst=2)
    app = create_app(cfg, clock=stack.clock, monotonic=lambda: t[0], refresh=False)
    series = {
        "device": "inv-01",
        "field": "ac_power_w",
        "start": "2026-01-20T00:00:00+08:00",
        "end": "2026-01-20T06:00:00+08:00",
        "interval": "1h",
    }

    def get(path: str, role: str, **params) -> httpx.Response:
        return httpx.get(
            server.url + path, params=params, headers={"X-API-Key": stack.keys[role]}, timeout=120
        )

    with ServerThread(app) as server:
        codes = [get("/api/v1/series", "viewer", **series).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        r = get("/api/v1/series", "viewer", **series)
        assert r.status_code == 429 and r.headers["retry-after"] == "2"  # 1 token / 0.5 per s
        assert "heavy_rate_per_s" in r.json()["detail"]
        assert get("/api/v1/series", "engineer", **series).status_code == 200  # another key
        assert get("/api/v1/sites", "viewer").status_code == 200  # a cheap route is not limited
        # a role the route refuses spends no token
        assert get("/api/v1/reports/2025", "viewer", month=1, format="csv").status_code == 403
        # the auditor's two tokens go on imports; reports share the bucket
        imports = server.url + "/api/v1/records/import"
        for _ in range(2):
            r = post(
                imports, b"site,period\n", stack.keys["auditor"], **{"Content-Type": "text/csv"}
            )
            assert r.status_code == 422
        r = post(imports, b"site,period\n", stack.keys["auditor"], **{"Content-Type": "text/csv"})
        assert r.status_code == 429
        assert get("/api/v1/reports/2025", "auditor", month=1, format="csv").status_code == 429
        r = httpx.post(
            server.url + "/api/v1/reports/2025/recompute",
            params={"month": 1, "format": "csv"},
            json={"reason": "rate limit check"},
            headers={"X-API-Key": stack.keys["auditor"]},
        )
        assert r.status_code == 429
        t[0] += 2.0  # one token back
        assert get("/api/v1/series", "viewer", **series).status_code == 200
        assert get("/api/v1/series", "viewer", **series).status_code == 429


def influx_pings(url: str) -> int:
    """The pings InfluxDB itself counted (``/debug/vars``, httpd ``pingReq``)."""
    stats = httpx.get(url + "/debug/vars").json()
    httpd = next(v for k, v in stats.items() if k.startswith("httpd"))
    return httpd["values"].get("pingReq", 0)


def test_health_pings_influxdb_at_most_once_per_period(stack):
    t = [0.0]
    cfg = with_api(stack.config, health_max_age_s=10)
    app = create_app(cfg, clock=stack.clock, monotonic=lambda: t[0], refresh=False)
    with ServerThread(app) as server:
        before = influx_pings(stack.history.url)
        answers = [httpx.get(server.url + "/health").json() for _ in range(50)]
        assert all(a["influxdb"] is True for a in answers)
        assert influx_pings(stack.history.url) - before == 1
        t[0] += 9.9
        httpx.get(server.url + "/health")
        assert influx_pings(stack.history.url) - before == 1
        t[0] += 0.1
        for _ in range(20):
            httpx.get(server.url + "/health")
        assert influx_pings(stack.history.url) - before == 2


LEAKS = ("secret", "http://", "https://", "SELECT", "select ")


def test_error_bodies_say_what_failed_without_urls_credentials_or_queries(stack, caplog):
    port = free_port()  # nothing listens there
    cfg = with_influx(stack.config, url=f"http://user:secret@127.0.0.1:{port}")
    caplog.set_level(logging.WARNING, logger="foursave")
    headers = {"X-API-Key": stack.keys["admin"]}
    day = {"start": "2025-07-01", "end": "2025-07-08"}
    calls = [
        ("/api/v1/devices/inv-01/latest", {}),
        (
            "/api/v1/series",
            {
                "device": "inv-01",
                "field": "ac_power_w",
                "start": "2026-01-20T00:00:00+08:00",
                "end": "2026-01-21T00:00:00+08:00",
            },
        ),
        ("/api/v1/ledger", {"site": "demo", "year": 2025}),
        ("/api/v1/ledger/daily", {"site": "demo", **day}),
        ("/api/v1/pv", {"site": "demo", **day}),
        ("/api/v1/demand", {"site": "demo", "year": 2025, "month": 7}),
        ("/api/v1/reports/2026", {"month": 1, "format": "csv"}),
    ]
    app = create_app(cfg, clock=stack.clock, refresh=False)
    with ServerThread(app) as server:
        for path, params in calls:
            r = httpx.get(server.url + path, params=params, headers=headers, timeout=60)
            assert r.status_code == 503 and r.json() == {"detail": "InfluxDB unavailable"}, path
            for leak in (f"127.0.0.1:{port}", str(port), *LEAKS):
                assert leak not in r.text, (path, leak, r.text)
        for path in ("/health", "/display/data", "/metrics"):
            r = httpx.get(server.url + path, headers=headers, timeout=60)
            assert r.status_code == 200, (path, r.text)
            for leak in (f"127.0.0.1:{port}", *LEAKS):
                assert leak not in r.text, (path, leak)
        assert httpx.get(server.url + "/health").json()["influxdb"] is False
    logged = [r.getMessage() for r in caplog.records if "InfluxDB unavailable" in r.getMessage()]
    assert len(logged) >= len(calls)
    assert all(f"http://***@127.0.0.1:{port}" in m and "secret" not in m for m in logged), logged
    assert not any("secret" in r.getMessage() for r in caplog.records)

    # a query InfluxDB refuses (no such database): 502, the reason only in the log
    caplog.clear()
    cfg = with_influx(stack.config, database="no_such_database_here")
    with ServerThread(create_app(cfg, clock=stack.clock, refresh=False)) as server:
        r = httpx.get(
            server.url + "/api/v1/ledger", params={"site": "demo", "year": 2025}, headers=headers
        )
    assert r.status_code == 502 and r.json() == {"detail": "InfluxDB refused a query"}
    assert any("no_such_database_here" in r.getMessage() for r in caplog.records)


BOOTSTRAP = "bootstrap-" + "k" * 40


def test_keys_expire_and_the_bootstrap_key_can_be_revoked(stack, monkeypatch):
    monkeypatch.setenv("FOURSAVE_API_BOOTSTRAP_KEY", BOOTSTRAP)
    wall = ManualClock(NOW.timestamp())

    def call(method: str, path: str, key: str, **kw) -> httpx.Response:
        return httpx.request(method, server.url + path, headers={"X-API-Key": key}, **kw)

    with ServerThread(
        create_app(stack.config, clock=stack.clock, wall_clock=wall, refresh=False)
    ) as server:
        listed = call("GET", "/api/v1/keys", BOOTSTRAP).json()
        assert listed[0]["id"] == "00000000" and listed[0]["revoked_at"] is None
        expires = (NOW + timedelta(hours=1)).isoformat()
        r = call(
            "POST",
            "/api/v1/keys",
            BOOTSTRAP,
            json={"name": "temp", "role": "viewer", "expires": expires},
        )
        assert r.status_code == 201, r.text
        temp = r.json()
        assert temp["expires_at"] == "2026-01-21T05:00:00+00:00"
        assert call("GET", "/api/v1/sites", temp["key"]).status_code == 200
        wall.advance(3599)
        assert call("GET", "/api/v1/sites", temp["key"]).status_code == 200
        wall.advance(1)
        r = call("GET", "/api/v1/sites", temp["key"])
        assert r.status_code == 401 and "expired" in r.json()["detail"]
        # an expiry in the past, or without its offset, is refused
        for bad in ((NOW - timedelta(days=1)).isoformat(), "2026-12-31T00:00:00"):
            r = call(
                "POST",
                "/api/v1/keys",
                BOOTSTRAP,
                json={"name": "x", "role": "viewer", "expires": bad},
            )
            assert r.status_code == 422, (bad, r.text)
        admin = call(
            "POST", "/api/v1/keys", BOOTSTRAP, json={"name": "ops", "role": "admin"}
        ).json()
        r = call("DELETE", "/api/v1/keys/00000000", admin["key"])
        assert r.status_code == 200 and r.json()["revoked_at"] and r.json()["name"] == "bootstrap"
        r = call("GET", "/api/v1/sites", BOOTSTRAP)
        assert r.status_code == 401  # though the variable is still set
        # a body sent with it is refused before it is read, too
        r = post(server.url + "/api/v1/records/import", iter([b"x" * 4096]), BOOTSTRAP)
        assert r.status_code == 401
    # the revocation outlives the process
    with ServerThread(
        create_app(stack.config, clock=stack.clock, wall_clock=wall, refresh=False)
    ) as server:
        assert call("GET", "/api/v1/sites", BOOTSTRAP).status_code == 401
        assert call("GET", "/api/v1/sites", admin["key"]).status_code == 200


def keys_cli(stack, *args: str, bootstrap: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FOURSAVE_")}
    if bootstrap:
        env["FOURSAVE_API_BOOTSTRAP_KEY"] = bootstrap
    cmd = [sys.executable, "-m", "foursave", "keys", *args, "--config"]
    return subprocess.run(
        [*cmd, str(stack.tmp / "config.yaml")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_keys_command_creates_expiring_keys_and_revokes_the_bootstrap_key(stack, monkeypatch):
    other = "another-bootstrap-" + "q" * 40
    p = keys_cli(
        stack,
        "create",
        "--role",
        "viewer",
        "--name",
        "kiosk",
        "--expires",
        "2099-01-01T00:00:00+08:00",
    )
    assert p.returncode == 0, p.stderr
    assert "expires 2098-12-31T16:00:00+00:00" in p.stderr
    key = p.stdout.strip()
    p = keys_cli(stack, "create", "--role", "viewer", "--name", "x", "--expires", "next week")
    assert p.returncode == 2 and "--expires 'next week'" in p.stderr and "Traceback" not in p.stderr
    p = keys_cli(
        stack, "create", "--role", "viewer", "--name", "x", "--expires", "2001-01-01T00:00:00+00:00"
    )
    assert p.returncode == 2 and "not in the future" in p.stderr
    p = keys_cli(stack, "revoke", "00000000")
    assert p.returncode == 2 and "FOURSAVE_API_BOOTSTRAP_KEY" in p.stderr
    p = keys_cli(stack, "revoke", "00000000", bootstrap=other)
    assert p.returncode == 0 and "key 00000000 revoked at" in p.stdout, p.stderr
    p = keys_cli(stack, "list", bootstrap=other)
    lines = p.stdout.splitlines()
    assert lines[0].startswith("00000000") and "revoked" in lines[0]
    assert any(
        "kiosk" in line and "active, expires 2098-12-31T16:00:00+00:00" in line for line in lines
    )
    monkeypatch.setenv("FOURSAVE_API_BOOTSTRAP_KEY", other)
    with ServerThread(create_app(stack.config, clock=stack.clock, refresh=False)) as server:
        r = httpx.get(server.url + "/api/v1/sites", headers={"X-API-Key": other})
        assert r.status_code == 401  # revoked from the command line, refused by the API
        r = httpx.get(server.url + "/api/v1/sites", headers={"X-API-Key": key})
        assert r.status_code == 200


def test_report_text_is_never_a_formula(stack):
    app = create_app(stack.config, clock=stack.clock, refresh=False)
    admin = {"X-API-Key": stack.keys["admin"]}
    reasons = {}
    with ServerThread(app) as server:
        for n, start in enumerate(FORMULA_STARTS):
            reason = f'{start}HYPERLINK("http://evil.example/?{n}","click")'
            r = httpx.post(
                server.url + "/api/v1/adjustments",
                headers=admin,
                json={
                    "site": "demo",
                    "period": "2025-07",
                    "item": "water",
                    "value": -1.5 - n,
                    "reason": reason,
                    "approved_by": f"{start}cmd|' /C calc'!A0",
                    "approved_on": "2025-08-10",
                },
            )
            assert r.status_code == 201, r.text
            reasons[r.json()["id"]] = reason
            why = f"{start}1+1 recomputed after adjustment {n}"
            r = httpx.post(
                server.url + "/api/v1/reports/2025/recompute",
                params={"month": 7, "format": "xlsx", "lang": "en"},
                json={"reason": why},
                headers=admin,
                timeout=120,
            )
            assert r.status_code == 201, r.text
            cells = [
                c
                for ws in load_workbook(io.BytesIO(r.content))
                for row in ws.iter_rows()
                for c in row
            ]
            assert not [c.coordinate for c in cells if c.data_type == "f"]
            shown = [
                c
                for c in cells
                if isinstance(c.value, str) and "recomputed after adjustment" in c.value
            ]
            assert len(shown) == 1 and shown[0].data_type == "s" and shown[0].quotePrefix
            assert shown[0].value.replace("\n", "\r").startswith(why)  # XML keeps CR as LF
        r = httpx.get(
            server.url + "/api/v1/reports/2025",
            params={"month": 7, "format": "xlsx", "lang": "en"},
            headers=admin,
            timeout=120,
        )
        wb = load_workbook(io.BytesIO(r.content))
        sheet = wb.worksheets[3]  # adjustments
        rows = {row[0].value: row for row in sheet.iter_rows(min_row=2)}
        for rid, reason in reasons.items():
            amount, why, by = rows[rid][4], rows[rid][6], rows[rid][7]
            assert why.data_type == "s" and why.quotePrefix
            assert why.value.replace("\n", "\r") == reason
            assert by.data_type == "s" and by.quotePrefix
            assert amount.data_type == "n" and amount.value < 0  # a negative number stays one
        r = httpx.get(
            server.url + "/api/v1/reports/2025",
            params={"month": 7, "format": "csv", "lang": "en"},
            headers=admin,
            timeout=120,
        )
    table = list(csv.reader(io.StringIO(r.content.decode("utf-8-sig"), newline="")))
    adjustments = {row[0]: row for row in table if row and row[0].isdigit()}
    for rid, reason in reasons.items():
        row = adjustments[str(rid)]
        assert row[6] == "'" + reason and row[7].startswith("'")
        assert float(row[4]) < 0 and row[4].startswith("-")  # the amount, not text
    # whatever else begins like a formula is a number the ledger computed
    assert all(number(c) for row in table for c in row if c.startswith(FORMULA_STARTS))


def number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
