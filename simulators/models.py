"""Value sources for simulated devices: canonical field values as a function of time.

These are deliberately simple, deterministic shapes (a sun-shaped PV day, an
office-shaped load, office-hours water use).  Energy and volume counters are the exact
integral of the power or flow curve, computed in closed form, so a counter at any
instant is reproducible and a restarted simulator continues where it was.  A
``ValueSource`` is all a device needs: the physics issue replaces these with pvlib.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Protocol

TAIPEI = timezone(timedelta(hours=8))
EPOCH_DAY = date(2020, 1, 6)  # a Monday: counters start here
SUNRISE_H, SUNSET_H = 6.0, 18.0
OFFICE_START_H, OFFICE_END_H = 8.0, 18.0


class ValueSource(Protocol):
    kind: str

    def values(self, t: float) -> dict[str, float | int]:
        """Canonical fields (core/glossary.py) at Unix time ``t`` [s]."""


def _local(t: float) -> tuple[date, float]:
    dt = datetime.fromtimestamp(t, UTC).astimezone(TAIPEI)
    return dt.date(), dt.hour + dt.minute / 60 + (dt.second + dt.microsecond / 1e6) / 3600


def _weekdays_between(d0: date, d1: date) -> int:
    """Number of Monday-Friday days in [d0, d1)."""
    days = (d1 - d0).days
    weeks, rest = divmod(days, 7)
    count = weeks * 5
    for i in range(rest):
        if (d0 + timedelta(days=weeks * 7 + i)).weekday() < 5:
            count += 1
    return count


@dataclass(frozen=True)
class SineDay:
    """p(h) = peak * sin(pi*(h-h0)/(h1-h0)) for h0 <= h <= h1, else 0.  Energy in Wh."""

    h0: float
    h1: float

    def shape(self, h: float) -> float:
        if not self.h0 <= h <= self.h1:
            return 0.0
        return math.sin(math.pi * (h - self.h0) / (self.h1 - self.h0))

    def integral_h(self, h: float) -> float:
        """∫ shape dh from 0 to h [hours]."""
        span = self.h1 - self.h0
        if h <= self.h0:
            return 0.0
        x = min(h, self.h1)
        return span / math.pi * (1 - math.cos(math.pi * (x - self.h0) / span))

    @property
    def daily_h(self) -> float:
        return self.integral_h(24.0)


SUN = SineDay(SUNRISE_H, SUNSET_H)
OFFICE = SineDay(OFFICE_START_H, OFFICE_END_H)


@dataclass
class PvInverter:
    """Sun-shaped AC power with a lifetime energy counter."""

    rated_power_w: float
    scale: float = 0.92  # clear-day peak as a fraction of the rating
    kind: str = "inverter"

    def values(self, t: float) -> dict[str, float | int]:
        day, h = _local(t)
        peak = self.rated_power_w * self.scale
        p = peak * SUN.shape(h)
        days = (day - EPOCH_DAY).days
        energy = peak * (days * SUN.daily_h + SUN.integral_h(h))
        producing = p > 1.0
        dc = p / 0.97 if producing else 0.0
        dc_v = 620.0 if producing else 0.0
        return {
            "ac_power_w": p,
            "ac_energy_wh": energy,
            "dc_power_w": dc,
            "dc_voltage_v": dc_v,
            "dc_current_a": dc / dc_v if producing else 0.0,
            "ac_voltage_v": 230.0,
            "ac_current_a": p / 230.0 / 3,
            "ac_frequency_hz": 60.0,
            "power_factor": 1.0 if producing else 0.0,
            "cabinet_temp_c": 28.0 + 15.0 * p / self.rated_power_w,
            "state": 4 if producing else 2,  # SunSpec St: MPPT by day, SLEEPING at night
            "events": 0,
        }


@dataclass
class OfficeMeter:
    """Base load all day plus an office bump on weekdays; import counter in Wh."""

    rated_power_w: float
    base_fraction: float = 0.25
    kind: str = "meter"

    def values(self, t: float) -> dict[str, float | int]:
        day, h = _local(t)
        base = self.rated_power_w * self.base_fraction
        bump = self.rated_power_w - base
        weekday = day.weekday() < 5
        p = base + (bump * OFFICE.shape(h) if weekday else 0.0)
        days = (day - EPOCH_DAY).days
        energy = base * (days * 24 + h) + bump * (
            _weekdays_between(EPOCH_DAY, day) * OFFICE.daily_h
            + (OFFICE.integral_h(h) if weekday else 0.0)
        )
        return {
            "active_power_w": p,
            "import_energy_wh": energy,
            "export_energy_wh": 0.0,
            "voltage_v": 229.5,
            "current_a": p / 229.5 / 3,
            "power_factor": 0.95,
            "frequency_hz": 60.0,
        }


@dataclass
class WeatherStation:
    """Irradiance following the sun; module temperature rising with irradiance."""

    peak_ghi_wm2: float = 950.0
    kind: str = "weather"

    def values(self, t: float) -> dict[str, float | int]:
        _, h = _local(t)
        ghi = self.peak_ghi_wm2 * SUN.shape(h)
        ambient = 24.0 + 6.0 * SUN.shape(h)
        return {
            "ghi_wm2": ghi,
            "poa_irradiance_wm2": ghi * 1.08,
            "ambient_temp_c": ambient,
            "module_temp_c": ambient + 0.03 * ghi * 1.08,
            "wind_speed_ms": 2.0 + math.sin(h / 24 * 2 * math.pi),
        }


@dataclass
class WaterMeter:
    """Office-hours flow on weekdays plus a small night flow; volume counter in m³."""

    peak_flow_m3h: float = 2.0
    night_flow_m3h: float = 0.02
    kind: str = "water"

    def values(self, t: float) -> dict[str, float | int]:
        day, h = _local(t)
        weekday = day.weekday() < 5
        flow = self.night_flow_m3h + (self.peak_flow_m3h * OFFICE.shape(h) if weekday else 0.0)
        days = (day - EPOCH_DAY).days
        volume = self.night_flow_m3h * (days * 24 + h) + self.peak_flow_m3h * (
            _weekdays_between(EPOCH_DAY, day) * OFFICE.daily_h
            + (OFFICE.integral_h(h) if weekday else 0.0)
        )
        return {"volume_m3": volume, "flow_m3h": flow}


def source_for(model: str, rated_power_w: float) -> ValueSource:
    if model == "pv":
        return PvInverter(rated_power_w)
    if model == "load":
        return OfficeMeter(rated_power_w)
    if model == "weather":
        return WeatherStation()
    if model == "water":
        return WaterMeter()
    raise ValueError(f"unknown simulation model {model!r}")
