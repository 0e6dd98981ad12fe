"""PV performance per inverter and day (IEC 61724-1), from what InfluxDB holds.

- final yield Y_f = E_AC / P0 from the inverter's energy counter;
- reference yield Y_r = H_POA / G_STC from the site's weather station (plane-of-array
  irradiance integrated per day; where only GHI is measured it is transposed to the
  array's plane with pvlib: Erbs decomposition, isotropic sky);
- PR = Y_f / Y_r and the temperature-corrected PR with hourly irradiance and cell
  temperature (back-of-module + 3 °C at 1,000 W/m², Sandia);
- expected energy (PVWatts with the measured weather and 14 % losses), availability
  (15-minute blocks producing while POA > 50 W/m²), clipping (St THROTTLED) and outage
  (St FAULT, or no power in sunshine) minutes — labelled, not counted as
  under-performance — and, on clear days only, each inverter against its peers.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta, tzinfo

import numpy as np
import pandas as pd
import pvlib

from foursave.core.clock import Clock
from foursave.core.config import Config, Device, Site
from foursave.core.influx import InfluxClient
from foursave.core.influxql import Cond, agg, eq, every, select, time_range
from foursave.core.periods import ZoneLike, bounds_ms, day_start, day_start_ms, local_date
from foursave.core.periods import zone as zone_of
from foursave.core.reading import to_line
from foursave.rules import formulas
from foursave.rules.rollup import daily_quantities

SANDIA_DELTA_T_C = 3.0  # cell minus back-of-module at 1,000 W/m² (open rack)
SYSTEM_LOSSES = 0.14  # PVWatts default
CLEAR_DAY_KT = 0.75  # daily GHI / clear-sky GHI above this: a clear day
PEER_LOW = 0.9  # Y_f below 90 % of the peers' median on a clear day: under-performing


@dataclass
class PvDay:
    site: str
    device: str
    day: date
    e_ac_kwh: float
    p0_kwp: float
    y_f: float
    y_r: float | None = None
    pr: float | None = None
    pr_temp: float | None = None
    expected_kwh: float | None = None
    availability: float | None = None
    clipping_min: float = 0.0
    outage_min: float = 0.0
    clear_day: bool = False
    peer_ratio: float | None = None
    labels: list[str] = field(default_factory=list)


def array_of(d: Device, site: Site, n_inverters: int):
    """The array as installed; else the simulated one; else an even share of the site."""
    if d.array:
        return d.array.dc_kwp, d.array.tilt_deg, d.array.azimuth_deg, d.array.gamma_pdc
    sim = d.simulate
    if sim and sim.image is None and (sim.dc_kwp or sim.rated_power_w):
        return (
            (sim.dc_kwp or sim.rated_power_w / 1000 * 1.2),
            sim.tilt_deg,
            sim.azimuth_deg,
            -0.0037,
        )
    if site.pv_capacity_kwp:
        return site.pv_capacity_kwp / n_inverters, 10.0, 180.0, -0.0037
    return None


def _means(
    influx: InfluxClient, site: Site, rng: Cond, measurement: str, fname: str, step: str
) -> dict[str, pd.Series]:
    """Mean of a field per ``step``: per site for the weather, per device otherwise."""
    q = select(
        agg("mean", fname),
        measurement,
        where=[eq("site", site.id), rng],
        group_by=[every(step), "site" if measurement == "weather" else "device"],
        fill="none",
    )
    return _hourly(influx, q, zone_of(site.timezone))


def _hourly(influx: InfluxClient, q: str, zone: tzinfo) -> dict[str, pd.Series]:
    out = {}
    for s in influx.query(q):
        key = s.get("tags", {}).get("site") or s.get("tags", {}).get("device")
        idx = pd.to_datetime([v[0] for v in s["values"]], unit="ms", utc=True).tz_convert(zone)
        out[key] = pd.Series([v[1] for v in s["values"]], index=idx, dtype=float)
    return out


def pv_days(
    config: Config, influx: InfluxClient, start: date, end: date, clock: Clock | None = None
) -> list[PvDay]:
    """Per inverter and local day of its site in [start, end)."""
    out: list[PvDay] = []
    energy = daily_quantities(influx, config, start, end, clock=clock)
    for site in config.sites:
        zone = zone_of(site.timezone)
        invs = [d for d in config.devices if d.site == site.id and d.kind == "inverter"]
        if not invs:
            continue
        t0, t1 = bounds_ms(start, end, zone)
        rng = time_range(t0, t1)
        poa = _means(influx, site, rng, "weather", "poa_irradiance_wm2", "1h").get(site.id)
        ghi = _means(influx, site, rng, "weather", "ghi_wm2", "1h").get(site.id)
        tmod = _means(influx, site, rng, "weather", "module_temp_c", "1h").get(site.id)
        p15 = _means(influx, site, rng, "inverter", "ac_power_w", "15m")
        intervals = {d.id: d.interval_s for d in config.devices}
        clip = _state_minutes(influx, site, rng, 5, intervals)
        fault = _state_minutes(influx, site, rng, 7, intervals)
        clear_days = _clear_days(site, ghi, zone)
        for d in invs:
            arr = array_of(d, site, len(invs))
            if arr is None:
                continue
            p0, tilt, az, gamma = arr
            plane = poa if poa is not None else _transpose(site, ghi, tilt, az)
            dd = energy.get((d.id, "ac_energy_wh"))
            if dd is None:
                continue
            for day, wh in sorted(dd.quantity.items()):
                kwh = wh / 1000
                row = PvDay(site.id, d.id, day, kwh, p0, formulas.final_yield(kwh, p0))
                g = _day(plane, day)
                if g is not None and g.sum() > 0:
                    row.y_r = formulas.reference_yield(g.sum() / 1000)  # hourly means x 1 h
                    row.pr = formulas.performance_ratio(row.y_f, row.y_r)
                    t = _day(tmod, day)
                    if t is not None and len(t) == len(g):
                        t_cell = t.to_numpy() + SANDIA_DELTA_T_C * g.to_numpy() / 1000
                        row.pr_temp = formulas.temperature_corrected_pr(
                            kwh, p0, g.to_numpy(), t_cell, gamma, 1.0
                        )
                        # pvlib's PVWatts DC model on the measured weather, less system losses
                        dc_w = pvlib.pvsystem.pvwatts_dc(g.to_numpy(), t_cell, p0 * 1000, gamma)
                        row.expected_kwh = float(np.sum(dc_w)) / 1000 * (1 - SYSTEM_LOSSES)
                    pw = _day(p15.get(d.id), day)
                    g15 = g.resample("15min").ffill() if len(g) else g
                    if len(g15):
                        # every sunny block counts: one without power data is not producing
                        sun = g15
                        pw = (
                            (pw if pw is not None else pd.Series(dtype=float))
                            .reindex(sun.index)
                            .fillna(0)
                        )
                        try:
                            row.availability = formulas.availability(
                                pw.to_numpy() > 0, sun.to_numpy()
                            )
                        except formulas.FormulaError:
                            row.availability = None
                        row.outage_min = 15.0 * float(
                            ((pw.to_numpy() <= 0) & (sun.to_numpy() > 50)).sum()
                        )
                row.clipping_min = clip.get((d.id, day), 0.0)
                row.outage_min = max(row.outage_min, fault.get((d.id, day), 0.0))
                row.clear_day = day in clear_days
                if dd.completeness.get(day, 1.0) < 0.95:  # a gap's energy lands here: not a PR
                    row.pr = row.pr_temp = None
                    row.labels.append("incomplete data")
                if row.clipping_min:
                    row.labels.append("clipping")
                if row.outage_min:
                    row.labels.append("outage")
                out.append(row)
        _peers(out, site.id)
    return out


def _state_minutes(
    influx: InfluxClient, site: Site, rng: Cond, state: int, intervals: dict[str, float]
) -> dict[tuple[str, date], float]:
    """Minutes per device and day in SunSpec state ``state``: readings in that state
    times the time each stands for (the poll interval, or the backfill step)."""
    zone = zone_of(site.timezone)
    rows = influx.rows(
        select(
            agg("count", "state", "n"),
            "inverter",
            where=[eq("site", site.id), rng, eq("state", state)],
            group_by=[every("1d"), "device", "source", "step_s"],
            tz=site.timezone,
        )
    )
    out: dict[tuple[str, date], float] = defaultdict(float)
    for r in rows:
        if not r["n"]:
            continue
        step = float(r.get("step_s") or 0) or intervals.get(r["device"], 60.0)
        out[(r["device"], local_date(r["time"], zone))] += r["n"] * step / 60
    return dict(out)


def _day(s: pd.Series | None, day: date) -> pd.Series | None:
    if s is None:
        return None
    # label slicing on the sorted local index: O(log n), not a comparison per row; the
    # local day is 23 or 25 hours long where the clocks change
    start = pd.Timestamp(day_start(day, s.index.tz))
    end = pd.Timestamp(day_start(day + timedelta(days=1), s.index.tz))
    part = s.loc[start : end - pd.Timedelta(microseconds=1)]
    return part if len(part) else None


def _transpose(site: Site, ghi: pd.Series | None, tilt: float, az: float) -> pd.Series | None:
    """Hourly POA from hourly GHI (Erbs, isotropic) where no POA sensor exists."""
    if ghi is None:
        return None
    mid = ghi.index + pd.Timedelta(minutes=30)
    sp = pvlib.solarposition.get_solarposition(mid, site.lat, site.lon)
    with np.errstate(divide="ignore", invalid="ignore"):
        dec = pvlib.irradiance.erbs(
            ghi.to_numpy(), sp["apparent_zenith"].to_numpy(), mid.day_of_year.to_numpy()
        )
        irr = pvlib.irradiance.get_total_irradiance(
            tilt,
            az,
            sp["apparent_zenith"].to_numpy(),
            sp["azimuth"].to_numpy(),
            np.nan_to_num(np.asarray(dec["dni"])),
            ghi.to_numpy(),
            np.nan_to_num(np.asarray(dec["dhi"])),
        )
    return pd.Series(np.nan_to_num(np.asarray(irr["poa_global"])).clip(min=0), index=ghi.index)


def _clear_days(site: Site, ghi: pd.Series | None, zone: tzinfo) -> set[date]:
    if ghi is None or not len(ghi):
        return set()
    mid = ghi.index + pd.Timedelta(minutes=30)
    zen = pvlib.solarposition.get_solarposition(mid, site.lat, site.lon)["apparent_zenith"]
    with np.errstate(divide="ignore", invalid="ignore"):
        cs = np.nan_to_num(pvlib.clearsky.haurwitz(zen)["ghi"].to_numpy())
    by_day: dict[date, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for t, g, c in zip(ghi.index, ghi.to_numpy(), cs, strict=True):
        by_day[t.date()][0] += g
        by_day[t.date()][1] += c
    return {d for d, (g, c) in by_day.items() if c > 0 and g / c > CLEAR_DAY_KT}


def _peers(rows: list[PvDay], site_id: str) -> None:
    """On clear days, each inverter's Y_f against the median of its site's others."""
    by_day: dict[date, list[PvDay]] = defaultdict(list)
    for r in rows:
        if r.site == site_id:
            by_day[r.day].append(r)
    for day_rows in by_day.values():
        if len(day_rows) < 2 or not day_rows[0].clear_day:
            continue
        for r in day_rows:
            others = [o.y_f for o in day_rows if o is not r and "outage" not in o.labels]
            if others and statistics.median(others) > 0:
                r.peer_ratio = r.y_f / statistics.median(others)
                if (
                    r.peer_ratio < PEER_LOW
                    and "outage" not in r.labels
                    and "clipping" not in r.labels
                ):
                    r.labels.append("under-performing vs peers")


def pv_lines(rows: list[PvDay], tz: ZoneLike) -> list[str]:
    """``pv_daily`` points, each at its local day's start in ``tz``, the zone of the
    rows' site (pass each site's rows with its own zone)."""
    zone = zone_of(tz)
    lines = []
    for r in rows:
        ts = day_start_ms(r.day, zone)
        fields: dict[str, float | bool] = {
            "e_ac_kwh": r.e_ac_kwh,
            "p0_kwp": r.p0_kwp,
            "y_f": r.y_f,
            "clipping_min": r.clipping_min,
            "outage_min": r.outage_min,
            "clear_day": r.clear_day,
        }
        for k in ("y_r", "pr", "pr_temp", "expected_kwh", "availability", "peer_ratio"):
            v = getattr(r, k)
            if v is not None:
                fields[k] = float(v)
        lines.append(to_line("pv_daily", {"site": r.site, "device": r.device}, fields, ts))
    return lines
