"""Demand watch: 15-minute block demand of each site's main meters, the month's
maximum, the over-contract surcharge estimate, and a forecast of the running block.

Taipower bills the highest 15-minute average demand of the month against the contract
capacity (docs/domain.md).  Block energy comes from the main meters' import counters
(``non_negative_difference`` of the first reading per block, pushed into InfluxDB).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import date

from foursave.core.config import Config, Site
from foursave.core.influx import InfluxClient
from foursave.core.influxql import Cond, agg, eq, every, select, tag_in, time_range
from foursave.core.periods import (
    ZoneLike,
    day_start_ms,
    local_date,
    month,
    months_between,
    parse_period,
    period_bounds_ms,
    zone,
)
from foursave.core.reading import to_line
from foursave.rules import formulas
from foursave.rules.tariff import NoTariff, load_tariffs

BLOCK_S = 900


@dataclass(frozen=True)
class MonthDemand:
    site: str
    month: str
    contract_kw: float | None
    max_demand_kw: float | None
    max_at_ms: int | None
    surcharge_ntd: float | None
    blocks: dict[int, float]  # block start [epoch ms] -> kW


@dataclass(frozen=True)
class Forecast:
    site: str
    block_start_ms: int
    elapsed_s: float
    energy_kwh: float
    power_kw: float
    forecast_kw: float
    contract_kw: float | None


def _main_devices(config: Config, site: Site) -> list[str]:
    return [
        d.id for d in config.devices if d.site == site.id and d.kind == "meter" and d.role == "main"
    ]


def block_demands(
    influx: InfluxClient, devices: list[str], start_ms: int, end_ms: int
) -> dict[int, float]:
    """Block start [ms] -> demand [kW], summed over the given main meters."""
    if not devices:
        return {}
    rows = influx.rows(
        select(
            agg("first", "import_energy_wh", "c"),
            "meter",
            where=[tag_in("device", devices), time_range(start_ms, end_ms + BLOCK_S * 1000)],
            group_by=[every("15m"), "device"],
            fill="none",
        )
    )
    firsts: dict[str, dict[int, float]] = defaultdict(dict)
    for r in rows:
        if r["c"] is not None:
            firsts[r["device"]][r["time"]] = r["c"]
    out: dict[int, float] = defaultdict(float)
    step = BLOCK_S * 1000
    for per_block in firsts.values():
        # the counter's first reading in block k+1 minus that in block k: block k's energy;
        # only between adjacent blocks (a gap's energy is not one block's) and never negative
        for block, c in per_block.items():
            nxt = per_block.get(block + step)
            if nxt is not None and nxt >= c and start_ms <= block < end_ms:
                out[block] += formulas.block_demand_kw((nxt - c) / 1000)
    return dict(out)


def month_demand(config: Config, influx: InfluxClient, site: Site, y: int, m: int) -> MonthDemand:
    tz = zone(site.timezone)
    start_ms, end_ms = period_bounds_ms(month(y, m), tz)  # the site's local month
    blocks = block_demands(influx, _main_devices(config, site), start_ms, end_ms)
    if not blocks:
        return MonthDemand(
            site.id, f"{y:04d}-{m:02d}", site.contract_capacity_kw, None, None, None, {}
        )
    at, peak = max(blocks.items(), key=lambda kv: kv[1])
    surcharge = None
    if site.contract_capacity_kw:
        peak_day = local_date(at, tz)
        tariffs = load_tariffs()
        try:  # the regular contract's basic price of the peak's day (rules/data/tariffs.yaml)
            edition = tariffs.edition_on(peak_day)
        except NoTariff:  # no tariff on record for that day: no surcharge estimate
            return MonthDemand(
                site.id, f"{y:04d}-{m:02d}", site.contract_capacity_kw, peak, at, None, blocks
            )
        plan = site.tariff.plan if site.tariff else "three_stage"  # same regular price
        rate = edition.basic_price(plan, "regular", edition.is_summer(peak_day))
        oc = tariffs.over_contract
        surcharge = formulas.over_contract_surcharge(
            peak,
            site.contract_capacity_kw,
            rate or 0.0,
            float(oc["within_share"]),
            float(oc["within_multiplier"]),
            float(oc["above_multiplier"]),
        ).ntd
    return MonthDemand(
        site.id, f"{y:04d}-{m:02d}", site.contract_capacity_kw, peak, at, surcharge, blocks
    )


def forecast(config: Config, influx: InfluxClient, site: Site, now: float) -> Forecast | None:
    """The running block's expected final demand from its energy so far and the power now."""
    devices = _main_devices(config, site)
    if not devices:
        return None
    block_start = math.floor(now / BLOCK_S) * BLOCK_S
    now_ms, bs_ms = int(now * 1000), int(block_start * 1000)
    energy_wh, power_w, seen = 0.0, 0.0, False
    for dev in devices:
        before = influx.rows(
            select(
                agg("last", "import_energy_wh", "c"),
                "meter",
                where=[eq("device", dev), _after_until(bs_ms - 3_600_000, bs_ms)],
            )
        )
        latest = influx.rows(
            select(
                [agg("last", "import_energy_wh", "c"), agg("last", "active_power_w", "p")],
                "meter",
                where=[eq("device", dev), _after_until(bs_ms, now_ms)],
            )
        )
        if not before or not latest or latest[0]["c"] is None:
            continue
        seen = True
        energy_wh += max(0.0, latest[0]["c"] - before[0]["c"])
        power_w += latest[0]["p"] or 0.0
    if not seen:
        return None
    elapsed = now - block_start
    fc = formulas.forecast_block_demand_kw(energy_wh / 1000, elapsed / 3600, power_w / 1000)
    return Forecast(
        site.id, bs_ms, elapsed, energy_wh / 1000, power_w / 1000, fc, site.contract_capacity_kw
    )


