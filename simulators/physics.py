"""Physics of the simulated site, vectorised over 1-minute steps (numpy, pvlib).

One function of (site, seed, day) gives everything: the same numbers feed the live
simulators and the history backfill, so live data continues history seamlessly.
Each day's randomness is drawn from a generator seeded by (seed, site, date): a day
looks the same whichever window it is computed in.

- Weather: pvlib clear-sky (Ineichen, Linke turbidity from pvlib's climatology) times a
  seeded clear-sky index: clear, partly cloudy (sun/cloud spells with ramps) or
  overcast days drawn from the site's monthly mix (``simulators/climate.py``); air
  temperature from monthly normals with a daily cycle peaking at 14:30.
- PV: Erbs decomposition, isotropic transposition to the array's plane, Faiman cell
  temperature, PVWatts DC with its temperature coefficient and system losses, PVWatts
  inverter with AC clipping at its rating.
- Building: a public office, on three kinds of day (``office_day``):

  * ``OPEN``: Monday-Friday that is not a government day off, and the make-up working
    Saturdays (補班) the holidays package lists.  Staff arrive 07:30-08:30 and leave
    17:30-19:00; a tenth stay on until about 21:00 (overtime); lights go off at lunch
    (12:00-13:30, the habit of Taiwan's public offices).
  * ``SATURDAY``: a Saturday that is neither a day off nor a make-up working day: a
    duty roster and staff catching up, about a third of the presence of a weekday,
    09:00-16:30, with only the occupied floors' air handlers on (40 % of the chiller's
    reach).
  * ``CLOSED``: Sunday and every government day off (``holidays`` TW: public holidays,
    their 補假 substitute days and the 彈性放假 bridge days): only the base loads run
    (server rooms, security lighting, standby plugs, the unmetered base).

  The office follows the government calendar, not Taipower's: the bill's off-peak days
  (離峰日, ``rules/data/tariffs.yaml``) are a separate list applied when the bill is
  computed (``rules/tariff.py``).  They differ, and both show in a bill: a 補假 day is
  closed but billed as a weekday; a make-up Saturday is a full office day billed at
  Saturday prices; Labour Day was a working day for civil servants until 2025 (``holidays``
  TW lists it as a day off for everyone from 2026) but is an off-peak day for Taipower.

  HVAC follows the outdoor temperature 1.5 h late (the building's thermal mass and the
  afternoon sun on its west façades: the cooling load peaks around 16:00 when the air
  peaks at 14:30), so on hot days it is highest 14:00-17:00 and the summer peak period
  (16:00-22:00) takes a visible share; pre-cooling from 07:00; occasional demand peaks
  (a chiller stage for 15-40 minutes) in the hottest hours, 13:00-17:00.  The lag is a
  shift of each day's own temperature (circular within the day, whose cycle wraps
  nearly continuously at night when the chillers are off), so a day stays independent
  of the window it is computed in.  EV charging sessions on open days (at most one on a
  Saturday); water use with the presence, plus a small night flow.

Power in W, energy in Wh, irradiance in W/m², temperature in °C, flow in m³/h.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import date, timedelta
from functools import cache

import holidays
import numpy as np
import pandas as pd
import pvlib

from foursave.simulators.climate import Climate

MINUTES_PER_DAY = 1440
STEP_H = 1 / 60  # one minute in hours
CLEAR, PARTLY, OVERCAST = 0, 1, 2


def day_rng(seed: int, key: str, d: date) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(key.encode()), d.toordinal()])


@cache
def _linke_by_month(lat: float, lon: float) -> np.ndarray:
    months = pd.DatetimeIndex([pd.Timestamp(2020, m, 15) for m in range(1, 13)])
    return np.asarray(
        pvlib.clearsky.lookup_linke_turbidity(months, lat, lon, interp_turbidity=False)
    )


OPEN, SATURDAY, CLOSED = 2, 1, 0  # kinds of office day (``office_day``)


@cache
def _calendar(country: str, year: int) -> tuple[frozenset[date], frozenset[date]]:
    """The government's days off of ``country`` in ``year`` (public holidays with their
    substitute and bridge days) and its make-up working weekend days (holidays package)."""
    cal = holidays.country_holidays(country, years=year)
    return frozenset(cal.keys()), frozenset(d for d in cal.weekend_workdays if d.year == year)


def working_days(country: str, year: int) -> frozenset[date]:
    """Public holidays of ``country`` in ``year`` (holidays package): the days off."""
    return _calendar(country, year)[0]


def office_day(d: date, country: str = "TW") -> int:
    """OPEN, SATURDAY (reduced presence) or CLOSED, by the government calendar."""
    days_off, make_up = _calendar(country, d.year)
    if d in make_up:
        return OPEN
    if d in days_off or d.weekday() == 6:
        return CLOSED
    return SATURDAY if d.weekday() == 5 else OPEN


def is_workday(d: date, country: str = "TW") -> bool:
    """A full office day (a weekday that is not a day off, or a make-up working day)."""
    return office_day(d, country) == OPEN


def minute_index(start: date, ndays: int, tz: str) -> pd.DatetimeIndex:
    return pd.date_range(pd.Timestamp(start, tz=tz), periods=ndays * MINUTES_PER_DAY, freq="1min")


def _smooth(x: np.ndarray, width: int) -> np.ndarray:
    if width <= 1:
        return x
    kernel = np.ones(width) / width
    return np.convolve(
        np.pad(x, (width // 2, width - 1 - width // 2), mode="edge"), kernel, "valid"
    )


def _clear_sky_index(rng: np.random.Generator, day_type: int) -> np.ndarray:
    """One day of clear-sky index (1 = clear sky) at 1-minute steps."""
    n = MINUTES_PER_DAY
    if day_type == CLEAR:
        return np.clip(0.97 + 0.02 * _smooth(rng.standard_normal(n), 30), 0.9, 1.0)
    if day_type == OVERCAST:
        level = rng.uniform(0.18, 0.42)
        return np.clip(level + 0.08 * _smooth(rng.standard_normal(n), 45), 0.08, 0.7)
    # partly cloudy: alternating sun and cloud spells, ramps of a few minutes
    kt = np.empty(n)
    i, sunny = 0, rng.random() < 0.6
    cloud_cover = rng.uniform(0.25, 0.6)  # share of the day under cloud, on average
    while i < n:
        mean = 25 * (1 - cloud_cover) if sunny else 25 * cloud_cover
        length = max(2, int(rng.exponential(max(mean, 3))))
        kt[i : i + length] = rng.uniform(1.0, 1.08) if sunny else rng.uniform(0.2, 0.55)
        i += length
        sunny = not sunny
    return np.clip(_smooth(kt, 4), 0.1, 1.1)


@dataclass(frozen=True)
class WeatherFrame:
    """Weather at 1-minute steps over whole local days."""

    index: pd.DatetimeIndex
    zenith: np.ndarray
    azimuth: np.ndarray
    ghi_clear: np.ndarray
    ghi: np.ndarray
    dni: np.ndarray
    dhi: np.ndarray
    temp_air: np.ndarray
    wind_speed: np.ndarray
    day_types: np.ndarray  # one per day
    workday: np.ndarray  # one per day: a full office day (``office_day`` OPEN)
    office_days: np.ndarray  # one per day: OPEN, SATURDAY or CLOSED

    def poa(self, tilt_deg: float, azimuth_deg: float, albedo: float = 0.2) -> np.ndarray:
        """Plane-of-array global irradiance [W/m²], isotropic sky (cached per plane)."""
        key = (tilt_deg, azimuth_deg, albedo)
        cache = self.__dict__.setdefault("_poa_cache", {})
        if key not in cache:
            cache[key] = self._poa(tilt_deg, azimuth_deg, albedo)
        return cache[key]

    def _poa(self, tilt_deg: float, azimuth_deg: float, albedo: float) -> np.ndarray:
        irr = pvlib.irradiance.get_total_irradiance(
            tilt_deg,
            azimuth_deg,
            self.zenith,
            self.azimuth,
            self.dni,
            self.ghi,
            self.dhi,
            albedo=albedo,
            model="isotropic",
        )
        return np.nan_to_num(np.asarray(irr["poa_global"], dtype=float), nan=0.0).clip(min=0)


@dataclass(frozen=True)
class SiteClimate:
    key: str
    lat: float
    lon: float
    tz: str
    altitude_m: float
    climate: Climate
    seed: int
    country: str = "TW"

    def frame(self, start: date, ndays: int) -> WeatherFrame:
        idx = minute_index(start, ndays, self.tz)
        n = len(idx)
        # solar position every 10 minutes, interpolated (smooth; 10x cheaper)
        coarse = pd.date_range(idx[0], idx[-1] + pd.Timedelta(minutes=10), freq="10min")
        sp = pvlib.solarposition.get_solarposition(coarse, self.lat, self.lon, self.altitude_m)
        x_c = (coarse - idx[0]).total_seconds().to_numpy()
        x = (idx - idx[0]).total_seconds().to_numpy()
        zen = np.interp(x, x_c, sp["apparent_zenith"].to_numpy())
        az_rad = np.radians(sp["azimuth"].to_numpy())
        az = (
            np.degrees(
                np.arctan2(np.interp(x, x_c, np.sin(az_rad)), np.interp(x, x_c, np.cos(az_rad)))
            )
            % 360
        )
        am_rel = pvlib.atmosphere.get_relative_airmass(zen)
        pressure = pvlib.atmosphere.alt2pres(self.altitude_m)
        am_abs = pvlib.atmosphere.get_absolute_airmass(am_rel, pressure)
        linke = _linke_by_month(self.lat, self.lon)[idx.month.to_numpy() - 1]
        dni_extra = pvlib.irradiance.get_extra_radiation(idx.day_of_year.to_numpy())
        with np.errstate(divide="ignore", invalid="ignore"):  # night: no sun to divide by
            cs = pvlib.clearsky.ineichen(zen, am_abs, linke, self.altitude_m, dni_extra)
        ghi_clear = np.nan_to_num(np.asarray(cs["ghi"], dtype=float)).clip(min=0)

        kt = np.empty(n)
        temp = np.empty(n)
        wind = np.empty(n)
        day_types = np.empty(ndays, dtype=int)
        office_days = np.empty(ndays, dtype=int)
        hours = np.arange(MINUTES_PER_DAY) / 60
        cm = self.climate
        for k in range(ndays):
            d = start + timedelta(days=k)
            rng = day_rng(self.seed, self.key, d)
            m = d.month - 1
            dt = int(rng.choice(3, p=cm.monthly_day_types[m]))
            day_types[k] = dt
            office_days[k] = office_day(d, self.country)
            sl = slice(k * MINUTES_PER_DAY, (k + 1) * MINUTES_PER_DAY)
            kt[sl] = _clear_sky_index(rng, dt)
            swing = cm.monthly_diurnal_half_range_c[m] * (1.15, 0.9, 0.55)[dt]
            offset = rng.normal(0, 1.2) - (0.0, 0.3, 1.2)[dt]
            temp[sl] = (
                cm.monthly_mean_temp_c[m]
                + offset
                + swing * np.cos(2 * np.pi * (hours - 14.5) / 24)
                + 0.15 * _smooth(rng.standard_normal(MINUTES_PER_DAY), 20)
            )
            wind[sl] = cm.mean_wind_ms * np.clip(
                0.7
                + 0.4 * np.sin(np.pi * (hours - 9) / 12).clip(min=0)
                + 0.25 * _smooth(rng.standard_normal(MINUTES_PER_DAY), 15),
                0.05,
                None,
            )
        ghi = ghi_clear * kt
        doy = idx.day_of_year.to_numpy()
        with np.errstate(divide="ignore", invalid="ignore"):
            dec = pvlib.irradiance.erbs(ghi, zen, doy)
        dni = np.nan_to_num(np.asarray(dec["dni"], dtype=float)).clip(min=0)
        dhi = np.nan_to_num(np.asarray(dec["dhi"], dtype=float)).clip(min=0)
        return WeatherFrame(
            idx,
            zen,
            az,
            ghi_clear,
            ghi,
            dni,
            dhi,
            temp,
            wind,
            day_types,
            office_days == OPEN,
            office_days,
        )


@dataclass(frozen=True)
class PvArray:
    """A PV array and its inverter (PVWatts parameters)."""

    dc_kwp: float
    ac_kw: float
    tilt_deg: float = 10.0
    azimuth_deg: float = 180.0
    gamma_pdc: float = -0.0037  # 1/°C, crystalline silicon
    losses: float = 0.14  # soiling, wiring, mismatch, ... (PVWatts default)
    eta_inv: float = 0.965
    u0: float = 25.0  # Faiman heat-loss coefficients [W/m²K], [W/m³sK]
    u1: float = 6.84


@dataclass(frozen=True)
class PvOutput:
    poa: np.ndarray
    temp_cell: np.ndarray
    dc_w: np.ndarray
    ac_w: np.ndarray
    clipping: np.ndarray


def pv_output(w: WeatherFrame, arr: PvArray, derate: float = 1.0) -> PvOutput:
    """AC power of one inverter [W]; ``derate`` scales the DC side (string faults)."""
    poa = w.poa(arr.tilt_deg, arr.azimuth_deg)
    t_cell = np.asarray(pvlib.temperature.faiman(poa, w.temp_air, w.wind_speed, arr.u0, arr.u1))
    dc = np.asarray(pvlib.pvsystem.pvwatts_dc(poa, t_cell, arr.dc_kwp * 1000, arr.gamma_pdc))
    dc = dc.clip(min=0) * (1 - arr.losses) * derate
    ac_limit = arr.ac_kw * 1000
    ac = np.asarray(pvlib.inverter.pvwatts(dc, ac_limit / arr.eta_inv, arr.eta_inv)).clip(min=0)
    ac = np.nan_to_num(ac)
    return PvOutput(poa, t_cell, dc, ac, ac >= ac_limit * 0.999)


def inverter_state(ac_w: np.ndarray, clipping: np.ndarray, zenith: np.ndarray) -> np.ndarray:
    """SunSpec St per minute: 2 SLEEPING (night), 3 STARTING, 4 MPPT, 5 THROTTLED."""
    st = np.full(ac_w.shape, 2, dtype=int)
    sun_up = zenith < 90
    st[sun_up & (ac_w <= 0)] = 3
    st[ac_w > 0] = 4
    st[clipping & (ac_w > 0)] = 5
    return st


# ---------------------------------------------------------------- the building


def _office_occupancy(hours: np.ndarray) -> np.ndarray:
    """0..1: staff arriving 07:30-08:30, leaving 17:30-19:00."""
    up = np.clip((hours - 7.5) / 1.0, 0, 1)
    down = np.clip((19.0 - hours) / 1.5, 0, 1)
    return np.minimum(up, down)


def _window(hours: np.ndarray, start: float, end: float, ramp_h: float) -> np.ndarray:
    """0..1: on from ``start`` to ``end`` [h], ramping up and down over ``ramp_h``."""
    up = np.clip((hours - start) / ramp_h, 0, 1)
    down = np.clip((end - hours) / ramp_h, 0, 1)
    return np.minimum(up, down)


OVERTIME_SHARE = 0.1  # staff staying on after 19:00 on an open day
SATURDAY_PRESENCE = 0.35  # of a weekday's presence, 09:00-16:30
SATURDAY_HVAC = 0.4  # share of the air handlers on for the occupied floors
HVAC_LAG_MIN = 90  # cooling load behind outdoor air temperature [min]


def _lunch(hours: np.ndarray) -> np.ndarray:
    """1 during the 12:00-13:30 lunch break (lights off in Taiwan's public offices)."""
    return ((hours >= 12.0) & (hours < 13.5)).astype(float)


@dataclass(frozen=True)
class Presence:
    """Per-minute building state over a frame (see the module docstring)."""

    hours: np.ndarray  # local hour of each minute
    people: np.ndarray  # 0..1 of a full office day's presence
    lunch: np.ndarray  # 1 at lunch on a day with people in
    hvac_on: np.ndarray  # 0..1 of the air handlers running


def presence(w: WeatherFrame) -> Presence:
    ndays = len(w.day_types)
    hours = np.tile(np.arange(MINUTES_PER_DAY) / 60, ndays)
    kinds = np.repeat(w.office_days, MINUTES_PER_DAY)
    open_, sat = kinds == OPEN, kinds == SATURDAY
    weekday = np.maximum(_office_occupancy(hours), OVERTIME_SHARE * _window(hours, 18.0, 21.0, 0.5))
    saturday = SATURDAY_PRESENCE * _window(hours, 8.5, 17.0, 0.5)
    people = np.where(open_, weekday, 0.0) + np.where(sat, saturday, 0.0)
    lunch = _lunch(hours) * (open_ | sat)
    # pre-cooling half an hour before people come; the air handlers of the floors in use
    on_weekday = np.maximum(
        _office_occupancy(np.clip(hours + 0.5, 0, 24)),
        OVERTIME_SHARE * _window(hours, 18.0, 21.0, 0.5),
    )
    on_saturday = SATURDAY_HVAC * _window(hours, 8.0, 17.0, 0.5)
    hvac_on = np.where(open_, on_weekday, 0.0) + np.where(sat, on_saturday, 0.0)
    return Presence(hours, people, lunch, hvac_on)


def _lagged_temperature(w: WeatherFrame) -> np.ndarray:
    """Outdoor temperature ``HVAC_LAG_MIN`` late, each day shifted within itself."""
    days = w.temp_air.reshape(-1, MINUTES_PER_DAY)
    return np.roll(days, HVAC_LAG_MIN, axis=1).reshape(-1)


@dataclass(frozen=True)
class LoadSpec:
    kind: str  # hvac | lighting | plugs | ev_charging | office | unmetered
    rated_w: float


def load_profile(w: WeatherFrame, spec: LoadSpec, seed: int, key: str) -> np.ndarray:
    """Active power [W] of one building load at 1-minute steps."""
    ndays = len(w.day_types)
    pr = presence(w)
    occ, lunch = pr.people, pr.lunch
    p = spec.rated_w
    if spec.kind == "hvac":
        # chillers follow the (lagged) outdoor temperature while air handlers run;
        # server rooms all day.  0.1 at 20 °C and below, full from 36.2 °C: a plant sized
        # for the design day, short of its limit on an ordinary summer afternoon.
        cooling = np.clip(0.1 + (_lagged_temperature(w) - 20.0) / 18.0, 0.1, 1.0)
        out = p * (0.06 + 0.94 * pr.hvac_on * cooling)
        # occasional demand peaks: a chiller stage kicking in for 15-40 minutes in the
        # hottest hours
        for k in range(ndays):
            rng = day_rng(seed, key + "/peaks", w.index[k * MINUTES_PER_DAY].date())
            if w.workday[k] and rng.random() < 0.25:
                start = k * MINUTES_PER_DAY + int(rng.uniform(13, 17) * 60)
                out[start : start + int(rng.uniform(15, 40))] *= 1.35
        return out
    if spec.kind == "lighting":
        return p * (0.08 + 0.92 * occ * (1 - 0.7 * lunch))
    if spec.kind == "plugs":
        return p * (0.3 + 0.7 * occ * (1 - 0.25 * lunch))
    if spec.kind == "unmetered":
        # lifts, pumps, common-area lighting, IT rooms: half of it runs all the time
        return p * (0.5 + 0.5 * occ * (1 - 0.2 * lunch))
    if spec.kind == "ev_charging":
        out = np.zeros(len(occ))
        for k in range(ndays):
            kind = w.office_days[k]
            if kind == CLOSED:
                continue
            rng = day_rng(seed, key + "/ev", w.index[k * MINUTES_PER_DAY].date())
            # sessions at one 7.4 kW-class charger bank; at most one on a Saturday
            sessions = rng.integers(1, 5) if kind == OPEN else rng.integers(0, 2)
            for _ in range(sessions):
                start = k * MINUTES_PER_DAY + int(rng.uniform(8.0, 10.5) * 60)
                length = int(rng.uniform(1.5, 4.0) * 60)
                out[start : start + length] += p / 4
        return out.clip(max=p)
    # a generic office load (older configurations)
    return p * (0.25 + 0.75 * occ * (1 - 0.2 * lunch))


def water_flow(
    w: WeatherFrame, peak_m3h: float, night_m3h: float, seed: int, key: str
) -> np.ndarray:
    """Water flow [m³/h]: with the people in the building, plus a small night flow."""
    pr = presence(w)
    noise = np.empty(len(pr.hours))
    for k in range(len(w.day_types)):  # drawn per day: a day is the same in any window
        rng = day_rng(seed, key + "/water", w.index[k * MINUTES_PER_DAY].date())
        sl = slice(k * MINUTES_PER_DAY, (k + 1) * MINUTES_PER_DAY)
        noise[sl] = np.clip(1 + 0.35 * _smooth(rng.standard_normal(MINUTES_PER_DAY), 5), 0.2, None)
    return night_m3h + peak_m3h * pr.people * (0.7 + 0.6 * pr.lunch) * noise
