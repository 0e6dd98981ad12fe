"""The pure parts of the API's defences: the body guard as an ASGI app (it never calls
``receive`` when it refuses), URL redaction, formula-like text, the /health ping cache,
the proxy options, key expiry and bootstrap revocation, and the trusted_proxies check."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import threading
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import yaml
from openpyxl import load_workbook

from foursave.api.guard import BodyGuard, BodyTooLarge
from foursave.api.health import PingCache
from foursave.api.keys import BOOTSTRAP_ID, KeyRequestError, KeyStore, presented_key
from foursave.api.main import body_limit, proxy_options
from foursave.core.clock import ManualClock
from foursave.core.config import ApiService, ConfigError, load_config
from foursave.core.redact import redact_url
from foursave.reports.cells import csv_text, formula_like
from foursave.reports.csv import render_csv
from foursave.reports.model import Adjustment, ItemRow, ReportData, SiteInfo
from foursave.reports.xlsx import render_xlsx
from tests.helpers import demo_raw

T0 = datetime(2026, 1, 21, 4, 0, tzinfo=UTC).timestamp()


class Keys:
    def authenticate(self, key: str):
        return object() if key == "good" else None


def run_guard(headers: dict[str, str], chunks: list[bytes], path: str = "/api/v1/records"):
    """(status, body, receive calls, bytes the app saw) for one request through the
    guard (limit 100 bytes) in front of an app that reads the whole body."""
    calls = [0]
    seen = [0]
    sent: list[dict] = []
    pending = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]

    async def receive():
        calls[0] += 1
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    async def app(scope, receive, send):
        more = True
        while more:
            message = await receive()
            seen[0] += len(message.get("body", b""))
            more = message.get("more_body", False)
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    guard = BodyGuard(app, limit_for=lambda p: (100, "max_body_bytes"), keys=lambda: Keys())
    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }
    asyncio.run(guard(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    text = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], json.loads(text), calls[0], seen[0]


def test_guard_refuses_a_keyless_or_oversized_body_without_reading_it():
    chunked = {"Transfer-Encoding": "chunked"}
    status, body, calls, _ = run_guard(chunked, [b"x" * 50] * 10)
    assert (status, calls) == (401, 0) and "API key" in body["detail"]
    status, body, calls, _ = run_guard({**chunked, "X-API-Key": "wrong"}, [b"x"])
    assert (status, calls) == (401, 0) and "unknown, revoked or expired" in body["detail"]
    status, body, calls, _ = run_guard({"Content-Length": "101", "X-API-Key": "good"}, [b"x"])
    assert (status, calls) == (413, 0) and "100 bytes (services.api.max_body_bytes)" in body[
        "detail"
    ]
    # streamed: cut off in the chunk that passes the limit, never read further
    status, body, calls, seen = run_guard({**chunked, "X-API-Key": "good"}, [b"x" * 40] * 10)
    assert (status, calls, seen) == (413, 3, 80)
    # within the limit the app gets every byte; a bearer token works as well
    status, _, _, seen = run_guard({**chunked, "Authorization": "Bearer good"}, [b"x" * 50] * 2)
    assert (status, seen) == (201, 100)
    # public routes take no key, but their limit holds
    assert run_guard({"Content-Length": "5"}, [b"hello"], path="/display/data")[0] == 201
    assert run_guard({"Content-Length": "500"}, [b"x"], path="/health")[0] == 413


def test_body_too_large_is_an_http_413():
    assert BodyTooLarge(413, "x").status_code == 413


def test_each_route_has_its_limit():
    api = ApiService(max_body_bytes=2048, max_import_bytes=8192)
    assert body_limit(api, "/api/v1/records/import") == (8192, "max_import_bytes")
    assert body_limit(api, "/api/v1/records") == (2048, "max_body_bytes")


def test_presented_key():
    assert presented_key("a", "Bearer b") == "a"
    assert presented_key(None, "bearer b ") == "b"
    assert presented_key(None, "Basic Zm9v") is None
    assert presented_key(None, "Bearer ") is None
    assert presented_key(None, None) is None


@pytest.mark.parametrize(
    "url, shown",
    [
        ("http://user:secret@db:8086", "http://***@db:8086"),
        ("https://u@db.example:8086/query?db=x", "https://***@db.example:8086/query?db=x"),
        ("http://db:8086/query?u=admin&p=secret&db=x", "http://db:8086/query?u=admin&p=***&db=x"),
        ("http://127.0.0.1:8086", "http://127.0.0.1:8086"),
        ("http://a:b@[::1", "http://***@[::1"),  # not a URL urlsplit takes: masked anyway
    ],
)
def test_redact_url(url, shown):
    assert redact_url(url) == shown
    assert "secret" not in redact_url(url)


def test_formula_like_text_and_numbers():
    for start in ("=", "+", "-", "@", "\t", "\r"):
        assert formula_like(f"{start}SUM(A1:A9)")
        assert csv_text(f"{start}x") == f"'{start}x"
    assert not formula_like(-1500.0) and not formula_like(3)
    assert csv_text("新增電動車充電樁") == "新增電動車充電樁"
    assert csv_text("") == "" and csv_text("a=b") == "a=b"


def test_ping_cache_pings_once_per_period_and_never_piles_up():
    t = [0.0]
    answers = iter([True, False, True])
    cache = PingCache(lambda: next(answers), max_age_s=10, monotonic=lambda: t[0])
    assert [cache.state() for _ in range(100)] == [True] * 100 and cache.pings == 1
    t[0] = 9.99
    assert cache.state() and cache.pings == 1
    t[0] = 10.0
    assert cache.state() is False and cache.pings == 2

    # while one caller's ping hangs, the others get the last answer at once
    release, entered = threading.Event(), threading.Event()

    def slow() -> bool:
        entered.set()
        assert release.wait(10)
        return True

    t[0] = 20.0
    cache.ping = slow
    pinger = threading.Thread(target=cache.state)
    pinger.start()
    assert entered.wait(10)
    assert [cache.state() for _ in range(5)] == [False] * 5 and cache.pings == 3
    release.set()
    pinger.join(10)
    assert cache.state() is True and cache.pings == 3


def test_proxy_headers_only_from_configured_proxies():
    assert proxy_options(ApiService()) == (False, [])
    api = ApiService(trusted_proxies=("10.0.0.0/24", "::1"))
    assert proxy_options(api) == (True, ["10.0.0.0/24", "::1"])


def test_trusted_proxies_are_checked_when_the_file_is_read(tmp_path):
    raw = demo_raw()
    raw["services"].setdefault("api", {})["trusted_proxies"] = ["10.0.0.0/24", "10.0.0.1/8"]
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    text = str(err.value)
    assert "services.api.trusted_proxies" in text and "'10.0.0.1/8'" in text
    assert "host bits set" in text


def test_keys_expire_on_the_wall_clock(tmp_path):
    wall = ManualClock(T0)
    store = KeyStore(tmp_path / "k.sqlite", clock=wall)
    info, key = store.create("temp", "viewer", "t", datetime.fromtimestamp(T0 + 60, UTC))
    assert info.expires_at == "2026-01-21T04:01:00+00:00"
    assert store.authenticate(key).name == "temp"
    wall.advance(60)
    assert store.authenticate(key) is None
    for bad, why in (
        (datetime.fromtimestamp(T0 + 60, UTC), "not in the future"),
        (datetime(2030, 1, 1), "UTC offset"),
    ):
        with pytest.raises(KeyRequestError, match=why):
            store.create("x", "viewer", "t", bad)
    _, forever = store.create("ops", "admin", "t")
    wall.advance(timedelta(days=3650).total_seconds())
    assert store.authenticate(forever).role == "admin"


def test_a_key_file_from_before_expiry_is_upgraded(tmp_path):
    import sqlite3

    db = sqlite3.connect(tmp_path / "old.sqlite")
    db.execute(
        "CREATE TABLE api_keys (id TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL, "
        "sha256 TEXT NOT NULL, created_at TEXT NOT NULL, created_by TEXT NOT NULL, revoked_at TEXT)"
    )
    db.commit()
    db.close()
    store = KeyStore(tmp_path / "old.sqlite")
    _, key = store.create("a", "viewer", "t")
    assert store.authenticate(key).name == "a" and store.all()[0].expires_at is None


def test_the_bootstrap_key_stays_revoked_while_its_variable_is_set(tmp_path):
    boot = "b" * 40
    store = KeyStore(tmp_path / "k.sqlite", bootstrap_key=boot)
    assert store.authenticate(boot).key_id == BOOTSTRAP_ID
    assert store.all()[0].id == BOOTSTRAP_ID and store.all()[0].revoked_at is None
    assert store.revoke(BOOTSTRAP_ID, by="ops").revoked_at is not None
    assert store.authenticate(boot) is None
    again = KeyStore(tmp_path / "k.sqlite", bootstrap_key=boot)  # a restart, variable still set
    assert again.authenticate(boot) is None
    fresh = "c" * 40  # a new bootstrap key is not the revoked one
    assert KeyStore(tmp_path / "k.sqlite", bootstrap_key=fresh).authenticate(fresh).role == "admin"
    assert KeyStore(tmp_path / "k.sqlite").revoke(BOOTSTRAP_ID) is None  # none configured


def tiny_report(reason: str, amount: float, actual: float) -> ReportData:
    site = SiteInfo("demo", "示範", "Demo", 1000.0, 0.0, 10.0, "plan_2016")
    row = ItemRow(
        "demo", "water", "2025-07", "m³", actual, 110.0, "previous year", 0.01, 108.9,
        (110.0 - actual) / 110.0, True, 1.0, 1.0, amount,
    )  # fmt: skip
    adj = Adjustment(7, "demo", "water", "2025-07", amount, "m³", reason, "@boss", "2025-08-01")
    return ReportData(
        2025, 7, "2025-07", "1", "2025-08-20T10:00:00+08:00", 2, True, f"+{reason}", "f",
        (site,), (row,), (), (), (adj,),
    )  # fmt: skip


def test_exports_write_formula_like_text_as_text_and_numpy_floats_as_numbers():
    data = tiny_report('=HYPERLINK("http://x","y")', np.float64(-2.5), np.float64(100.25))
    table = list(csv.reader(io.StringIO(render_csv(data, "en").decode("utf-8-sig"))))
    adj = next(r for r in table if r and r[0] == "7")
    assert adj[4] == "-2.5" and adj[6] == '\'=HYPERLINK("http://x","y")' and adj[7] == "'@boss"
    assert next(r for r in table if r and r[0] == "demo")[5] == "100.25"
    wb = load_workbook(io.BytesIO(render_xlsx(data, "en")))
    cells = [c for ws in wb for row in ws.iter_rows() for c in row if c.value is not None]
    assert not [c.coordinate for c in cells if c.data_type == "f"]
    texts = {c.value: c for c in cells if isinstance(c.value, str)}
    for text in ('=HYPERLINK("http://x","y")', "@boss"):
        assert texts[text].data_type == "s" and texts[text].quotePrefix
    assert any(c.value == -2.5 and c.data_type == "n" for c in cells)
    assert any(c.value == 100.25 and c.data_type == "n" for c in cells)
