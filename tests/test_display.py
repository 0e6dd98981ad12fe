"""The public display: its snapshot (what the numbers mean), its safety (rate limit,
no query from the client), and the page in a real Chromium against a live stack."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest

from foursave.api.main import create_app
from foursave.api.ratelimit import RateLimiter
from foursave.api.snapshot import SnapshotBuilder
from foursave.app import api_app
from foursave.core.clock import ManualClock
from foursave.core.influx import InfluxClient
from foursave.localstack import free_port
from tests.api_fixtures import NOW, ServerThread, build_stack
from tests.helpers import ARTIFACTS, CHROME_ARGS, CHROMIUM, Pipeline, wait_for

TZ = ZoneInfo("Asia/Taipei")


@pytest.fixture(scope="module")
def stack(api_history, tmp_path_factory):
    st = build_stack(tmp_path_factory.mktemp("display"), 1, api_history)  # reads only
    yield st
    st.influx.close()


def counter(influx, device: str, before_ms: int, first: bool = False) -> float:
    agg = "first" if first else "last"
    rows = influx.rows(
        f'SELECT {agg}("ac_energy_wh") FROM "inverter" WHERE "device" = \'{device}\' '
        f"AND time <= {before_ms}ms AND time > {before_ms - 7 * 86_400_000}ms"
    )
    return rows[0][agg]


@pytest.mark.integration
def test_snapshot_numbers_are_the_counters_and_factor(stack):
    at = datetime(2026, 1, 20, 14, 0, tzinfo=TZ)  # the backfill runs to 2026-01-21 00:00
    b = SnapshotBuilder(stack.config, stack.influx, ManualClock(at.timestamp()), 900)
    doc = b.build(stack.config.sites[0])
    v = doc["values"]
    now_ms = int(at.timestamp() * 1000)
    midnight = int(datetime(2026, 1, 20, tzinfo=TZ).timestamp() * 1000)
    jan1 = int(datetime(2026, 1, 1, tzinfo=TZ).timestamp() * 1000)
    today = (
        sum(
            counter(stack.influx, d, now_ms) - counter(stack.influx, d, midnight - 1)
            for d in ("inv-01", "inv-02")
        )
        / 1000
    )
    year = (
        sum(
            counter(stack.influx, d, now_ms) - counter(stack.influx, d, jan1 - 1)
            for d in ("inv-01", "inv-02")
        )
        / 1000
    )
    assert today > 5 and v["pv_energy_today_kwh"]["value"] == pytest.approx(today, abs=1e-3)
    assert v["pv_energy_year_kwh"]["value"] == pytest.approx(year, abs=1e-3)
    assert (
        doc["factor"]["value"] == 0.474
        and doc["factor"]["year"] == 2024
        and doc["factor"]["provisional"]
    )
    assert v["co2_avoided_today_kg"]["value"] == pytest.approx(today * 0.474, abs=1e-3)
    last = stack.influx.rows(
        f'SELECT last("ac_power_w") AS p FROM "inverter" WHERE time <= {now_ms}ms GROUP BY "device"'
    )
    pv = sum(r["p"] for r in last)
    grid = stack.influx.rows(
        f'SELECT last("active_power_w") AS p FROM "meter" WHERE "device" = \'meter-main\' AND time <= {now_ms}ms'
    )[0]["p"]
    assert v["pv_power_w"]["value"] == pytest.approx(pv, abs=1e-3) and pv > 0
    assert v["building_power_w"]["value"] == pytest.approx(
        grid + pv, abs=1e-3
    )  # PV behind the meter
    assert v["pv_power_w"]["ts"] == max(r["time"] for r in last)
    ledger = {
        r["item"]: r for r in stack.influx.rows('SELECT * FROM "ledger" WHERE "period" = \'2026\'')
    }
    prog = {p["item"]: p for p in doc["progress"]}
    assert prog["electricity"]["actual"] == ledger["electricity"]["actual"]
    assert prog["fuel"]["actual"] is None  # no fuel records for 2026: absent, not 0
    # this month's PV value: the rules pass's pv_value_month of January (rules/pvvalue.py)
    pvv = stack.influx.rows(
        'SELECT last("pv_value_ntd") AS v, last("valued_to_ms") AS t FROM "pv_value_month" '
        f"WHERE \"site\" = 'demo' AND time >= {jan1}ms AND time <= {now_ms}ms"
    )[0]
    assert pvv["v"] > 0 and v["pv_value_month_ntd"] == {"value": round(pvv["v"], 3), "ts": pvv["t"]}
    pv_points = [p for _, p in doc["chart"]["pv_w"] if p is not None]
    assert len(doc["chart"]["pv_w"]) == 14 * 4 + 1 and max(pv_points) > 0
    assert all(p is not None for _, p in doc["chart"]["load_w"][:-1])


@pytest.mark.integration
def test_history_written_after_the_first_snapshot_counts_in_the_year(tmp_path, influx_url):
    """The demo's case: the display starts before history is filled into the past."""
    from foursave.simulators.backfill import run_backfill
    from tests.helpers import make_config

    database = f"late_{free_port()}"
    cfg = make_config(tmp_path, 1, influx_url, database, commissioned=date(2025, 12, 1))
    influx = InfluxClient(influx_url, database)
    influx.create_database()
    at = datetime(2026, 1, 20, 14, 0, tzinfo=TZ)
    live_from = datetime(2026, 1, 20, 12, 0, tzinfo=TZ)
    jan1 = datetime(2026, 1, 1, tzinfo=TZ)
    window = (int(live_from.timestamp() * 1000), int(at.timestamp() * 1000))
    try:
        # first only the "live" hours of today
        run_backfill(cfg, date(2026, 1, 20), date(2026, 1, 21), influx=influx, window_ms=window)
        b = SnapshotBuilder(cfg, influx, ManualClock(at.timestamp()), 900)
        early = b.build(cfg.sites[0])["values"]["pv_energy_year_kwh"]["value"]
        # then the history before them, as the demo writes it while running
        history = (int(jan1.timestamp() * 1000) - 7 * 86_400_000, window[0])
        run_backfill(cfg, date(2025, 12, 20), date(2026, 1, 21), influx=influx, window_ms=history)
        late = b.build(cfg.sites[0])["values"]["pv_energy_year_kwh"]["value"]
        now_ms = window[1]
        jan1_ms = int(jan1.timestamp() * 1000)
        year = sum(
            counter(influx, d, now_ms) - counter(influx, d, jan1_ms - 1)
            for d in ("inv-01", "inv-02")
        )
        assert early < 30 < late  # two hours of PV, then twenty days of it
        assert late == pytest.approx(year / 1000, abs=1e-3)
    finally:
        # test clean-up on the 1.x test server (the client itself sends only SELECT/SHOW)
        httpx.post(f"{influx_url}/query", params={"q": f'DROP DATABASE "{database}"'})
        influx.close()


