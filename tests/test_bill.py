"""The monthly bill from a real influxd: `foursave bill` and the rules pass's `bill_month`,
from a main meter's minute counters with a load whose bill is worked by hand below."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from foursave.app import load_config
from foursave.cli import main
from foursave.core.reading import to_line
from foursave.rules.engine import run_once
from foursave.rules.records import RecordIn, RecordStore

pytestmark = [pytest.mark.integration]
TZ = ZoneInfo("Asia/Taipei")

CONFIG = """
services:
  rules: {{records_path: {records}}}
  api: {{reports_path: {reports}}}
sites:
  - id: s
    name: 測試站
    name_en: Test site
    lat: 22.99
    lon: 120.19
    tariff: {{plan: three_stage, contracts_kw: {{regular: 300}}, industry: "831"}}
devices:
  - {{id: main, site: s, kind: meter, role: main, profile: sunspec, host: 127.0.0.1}}
"""


def kw_at(t: datetime) -> float:
    """100 kW all the time; 200 kW 13:00-18:00 Monday to Friday."""
    if t.weekday() < 5 and 13 <= t.hour < 18:
        return 200.0
    return 100.0


def write_minutes(influx, start: datetime, end: datetime, skip=None) -> None:
    """The main meter's import counter [Wh] and power factor every minute of [start, end)
    (the counter integrates kw_at exactly); minutes in ``skip`` have no reading."""
    counter, t, lines = 1_000_000.0, start, []
    while t < end:
        if skip is None or not skip(t):
            lines.append(
                to_line(
                    "meter",
                    {"site": "s", "device": "main", "role": "main"},
                    {"import_energy_wh": counter, "power_factor": 0.93, "active_power_w": 1.0},
                    int(t.timestamp() * 1000),
                )
            )
        counter += kw_at(t) * 1000 / 60
        t += timedelta(minutes=1)
        if len(lines) >= 20_000:
            influx.write(lines)
            lines = []
    if lines:
        influx.write(lines)


@pytest.fixture
def site_config(tmp_path, influx_url, database, monkeypatch):
    monkeypatch.setenv("FOURSAVE_INFLUXDB_URL", influx_url)
    monkeypatch.setenv("FOURSAVE_INFLUXDB_DATABASE", database)
    path = tmp_path / "config.yaml"
    path.write_text(
        CONFIG.format(records=tmp_path / "records.sqlite", reports=tmp_path / "reports.sqlite"),
        encoding="utf-8",
    )
    return path


def test_july_bill_printed_and_stored(site_config, influx, capsys):
    write_minutes(influx, datetime(2025, 7, 1, tzinfo=TZ), datetime(2025, 8, 1, 0, 20, tzinfo=TZ))
    # July 2025: 23 weekdays, 4 Saturdays, 4 Sundays, no off-peak day.
    # weekday (three-stage, summer): off 00-09 900 kWh x 2.53, semi 09-16 + 22-24 1,200 kWh
    #   x 5.85, peak 16-22 800 kWh x 9.39 = 16,809 NT$; x 23 = 386,607
    # Saturday: Sat semi 09-24 1,500 x 2.60 + off 900 x 2.53 = 6,177; x 4 = 24,708
    # Sunday: 2,400 x 2.53 = 6,072; x 4 = 24,288 -> energy 435,603
    # basic 300 x 223.60 = 67,080; max demand 200 kW: no over-contract
    # PF 93 % (the meter's readings): -1.3 % x 502,683 = -6,534.88
    # (67,080 + 435,603 - 6,534.88) x 1.017 = 504,582.64
    assert main(["bill", "--config", str(site_config), "--site", "s", "--month", "2025-07"]) == 0
    out = capsys.readouterr().out
    assert "Test site" in out
    assert "2025-07-01 .. 2025-07-31 (31 days)" in out
    assert "100.0%" in out  # completeness
    total_line = next(line for line in out.splitlines() if line.startswith("total"))
    assert total_line.split()[-1] == "504,583"
    assert "peak (尖峰)" in out and "800" not in total_line

    cfg = load_config(site_config)
    records = RecordStore(cfg.services.rules.records_path)
    try:
        run_once(cfg, influx, records, date(2025, 7, 1), date(2025, 8, 1))
    finally:
        records.close()
    (row,) = influx.rows("SELECT * FROM bill_month")
    assert row["site"] == "s" and row["plan"] == "three_stage"
    assert row["tariff"] == "tpc-hv-2024-10-16"
    assert row["total_ntd"] == pytest.approx(504_582.64, abs=0.01)
    assert row["energy_ntd"] == pytest.approx(435_603.00, abs=0.01)
    assert row["energy_kwh_peak"] == pytest.approx(23 * 800)
    assert row["max_demand_kw_peak"] == pytest.approx(200.0)
    assert row["completeness"] == 1.0
    assert row["power_factor"] == pytest.approx(0.93)

    # zh-TW, as the committee reads it
    assert (
        main(
            [
                "bill",
                *("--config", str(site_config), "--site", "s", "--month", "2025-07"),
                *("--lang", "zh-TW"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "測試站" in out and "應繳電費" in out and "504,583" in out
    assert "總表功率因數讀值平均" in out and "mean of the main meters" not in out


def test_the_bills_power_factor_when_recorded_and_a_month_with_a_gap(site_config, influx, capsys):
    # December 2025 with the readings of 12/10 06:01-20:59 missing: the 60 blocks 06:00 to
    # 20:45 have no energy of their own (2.0 % of 2,976); the counter runs on, so their
    # 2,000 kWh are there, and the bill says how complete its data is
    write_minutes(
        influx,
        datetime(2025, 12, 1, tzinfo=TZ),
        datetime(2026, 1, 1, 0, 20, tzinfo=TZ),
        skip=lambda t: (
            t.date() == date(2025, 12, 10) and 6 <= t.hour < 21 and t.minute + t.hour > 6
        ),
    )
    cfg = load_config(site_config)
    records = RecordStore(cfg.services.rules.records_path)
    records.add(
        RecordIn(
            site="s",
            period="2025-12",
            kind="electricity_bill_pf_pct",
            value=97,
            entered_by="test",
        )
    )
    records.close()
    assert main(["bill", "--config", str(site_config), "--site", "s", "--month", "2025-12"]) == 0
    out = capsys.readouterr().out
    assert "98.0%" in out and "2916 / 2976" in out
    assert "the bill may be low" in out
    assert "PF 97.0% (the bill's power factor (manual record)), -1.50%" in out
    # December 2025, non-summer: 22 weekdays, 4 Saturdays, 5 off-peak days (Sundays and
    # 12/25).  Weekday: semi 06-11 + 14-24 = 15 h at 100 kW + 4 h (14-18) at +100 kW =
    # 1,900 kWh x 5.47; off 00-06 + 11-14 = 9 h x 100 + 1 h (13-14) x 100 = 1,000 x 2.32.
    #   x 22: semi 41,800 kWh, off 22,000 kWh
    # Saturday: Sat semi 1,500 x 2.41, off 900 x 2.32; Sunday 2,400 x 2.32; 12/25 (a
    # Thursday: the office works, 2,900 kWh) is an off-peak day, all at 2.32
    # energy: 41,800 x 5.47 + (22,000 + 3,600 + 4 x 2,400 + 2,900) x 2.32 + 6,000 x 2.41 =
    #   228,646 + 88,392 + 14,460 = 331,498; basic 300 x 166.90 = 50,070
    # PF 97 %: -1.5 % x 381,568 = -5,723.52; (381,568 - 5,723.52) x 1.017 = 382,233.83
    total_line = next(line for line in out.splitlines() if line.startswith("total"))
    assert total_line.split()[-1] == "382,234"
    # spread evenly (133.3 kW over 06:00-21:00) the gap's energy falls into the periods as
    # the load did: semi 12 h x 133.3 = 1,600 kWh, off 3 h x 133.3 = 400 kWh
    assert "2,000.0 kWh measured by the counters across data gaps" in out


def test_a_month_without_a_tariff_or_data_is_refused_in_words(site_config, influx, capsys):
    write_minutes(influx, datetime(2024, 9, 2, tzinfo=TZ), datetime(2024, 9, 3, tzinfo=TZ))
    argv = ["bill", "--config", str(site_config), "--site", "s", "--month"]
    assert main([*argv, "2024-09"]) == 2
    err = capsys.readouterr().err
    assert "no tariff for 2024-09-01..2024-09-30" in err and "Traceback" not in err
    assert main([*argv, "2025-03"]) == 2
    assert "no main-meter data for site 's' in 2025-03-01..2025-03-31" in capsys.readouterr().err
    assert main(["bill", "--config", str(site_config), "--site", "x", "--month", "2025-03"]) == 2
    assert "unknown site 'x'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*argv, "2025-3"])
    assert "expected a month like 2025-07" in capsys.readouterr().err
