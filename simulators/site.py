"""A simulated site: every simulated device of one site from one set of physics.

``SiteModel.frame(start, ndays)`` gives each device's canonical fields at 1-minute
steps, counters included, vectorised (backfill uses it directly); ``SiteModel.source``
gives a live ``ValueSource`` reading the same numbers at any instant.  Power is constant
within a minute and counters are its exact integral, so a counter's change always equals
the energy of the power readings, and live values continue history without a jump.

Meters are consistent: a ``pv`` meter is the sum of the site's inverters; the ``main``
meter is the sum of the site's load sub-meters plus an unmetered remainder minus the PV
behind it (negative = export).

A counter at local midnight is the sum of its daily totals from its commissioning date;
with a ``cache_dir`` those totals are kept in a file (``simulators/daycache.py``), so a
start computes only the days it has not computed before: none, once warm.
"""

from __future__ import annotations

import math
import os
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

import numpy as np

from foursave.core.config import Config, Device, Simulation, Site
from foursave.simulators.climate import CLIMATES
from foursave.simulators.daycache import DayTotalsFile, site_inputs
from foursave.simulators.physics import (
    MINUTES_PER_DAY,
    STEP_H,
    LoadSpec,
    PvArray,
    SiteClimate,
    WeatherFrame,
    inverter_state,
    load_profile,
    pv_output,
    water_flow,
)

LOAD_MODELS = {"hvac", "lighting", "plugs", "ev_charging", "load"}
COUNTERS = {
    "inverter": ("ac_energy_wh",),
    "meter": ("import_energy_wh", "export_energy_wh"),
    "water": ("volume_m3",),
}

Fields = dict[str, np.ndarray]


class ValueSource(Protocol):
    @property
    def kind(self) -> str:
        """The device kind (inverter, meter, weather, water)."""

    def values(self, t: float) -> dict[str, float | int]:
        """Canonical fields (core/glossary.py) at Unix time ``t`` [s]."""


def _simulation(d: Device) -> Simulation:
    """A site model's device's ``simulate`` section (the model only takes simulated
    devices)."""
    if d.simulate is None:
        raise ValueError(f"device {d.id} has no 'simulate' section")
    return d.simulate


def _device_factor(device_id: str, spread: float = 0.03) -> float:
    """A stable per-device spread (mismatch, soiling) so peers are not identical."""
    return 1 - spread * (zlib.crc32(device_id.encode()) % 1000) / 1000


@dataclass
class SiteFrame:
    start: date
    ndays: int
    weather: WeatherFrame
    devices: dict[str, Fields]  # per device: fields, counters as per-minute increments


# one day's frame and each device's counters at the start of every minute
DayFrame = tuple[SiteFrame, dict[str, Fields]]


