"""``foursave demo`` as a newcomer runs it: within minutes a site with a past.

One real demo process (its own mosquitto and influxd, simulators, collector, ingester,
rules engine and API, all on free ports) fills history from 1 January of the year
before last while live data flows, then: the display shows this year's PV energy, CO2
avoided and four-saving progress; last year's annual report judges every item against
its baseline; every Grafana panel's query returns data over the last 7 days (or the
panel's own range, as Grafana applies it); a fault raised through the fault-injection
API shows up as an alert and its acknowledgement.  A second run doubles neither the
history nor the sample records.  Screenshots of the display and of the report's first
page are left in ``test-artifacts/``.
"""

from __future__ import annotations

import csv
import io
import os
import re
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
import yaml

from foursave.core.influx import InfluxClient, InfluxUnavailable
from foursave.core.secrets import read_file
from foursave.dashboards.build import DASHBOARDS, dashboard_json
from foursave.demo import secrets_path
from foursave.localstack import free_port, port_open
from foursave.simulators.history import SAMPLE_BY
from tests.helpers import (
    ARTIFACTS,
    CHROME_ARGS,
    CHROMIUM,
    ROOT,
    demo_raw,
    expand,
    panels,
    reap,
    wait_for,
)

TAIPEI = ZoneInfo("Asia/Taipei")
# deadlines, not speed assertions: history fills in about a minute here
HISTORY_DEADLINE_S = 600
DAY_MS = 86_400_000
HISTORY_POINTS = "SELECT count(ac_power_w) FROM inverter WHERE source = 'backfill'"


class DemoRun:
    """``foursave demo`` as a child process, its screen captured in a file."""

    def __init__(self, cfg: Path, var: Path, screen: Path):
        self.screen = screen
        env = {k: v for k, v in os.environ.items() if not k.startswith("FOURSAVE_")}
        self.out = open(screen, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "foursave", "demo", "--config", str(cfg), "--var", str(var)],
            cwd=ROOT,
            env=env,
            stdout=self.out,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def text(self) -> str:
        return self.screen.read_text(errors="replace").replace("\r", "\n")

    def wait_for_text(self, pattern: str, timeout_s: float) -> str:
        def seen():
            if self.proc.poll() is not None:
                raise AssertionError(f"the demo exited ({self.proc.returncode}):\n{self.text()}")
            m = re.search(pattern, self.text())
            return m.group(0) if m else None

        return wait_for(seen, timeout_s, f"{pattern!r} on the demo's screen")

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(90)
        finally:
            self.close()
        return self.text()

    def close(self) -> None:
        """On every path: Ctrl-C first, so the demo stops what it started, then reap."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(90)
            except subprocess.TimeoutExpired:
                pass
        reap(self.proc)
        self.out.close()


def demo_config(tmp: Path) -> tuple[Path, dict]:
    raw = demo_raw()
    ports = {k: free_port() for k in ("mqtt", "influx", "api", "control")}
    svc = raw["services"]
    svc["mqtt"]["url"] = f"mqtt://127.0.0.1:{ports['mqtt']}"
    svc["influxdb"]["url"] = f"http://127.0.0.1:{ports['influx']}"
    svc["collector"]["spool_path"] = str(tmp / "spool.sqlite")
    svc["collector"]["status_interval_s"] = 2
    svc["ingester"]["dead_letter_path"] = str(tmp / "dead.sqlite")
    svc["simulator"]["control_port"] = ports["control"]
    svc["rules"] = {
        "records_path": str(tmp / "records.sqlite"),
        "state_path": str(tmp / "rules.sqlite"),
        "alert_interval_s": 1,
    }
    svc["api"] = {
        "port": ports["api"],
        "keys_path": str(tmp / "keys.sqlite"),
        "reports_path": str(tmp / "reports.sqlite"),
        "display_refresh_s": 1,
    }
    for d in raw["devices"]:
        d["port"] = free_port()
        d["interval_s"] = 0.5
    path = tmp / "demo.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False))
    return path, ports


def panel_range(panel: dict, now_ms: int) -> tuple[int, int]:
    """The time range Grafana gives a panel's queries with the dashboard on the last 7
    days: the panel's own relative time (``timeFrom``) wins where it has one."""
    m = re.fullmatch(r"(\d+)([dy])", panel.get("timeFrom") or "7d")
    assert m, panel.get("timeFrom")
    days = int(m.group(1)) * (365 if m.group(2) == "y" else 1)
    return now_ms - days * DAY_MS, now_ms


