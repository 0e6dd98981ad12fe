"""Where readings and rollups go (core/retention.py, rules/downsample.py), without a
server: the statements built for the retention policies, the policy a query names, the
measurement of a line, and which fields are rolled up as what."""

from __future__ import annotations

import pytest

from foursave.core import influxql as q
from foursave.core.config import InfluxRetention
from foursave.core.glossary import FIELDS
from foursave.core.influx import InfluxClient, _measurement
from foursave.core.retention import RAW_MEASUREMENTS, RAW_RP, ROLLED_UP, _days
from foursave.rules.downsample import COUNTERS, stats_of


def test_policy_statements():
    assert q.create_retention_policy("raw", "db", 400, 1) == (
        'CREATE RETENTION POLICY "raw" ON "db" DURATION 400d REPLICATION 1 SHARD DURATION 1d'
    )
    assert q.alter_retention_policy("rollup_1h", "db", None) == (
        'ALTER RETENTION POLICY "rollup_1h" ON "db" DURATION INF'
    )
    assert q.copy_points("db", "meter", "autogen", "raw", 0, 10) == (
        'SELECT * INTO "db"."raw"."meter" FROM "db"."autogen"."meter" '
        "WHERE time >= 0ms AND time < 10ms GROUP BY *"
    )
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="whole number of days"):
            q.create_retention_policy("raw", "db", bad)
    assert isinstance(q.show_retention_policies("db"), q.AdminStatement)
    assert not q.is_served(q.create_retention_policy("raw", "db", 1))


def test_a_query_names_its_policy_beside_its_text_unless_qualified():
    inner = q.select(q.agg("mean", "x", "x"), "meter", rp="rollup_1h")
    assert inner == 'SELECT mean("x") AS "x" FROM "meter"'
    assert (inner.measurement, inner.rp) == ("meter", "rollup_1h")
    outer = q.select(q.agg("sum", "x"), inner)
    assert (outer.measurement, outer.rp) == ("meter", "rollup_1h")
    grafana = q.select(q.ALL, "inverter", rp="$rp", qualify=True)
    assert grafana == 'SELECT * FROM "$rp"."inverter"'
    assert q.qualified("meter", "raw", "db") == '"db"."raw"."meter"'
    assert q.show_tag_values("meter", "site", rp="raw", qualify=True) == (
        'SHOW TAG VALUES FROM "raw"."meter" WITH KEY = "site"'
    )
    with pytest.raises(ValueError):
        q.qualified("meter", "")


def test_the_client_routes_readings_to_raw_only_with_retention_on():
    on = InfluxClient("http://127.0.0.1:1", "db", retention=InfluxRetention(raw_days=400))
    off = InfluxClient("http://127.0.0.1:1", "db")
    reading = q.select(q.ALL, "meter")
    result = q.select(q.ALL, "ledger")
    assert on.rp_of(reading) == RAW_RP and on.rp_of(result) is None
    assert on.rp_of(q.select(q.ALL, "meter", rp=q.DEFAULT_RP)) is None
    assert on.rp_of(q.select(q.ALL, "meter", rp="rollup_1d")) == "rollup_1d"
    assert off.rp_of(reading) is None and off.rp_of("SELECT * FROM meter") is None
    on.close()
    off.close()


def test_a_lines_measurement():
    assert _measurement("meter,site=a x=1 1") == "meter"
    assert _measurement("late_data n=1 2") == "late_data"
    assert _measurement("we\\ ird\\,m,a=b x=1 3") == "we ird,m"


def test_durations_as_influxdb_says_them():
    assert _days("0s") is None
    assert _days("72h0m0s") == 3
    assert _days("9600h0m0s") == 400


def test_every_measurement_a_reading_is_stored_in_is_raw_and_rolled_up():
    assert set(ROLLED_UP) <= RAW_MEASUREMENTS
    assert {"inverter", "meter", "weather", "water", "inverter_string", "battery"} == set(ROLLED_UP)
    assert "device_info" not in RAW_MEASUREMENTS and "late_data" not in RAW_MEASUREMENTS


def test_the_counters_are_the_glossarys_lifetime_counters():
    said = {
        (m, f)
        for m in ROLLED_UP
        for f, d in FIELDS[m].items()
        if "lifetime counter" in d.description
    }
    assert said == COUNTERS
    assert stats_of("inverter")["state"] == "state"
    assert stats_of("meter")["active_power_w"] == "gauge"
    assert stats_of("meter")["import_energy_wh"] == "counter"


def test_the_fewest_raw_days_follow_from_what_the_rules_read():
    """MIN_RAW_DAYS's parts against the code they describe: the derived window's first
    day at its farthest (every day of a leap year and the next, any zone's today) and
    the longest bill period (rules/bill.py)."""
    from datetime import date, timedelta

    from foursave.core.clock import ManualClock
    from foursave.core.config import (
        BILL_LEAD_DAYS,
        DERIVED_WINDOW_DAYS,
        MIN_RAW_DAYS,
        RETENTION_MARGIN_DAYS,
        parse_config,
    )
    from foursave.core.periods import day_start_ms
    from foursave.rules.bill import BILLING_DAYS
    from foursave.rules.engine import derived_window

    cfg = parse_config(
        "sites: [{id: s, name: S, lat: 0, lon: 0, timezone: Asia/Taipei}]\ndevices: []\n"
    )
    farthest = 0
    d = date(2024, 1, 1)
    while d < date(2026, 1, 1):
        end_of_day = day_start_ms(d + timedelta(days=1), "Asia/Taipei") - 1
        first, _ = derived_window(cfg, ManualClock(end_of_day / 1000))
        farthest = max(farthest, (d - first).days + 1)
        d += timedelta(days=1)
    assert farthest == DERIVED_WINDOW_DAYS
    assert BILLING_DAYS[1] - 1 == BILL_LEAD_DAYS
    assert MIN_RAW_DAYS == DERIVED_WINDOW_DAYS + BILL_LEAD_DAYS + RETENTION_MARGIN_DAYS