class SiteModel:
    """``cache_dir``: keep the daily counter totals there (``simulators/daycache.py``),
    so that a start integrates no past day it integrated before."""

    def __init__(self, config: Config, site: Site, cache_dir: str | os.PathLike[str] | None = None):
        svc = config.services.simulator
        self.site = site
        self.tz = ZoneInfo(site.timezone)
        self.seed = svc.seed
        self.climate = SiteClimate(
            site.id, site.lat, site.lon, site.timezone, 20.0, CLIMATES[svc.climate], svc.seed
        )
        # the devices with physics; a replayed register dump (simulate.image) has none
        self.devices = [
            d
            for d in config.devices
            if d.site == site.id and d.simulate and d.simulate.image is None
        ]
        self._days: OrderedDict[date, DayFrame] = OrderedDict()
        self._daily_totals: dict[date, dict[str, dict[str, float]]] = {}
        self.days_integrated = 0  # past days whose totals were computed from the physics
        self.cache: DayTotalsFile | None = None
        if cache_dir is not None and self.devices:
            inputs = site_inputs(svc.seed, svc.climate, site, self.devices)
            self.cache = DayTotalsFile(cache_dir, site.id, inputs)
        self._cache_read = False
        self._cached_days = 0  # days the cache file holds, from the first commissioning

    # ---------------------------------------------------------------- vectorised
    def frame(self, start: date, ndays: int) -> SiteFrame:
        w = self.climate.frame(start, ndays)
        out: dict[str, Fields] = {}
        pv_total = np.zeros(len(w.index))
        pv_behind = np.zeros(len(w.index))
        loads = np.zeros(len(w.index))
        for d in self.devices:
            sim = _simulation(d)
            if sim.model == "pv":
                out[d.id] = self._inverter(w, d)
                pv_total += out[d.id]["ac_power_w"]
                if sim.behind_main:
                    pv_behind += out[d.id]["ac_power_w"]
            elif sim.model in LOAD_MODELS:
                kind = "office" if sim.model == "load" else sim.model
                p = load_profile(w, LoadSpec(kind, sim.rated_power_w), self.seed, d.id)
                out[d.id] = self._meter(p)
                loads += p
            elif sim.model == "weather":
                out[d.id] = self._weather(w, d)
            elif sim.model == "water":
                flow = water_flow(w, sim.peak_flow_m3h, sim.night_flow_m3h, self.seed, d.id)
                out[d.id] = {"flow_m3h": flow, "volume_m3": flow * STEP_H}
        for d in self.devices:
            sim = _simulation(d)
            if sim.model == "pv_meter":
                out[d.id] = self._meter(pv_total.copy(), generation=True)
            elif sim.model == "main":
                unmetered = load_profile(w, LoadSpec("unmetered", sim.unmetered_w), self.seed, d.id)
                out[d.id] = self._meter(loads + unmetered - pv_behind)
        # counters count from the commissioning date: before it, nothing accumulates, so
        # live simulation and backfill agree wherever a window starts
        for d in self.devices:
            c = _simulation(d).commissioned
            if start < c and d.id in out:
                k = min((c - start).days, ndays) * MINUTES_PER_DAY
                for name in _counter_fields(out[d.id]):
                    out[d.id][name] = out[d.id][name].copy()
                    out[d.id][name][:k] = 0.0
        return SiteFrame(start, ndays, w, out)

    def _inverter(self, w: WeatherFrame, d: Device) -> Fields:
        sim = _simulation(d)
        arr = PvArray(
            dc_kwp=sim.dc_kwp or sim.rated_power_w / 1000 * 1.2,
            ac_kw=sim.rated_power_w / 1000,
            tilt_deg=sim.tilt_deg,
            azimuth_deg=sim.azimuth_deg,
        )
        o = pv_output(w, arr, derate=_device_factor(d.id))
        ac = o.ac_w
        producing = ac > 0
        vdc = np.where(producing, 620 * (1 - 0.0035 * (o.temp_cell - 25)), 0.0)
        return {
            "ac_power_w": ac,
            "ac_energy_wh": ac * STEP_H,
            "dc_power_w": o.dc_w,
            "dc_voltage_v": vdc,
            "dc_current_a": np.divide(o.dc_w, vdc, out=np.zeros_like(vdc), where=vdc > 0),
            "ac_voltage_v": np.full(ac.shape, 229.0),
            "ac_current_a": ac / (3 * 229.0),
            "ac_frequency_hz": np.full(ac.shape, 60.0),
            "power_factor": np.where(producing, 0.99, 0.0),
            "cabinet_temp_c": w.temp_air + 3 + 18 * ac / arr.ac_kw / 1000,
            "state": inverter_state(ac, o.clipping, w.zenith),
            "events": np.zeros(ac.shape, dtype=int),
        }

    @staticmethod
    def _meter(p: np.ndarray, generation: bool = False) -> Fields:
        """Import positive (a PV meter counts generation as import of the PV side)."""
        v = 229.5
        return {
            "active_power_w": p,
            "import_energy_wh": p.clip(min=0) * STEP_H,
            "export_energy_wh": (-p).clip(min=0) * STEP_H,
            "voltage_v": np.full(p.shape, v),
            "current_a": np.abs(p) / (3 * v),
            "power_factor": np.full(p.shape, 0.98 if generation else 0.93),
            "frequency_hz": np.full(p.shape, 60.0),
        }

    def _weather(self, w: WeatherFrame, d: Device) -> Fields:
        sim = _simulation(d)
        poa = w.poa(sim.tilt_deg, sim.azimuth_deg)
        from pvlib.temperature import faiman

        return {
            "ghi_wm2": w.ghi,
            "poa_irradiance_wm2": poa,
            "ambient_temp_c": w.temp_air,
            "module_temp_c": np.asarray(faiman(poa, w.temp_air, w.wind_speed)),
            "wind_speed_ms": w.wind_speed,
        }

    # ---------------------------------------------------------------- counters
    def _commissioned(self, d: Device) -> date:
        return _simulation(d).commissioned

    def daily_totals(self, day: date) -> dict[str, dict[str, float]]:
        """Counter increments of each device over ``day`` (cached)."""
        if day not in self._daily_totals:
            self._fill_totals(day, 1)
        return self._daily_totals[day]

    def _first_day(self) -> date | None:
        return min((self._commissioned(d) for d in self.devices), default=None)

    def _midnight_offset(self, d: date) -> timedelta | None:
        return datetime(d.year, d.month, d.day, tzinfo=self.tz).utcoffset()

    def _read_cache(self) -> None:
        self._cache_read = True
        first = self._first_day()
        if self.cache is None or first is None:
            return
        days = self.cache.load(first, [d.id for d in self.devices])
        for k, totals in enumerate(days):
            self._daily_totals.setdefault(first + timedelta(days=k), totals)
        self._cached_days = len(days)

    def _write_cache(self) -> None:
        """Store the run of days known from the first commissioning on, if it grew."""
        first = self._first_day()
        if self.cache is None or first is None:
            return
        n = self._cached_days
        while first + timedelta(days=n) in self._daily_totals:
            n += 1
        if n > self._cached_days:
            days = [self._daily_totals[first + timedelta(days=k)] for k in range(n)]
            self.cache.save(first, days)
            self._cached_days = n

    def _fill_totals(self, start: date, ndays: int) -> None:
        """Totals of ``ndays`` days from ``start``, all with the same UTC offset at
        midnight: each frame day is then the local day, and its totals are those of
        ``frame(day, 1)`` bit for bit, in whatever window they are computed."""
        f = self.frame(start, ndays)
        self.days_integrated += ndays
        for k in range(ndays):
            sl = slice(k * MINUTES_PER_DAY, (k + 1) * MINUTES_PER_DAY)
            self._daily_totals[start + timedelta(days=k)] = {
                dev: {name: float(vals[name][sl].sum()) for name in _counter_fields(vals)}
                for dev, vals in f.devices.items()
            }

    def counters_at(self, day: date) -> dict[str, dict[str, float]]:
        """Each device's counters at local midnight starting ``day``."""
        out: dict[str, dict[str, float]] = {}
        if not self._cache_read:
            self._read_cache()
        first = self._first_day() or day
        missing = [
            first + timedelta(days=k)
            for k in range((day - first).days)
            if first + timedelta(days=k) not in self._daily_totals
        ]
        # fill in chunks: vectorised, and bounded memory; a chunk ends where the UTC
        # offset at midnight changes (a frame counts minutes, not local days)
        i = 0
        while i < len(missing):
            chunk_start = missing[i]
            offset = self._midnight_offset(chunk_start)
            n = 1
            while (
                i + n < len(missing)
                and missing[i + n] == chunk_start + timedelta(days=n)
                and n < 64
                and self._midnight_offset(missing[i + n]) == offset
            ):
                n += 1
            self._fill_totals(chunk_start, n)
            i += n
        if missing:
            self._write_cache()
        for d in self.devices:
            c = self._commissioned(d)
            totals: dict[str, float] = {}
            for k in range((day - c).days):
                for name, v in self._daily_totals[c + timedelta(days=k)].get(d.id, {}).items():
                    totals[name] = totals.get(name, 0.0) + v
            out[d.id] = totals
        return out

    # ---------------------------------------------------------------- live
    def local_day_minute(self, t: float) -> tuple[date, int, float]:
        dt = datetime.fromtimestamp(t, UTC).astimezone(self.tz)
        minute_f = (dt.hour * 60 + dt.minute) + (dt.second + dt.microsecond / 1e6) / 60
        m = min(math.floor(minute_f), MINUTES_PER_DAY - 1)
        return dt.date(), m, minute_f - m

    def day(self, d: date) -> DayFrame:
        """One day's frame and each device's counters at the start of every minute."""
        if d in self._days:
            self._days.move_to_end(d)
            return self._days[d]
        frame = self.frame(d, 1)
        base = self.counters_at(d)
        starts: dict[str, Fields] = {}
        for dev, vals in frame.devices.items():
            starts[dev] = {
                name: base.get(dev, {}).get(name, 0.0)
                + np.concatenate(([0.0], np.cumsum(vals[name])[:-1]))
                for name in _counter_fields(vals)
            }
        self._days[d] = (frame, starts)
        while len(self._days) > 3:
            self._days.popitem(last=False)
        return self._days[d]

    def values_at(self, device_id: str, t: float) -> dict[str, float | int]:
        d, m, frac = self.local_day_minute(t)
        frame, starts = self.day(d)
        vals = frame.devices[device_id]
        out: dict[str, float | int] = {}
        for name, arr in vals.items():
            if name in starts[device_id]:
                out[name] = float(starts[device_id][name][m] + arr[m] * frac)
            elif arr.dtype.kind in "iu":
                out[name] = int(arr[m])
            else:
                out[name] = float(arr[m])
        return out

    def source(self, device: Device) -> SiteSource:
        return SiteSource(self, device)