@pytest.mark.integration
def test_snapshot_keeps_the_last_good_value_and_its_time(stack):
    clock = ManualClock(datetime(2026, 1, 20, 14, 0, tzinfo=TZ).timestamp())
    b = SnapshotBuilder(stack.config, stack.influx, clock, 900)
    assert b.refresh()
    good = json.loads(b.served["demo"][0])
    # later, past the end of the data: nothing new is found, the old values stay with their time
    clock.advance(3 * 86_400)
    assert b.refresh()
    later = json.loads(b.served["demo"][0])
    assert later["values"]["pv_power_w"] == good["values"]["pv_power_w"]
    assert later["generated_at"] - later["values"]["pv_power_w"]["ts"] > 900_000  # shown as stale
    # InfluxDB goes away: the last good document is served, and the failure is counted
    dead = InfluxClient(f"http://127.0.0.1:{free_port()}", "x", timeout_s=1)
    b.influx = dead
    for q in b.queries.values():
        q.influx = dead
    assert not b.refresh() and b.failures == 1
    assert json.loads(b.served["demo"][0]) == later
    # a site that never had data shows absent values, never zeros
    empty = b.empty(stack.config.sites[0])
    assert all(x == {"value": None, "ts": None} for x in empty["values"].values())


def test_rate_limiter_is_a_token_bucket_per_client():
    rl = RateLimiter(rate_per_s=2, burst=3)
    assert [rl.allow("a", 0.0)[0] for _ in range(4)] == [True, True, True, False]
    assert rl.allow("b", 0.0)[0]  # another screen is not affected
    allowed, wait = rl.allow("a", 0.1)
    assert not allowed and wait == pytest.approx(0.4)
    assert rl.allow("a", 0.5)[0]  # one token back after 1/rate s
    small = RateLimiter(1, 1, max_clients=2)
    for c in "xyz":
        small.allow(c, 0.0)
    assert len(small._buckets) == 2  # memory is bounded


