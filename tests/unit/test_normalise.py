"""rules/normalise.py: the CDD regression of the base year, on made-up months."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from foursave.core.periods import month
from foursave.rules.normalise import weather_normalised


def _temps(y: int, by_month) -> dict[date, float]:
    out = {}
    d = date(y, 1, 1)
    while d.year == y:
        out[d] = by_month(d.month)
        d += timedelta(days=1)
    return out


def _energy(temps):
    """100 kWh a day plus 10 kWh per cooling degree day (base 24 °C), exactly."""

    def energy(p):
        return sum(100.0 + 10.0 * max(0.0, temps[d] - 24.0) for d in p.dates())

    return energy


def test_savings_against_the_base_years_regression():
    temps = _temps(2024, lambda m: 20.0 + m) | _temps(2025, lambda m: 22.0 + m)
    energy = _energy(temps)
    p = month(2025, 7)  # 29 °C: 5 CDD a day, 31 days
    expected = 31 * (100.0 + 10.0 * 5)
    wn = weather_normalised(temps, 2024, p, 0.9 * expected, energy)
    assert wn is not None
    assert wn["normalised_baseline_kwh"] == pytest.approx(expected)
    assert wn["normalised_savings_rate"] == pytest.approx(0.1)
    assert wn["baseline_cv_rmse"] == pytest.approx(0.0, abs=1e-9)  # an exact fit


def test_not_normalised_without_enough_temperatures():
    temps = _temps(2024, lambda m: 20.0 + m)
    energy = _energy(temps)
    assert weather_normalised({}, 2024, month(2024, 7), 1.0, energy) is None
    # the reported month has no temperatures
    assert weather_normalised(temps, 2024, month(2025, 7), 1.0, energy) is None
    # only five base-year months with temperatures: no regression
    few = {d: t for d, t in temps.items() if d.month <= 5}
    assert weather_normalised(few, 2024, month(2024, 3), 1.0, _energy(temps)) is None
    # the base year's energy unknown
    assert weather_normalised(temps, 2024, month(2024, 7), 1.0, lambda p: None) is None