def _after_until(after_ms: int, until_ms: int) -> Cond:
    """(after, until]: a block's readings end exactly at its boundary."""
    return time_range(after_ms, until_ms, include_start=False, include_end=True)


def demand_lines(md: MonthDemand, tz: ZoneLike) -> list[str]:
    """``demand`` blocks and the ``demand_month`` point (at the month's local start in
    ``tz``, the zone of the demand's site)."""
    lines = [
        to_line("demand", {"site": md.site}, {"demand_kw": kw}, t)
        for t, kw in sorted(md.blocks.items())
    ]
    if md.max_demand_kw is not None and md.max_at_ms is not None:  # set together
        ts = day_start_ms(parse_period(md.month).start, tz)
        fields = {"max_demand_kw": md.max_demand_kw, "max_at_ms": md.max_at_ms}
        if md.contract_kw:
            fields["contract_kw"] = md.contract_kw
        if md.surcharge_ntd is not None:
            fields["surcharge_ntd"] = md.surcharge_ntd
        lines.append(to_line("demand_month", {"site": md.site, "month": md.month}, fields, ts))
    return lines


def months_of(start: date, end: date) -> list[tuple[int, int]]:
    """(year, month) of every month that touches local dates [start, end)."""
    return [(p.start.year, p.start.month) for p in months_between(start, end)]


def forecast_lines(config: Config, influx: InfluxClient, now: float) -> list[str]:
    """The running block's forecast per site (``demand_forecast``), for dashboards."""
    lines = []
    for site in config.sites:
        fc = forecast(config, influx, site, now)
        if fc is None:
            continue
        fields = {
            "forecast_kw": fc.forecast_kw,
            "energy_kwh": fc.energy_kwh,
            "power_kw": fc.power_kw,
        }
        if fc.contract_kw:
            fields["contract_kw"] = fc.contract_kw
        lines.append(to_line("demand_forecast", {"site": site.id}, fields, int(now * 1000)))
    return lines
