"""Climate data for simulated sites: data with its source, not bare constants.

The simulators draw each day's weather from these figures.  They are rough climatology,
good enough for a simulator that should look like Tainan at a glance; they are not
inputs to any report.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Climate:
    name: str
    source: str
    # monthly mean air temperature [°C], January first
    monthly_mean_temp_c: tuple[float, ...]
    # half the typical daily temperature swing [°C], January first
    monthly_diurnal_half_range_c: tuple[float, ...]
    # probabilities of (clear, partly cloudy, overcast) days per month, January first
    monthly_day_types: tuple[tuple[float, float, float], ...]
    mean_wind_ms: float


TAINAN = Climate(
    name="Tainan (south-western Taiwan, humid subtropical)",
    source=(
        "Central Weather Administration 1991-2020 monthly normals for Tainan station "
        "(temperature, rounded); day-type mix chosen so the simulated annual specific "
        "yield lands in the city's 1,250-1,430 kWh/kWp range (docs/domain.md, M). "
        "Approximate; checked 2026-11."
    ),
    monthly_mean_temp_c=(17.6, 18.8, 21.4, 24.9, 27.6, 28.9, 29.5, 29.1, 28.3, 26.4, 23.0, 19.2),
    monthly_diurnal_half_range_c=(4.5, 4.5, 4.5, 4.0, 3.5, 3.2, 3.2, 3.2, 3.3, 3.8, 4.2, 4.5),
    # dry, sunny winters; summer monsoon and afternoon thunderstorms
    monthly_day_types=(
        (0.45, 0.35, 0.20),
        (0.40, 0.37, 0.23),
        (0.40, 0.38, 0.22),
        (0.35, 0.42, 0.23),
        (0.25, 0.47, 0.28),
        (0.17, 0.48, 0.35),
        (0.25, 0.50, 0.25),
        (0.20, 0.48, 0.32),
        (0.28, 0.45, 0.27),
        (0.43, 0.38, 0.19),
        (0.45, 0.36, 0.19),
        (0.45, 0.35, 0.20),
    ),
    mean_wind_ms=2.8,
)

CLIMATES = {"tainan": TAINAN}
