"""The ledger in a site's own time zone, on a real influxd: readings just before and
after local midnight land on the right local days and months, days where the clocks
change are whole days, and sites in different zones keep their own days.

Every instant here is written with its UTC offset and "now" is a fixed clock, so the
results do not depend on the machine's zone or hour.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest

from foursave.core.clock import ManualClock
from foursave.core.config import Config, parse_config
from foursave.core.influx import InfluxClient
from foursave.core.periods import month
from foursave.core.reading import to_line
from foursave.rules.engine import run_once
from foursave.rules.ledger import Ledger
from foursave.rules.records import RecordStore
from foursave.rules.rollup import ROLLUP, daily_quantities, site_marker

pytestmark = [pytest.mark.integration, pytest.mark.clock]

LA = "America/Los_Angeles"
NOW = ManualClock(datetime.fromisoformat("2025-09-15T12:00:00-07:00").timestamp())


def _config(influx_url: str, database: str, sites: list[tuple[str, str]]) -> Config:
    lines = ["sites:"]
    for sid, tz in sites:
        lines.append(f"  - {{id: {sid}, name: {sid}, lat: 34.05, lon: -118.25, timezone: {tz}}}")
    lines.append("devices:")
    for k, (sid, _) in enumerate(sites):
        lines.append(
            f"  - {{id: main-{sid}, site: {sid}, kind: meter, role: main, profile: sunspec, "
            f"host: h, port: {k + 1}, interval_s: 900}}"
        )
    return parse_config(
        "\n".join(lines) + "\n",
        env={"FOURSAVE_INFLUXDB_URL": influx_url, "FOURSAVE_INFLUXDB_DATABASE": database},
    )


def _ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


def _write(influx: InfluxClient, site: str, readings: list[tuple[str | int, float]]) -> None:
    influx.write(
        [
            to_line(
                "meter",
                {"site": site, "device": f"main-{site}", "role": "main"},
                {"import_energy_wh": float(wh)},
                _ms(t) if isinstance(t, str) else t,
            )
            for t, wh in readings
        ]
    )


# the main meter's import counter [Wh] in Los Angeles local time (PDT, UTC-7)
AROUND_MIDNIGHT = [
    ("2025-07-30T12:00:00-07:00", 1_000),  # first reading: the day counts from it
    ("2025-07-31T12:00:00-07:00", 2_000),
    ("2025-07-31T23:30:00-07:00", 3_000),  # 06:30 UTC on 1 August: still 31 July here
    ("2025-08-01T00:30:00-07:00", 3_500),  # half an hour into August
    ("2025-08-01T12:00:00-07:00", 4_500),
    ("2025-08-02T12:00:00-07:00", 5_000),
]
EXPECTED_DAYS = {
    date(2025, 7, 30): 0.0,
    date(2025, 7, 31): 2_000.0,  # up to the 23:30 reading
    date(2025, 8, 1): 1_500.0,  # from the 23:30 reading to the last of 1 August
    date(2025, 8, 2): 500.0,
}


def test_readings_around_local_midnight_land_on_the_sites_days_and_months(
    tmp_path, influx_url, database, influx
):
    cfg = _config(influx_url, database, [("la", LA)])
    _write(influx, "la", AROUND_MIDNIGHT)
    store = RecordStore(tmp_path / "records.sqlite")

    ledger = Ledger(cfg, influx, store, NOW)
    ledger.load(date(2025, 7, 1), date(2025, 9, 1))
    days = ledger._days[("main-la", "import_energy_wh")].quantity
    assert days == EXPECTED_DAYS
    rows = {(r.item, r.period): r for r in ledger.rows([month(2025, 7), month(2025, 8)])}
    assert rows[("electricity", "2025-07")].actual == pytest.approx(2.0)  # kWh
    assert rows[("electricity", "2025-08")].actual == pytest.approx(2.0)

    # the closed days went to the rollup; a second ledger reads them back unchanged
    assert influx.rows(f'SELECT count(c) FROM "{ROLLUP}"')[0]["count"] > 0
    again = Ledger(cfg, influx, store, NOW)
    again.load(date(2025, 7, 1), date(2025, 9, 1))
    assert again._days[("main-la", "import_energy_wh")].quantity == EXPECTED_DAYS

    # the engine stamps days and months at the site's local midnight
    run_once(cfg, influx, store, date(2025, 7, 1), date(2025, 9, 1), NOW)
    daily = influx.rows("SELECT electricity_kwh FROM ledger_daily WHERE site = 'la'")
    assert {r["time"]: r["electricity_kwh"] for r in daily} == {
        _ms(f"{d.isoformat()}T00:00:00-07:00"): wh / 1000 for d, wh in EXPECTED_DAYS.items()
    }
    monthly = influx.rows(
        "SELECT actual, period FROM ledger WHERE item = 'electricity' AND granularity = 'month'"
    )
    assert {(r["time"], r["period"]) for r in monthly} == {
        (_ms("2025-07-01T00:00:00-07:00"), "2025-07"),
        (_ms("2025-08-01T00:00:00-07:00"), "2025-08"),
    }
    yearly = influx.rows("SELECT actual FROM ledger WHERE item = 'electricity' AND period = '2025'")
    assert [r["time"] for r in yearly] == [_ms("2025-01-01T00:00:00-08:00")]  # PST in January
    store.close()


@pytest.mark.parametrize(
    ("day", "hours"),
    [(date(2025, 3, 9), 23), (date(2025, 11, 2), 25)],  # Los Angeles changes its clocks
    ids=["2025-03-09 (23 h)", "2025-11-02 (25 h)"],
)
def test_a_day_with_a_clock_change_is_one_whole_day(influx_url, database, influx, day, hours):
    cfg = _config(influx_url, database, [("la", LA)])
    # a reading every 15 minutes from local midnight before to local midnight after
    offset = {3: ("-08:00", "-07:00"), 11: ("-07:00", "-08:00")}[day.month]
    t0 = _ms(f"{(day - timedelta(days=1)).isoformat()}T00:00:00{offset[0]}")
    t1 = _ms(f"{(day + timedelta(days=1)).isoformat()}T00:00:00{offset[1]}")
    assert t1 - t0 == (24 + hours) * 3_600_000
    _write(influx, "la", [(t, 10.0 * k) for k, t in enumerate(range(t0, t1, 900_000))])

    dd = daily_quantities(influx, cfg, day - timedelta(days=1), day + timedelta(days=1), clock=NOW)[
        ("main-la", "import_energy_wh")
    ]
    assert dd.quantity == {day - timedelta(days=1): 950.0, day: 40.0 * hours}
    # as many readings as the day has quarter hours: complete, not 23/24 or capped
    assert dd.completeness == {day - timedelta(days=1): 1.0, day: 1.0}


def test_sites_in_different_zones_keep_their_own_days(tmp_path, influx_url, database, influx):
    cfg = _config(influx_url, database, [("la", LA), ("tpe", "Asia/Taipei")])
    _write(influx, "la", AROUND_MIDNIGHT)
    _write(influx, "tpe", AROUND_MIDNIGHT)  # the same instants: in Taipei 15 hours later
    tpe_days = {
        date(2025, 7, 31): 0.0,  # 03:00 Taipei: the first reading
        date(2025, 8, 1): 2_500.0,  # 03:00, 14:30 and 15:30 on 1 August in Taipei
        date(2025, 8, 2): 1_000.0,  # 03:00 on 2 August
        date(2025, 8, 3): 500.0,
    }
    for _ in range(2):  # the second time from each zone's own rollup
        dq = daily_quantities(influx, cfg, date(2025, 7, 1), date(2025, 9, 1), clock=NOW)
        assert dq[("main-la", "import_energy_wh")].quantity == EXPECTED_DAYS
        assert dq[("main-tpe", "import_energy_wh")].quantity == tpe_days
    markers = {
        r["value"]
        for r in influx.rows(f'SHOW TAG VALUES FROM "{ROLLUP}" WITH KEY = "device"')
        if r["value"].startswith("_")
    }
    assert markers == {site_marker("la"), site_marker("tpe")}  # each site's own

    store = RecordStore(tmp_path / "records.sqlite")
    ledger = Ledger(cfg, influx, store, NOW)
    ledger.load(date(2025, 7, 1), date(2025, 9, 1))
    rows = {
        (r.site, r.period): r.actual
        for r in ledger.rows([month(2025, 7), month(2025, 8)])
        if r.item == "electricity"
    }
    assert rows[("la", "2025-07")] == pytest.approx(2.0)
    assert rows[("la", "2025-08")] == pytest.approx(2.0)
    assert rows[("tpe", "2025-07")] == pytest.approx(0.0)
    assert rows[("tpe", "2025-08")] == pytest.approx(4.0)
    store.close()
