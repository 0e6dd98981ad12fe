"""The public display's data: a small snapshot per site, rebuilt by the server.

Lobby screens never query InfluxDB: a background refresher builds one JSON document
per configured site every ``services.api.display_refresh_s`` and the ``/display/data``
route hands out the pre-serialised bytes.  A value keeps its own time: when a query
finds nothing new, the last good value stays with the time it was measured, so the
screen shows "as of HH:MM" — never a zero, never an error page.

Definitions (shown on the screen):
- PV power [W]: sum of the last ``ac_power_w`` of the site's inverters; its time is the
  oldest of those readings, so one silent inverter makes the total stale, not low.
- PV energy today / this year [kWh]: per inverter, the lifetime counter ``ac_energy_wh``
  now minus its last value before local midnight / 1 January (first value of the
  period for an inverter commissioned within it).
- CO2 avoided [kg]: PV energy × the grid emission factor for the date
  (rules/data/factors.yaml; the same factor the ledger uses for ``pv_co2e_avoided_kg``).
- Building power [W]: main meters' ``active_power_w`` (grid draw, negative on export)
  plus the site's inverters' output — on a site with main meters, its PV is behind
  them (a plant without a main meter is its own site and shows no building power).
- PV saved this month [NT$]: the rules engine's ``pv_value_month`` of the current local
  month (rules/pvvalue.py): the PV consumed on site at its TOU energy price; its time is
  the end of the last 15-minute block valued.  A site whose PV is not valued (no
  ``tariff``) shows none.
- Progress: the rules engine's ``ledger`` row of the current year, per item.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Any

from foursave.core.clock import Clock
from foursave.core.config import Config, Site
from foursave.core.influx import InfluxClient, InfluxRejected, InfluxUnavailable
from foursave.core.influxql import agg, eq, every, select, tag_in, time_range
from foursave.core.periods import day_start, zone
from foursave.rules.factors import FactorError, emission_factor
from foursave.rules.items import ITEMS

log = logging.getLogger("foursave.api.display")

VALUE_KEYS = (
    "pv_power_w",
    "pv_energy_today_kwh",
    "pv_energy_year_kwh",
    "co2_avoided_today_kg",
    "co2_avoided_year_kg",
    "building_power_w",
    "pv_value_month_ntd",
)
LOOKBACK = timedelta(days=2)  # how far back "the last value" is searched
START_LOOKBACK = timedelta(days=7)  # a counter's value before a period starts
CHART_STEP = "15m"


def _ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


class SiteQueries:
    """The InfluxQL behind one site's snapshot (each returns plain values)."""

    def __init__(self, influx: InfluxClient, config: Config, site: Site):
        self.influx = influx
        self.site = site
        self.zone = zone(site.timezone)
        self.inverters = [
            d.id for d in config.devices if d.site == site.id and d.kind == "inverter"
        ]
        self.mains = [
            d.id
            for d in config.devices
            if d.site == site.id and d.kind == "meter" and d.role == "main"
        ]
        # counter values at the start of a day or year, once found (they do not change)
        self._starts: dict[int, dict[str, tuple[int, float]]] = {}

    def last_per_device(
        self, measurement: str, fieldname: str, devices: list[str], start_ms: int, end_ms: int
    ) -> dict[str, tuple[int, float]]:
        if not devices:
            return {}
        rows = self.influx.rows(
            select(
                agg("last", fieldname),
                measurement,
                where=[tag_in("device", devices), _closed(start_ms, end_ms)],
                group_by=["device"],
            )
        )
        return {r["device"]: (r["time"], r["last"]) for r in rows if r.get("last") is not None}

    def total_now(
        self, measurement: str, fieldname: str, devices: list[str], now: datetime
    ) -> tuple[float, int] | None:
        """Sum of each device's last value, stamped with the oldest of them."""
        last = self.last_per_device(measurement, fieldname, devices, _ms(now - LOOKBACK), _ms(now))
        if not last:
            return None
        return sum(v for _, v in last.values()), min(t for t, _ in last.values())

    def energy_since(self, since: datetime, now: datetime) -> tuple[float, int] | None:
        """PV energy [kWh] from ``since`` to ``now`` from the inverters' lifetime counters."""
        ends = self.last_per_device(
            "inverter", "ac_energy_wh", self.inverters, _ms(max(since, now - LOOKBACK)), _ms(now)
        )
        if not ends:
            return None
        starts = self._starts.get(_ms(since), {})
        missing = [d for d in ends if d not in starts]
        if missing:
            found = self.last_per_device(
                "inverter", "ac_energy_wh", missing, _ms(since - START_LOOKBACK), _ms(since) - 1
            )
            later = [d for d in missing if d not in found]
            # a value from before the period start is final; only that one is kept
            old = {k: v for k, v in self._starts.items() if k >= _ms(since) - 366 * 86_400_000}
            self._starts = old | {_ms(since): {**starts, **found}}
            if later:
                # commissioned (or first seen) within the period: its first value so far,
                # looked up again each time (history written later may reach further back)
                rows = self.influx.rows(
                    select(
                        agg("first", "ac_energy_wh"),
                        "inverter",
                        where=[tag_in("device", later), _closed(_ms(since), _ms(now))],
                        group_by=["device"],
                    )
                )
                found.update({r["device"]: (r["time"], r["first"]) for r in rows})
            starts = {**starts, **found}
        total_wh, stamp = 0.0, None
        for d, (t, end) in ends.items():
            if d not in starts:
                continue
            start = starts[d][1]
            if end < start:  # a counter reset: this inverter's share cannot be told
                log.warning("display: %s counter fell from %s to %s; left out", d, start, end)
                continue
            total_wh += end - start
            stamp = t if stamp is None else min(stamp, t)
        return (total_wh / 1000, stamp) if stamp is not None else None

    def curve(self, measurement: str, fieldname: str, devices: list[str], day0: datetime, now):
        """15-minute means of the devices' sum over the local day; None where no data."""
        if not devices:
            return {}
        rows = self.influx.rows(
            select(
                agg("mean", fieldname),
                measurement,
                where=[tag_in("device", devices), _closed(_ms(day0), _ms(now))],
                group_by=[every(CHART_STEP), "device"],
            )
        )
        out: dict[int, float] = {}
        for r in rows:
            if r.get("mean") is not None:
                out[r["time"]] = out.get(r["time"], 0.0) + r["mean"]
        return out

    def pv_value_month(self, month0: datetime, now: datetime) -> tuple[float, int] | None:
        """This month's ``pv_value_ntd`` (rules/pvvalue.py) and the end of its data."""
        rows = self.influx.rows(
            select(
                [agg("last", "pv_value_ntd", "v"), agg("last", "valued_to_ms", "to")],
                "pv_value_month",
                where=[eq("site", self.site.id), _closed(_ms(month0), _ms(now))],
            )
        )
        if not rows or rows[0].get("v") is None:
            return None
        to = rows[0].get("to")
        return rows[0]["v"], int(to) if to is not None else rows[0]["time"]

    def progress(self, year: int) -> list[dict[str, Any]]:
        this_year = [eq("site", self.site.id), eq("period", str(year))]
        rows = self.influx.rows(
            select(
                [agg("last", f, f) for f in ("actual", "baseline", "target_rate", "savings_rate")],
                "ledger",
                where=this_year,
                group_by=["item"],
            )
        )
        met = {
            r["item"]: r.get("met")
            for r in self.influx.rows(
                select(agg("last", "met", "met"), "ledger", where=this_year, group_by=["item"])
            )
        }
        by_item = {r["item"]: r for r in rows}
        return [
            {
                "item": item,
                "unit": unit,
                "actual": by_item.get(item, {}).get("actual"),
                "baseline": by_item.get(item, {}).get("baseline"),
                "target_rate": by_item.get(item, {}).get("target_rate"),
                "savings_rate": by_item.get(item, {}).get("savings_rate"),
                "met": met.get(item),
            }
            for item, unit in ((i.name, i.unit) for i in ITEMS)
        ]


