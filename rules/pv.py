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
from typing import Any

import numpy as np
import pandas as pd
import pvlib

from foursave.core.clock import Clock
from foursave.core.config import Config, Device, Site
from foursave.core.influx import InfluxClient
from foursave.core.influxql import Cond, agg, column, eq, every, select, time_range
from foursave.core.periods import ZoneLike, bounds_ms, day_start_ms, local_date
from foursave.core.periods import zone as zone_of
from foursave.core.reading import to_line
from foursave.rules import formulas
from foursave.rules.rollup import _runs, daily_quantities

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
    rollup_at_ms: float | None = None  # the counter_daily scan the day's energy came from


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


PV_DAILY = "pv_daily"
# pv_daily fields read back for a closed day (pv_lines writes them)
_STORED = (
    "e_ac_kwh",
    "p0_kwp",
    "y_f",
    "y_r",
    "pr",
    "pr_temp",
    "expected_kwh",
    "availability",
    "clipping_min",
    "outage_min",
    "clear_day",
    "peer_ratio",
    "incomplete_data",
    "rollup_at_ms",
)


def pv_days(
    config: Config,
    influx: InfluxClient,
    start: date,
    end: date,
    clock: Clock | None = None,
    stored: bool = True,
) -> list[PvDay]:
    """Per inverter and local day of its site in [start, end).

    A closed day whose ``pv_daily`` rows were computed from the rollup's current scan
    of that day (field ``rollup_at_ms``, the day's scanned mark in ``counter_daily``)
    is read back as written; the other days (open days, days not yet written, days
    rescanned for late data or after a rebuild) are computed from the readings, only
    over their own runs of days.  ``stored=False``: every day computed."""
    out: list[PvDay] = []
    energy = daily_quantities(influx, config, start, end, clock=clock)
    for site in config.sites:
        invs = [d for d in config.devices if d.site == site.id and d.kind == "inverter"]
        if not invs:
            continue
        arrays = {d.id: array_of(d, site, len(invs)) for d in invs}
        kept = _stored(influx, site, start, end) if stored else {}
        mine: list[PvDay] = []
        need: set[date] = set()
        for d in invs:
            dd = energy.get((d.id, "ac_energy_wh"))
            arr = arrays[d.id]
            if dd is None or arr is None:
                continue
            for day in dd.quantity:
                row = kept.get((d.id, day))
                at = dd.scanned.get(day)
                if (
                    row is not None
                    and at is not None
                    and row.rollup_at_ms == at
                    and row.p0_kwp == arr[0]
                ):
                    mine.append(row)
                else:
                    need.add(day)
        if need:
            mine = [r for r in mine if r.day not in need]  # a day is computed for every inverter
            computed: list[PvDay] = []
            for first, last in _runs(sorted(need)):
                computed += _compute(
                    config,
                    influx,
                    site,
                    invs,
                    arrays,
                    energy,
                    first,
                    last + timedelta(days=1),
                    need,
                )
            _peers(computed, site.id)
            mine += computed
        out += sorted(mine, key=lambda r: (r.day, r.device))
    return out


def _stored(
    influx: InfluxClient, site: Site, start: date, end: date
) -> dict[tuple[str, date], PvDay]:
    """The site's ``pv_daily`` rows in [start, end) as :class:`PvDay` (labels as
    :func:`pv_days` gives them), by (device, day)."""
    zone = zone_of(site.timezone)
    t0, t1 = bounds_ms(start, end, zone)
    out: dict[tuple[str, date], PvDay] = {}
    q = select(
        [column(f) for f in _STORED] + [column("device")],
        PV_DAILY,
        where=[eq("site", site.id), time_range(t0, t1)],
    )
    for r in influx.rows(q):
        if r.get("rollup_at_ms") is None or r.get("e_ac_kwh") is None or r.get("p0_kwp") is None:
            continue  # written before pv_daily named its scan: computed again
        row = PvDay(
            site.id,
            r["device"],
            local_date(r["time"], zone),
            r["e_ac_kwh"],
            r["p0_kwp"],
            r["y_f"],
            y_r=r.get("y_r"),
            pr=r.get("pr"),
            pr_temp=r.get("pr_temp"),
            expected_kwh=r.get("expected_kwh"),
            availability=r.get("availability"),
            clipping_min=r.get("clipping_min") or 0.0,
            outage_min=r.get("outage_min") or 0.0,
            clear_day=bool(r.get("clear_day")),
            peer_ratio=r.get("peer_ratio"),
            rollup_at_ms=r["rollup_at_ms"],
        )
        if r.get("incomplete_data"):
            row.labels.append("incomplete data")
        if row.clipping_min:
            row.labels.append("clipping")
        if row.outage_min:
            row.labels.append("outage")
        if (
            row.clear_day
            and row.peer_ratio is not None
            and row.peer_ratio < PEER_LOW
            and not row.outage_min
            and not row.clipping_min
        ):
            row.labels.append("under-performing vs peers")
        out[(row.device, row.day)] = row
    return out