def has_data(rows: list[dict]) -> bool:
    return any(v is not None for r in rows for k, v in r.items() if k != "time")


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_demo_shows_a_site_with_a_past_and_a_second_run_doubles_nothing(tmp_path):
    cfg, ports = demo_config(tmp_path)
    var = tmp_path / "var"
    api = f"http://127.0.0.1:{ports['api']}"
    ARTIFACTS.mkdir(exist_ok=True)
    clients: list[InfluxClient] = []
    try:
        run_the_demo_twice(tmp_path, cfg, ports, var, api, clients)
    finally:
        for c in clients:
            c.close()


def reader(ports: dict, var: Path) -> InfluxClient:
    """InfluxDB as the demo's reader user: its influxd checks passwords, made up into
    the demo's secrets file (readable by its owner only)."""
    path = secrets_path(var)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    password = read_file(path)["influxdb"]["foursave_reader"]
    url = f"http://127.0.0.1:{ports['influx']}"
    anonymous = InfluxClient(url, "foursave", timeout_s=10)
    try:
        with pytest.raises(InfluxUnavailable, match="HTTP 401"):
            anonymous.rows(HISTORY_POINTS)
    finally:
        anonymous.close()
    return InfluxClient(
        url, "foursave", username="foursave_reader", password=password, timeout_s=60
    )


def run_the_demo_twice(tmp_path, cfg, ports, var, api, clients) -> None:
    demo = DemoRun(cfg, var, tmp_path / "screen-1.txt")
    try:
        summary = demo.wait_for_text(r"history ready: [^\n]*", HISTORY_DEADLINE_S)
        influx = reader(ports, var)
        clients.append(influx)
        history_points = influx.rows(HISTORY_POINTS)[0]["count"]
        screen = demo.text()
        keys = {
            role: re.search(rf"{role} key\s+(fsk_\S+)", screen).group(1)
            for role in ("viewer", "engineer", "auditor")
        }
        now = datetime.now(TAIPEI)
        last_year = now.year - 1
        assert f"report --config {cfg} --year {last_year} --format pdf" in screen
        assert "dashboards push --config" in screen
        check_printed_bill_command(screen, last_year)
        assert re.search(r"records\s+\d+ sample manual record", screen)

        t0 = time.monotonic()
        check_display(api, now.year)
        t1 = time.monotonic()
        check_alert_and_acknowledgement(api, ports["control"], keys, influx)
        t2 = time.monotonic()
        check_every_panel_returns_data(influx)
        t3 = time.monotonic()
        check_last_years_report(api, influx, keys["auditor"], last_year)
        print(
            f"\ndisplay {t1 - t0:.0f} s, alert {t2 - t1:.0f} s, panels {t3 - t2:.0f} s, "
            f"report {time.monotonic() - t3:.0f} s"
        )
        first_screen = demo.stop()
    finally:
        demo.close()
    assert demo.proc.returncode == 0, first_screen
    assert "stopped." in first_screen and "Traceback" not in first_screen
    assert not port_open("127.0.0.1", ports["mqtt"])
    assert not port_open("127.0.0.1", ports["influx"])
    assert "collector stopped" in (var / "collect.log").read_text()
    print(f"\nfirst run: {summary}")

    # ------------------------------------------------------------ the second run
    with sqlite3.connect(tmp_path / "records.sqlite") as db:
        records_before = db.execute(
            "SELECT count(*) FROM records WHERE entered_by = ?", (SAMPLE_BY,)
        ).fetchone()[0]
    assert records_before > 0
    demo = DemoRun(cfg, var, tmp_path / "screen-2.txt")
    try:
        second = demo.wait_for_text(r"history (ready|already complete)[^\n]*", HISTORY_DEADLINE_S)
        history_again = influx.rows(HISTORY_POINTS)[0]["count"]
        second_screen = demo.stop()
    finally:
        demo.close()
    assert demo.proc.returncode == 0, second_screen
    assert re.search(r"records\s+0 sample manual record", second_screen)
    with sqlite3.connect(tmp_path / "records.sqlite") as db:
        assert (
            db.execute(
                "SELECT count(*) FROM records WHERE entered_by = ?", (SAMPLE_BY,)
            ).fetchone()[0]
            == records_before
        )
    # the first run's history, counted after it: no point written twice (the seconds the
    # demo was stopped hold no whole hour to fill)
    assert "already complete" in second, second
    assert history_again == history_points
    print(f"second run: {second}")