def _closed(start_ms: int, end_ms: int):
    """[start, end]: the reading at ``now`` itself counts."""
    return time_range(start_ms, end_ms, include_end=True)


def _value(v: float | None, ts: int | None) -> dict[str, Any]:
    return {"value": None if v is None else round(v, 3), "ts": ts}


class SnapshotBuilder:
    """Builds (and keeps the last good) snapshot of each configured site."""

    def __init__(self, config: Config, influx: InfluxClient, clock: Clock, stale_after_s: float):
        self.config = config
        self.influx = influx
        self.clock = clock
        self.stale_after_s = stale_after_s
        self.queries = {s.id: SiteQueries(influx, config, s) for s in config.sites}
        self.docs: dict[str, dict[str, Any]] = {}
        self.served: dict[str, tuple[bytes, str]] = {}  # pre-serialised body and its ETag
        self.failures = 0
        self.last_success_ms: int | None = None

    def site_list(self) -> list[dict[str, Any]]:
        return [{"id": s.id, "name": s.name, "name_en": s.name_en} for s in self.config.sites]

    def build(self, site: Site) -> dict[str, Any]:
        q = self.queries[site.id]
        now_s = self.clock.time()
        now = datetime.fromtimestamp(now_s, q.zone)
        day0 = day_start(now.date(), q.zone)  # local midnight (days of 23 or 25 hours too)
        year0 = day_start(date(now.year, 1, 1), q.zone)
        prev = self.docs.get(site.id, {}).get("values", {})
        values: dict[str, dict[str, Any]] = {}

        def keep(key: str, fresh: tuple[float, int] | None) -> None:
            values[key] = _value(*fresh) if fresh else prev.get(key, _value(None, None))

        pv = q.total_now("inverter", "ac_power_w", q.inverters, now)
        keep("pv_power_w", pv)
        today = q.energy_since(day0, now)
        this_year = q.energy_since(year0, now)
        keep("pv_energy_today_kwh", today)
        keep("pv_energy_year_kwh", this_year)
        factor = self._factor(now.date())
        if factor is not None:
            keep("co2_avoided_today_kg", today and (today[0] * factor["value"], today[1]))
            keep(
                "co2_avoided_year_kg", this_year and (this_year[0] * factor["value"], this_year[1])
            )
        else:
            keep("co2_avoided_today_kg", None)
            keep("co2_avoided_year_kg", None)
        grid = q.total_now("meter", "active_power_w", q.mains, now)
        if grid is not None:
            behind = pv if pv is not None else (0.0, grid[1])
            keep("building_power_w", (grid[0] + behind[0], min(grid[1], behind[1])))
        else:
            keep("building_power_w", None)
        month0 = day_start(date(now.year, now.month, 1), q.zone)
        keep("pv_value_month_ntd", q.pv_value_month(month0, now))
        pv_curve = q.curve("inverter", "ac_power_w", q.inverters, day0, now)
        grid_curve = q.curve("meter", "active_power_w", q.mains, day0, now)
        # 15-minute buckets since local midnight, counted in elapsed time (not wall time:
        # a day with a clock change has 92 or 100 of them)
        d0 = _ms(day0)
        buckets = [d0 + 900_000 * k for k in range((_ms(now) - d0) // 900_000 + 1)]
        load = {
            t: grid_curve[t] + pv_curve.get(t, 0.0) if q.inverters else grid_curve[t]
            for t in grid_curve
            if not q.inverters or t in pv_curve
        }
        return {
            "generated_at": int(now_s * 1000),
            "stale_after_s": self.stale_after_s,
            "site": {"id": site.id, "name": site.name, "name_en": site.name_en},
            "sites": self.site_list(),
            "values": values,
            "progress": q.progress(now.year),
            "progress_period": str(now.year),
            "chart": {
                "day": now.date().isoformat(),
                "tz": site.timezone,
                "pv_w": [[t, pv_curve.get(t)] for t in buckets] if q.inverters else [],
                "load_w": [[t, load.get(t)] for t in buckets] if q.mains else [],
            },
            "factor": factor,
        }

    @staticmethod
    def _factor(on: date) -> dict[str, Any] | None:
        try:
            f = emission_factor("grid_electricity", on)
        except FactorError:
            return None
        year = re.search(r"data year (\d{4})", f.basis)
        return {
            "value": f.value,
            "unit": f.unit,
            "year": int(year.group(1)) if year else None,
            "basis": f.basis,
            "source": f.source,
            "provisional": f.provisional,
        }

    def refresh(self) -> bool:
        """Rebuild every site's snapshot; on failure keep the last good ones."""
        ok = True
        for site in self.config.sites:
            try:
                doc = self.build(site)
            except (InfluxUnavailable, InfluxRejected) as exc:
                ok = False
                self.failures += 1
                log.warning("display snapshot of %s not refreshed: %s", site.id, exc)
                last = self.docs.get(site.id)
                doc = last if last is not None else self.empty(site)
            self.docs[site.id] = doc
            body = json.dumps(doc, ensure_ascii=False).encode()
            etag = '"' + hashlib.blake2b(body, digest_size=8).hexdigest() + '"'
            self.served[site.id] = (body, etag)  # one assignment: readers see old or new
        if ok:
            self.last_success_ms = int(self.clock.time() * 1000)
        return ok

    def empty(self, site: Site) -> dict[str, Any]:
        now_ms = int(self.clock.time() * 1000)
        return {
            "generated_at": now_ms,
            "stale_after_s": self.stale_after_s,
            "site": {"id": site.id, "name": site.name, "name_en": site.name_en},
            "sites": self.site_list(),
            "values": {k: _value(None, None) for k in VALUE_KEYS},
            "progress": [],
            "progress_period": None,
            "chart": {"day": None, "tz": site.timezone, "pv_w": [], "load_w": []},
            "factor": None,
        }


class Refresher(threading.Thread):
    """Calls ``refresh`` every period until stopped (monotonic schedule, no drift)."""

    def __init__(self, refresh: Callable[[], object], period_s: float):
        super().__init__(name="display-refresher", daemon=True)
        self.refresh = refresh
        self.period_s = period_s
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                self.refresh()
            except Exception:  # a bug in one pass must not stop the screens' updates
                log.exception("display refresh failed")
            self.stop_event.wait(self.period_s)

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=10)
