"""The four-saving ledger from backfilled history and manual records, on a real influxd."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta, timezone

import httpx
import pytest
import yaml

from foursave.core.config import parse_config
from foursave.core.influxql import column, eq, select, time_range
from foursave.core.periods import month, year
from foursave.core.reading import to_line
from foursave.rules.ledger import Ledger
from foursave.rules.records import RecordIn, RecordStore, import_csv
from foursave.rules.rollup import ROLLUP, daily_quantities, rebuild_rollup, rollup_generation
from foursave.simulators.backfill import run_backfill
from foursave.simulators.server import register_image
from foursave.simulators.site import SiteModel
from tests.helpers import ROOT, YONGHUA_CONFIG, reap

pytestmark = pytest.mark.clock  # local days and hours: run again under a second zone in CI

SITE_CONFIG = YONGHUA_CONFIG.replace(
    "commissioned: 2025-01-01", "commissioned: 2024-01-01"
).replace(
    "pv_capacity_kwp: 24}",
    "pv_capacity_kwp: 24, floor_area_m2: 12000, "
    "ledger: {preset: plan_2016, base_year: 2024, exclusions: [ev_charging], parking_area_m2: 2000}}",
)


def test_records_keep_an_audit_trail(tmp_path):
    store = RecordStore(tmp_path / "r.sqlite")
    first = store.add(
        RecordIn(
            site="yonghua",
            period="2025-01",
            kind="gasoline_l",
            value=120,
            entered_by="chen",
            evidence="INV-001",
        )
    )
    fixed = store.add(
        RecordIn(
            site="yonghua",
            period="2025-01",
            kind="gasoline_l",
            value=125,
            entered_by="lin",
            supersedes=first,
        )
    )
    assert [r.id for r in store.history("yonghua")] == [first, fixed]  # nothing overwritten
    assert [r.value for r in store.current("yonghua")] == [125]
    assert store.totals("yonghua", ["2025-01"], "gasoline_l") == 125
    with pytest.raises(ValueError, match="an adjustment needs"):
        RecordIn(site="yonghua", period="2025-01", kind="adjustment", value=-100, entered_by="x")


def test_csv_import_is_all_or_nothing_and_names_the_line(tmp_path):
    store = RecordStore(tmp_path / "r.sqlite")
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "site,period,kind,value\nyonghua,2025-01,gasoline_l,100\nyonghua,2025-13,diesel_l,5\n"
        "yonghua,2025-02,petrol,7\n"
    )
    result = import_csv(store, bad, "chen")
    assert result.added == [] and store.history() == []
    assert any(e.startswith(f"{bad}:3: period: expected a month") for e in result.errors)
    assert any(e.startswith(f"{bad}:4: kind:") for e in result.errors)
    good = tmp_path / "good.csv"
    good.write_text(
        "site,period,kind,value,evidence\nyonghua,2025-01,gasoline_l,100,R-1\n"
        "yonghua,2025-01,diesel_l,20,R-2\n"
    )
    assert len(import_csv(store, good, "chen").added) == 2


@pytest.mark.integration
def test_ledger_from_history_and_records(tmp_path, influx_url, database, influx):
    cfg = parse_config(
        SITE_CONFIG,
        env={"FOURSAVE_INFLUXDB_URL": influx_url, "FOURSAVE_INFLUXDB_DATABASE": database},
    )
    run_backfill(cfg, date(2024, 1, 1), date(2025, 2, 1), step_s=900)
    store = RecordStore(tmp_path / "records.sqlite")
    for period, gas in (("2024-01", 400.0), ("2025-01", 380.0)):
        store.add(
            RecordIn(site="yonghua", period=period, kind="gasoline_l", value=gas, entered_by="chen")
        )
    for kind, n in (
        ("docs_online_signed", 950),
        ("docs_electronic_received", 700),
        ("docs_paper_to_online", 150),
        ("docs_self_created", 150),
    ):
        store.add(RecordIn(site="yonghua", period="2025-01", kind=kind, value=n, entered_by="wu"))
    store.add(
        RecordIn(
            site="yonghua",
            period="2025-01",
            kind="adjustment",
            item="electricity",
            value=-1000,
            entered_by="chen",
            reason="new server room (one-off)",
            approved_by="director Huang",
            approved_on=date(2025, 2, 10),
        )
    )

    ledger = Ledger(cfg, influx, store)
    ledger.load(date(2024, 1, 1), date(2025, 2, 1))
    rows = {(r.item, r.period): r for r in ledger.rows([month(2025, 1), year(2024)])}

    # electricity = main meter import - EV sub-meter + adjustment, from the same physics
    model = SiteModel(cfg, cfg.sites[0])
    days = [date(2025, 1, d) for d in range(1, 32)]
    main = sum(model.daily_totals(d)["main"]["import_energy_wh"] for d in days) / 1000
    ev = sum(model.daily_totals(d)["ev"]["import_energy_wh"] for d in days) / 1000
    pv = sum(model.daily_totals(d)["pvm"]["import_energy_wh"] for d in days) / 1000
    e = rows[("electricity", "2025-01")]

    def step(device: str) -> float:  # kWh: history is stored as the meter's register shows it
        return register_image(cfg.device(device)).resolution("import_energy_wh", 0) / 1000

    assert e.details["grid_import_kwh"] == pytest.approx(main, abs=step("main"))
    assert e.details["excluded_kwh"] == pytest.approx(ev, abs=step("ev"))
    assert e.details["pv_generation_kwh"] == pytest.approx(pv, abs=step("pvm"))
    assert e.actual == pytest.approx(main - ev - 1000, abs=step("main") + step("ev"))
    assert e.details["eui_kwh_m2"] == pytest.approx(e.actual / 10_000)
    # rolling 12 months: February 2024 .. January 2025 over the same 10,000 m²
    months12 = [month(2024, m) for m in range(2, 13)] + [month(2025, 1)]
    rolling = sum(ledger.electricity_raw(cfg.sites[0], q) for q in months12) / 10_000
    assert e.details["eui_rolling_12m_kwh_m2"] == pytest.approx(rolling)
    assert e.completeness == pytest.approx(1.0)
    assert any("director Huang" in str(n) for n in e.notes)
    assert any("not yet published" in str(n) for n in e.notes)  # 2025 grid factor
    assert e.co2e_kg == pytest.approx(e.actual * 0.474)
    # 2016 plan: electricity judged against the base year's same month, target no growth
    assert e.baseline_rule.startswith("base year 2024") and e.target_rate == 0.0
    assert e.savings_rate == pytest.approx((e.baseline - e.actual) / e.baseline)
    # weather normalisation against a CDD regression of 2024's months (same building):
    # the normalised savings are ~0 within their uncertainty; the fit statistics are reported
    assert e.details["baseline_cv_rmse"] < 0.15 and abs(e.details["baseline_nmbe"]) < 0.005
    unadjusted = (e.details["normalised_baseline_kwh"] - (e.actual + 1000)) / e.details[
        "normalised_baseline_kwh"
    ]
    assert abs(unadjusted) < max(0.05, e.details.get("normalised_savings_uncertainty", 0))
    # fuel against the previous year: 400 -> 380 L is 5 % saved, target 1 %
    f = rows[("fuel", "2025-01")]
    assert (f.actual, f.baseline, f.target_rate, f.met) == (380.0, 400.0, 0.01, True)
    assert f.savings_rate == pytest.approx(0.05)
    # paper: 950 / (700 + 150 + 150) = 0.95 against 2025's target of 100 %: not met
    p = rows[("paper", "2025-01")]
    assert p.actual == pytest.approx(0.95) and p.target_rate == 1.0 and p.met is False
    assert rows[("electricity", "2024")].completeness == pytest.approx(1.0)

    # a second ledger reads the closed days from the counter_daily rollup: same numbers
    assert influx.rows("SELECT count(c) FROM counter_daily")[0]["count"] > 0
    again = Ledger(cfg, influx, store)
    again.load(date(2024, 1, 1), date(2025, 2, 1))
    rows2 = {(r.item, r.period): r for r in again.rows([month(2025, 1), year(2024)])}
    for key in (("electricity", "2025-01"), ("electricity", "2024"), ("water", "2024")):
        assert rows2[key].actual == pytest.approx(rows[key].actual, rel=1e-12)
        assert rows2[key].completeness == pytest.approx(rows[key].completeness)


@pytest.mark.integration
def test_rules_once_writes_the_ledger(tmp_path, influx_url, database, influx):
    raw = yaml.safe_load(SITE_CONFIG)
    raw["services"]["rules"] = {"records_path": str(tmp_path / "records.sqlite")}
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    env = {
        **os.environ,
        "FOURSAVE_INFLUXDB_URL": influx_url,
        "FOURSAVE_INFLUXDB_DATABASE": database,
    }
    cfg = parse_config(path.read_text(), env=env)
    run_backfill(cfg, date(2024, 12, 1), date(2025, 1, 1), step_s=900)
    out = subprocess.run(
        [sys.executable, "-m", "foursave", "rules", "--once", "--config", str(path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    # the alert pass ran too (no broker here: MQTT fails fast, the others would deliver)
    assert "alerts:" in out.stdout and "firing" in out.stdout
    rows = influx.rows(
        "SELECT actual, completeness FROM ledger WHERE item = 'electricity' AND granularity = 'month'"
    )
    assert (
        len(rows) == 1 and rows[0]["actual"] > 0 and rows[0]["completeness"] == pytest.approx(1.0)
    )
    # --rebuild: a new generation of the rollup from the readings, the same ledger
    rebuild = ["rules", "--once", "--no-alerts", "--rebuild", "--config", str(path)]
    out = subprocess.run(
        [sys.executable, "-m", "foursave", *rebuild],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "rebuilt the counter_daily rollup from the readings (generation 1" in out.stdout
    again = influx.rows(
        "SELECT actual, completeness FROM ledger WHERE item = 'electricity' AND granularity = 'month'"
    )
    assert again == rows


@pytest.mark.integration
def test_rules_runs_continuously_and_stops_cleanly_on_sigterm(
    tmp_path, broker, influx_url, database, influx
):
    import signal

    from tests.helpers import admit, broker_secrets, wait_for

    raw = yaml.safe_load(SITE_CONFIG)
    raw["services"]["mqtt"] = {"url": f"mqtt://127.0.0.1:{broker.port}"}
    raw["services"]["secrets_file"] = str(broker_secrets(broker))
    raw["services"]["rules"] = {
        "records_path": str(tmp_path / "r.sqlite"),
        "state_path": str(tmp_path / "s.sqlite"),
        "alert_interval_s": 0.5,
        "interval_s": 600,
        "clock": "simulated",  # "now" is the simulated noon below, at any hour in any zone
    }
    raw["services"]["simulator"] = {
        "start": "2025-07-04T12:00:00+08:00",
        "speed": 1,
        "anchor": datetime.now(UTC).isoformat(),
    }
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    env = {
        **os.environ,
        "FOURSAVE_INFLUXDB_URL": influx_url,
        "FOURSAVE_INFLUXDB_DATABASE": database,
    }
    admit(broker, parse_config(path.read_text(), env=env))
    # history up to the simulated day's midnight: every device has been silent 12 h
    run_backfill(parse_config(path.read_text(), env=env), date(2025, 7, 1), date(2025, 7, 4))
    with open(tmp_path / "rules.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "foursave", "rules", "--config", str(path)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: influx.rows("SELECT count(actual) FROM ledger"), 60, "the ledger written")
        # the alert pass runs too: history stopped at midnight, so every device is silent
        wait_for(
            lambda: influx.rows(
                "SELECT count(incident) FROM alert_events WHERE rule = 'device-silent'"
            ),
            60,
            "device-silent alerts",
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        reap(proc)
    assert "Traceback" not in (tmp_path / "rules.log").read_text()


def test_csv_adjustment_without_approval_is_refused_by_line(tmp_path):
    store = RecordStore(tmp_path / "r.sqlite")
    f = tmp_path / "adj.csv"
    f.write_text(
        "site,period,kind,value,item,reason\nyonghua,2025-01,adjustment,-500,electricity,new servers\n"
    )
    result = import_csv(store, f, "chen")
    assert result.added == [] and any(
        e.startswith(f"{f}:2:") and "approved_by" in e for e in result.errors
    ), result.errors


REBUILD_CFG = """
sites: [{id: s, name: S, lat: 22.99, lon: 120.19, floor_area_m2: 1000}]
devices: [{id: main, site: s, kind: meter, role: main, profile: sunspec, host: h, interval_s: 900}]
"""
TAIPEI = timezone(timedelta(hours=8))


def _ms(d: date) -> int:
    return int(datetime(d.year, d.month, d.day, tzinfo=TAIPEI).timestamp() * 1000)


def _same(a, b) -> bool:
    return a.keys() == b.keys() and all(
        a[k].quantity == pytest.approx(b[k].quantity)
        and a[k].completeness == pytest.approx(b[k].completeness)
        and a[k].resets == b[k].resets
        for k in a
    )


@pytest.mark.integration
def test_rebuild_forgets_what_the_readings_no_longer_say(tmp_path, influx):
    """Without DROP: after a rebuild the rollup gives what a fresh computation gives, also
    for days the old rollup has and the new one does not (their readings were deleted)."""
    cfg = parse_config(REBUILD_CFG, env={})
    site = cfg.sites[0]
    start, end = date(2025, 1, 1), date(2025, 4, 1)

    def readings(first: date, last: date, offset_wh: float = 0.0) -> None:
        t, t_end = _ms(first), _ms(last)
        c0 = (t - _ms(date(2024, 12, 31))) / 900_000 * 250.0  # 1 kW: 250 Wh a block
        lines = [
            to_line(
                "meter",
                {"site": "s", "device": "main", "role": "main"},
                {"import_energy_wh": c0 + k * 250.0 + offset_wh, "active_power_w": 1000.0},
                t + k * 900_000,
            )
            for k in range((t_end - t) // 900_000)
        ]
        influx.write(lines)

    def fresh():
        return daily_quantities(influx, cfg, start, end, use_rollup=False)

    readings(date(2024, 12, 31), end)  # from the day before: every day is closed and kept
    first = daily_quantities(influx, cfg, start, end)
    assert _same(first, fresh()) and rollup_generation(influx) == 0
    # the readings change: February is deleted (test set-up straight to the 1.x server),
    # 10 March is written again 5 kWh higher
    r = httpx.post(
        f"{influx.url}/query",
        params={
            "db": influx.database,
            "q": f'DELETE FROM "meter" WHERE time >= {_ms(date(2025, 2, 1))}ms '
            f"AND time < {_ms(date(2025, 3, 1))}ms",
        },
    )
    assert r.status_code == 200 and "error" not in r.json()["results"][0]
    readings(date(2025, 3, 10), date(2025, 3, 11), offset_wh=5000.0)
    truth = fresh()
    feb = [date(2025, 2, 1) + timedelta(days=k) for k in range(28)]
    assert not any(d in truth[("main", "import_energy_wh")].quantity for d in feb)

    stale = daily_quantities(influx, cfg, start, end)  # the old rollup: closed days kept
    assert all(d in stale[("main", "import_energy_wh")].quantity for d in feb)
    assert not _same(stale, truth)

    assert rebuild_rollup(influx, cfg, start, end) == 1
    assert _same(daily_quantities(influx, cfg, start, end), truth)
    assert _same(daily_quantities(influx, cfg, start, end), truth)  # read back from it

    def feb_days(generation: int) -> set[int]:
        q = select(
            column("c"),
            ROLLUP,
            where=[
                eq("generation", str(generation)),
                eq("device", "main"),
                time_range(_ms(feb[0]), _ms(date(2025, 3, 1))),
            ],
        )
        return {r["time"] for r in influx.rows(q)}

    assert len(feb_days(0)) == 28 and feb_days(1) == set()  # stale points stay, unread
    ledger = Ledger(cfg, influx, RecordStore(tmp_path / "r.sqlite"))
    ledger.load(start, end)
    assert ledger.electricity(site, month(2025, 2)).actual is None  # no readings, no bill
    march = truth[("main", "import_energy_wh")].quantity
    assert ledger.electricity(site, month(2025, 3)).actual == pytest.approx(
        sum(v for d, v in march.items() if d.month == 3) / 1000
    )
    # a second rebuild starts another generation; the numbers stay
    assert rebuild_rollup(influx, cfg) == 2
    assert _same(daily_quantities(influx, cfg, start, end), truth)


def test_a_stray_future_point_opens_no_span(influx):
    """One meter point dated 2090 (written past the ingester, e.g. by hand) must not
    make the engine compute every day from now to 2090."""
    from foursave.rules.rollup import data_span

    def point(day: date) -> str:
        ts = int(datetime(day.year, day.month, day.day, 4, tzinfo=UTC).timestamp() * 1000)
        return to_line(
            "meter", {"site": "s", "device": "m", "role": "main"}, {"import_energy_wh": 1.0}, ts
        )

    influx.write([point(date(2026, 3, 1)), point(date(2026, 3, 4)), point(date(2090, 1, 1))])
    now_ms = int(datetime(2026, 3, 10, tzinfo=UTC).timestamp() * 1000)
    assert data_span(influx, "Asia/Taipei", until_ms=now_ms) == (date(2026, 3, 1), date(2026, 3, 5))
    assert data_span(influx, "Asia/Taipei")[1] == date(2090, 1, 2)  # what it would have been