def check_display(api: str, year: int) -> None:
    seen: list = []

    def snapshot():
        r = httpx.get(f"{api}/display/data", timeout=10)
        seen[:] = [r.status_code, r.text[:800]]
        if r.status_code != 200:  # e.g. the screens' rate limit
            return None
        doc = r.json()
        v = doc["values"]
        return (
            doc if v["pv_energy_year_kwh"]["value"] and v["co2_avoided_year_kg"]["value"] else None
        )

    try:
        doc = wait_for(snapshot, 60, "this year's PV energy on the display", interval_s=1)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the last answer: {seen}") from None
    assert doc["progress_period"] == str(year)
    progress = {p["item"]: p for p in doc["progress"]}
    assert set(progress) == {"electricity", "water", "fuel", "paper"}
    for item, p in progress.items():
        assert p["actual"] is not None and p["target_rate"] is not None, (item, p)
    for item in ("electricity", "water", "fuel"):
        assert progress[item]["baseline"], item  # last year's (or the base year's) numbers

    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROME_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1920, "height": 1080})
            page.goto(f"{api}/display?lang=zh-TW")
            year_tile = page.locator('[data-field="pv_energy_year_kwh"]')
            wait_for(lambda: year_tile.text_content() not in ("—", "", None), 30, "year PV tile")
            page.screenshot(path=str(ARTIFACTS / "demo-display.png"))
        finally:
            browser.close()


def check_alert_and_acknowledgement(
    api: str, control_port: int, keys: dict, influx: InfluxClient
) -> None:
    control = f"http://127.0.0.1:{control_port}"
    viewer = {"X-API-Key": keys["viewer"]}
    r = httpx.patch(f"{control}/devices/inv-01/faults", json={"trip": ["GROUND_FAULT"]}, timeout=10)
    assert r.status_code == 200, r.text
    try:
        firing = wait_for(
            lambda: httpx.get(
                f"{api}/api/v1/alerts",
                params={"rule": "inverter-fault", "status": "firing"},
                headers=viewer,
                timeout=10,
            ).json(),
            90,
            "the inverter-fault alert",
        )
        ack = httpx.post(
            f"{api}/api/v1/alerts/{firing[0]['id']}/ack",
            json={"comment": "demo test: ground fault seen"},
            headers={"X-API-Key": keys["engineer"]},
            timeout=10,
        )
        assert ack.status_code == 200, ack.text
        # the API reads InfluxDB only: the rules engine writes the acknowledgement
        wait_for(
            lambda: influx.rows(
                'SELECT "comment" FROM alert_events WHERE "event" = \'acknowledged\' '
                f'AND "incident" = {firing[0]["id"]}'
            ),
            30,
            "the acknowledgement in alert history",
        )
    finally:
        httpx.delete(f"{control}/devices/inv-01/faults", timeout=10)


def check_every_panel_returns_data(influx: InfluxClient) -> None:
    devices = ["inv-01", "inv-02"]

    def pipeline_health():  # written by the live services every few seconds
        return all(
            influx.rows(f"SELECT count({f}) FROM {m}")
            for m, f in (
                ("collector_status", "spool_depth"),
                ("ingest_stats", "lag_ms"),
                ("ingest_seq", "received"),
                ("device_status", "poll_ms"),
                ("demand_forecast", "forecast_kw"),
            )
        )

    wait_for(pipeline_health, 60, "pipeline health and the demand forecast")
    now_ms = int(time.time() * 1000)
    empty = []
    for name in DASHBOARDS:
        d = dashboard_json(name)
        for var in d.get("templating", {}).get("list", []):
            assert influx.rows(expand(var["query"], 0, now_ms, "demo", devices)), var["name"]
        for p in panels(d):
            start_ms, end_ms = panel_range(p, now_ms)
            for t in p.get("targets", []):
                q = expand(t["query"], start_ms, end_ms, "demo", devices, interval="10m")
                if has_data(influx.rows(q)):
                    continue
                if '"clear_day" = true' in q:
                    # the clear-day checks are empty only in a week without a clear day:
                    # that is the reason, checked, not assumed
                    clear = influx.rows(
                        'SELECT count("y_f") FROM "pv_daily" WHERE "clear_day" = true '
                        f"AND time >= {start_ms}ms AND time <= {end_ms}ms"
                    )
                    if not clear:
                        continue
                empty.append((name, p["title"], q))
    assert not empty, "\n".join(f"{n} / {t}: {q}" for n, t, q in empty)


