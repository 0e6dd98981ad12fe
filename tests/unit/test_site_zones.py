"""Which zone a computation over several sites uses (no InfluxDB needed): each rule
takes every site's zone into account, never just the first site's."""

from __future__ import annotations

from datetime import date, datetime

import pytest

from foursave.core.clock import ManualClock
from foursave.core.config import parse_config
from foursave.dashboards.build import dashboard_timezone
from foursave.rules.engine import derived_window
from foursave.simulators.history import history_start, history_window

pytestmark = pytest.mark.clock  # local days: run again under a second zone in CI

# 00:30 on New Year's Day in Taipei is still 08:30 on New Year's Eve in Los Angeles
NEW_YEAR = datetime.fromisoformat("2026-01-01T00:30:00+08:00").timestamp()


def _cfg(*zones: str):
    sites = ", ".join(
        f"{{id: s{k}, name: S{k}, lat: 23, lon: 120, timezone: {z}, ledger: {{base_year: 2030}}}}"
        for k, z in enumerate(zones)
    )
    return parse_config(f"sites: [{sites}]\ndevices: []\n", env={})


def test_the_engine_window_covers_every_sites_current_and_previous_month():
    clock = ManualClock(NEW_YEAR)
    assert derived_window(_cfg("Asia/Taipei"), clock) == (date(2025, 12, 1), date(2026, 1, 2))
    assert derived_window(_cfg("America/Los_Angeles"), clock) == (
        date(2025, 11, 1),
        date(2026, 1, 1),
    )
    # both: from Los Angeles' previous month to the day after Taipei's today
    assert derived_window(_cfg("Asia/Taipei", "America/Los_Angeles"), clock) == (
        date(2025, 11, 1),
        date(2026, 1, 2),
    )


def test_demo_history_starts_early_enough_for_every_site():
    assert history_start(_cfg("Asia/Taipei"), NEW_YEAR) == date(2024, 1, 1)
    assert history_start(_cfg("America/Los_Angeles"), NEW_YEAR) == date(2023, 1, 1)
    both = _cfg("America/Los_Angeles", "Asia/Taipei")
    assert history_start(both, NEW_YEAR) == date(2023, 1, 1)
    # from the first of the sites' midnights of that day: Taipei's (UTC+8)
    start_ms, now_ms = history_window(both, NEW_YEAR)
    assert start_ms == int(datetime.fromisoformat("2023-01-01T00:00:00+08:00").timestamp() * 1000)
    assert now_ms == int(NEW_YEAR * 1000)


def test_dashboards_use_the_sites_zone_or_the_viewers_when_they_differ():
    assert dashboard_timezone(_cfg("Europe/Berlin", "Europe/Berlin")) == "Europe/Berlin"
    assert dashboard_timezone(_cfg("Europe/Berlin", "Asia/Taipei")) == "browser"