@pytest.mark.integration
def test_display_data_is_rate_limited_and_takes_no_query(stack):
    stack.config = stack.config.model_copy(
        update={
            "services": stack.config.services.model_copy(
                update={
                    "api": stack.config.services.api.model_copy(
                        update={"display_rate_per_s": 1.0, "display_burst": 2}
                    )
                }
            )
        }
    )
    t = [0.0]
    app = create_app(
        stack.config, clock=ManualClock(NOW.timestamp()), monotonic=lambda: t[0], refresh=False
    )
    with ServerThread(app) as server:
        codes = [httpx.get(server.url + "/display/data").status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        r = httpx.get(server.url + "/display/data")
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        t[0] += 1.0
        r = httpx.get(server.url + "/display/data", params={"site": "demo", "q": "DROP DATABASE x"})
        assert r.status_code == 200 and r.json()["site"]["id"] == "demo"
        t[0] += 5.0
        r = httpx.get(server.url + "/display/data", params={"site": "nowhere"})
        assert r.status_code == 404
        page = httpx.get(server.url + "/display")
        assert (
            page.status_code == 200
            and "default-src 'self'" in page.headers["content-security-policy"]
        )
        assert httpx.get(server.url + "/display/static/display.js").status_code == 200


# ------------------------------------------------------------------ real browser


@pytest.mark.integration
def test_display_in_chromium_shows_this_months_pv_value(stack):
    from decimal import ROUND_HALF_UP, Decimal

    from playwright.sync_api import sync_playwright

    month0 = int(datetime(NOW.year, NOW.month, 1, tzinfo=TZ).timestamp() * 1000)
    ntd = stack.influx.rows(
        'SELECT last("pv_value_ntd") AS v FROM "pv_value_month" '
        f"WHERE \"site\" = 'demo' AND time >= {month0}ms"
    )[0]["v"]
    shown = f"{int(Decimal(ntd).quantize(Decimal(1), ROUND_HALF_UP)):,}"  # en-US grouping
    app = create_app(stack.config, clock=ManualClock(NOW.timestamp()), refresh=False)
    with ServerThread(app) as server, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROME_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1920, "height": 1080})
            page.goto(f"{server.url}/display?lang=en&poll_ms=500")
            money = page.locator('[data-field="pv_value_month_ntd"]')
            wait_for(lambda: money.text_content() == shown, 30, f"NT$ {shown} on screen")
            tile = page.locator('.tile:has([data-field="pv_value_month_ntd"])')
            assert "this month" in tile.locator(".label").text_content()
            assert tile.locator(".unit").text_content() == "NT$"
            box, first = tile.bounding_box(), page.locator(".tile").first.bounding_box()
            assert box["height"] > 1.8 * first["height"]  # the fourth column, both rows
            # nothing in any tile runs past its edge (the narrower columns of four)
            spill = page.evaluate(
                """() => [...document.querySelectorAll('.tile')].flatMap(t => {
                    const r = t.getBoundingClientRect();
                    return [...t.querySelectorAll('.num, .unit, .as-of, .label')]
                      .filter(e => e.offsetParent !== null)
                      .filter(e => { const b = e.getBoundingClientRect();
                                     return b.right > r.right + 0.5 || b.bottom > r.bottom + 0.5; })
                      .map(e => (e.dataset.field || e.className) + ' in ' + t.className);
                })"""
            )
            assert spill == []
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "display-pv-value.png"))
        finally:
            browser.close()