class _Days:
    """An hourly (or 15-minute) series split by local day once: day -> (epoch-ms
    times, values), numpy arrays (no per device-day pandas slicing)."""

    def __init__(self, s: pd.Series | None, zone: tzinfo):
        self.days: dict[date, tuple[Any, Any]] = {}  # numpy arrays
        if s is None or not len(s):
            return
        ms = s.index.as_unit("ms").asi8
        keys = np.asarray(s.index.tz_convert(zone).date)
        vals = s.to_numpy(dtype=float)
        cuts = np.flatnonzero(keys[1:] != keys[:-1]) + 1
        for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(keys)], strict=True):
            self.days[keys[lo]] = (ms[lo:hi], vals[lo:hi])

    def get(self, day: date) -> tuple[Any, Any] | None:
        return self.days.get(day)


def _compute(
    config: Config,
    influx: InfluxClient,
    site: Site,
    invs: list[Device],
    arrays: dict,
    energy: dict,
    start: date,
    end: date,
    need: set[date],
) -> list[PvDay]:
    """Rows for the days in ``need`` within [start, end), from the readings."""
    zone = zone_of(site.timezone)
    t0, t1 = bounds_ms(start, end, zone)
    rng = time_range(t0, t1)
    poa = _means(influx, site, rng, "weather", "poa_irradiance_wm2", "1h").get(site.id)
    ghi = _means(influx, site, rng, "weather", "ghi_wm2", "1h").get(site.id)
    tmod = _Days(_means(influx, site, rng, "weather", "module_temp_c", "1h").get(site.id), zone)
    p15 = {
        k: _Days(v, zone)
        for k, v in _means(influx, site, rng, "inverter", "ac_power_w", "15m").items()
    }
    intervals = {d.id: d.interval_s for d in config.devices}
    clip = _state_minutes(influx, site, rng, 5, intervals)
    fault = _state_minutes(influx, site, rng, 7, intervals)
    clear_days = _clear_days(site, ghi, zone)
    planes: dict[tuple[float, float], _Days] = {}
    out: list[PvDay] = []
    for d in invs:
        arr = arrays[d.id]
        dd = energy.get((d.id, "ac_energy_wh"))
        if arr is None or dd is None:
            continue
        p0, tilt, az, gamma = arr
        key = (tilt, az)
        if key not in planes:
            planes[key] = _Days(poa if poa is not None else _transpose(site, ghi, tilt, az), zone)
        plane = planes[key]
        power = p15.get(d.id)
        for day, wh in sorted(dd.quantity.items()):
            if day not in need or not start <= day < end:
                continue
            kwh = wh / 1000
            row = PvDay(site.id, d.id, day, kwh, p0, formulas.final_yield(kwh, p0))
            row.rollup_at_ms = dd.scanned.get(day)
            gd = plane.get(day)
            if gd is not None and gd[1].sum() > 0:
                g_ms, g = gd
                row.y_r = formulas.reference_yield(g.sum() / 1000)  # hourly means x 1 h
                row.pr = formulas.performance_ratio(row.y_f, row.y_r)
                td = tmod.get(day)
                if td is not None and len(td[1]) == len(g):
                    t_cell = td[1] + SANDIA_DELTA_T_C * g / 1000
                    row.pr_temp = formulas.temperature_corrected_pr(kwh, p0, g, t_cell, gamma, 1.0)
                    # pvlib's PVWatts DC model on the measured weather, less system losses
                    dc_w = pvlib.pvsystem.pvwatts_dc(g, t_cell, p0 * 1000, gamma)
                    row.expected_kwh = float(np.sum(dc_w)) / 1000 * (1 - SYSTEM_LOSSES)
                # the hour's irradiance over its four 15-minute blocks, from the day's
                # first hour to its last (each block: the hour at or before it)
                grid = np.arange(g_ms[0], g_ms[-1] + 1, 900_000, dtype=np.int64)
                sun = g[np.searchsorted(g_ms, grid, side="right") - 1]
                # every sunny block counts: one without power data is not producing
                pw: Any = np.zeros(len(grid))
                pd_ = power.get(day) if power is not None else None
                if pd_ is not None:
                    pos = np.searchsorted(pd_[0], grid)
                    ok = pos < len(pd_[0])
                    ok[ok] = pd_[0][pos[ok]] == grid[ok]
                    pw[ok] = np.nan_to_num(pd_[1][pos[ok]])
                try:
                    row.availability = formulas.availability(pw > 0, sun)
                except formulas.FormulaError:
                    row.availability = None
                row.outage_min = 15.0 * float(((pw <= 0) & (sun > 50)).sum())
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
        if r.rollup_at_ms is not None:  # a closed day: read back while the scan stands
            fields["rollup_at_ms"] = float(r.rollup_at_ms)
            fields["incomplete_data"] = "incomplete data" in r.labels
        lines.append(to_line(PV_DAILY, {"site": r.site, "device": r.device}, fields, ts))
    return lines
