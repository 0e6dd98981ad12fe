"""Billing periods from the meter-reading dates of the real bills, the records that
carry them, and the likely cause of a rebuilt-versus-billed difference (pure)."""

from __future__ import annotations

from datetime import date

import pytest
from pydantic import ValidationError

from foursave.core.config import parse_config
from foursave.rules.bill import BillingPeriodError, billing_periods
from foursave.rules.realbill import likely_cause
from foursave.rules.records import RecordIn, RecordStore, import_csv_text

SITE = parse_config(
    "sites: [{id: demo, name: D, lat: 22.99, lon: 120.19,"
    " tariff: {plan: three_stage, contracts_kw: {regular: 300}}}]\n",
    env={},
).sites[0]


def read_on(period: str, day: float) -> RecordIn:
    return RecordIn(
        site="demo", period=period, kind="electricity_bill_read_on", value=day, entered_by="c"
    )


@pytest.fixture
def records(tmp_path):
    store = RecordStore(tmp_path / "r.sqlite")
    yield store
    store.close()


@pytest.mark.parametrize(
    ("period", "day", "error"),
    [
        ("2025-06", 31, "the day of 2025-06 the meter was read (a whole number 1..30), not 31"),
        ("2025-02", 29, "(a whole number 1..28), not 29"),
        ("2025-07", 11.5, "not 11.5"),
        ("2025-07", 0, "not 0"),
    ],
)
def test_a_reading_day_outside_its_month_is_refused(period, day, error):
    with pytest.raises(ValidationError, match=error.replace("(", r"\(").replace(")", r"\)")):
        read_on(period, day)


def test_a_csv_with_a_bad_reading_day_names_its_line(records):
    text = (
        "site,period,kind,value\n"
        "demo,2025-06,electricity_bill_read_on,11\n"
        "demo,2025-07,electricity_bill_read_on,32\n"
    )
    res = import_csv_text(records, text, "clerk")
    assert res.added == []
    assert res.errors == [
        "line 3: row: electricity_bill_read_on is the day of 2025-07 the meter was read "
        "(a whole number 1..31), not 32"
    ]


def test_periods_follow_the_readings(records):
    assert billing_periods(SITE, 2025, 7, records) == [(date(2025, 7, 1), date(2025, 8, 1))]
    records.add(read_on("2025-12", 10))
    records.add(read_on("2026-01", 12))
    assert billing_periods(SITE, 2026, 1, records) == [(date(2025, 12, 11), date(2026, 1, 13))]
    # February not read yet: expected a month after January's reading
    assert billing_periods(SITE, 2026, 2, records) == [(date(2026, 1, 13), date(2026, 2, 13))]
    assert billing_periods(SITE, 2025, 12, records) == []  # November's reading unknown
    # a correction supersedes the reading day
    rid = records.get(2)
    assert rid is not None
    records.add(read_on("2026-01", 9).model_copy(update={"supersedes": rid.id}))
    assert billing_periods(SITE, 2026, 1, records) == [(date(2025, 12, 11), date(2026, 1, 10))]


def test_projected_period_clamps_the_day(records):
    records.add(read_on("2026-01", 31))  # the next reading expected on 2026-02-28
    assert billing_periods(SITE, 2026, 2, records) == [(date(2026, 2, 1), date(2026, 3, 1))]


@pytest.mark.parametrize(
    ("prev", "this", "error"),
    [
        (("2025-06", 30), ("2025-07", 1), "1 days between meter readings, not a monthly bill"),
        (("2025-06", 1), ("2025-07", 31), "60 days between meter readings"),
    ],
)
def test_readings_that_make_no_monthly_bill_are_refused(records, prev, this, error):
    records.add(read_on(*prev))
    records.add(read_on(*this))
    with pytest.raises(BillingPeriodError, match=error) as exc:
        billing_periods(SITE, 2025, 7, records)
    assert "electricity_bill_read_on 2025-06 is" in str(exc.value)
    assert "correct one of the two records" in str(exc.value)


@pytest.mark.parametrize(
    ("rebuilt", "billed", "completeness", "cause"),
    [
        ((1000, 5000), (1010, 5050), 1.0, None),  # within 2 %
        ((1000, 5000), (1100, 5500), 1.0, "meter_coverage"),
        ((1000, 5000), (1100, 5500), 0.95, "missing_data"),
        ((1000, 5000), (900, 4500), 1.0, "unexplained"),
        ((1000, 5000), (1000, 5500), 1.0, "tariff"),
        ((1000, 5000), (1000, 5500), 0.99, "tariff"),  # kWh agree: the data is not it
        ((1000, 5000), (None, 5500), 0.9, "missing_data"),  # no kWh billed to rule it out
        ((1000, 5000), (None, 5500), 1.0, "tariff"),
        ((1000, 5000), (None, None), 1.0, None),
    ],
)
def test_likely_cause(rebuilt, billed, completeness, cause):
    assert likely_cause(rebuilt[0], billed[0], rebuilt[1], billed[1], completeness, 0.02) == cause
