"""The time kernel (core/periods.py): periods, month stepping, local days in zones.

Pure computations on given instants and zones: nothing here reads the machine's clock
or zone, so the results are the same under any TZ and at any hour.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from foursave.core.clock import ManualClock
from foursave.core.periods import (
    Period,
    add_months,
    bounds_ms,
    day_bounds_ms,
    day_period,
    day_start,
    day_start_ms,
    days_between,
    epoch_ms,
    local_date,
    month,
    month_of,
    months_between,
    next_month,
    parse_period,
    period_bounds_ms,
    today,
    year,
    zone,
)

pytestmark = pytest.mark.clock  # local days: run again under a second zone in CI

HOUR_MS = 3_600_000


def utc_ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)


@pytest.mark.parametrize(
    ("y", "m", "expected"),
    [
        (2025, 1, (2025, 2)),
        (2025, 11, (2025, 12)),
        (2025, 12, (2026, 1)),
        (1999, 12, (2000, 1)),
    ],
)
def test_next_month(y, m, expected):
    assert next_month(y, m) == expected


@pytest.mark.parametrize(
    ("y", "m", "k", "expected"),
    [
        (2025, 7, 0, (2025, 7)),
        (2025, 7, 5, (2025, 12)),
        (2025, 7, 6, (2026, 1)),
        (2025, 12, 1, (2026, 1)),
        (2025, 1, -1, (2024, 12)),
        (2025, 3, -3, (2024, 12)),
        (2025, 3, -14, (2024, 1)),
        (2025, 1, -12, (2024, 1)),
        (2025, 1, -13, (2023, 12)),
        (2025, 6, 30, (2027, 12)),
        (2025, 6, -30, (2022, 12)),
    ],
)
def test_add_months(y, m, k, expected):
    assert add_months(y, m, k) == expected


def test_add_months_matches_stepping_one_at_a_time():
    ym = (2023, 11)
    for k in range(1, 40):
        ym = next_month(*ym)
        assert add_months(2023, 11, k) == ym
        assert add_months(*ym, -k) == (2023, 11)


@pytest.mark.parametrize(
    ("p", "label", "start", "end", "days"),
    [
        (month(2025, 7), "2025-07", date(2025, 7, 1), date(2025, 8, 1), 31),
        (month(2025, 12), "2025-12", date(2025, 12, 1), date(2026, 1, 1), 31),
        (month(2024, 2), "2024-02", date(2024, 2, 1), date(2024, 3, 1), 29),
        (month(2025, 2), "2025-02", date(2025, 2, 1), date(2025, 3, 1), 28),
        (year(2025), "2025", date(2025, 1, 1), date(2026, 1, 1), 365),
        (year(2024), "2024", date(2024, 1, 1), date(2025, 1, 1), 366),
        (day_period(date(2025, 12, 31)), "2025-12-31", date(2025, 12, 31), date(2026, 1, 1), 1),
    ],
)
def test_periods_are_half_open_and_labelled(p, label, start, end, days):
    assert (p.label, p.start, p.end, p.days) == (label, start, end, days)
    assert parse_period(label) == p
    assert p.start in p and p.end not in p and (p.end - timedelta(days=1)) in p
    assert len(p.dates()) == days and p.dates()[0] == start


def test_year_period_months_and_shift():
    y = year(2025)
    assert y.months == [f"2025-{m:02d}" for m in range(1, 13)]
    assert y.shifted_years(1) == year(2024)
    assert month(2025, 3).shifted_years(1) == month(2024, 3)
    assert month(2025, 12).shifted_years(-1) == month(2026, 12)
    assert month_of(date(2025, 12, 31)) == month(2025, 12)
    assert day_period(date(2025, 7, 15)).months == ["2025-07"]
    assert Period("x", date(2025, 11, 20), date(2026, 2, 3)).months == [
        "2025-11",
        "2025-12",
        "2026-01",
        "2026-02",
    ]


def test_months_between_across_december():
    assert [p.label for p in months_between(date(2025, 11, 15), date(2026, 2, 1))] == [
        "2025-11",
        "2025-12",
        "2026-01",
    ]
    assert [p.label for p in months_between(date(2025, 11, 15), date(2026, 2, 2))][-1] == "2026-02"
    assert months_between(date(2025, 3, 1), date(2025, 3, 1)) == []
    assert days_between(date(2025, 12, 30), date(2026, 1, 2)) == [
        date(2025, 12, 30),
        date(2025, 12, 31),
        date(2026, 1, 1),
    ]


@pytest.mark.parametrize("label", ["2025-13", "2025-00", "25-07", "2025-7", "2025/07", "", "x"])
def test_bad_period_labels(label):
    with pytest.raises(ValueError, match="expected YYYY, YYYY-MM or YYYY-MM-DD"):
        parse_period(label)


@pytest.mark.parametrize(
    ("tz", "day", "start_utc", "hours"),
    [
        # +8 all year, no DST
        ("Asia/Taipei", date(2025, 7, 31), (2025, 7, 30, 16), 24),
        ("Asia/Taipei", date(2025, 3, 30), (2025, 3, 29, 16), 24),
        ("Asia/Taipei", date(2025, 10, 26), (2025, 10, 25, 16), 24),
        # Europe/Berlin: clocks forward on 2025-03-30, back on 2025-10-26
        ("Europe/Berlin", date(2025, 3, 29), (2025, 3, 28, 23), 24),
        ("Europe/Berlin", date(2025, 3, 30), (2025, 3, 29, 23), 23),
        ("Europe/Berlin", date(2025, 3, 31), (2025, 3, 30, 22), 24),
        ("Europe/Berlin", date(2025, 10, 26), (2025, 10, 25, 22), 25),
        ("Europe/Berlin", date(2025, 10, 27), (2025, 10, 26, 23), 24),
        # America/Los_Angeles: forward on 2025-03-09, back on 2025-11-02
        ("America/Los_Angeles", date(2025, 3, 9), (2025, 3, 9, 8), 23),
        ("America/Los_Angeles", date(2025, 3, 10), (2025, 3, 10, 7), 24),
        ("America/Los_Angeles", date(2025, 11, 2), (2025, 11, 2, 7), 25),
        ("America/Los_Angeles", date(2025, 11, 3), (2025, 11, 3, 8), 24),
        # clocks changing at midnight itself: fold=0 is still where the day begins
        ("America/Havana", date(2025, 3, 9), (2025, 3, 9, 5), 23),  # 00:00 does not exist
        ("America/Havana", date(2025, 11, 2), (2025, 11, 2, 4), 25),  # 00:00 happens twice
        ("America/Santiago", date(2025, 9, 7), (2025, 9, 7, 4), 23),  # 00:00 does not exist
        ("UTC", date(2025, 7, 31), (2025, 7, 31, 0), 24),
    ],
)
def test_day_bounds(tz, day, start_utc, hours):
    start, end = day_bounds_ms(day, tz)
    assert start == utc_ms(*start_utc)
    assert end - start == hours * HOUR_MS
    assert day_start_ms(day, ZoneInfo(tz)) == start  # a ZoneInfo works as well as a name
    # consecutive days tile the time line, and each instant maps back to its day
    assert day_bounds_ms(day + timedelta(days=1), tz)[0] == end
    assert day_bounds_ms(day - timedelta(days=1), tz)[1] == start
    for t in (start, start + 1, end - 1):
        assert local_date(t, tz) == day
    assert local_date(end, tz) == day + timedelta(days=1)
    assert local_date(start - 1, tz) == day - timedelta(days=1)


def test_period_bounds_in_a_zone():
    # July 2025 in Los Angeles (PDT, -7): 2025-07-01T07:00Z .. 2025-08-01T07:00Z
    assert period_bounds_ms(month(2025, 7), "America/Los_Angeles") == (
        utc_ms(2025, 7, 1, 7),
        utc_ms(2025, 8, 1, 7),
    )
    # March 2025 in Berlin has 31 days of which one is 23 h
    a, b = period_bounds_ms(month(2025, 3), "Europe/Berlin")
    assert b - a == (31 * 24 - 1) * HOUR_MS
    # a year in Los Angeles: one 23-hour and one 25-hour day, 365 x 24 h in all
    a, b = period_bounds_ms(year(2025), "America/Los_Angeles")
    assert b - a == 365 * 24 * HOUR_MS
    assert bounds_ms(date(2025, 1, 1), date(2026, 1, 1), "Asia/Taipei") == (
        utc_ms(2024, 12, 31, 16),
        utc_ms(2025, 12, 31, 16),
    )


@pytest.mark.parametrize(
    ("instant", "tz", "expected"),
    [
        # 2025-07-31T23:30 and 2025-08-01T00:30 Los Angeles (PDT, -7)
        ((2025, 8, 1, 6, 30), "America/Los_Angeles", date(2025, 7, 31)),
        ((2025, 8, 1, 7, 30), "America/Los_Angeles", date(2025, 8, 1)),
        ((2025, 8, 1, 6, 59, 59), "America/Los_Angeles", date(2025, 7, 31)),
        ((2025, 8, 1, 7, 0, 0), "America/Los_Angeles", date(2025, 8, 1)),
        # Taipei's midnight is 16:00 UTC the day before
        ((2025, 7, 31, 15, 59, 59), "Asia/Taipei", date(2025, 7, 31)),
        ((2025, 7, 31, 16, 0, 0), "Asia/Taipei", date(2025, 8, 1)),
        # the same instant is a different date in different zones
        ((2025, 12, 31, 20, 0), "Asia/Taipei", date(2026, 1, 1)),
        ((2025, 12, 31, 20, 0), "America/Los_Angeles", date(2025, 12, 31)),
        # the repeated hour of a 25-hour day is still that day
        ((2025, 11, 2, 8, 30), "America/Los_Angeles", date(2025, 11, 2)),
        ((2025, 11, 2, 9, 30), "America/Los_Angeles", date(2025, 11, 2)),
    ],
)
def test_local_date_of_an_instant_near_midnight(instant, tz, expected):
    assert local_date(utc_ms(*instant), tz) == expected


def test_today_comes_from_the_clock_not_the_machine():
    # 2025-07-31T23:30 in Los Angeles is already 1 August in Taipei and in UTC
    clock = ManualClock(datetime(2025, 8, 1, 6, 30, tzinfo=UTC).timestamp())
    assert today(clock, "America/Los_Angeles") == date(2025, 7, 31)
    assert today(clock, "Asia/Taipei") == date(2025, 8, 1)
    clock.advance(3600)
    assert today(clock, "America/Los_Angeles") == date(2025, 8, 1)


def test_day_start_is_aware_local_midnight_and_epoch_ms_is_exact():
    t = day_start(date(2025, 10, 26), "Europe/Berlin")
    assert (t.hour, t.minute, t.utcoffset()) == (0, 0, timedelta(hours=2))
    assert epoch_ms(t) == utc_ms(2025, 10, 25, 22)
    assert epoch_ms(datetime(1970, 1, 1, 0, 0, 0, 999, tzinfo=UTC)) == 0  # floors, no float
    with pytest.raises(ValueError, match="no time zone"):
        epoch_ms(datetime(2025, 1, 1))
    # any tzinfo is taken as it is (a fixed offset has no DST)
    fixed = timezone(timedelta(hours=-7))
    assert zone(fixed) is fixed
    a, b = day_bounds_ms(date(2025, 11, 2), fixed)
    assert b - a == 24 * HOUR_MS


@pytest.mark.parametrize("name", ["Asia/Taipeh", "Mars/Olympus", "America", "", "utc "])
def test_a_bad_zone_name_raises_value_error_naming_it(name):
    with pytest.raises(ValueError, match=f"time zone {name!r}"):
        zone(name)
    with pytest.raises(ValueError, match=f"time zone {name!r}"):
        day_bounds_ms(date(2025, 7, 1), name)


def test_a_bad_site_zone_is_a_configuration_error():
    from foursave.core.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match=r"sites\[0\].timezone: unknown time zone 'Asia/Taipeh'"):
        parse_config(
            "sites: [{id: a, name: A, lat: 23, lon: 120, timezone: Asia/Taipeh}]\n", env={}
        )