def _counter_fields(vals: Fields) -> tuple[str, ...]:
    return tuple(
        n
        for n in ("ac_energy_wh", "import_energy_wh", "export_energy_wh", "volume_m3")
        if n in vals
    )


@dataclass
class SiteSource:
    """A live value source for one device of a simulated site."""

    model: SiteModel
    device: Device

    @property
    def kind(self) -> str:
        return self.device.kind

    def values(self, t: float) -> dict[str, float | int]:
        return self.model.values_at(self.device.id, t)


def even_strings(
    values: dict[str, float | int], strings: tuple[str, ...]
) -> dict[tuple[str, tuple[tuple[str, str], ...]], dict[str, float | int]]:
    """The PV inputs of a simulated inverter: its one array split evenly over the inputs
    ``strings`` its register map reads, each input at the array's DC voltage carrying an
    equal share of its DC current and power (the site model has one array per inverter;
    real strings differ by shading and soiling, which it does not model).  Keyed as the
    reading's parts (``inverter_string``, tag ``string``); a field the inverter's values
    lack is lacking in every input."""
    if not strings:
        return {}
    n = len(strings)
    share: dict[str, float | int] = {}
    if "dc_voltage_v" in values:
        share["dc_voltage_v"] = values["dc_voltage_v"]
    for name in ("dc_current_a", "dc_power_w"):
        if name in values:
            share[name] = values[name] / n
    return {("inverter_string", (("string", s),)): dict(share) for s in strings}


def site_models(
    config: Config, cache_dir: str | os.PathLike[str] | None = None
) -> dict[str, SiteModel]:
    return {s.id: SiteModel(config, s, cache_dir) for s in config.sites}