def check_printed_bill_command(screen: str, year: int) -> None:
    """The bill command the demo prints runs as printed, in another shell (it finds the
    reader's password through the secrets file it names)."""
    line = re.search(r"  bill +(\S+=\S+) \S+ (bill --config .*)", screen)
    assert line, screen
    var, value = line.group(1).split("=", 1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FOURSAVE_")}
    out = subprocess.run(
        [sys.executable, "-m", "foursave", *line.group(2).split()],
        cwd=ROOT,
        env={**env, var: value},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert f"{year}-07-01 .. {year}-07-31" in out.stdout and "應繳電費" in out.stdout


def check_last_years_report(api: str, influx: InfluxClient, key: str, year: int) -> None:
    auditor = {"X-API-Key": key}
    r = httpx.get(
        f"{api}/api/v1/reports/{year}",
        params={"format": "csv", "lang": "en"},
        headers=auditor,
        timeout=120,
    )
    assert r.status_code == 200, r.text
    lines = re.split(r"\r?\n\r?\n", r.content.decode("utf-8-sig"))[0]  # the summary table
    rows = {row["Item"]: row for row in csv.DictReader(io.StringIO(lines))}
    assert set(rows) == {"Electricity", "Water", "Fuel", "Paper"}, rows
    ledger = {
        row["item"]: row
        for row in influx.rows(
            'SELECT last("actual") AS actual, last("savings_rate") AS savings_rate FROM "ledger" '
            f'WHERE "granularity" = \'year\' AND "period" = \'{year}\' GROUP BY "item"'
        )
    }
    for item, row in rows.items():
        assert row["Result"] in ("met", "not met"), (item, row)  # judged, every item
        assert float(row["Actual"]) == pytest.approx(ledger[item.lower()]["actual"], rel=1e-12)
        if item != "Paper":  # paper is judged on its online-signing rate, not a baseline
            assert row["Baseline"] and row["Savings rate"], (item, row)
            assert float(row["Savings rate"]) == pytest.approx(
                ledger[item.lower()]["savings_rate"], rel=1e-12
            )

    pdf = httpx.get(
        f"{api}/api/v1/reports/{year}",
        params={"format": "pdf", "lang": "zh-TW"},
        headers=auditor,
        timeout=120,
    )
    assert pdf.status_code == 200
    from pypdf import PdfReader

    first = PdfReader(io.BytesIO(pdf.content)).pages[0].extract_text()
    assert str(year) in first and ("達成" in first or "未達成" in first), first[:500]
    out = ARTIFACTS / f"demo-report-{year}-zh-TW.pdf"
    out.write_bytes(pdf.content)
    subprocess.run(
        [
            "pdftoppm",
            "-png",
            "-r",
            "80",
            "-f",
            "1",
            "-l",
            "1",
            "-singlefile",
            str(out),
            str(ARTIFACTS / f"demo-report-{year}-page1"),
        ],
        check=True,
        timeout=60,
    )
    assert (ARTIFACTS / f"demo-report-{year}-page1.png").stat().st_size > 10_000


@pytest.mark.clock
def test_history_start_is_the_year_before_last_or_the_base_year():
    from foursave.core.config import parse_config
    from foursave.simulators.history import history_start

    cfg = parse_config(
        "sites: [{id: a, name: A, lat: 23, lon: 120, ledger: {base_year: 2024}}]\ndevices: []\n",
        env={},
    )
    jan = datetime(2026, 1, 1, 0, 30, tzinfo=TAIPEI).timestamp()  # still 2025 in UTC
    assert history_start(cfg, jan).isoformat() == "2024-01-01"
    assert history_start(cfg, datetime(2027, 6, 1, tzinfo=UTC).timestamp()).isoformat() == (
        "2024-01-01"  # the base year is earlier than the year before last
    )
    cfg = parse_config(
        "sites: [{id: a, name: A, lat: 23, lon: 120, ledger: {base_year: 2030}}]\ndevices: []\n",
        env={},
    )
    assert history_start(cfg, datetime(2027, 6, 1, tzinfo=UTC).timestamp()).isoformat() == (
        "2025-01-01"
    )