@pytest.mark.integration
@pytest.mark.slow
def test_display_in_chromium_updates_live_and_shows_stale_data(
    tmp_path, broker, influx_url, database
):
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "Debian's chromium is installed by scripts/bootstrap"
    ARTIFACTS.mkdir(exist_ok=True)
    today = datetime.now(UTC).date()  # any day will do; the hour is fixed below
    start = f"{today.isoformat()}T10:30:00+08:00"  # mid-morning: PV power moves
    with (
        Pipeline(
            tmp_path,
            broker,
            influx_url,
            database,
            interval_s=1.0,
            commissioned=today.replace(day=1),
            extra_services={
                "simulator": {"speed": 60, "start": start, "anchor": datetime.now(UTC).isoformat()},
                "collector": {"clock": "simulated"},
                "rules": {
                    "records_path": str(tmp_path / "r.sqlite"),
                    "state_path": str(tmp_path / "s.sqlite"),
                },
                "api": {
                    "keys_path": str(tmp_path / "k.sqlite"),
                    "reports_path": str(tmp_path / "rep.sqlite"),
                    "display_refresh_s": 0.5,
                    "display_stale_after_s": 300,  # 5 simulated minutes = 5 s here
                },
            },
        ) as pipe,
        sync_playwright() as pw,
    ):
        server = ServerThread(api_app(pipe.config))
        server.__enter__()
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROME_ARGS)
        try:
            # a lobby PC set to UTC: the clock must still show the site's time
            page = browser.new_page(viewport={"width": 1920, "height": 1080}, timezone_id="UTC")
            site_now = [datetime.now(ZoneInfo("Asia/Taipei")).strftime("%H:%M")]
            page.goto(f"{server.url}/display?lang=en&poll_ms=500")
            pv = page.locator('[data-field="pv_power_w"]')
            load = page.locator('[data-field="building_power_w"]')
            wait_for(lambda: pv.text_content() not in ("—", "", None), 60, "a PV value on screen")
            shown_clock = page.locator("#clock").text_content()
            site_now.append(datetime.now(ZoneInfo("Asia/Taipei")).strftime("%H:%M"))
            assert shown_clock in site_now, (shown_clock, site_now)  # Taipei, not UTC
            first = (pv.text_content(), load.text_content())
            wait_for(
                lambda: (pv.text_content(), load.text_content()) != first,
                60,
                "values to change without a reload",
            )
            assert page.evaluate("performance.getEntriesByType('navigation').length") == 1
            tile = page.locator('.tile:has([data-field="pv_power_w"])')
            assert tile.get_attribute("data-stale") == "false"
            page.screenshot(path=str(ARTIFACTS / "display-live.png"))

            pipe.collector.stop()  # the devices fall silent
            wait_for(
                lambda: tile.get_attribute("data-stale") == "true", 60, "the tile marked stale"
            )
            shown = pv.text_content()
            assert shown not in ("—", "") and tile.locator(".as-of").is_visible()
            assert "as of" in tile.locator(".as-of").text_content()
            page.screenshot(path=str(ARTIFACTS / "display-stale.png"))

            server.__exit__(None, None, None)  # the server itself goes away
            banner = page.locator("#connection")
            wait_for(
                lambda: banner.get_attribute("data-state") == "lost", 30, "the connection banner"
            )
            assert pv.text_content() == shown  # the last good value stays, no error page, no zero
            assert "Connection lost" in banner.text_content()
            page.screenshot(path=str(ARTIFACTS / "display-connection-lost.png"))
        finally:
            browser.close()
            server.__exit__(None, None, None)
