"""A backfilled year of the demo site, billed twice.

The rules pass (``rules/engine.run_once``) stores ``bill_month``; this test then bills
every month again from the stored 15-minute meter data with nothing but the tariff file
(``yaml.safe_load`` of rules/data/tariffs.yaml, not ``rules/tariff.py``) and the formulas
of ../shared/TARIFFS.md §4: energy per TOU period, maximum demand per period, the basic
charge with the Saturday/off-peak contracts above half the full ones, over-contract per
period with no kW counted twice (x2 up to 10 % of the stacked capacity, x3 above), the
power-factor adjustment on basic + energy from the meters' power factor, the industry
coefficient.  A month that crosses 5/16 or 10/16 is billed in parts, each as a month of
its season weighted by its share of the month's days (rules/tariff.py's documented rule;
Taipower's was NOT FOUND, TARIFFS.md §4.13).

The demo site's 300 kW contract is never reached by its ~100 kW load, so over-contract
and stacking would go untested: the site here keeps the demo's devices and tariff plan
with contracts under its summer demand.  It also checks that the simulated load makes
the TOU periods differ (simulators/physics.py).
"""

from __future__ import annotations

import itertools
import uuid
from collections import defaultdict
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import holidays
import pytest
import yaml

from foursave.core.clock import ManualClock
from foursave.core.influx import InfluxClient
from foursave.rules.engine import run_once
from foursave.rules.records import RecordStore
from foursave.simulators.backfill import run_backfill
from tests.helpers import ROOT, demo_raw, make_config

pytestmark = pytest.mark.integration

TZ = ZoneInfo("Asia/Taipei")
YEAR = 2025  # all of it under edition tpc-hv-2024-10-16
NOW = datetime(2026, 1, 21, 12, 0, tzinfo=TZ)  # the rules pass's clock: 2025 is closed
STEP_S = 900  # one reading at the start of each 15-minute block
BLOCK_MS = 900_000
CONTRACTS_KW = {"regular": 80, "semi_peak": 10, "saturday": 20, "off_peak": 30}
# The lunisolar off-peak days of 2025 (行政院人事行政總處, 114 年政府行政機關辦公日曆表):
# 春節 (正月初一) 1/29, 端午 5/31, 中秋 10/6, 民族掃墓節 4/4.
LUNAR_2025 = {"new_year": date(2025, 1, 29), (5, 5): date(2025, 5, 31), (8, 15): date(2025, 10, 6)}
QINGMING_2025 = date(2025, 4, 4)


@pytest.fixture(scope="module")
def year(influx_server, tmp_path_factory):
    """The demo site's 2025 at 15-minute steps, and one rules pass over it."""
    tmp = tmp_path_factory.mktemp("bill-year")
    database = f"bill_{uuid.uuid4().hex[:10]}"
    url = f"http://127.0.0.1:{influx_server.port}"
    sites = demo_raw()["sites"]
    sites[0]["tariff"] = {**sites[0]["tariff"], "contracts_kw": CONTRACTS_KW}
    cfg = make_config(
        tmp,
        1,
        url,
        database,
        commissioned=date(YEAR, 1, 1),
        sites=sites,
        extra_services={
            "rules": {
                "records_path": str(tmp / "records.sqlite"),
                "state_path": str(tmp / "rules-state.sqlite"),
            }
        },
    )
    influx = InfluxClient(url, database)
    influx.create_database()
    # one day past the year: the last block's energy needs the next block's counter
    run_backfill(cfg, date(YEAR, 1, 1), date(YEAR + 1, 1, 2), step_s=STEP_S, influx=influx)
    store = RecordStore(cfg.services.rules.records_path)
    run_once(
        cfg, influx, store, date(YEAR, 1, 1), date(YEAR + 1, 1, 1), ManualClock(NOW.timestamp())
    )
    store.close()
    yield cfg, influx
    influx.close()


# ------------------------------------------------------------ the bill, from the file


def _hm(s: str) -> int:
    h, m = s.split(":")
    return int(h) * 60 + int(m)


def _md(s: str) -> tuple[int, int]:
    m, d = s.split("-")
    return int(m), int(d)


class TariffFile:
    """What the bill needs from rules/data/tariffs.yaml, read here on its own."""

    def __init__(self, plan: str, industry: str):
        raw = yaml.safe_load((ROOT / "rules" / "data" / "tariffs.yaml").read_text("utf-8"))
        (self.edition,) = [
            e
            for e in raw["editions"]
            if date.fromisoformat(str(e["valid_from"])) <= date(YEAR, 1, 1)
            and (e["valid_to"] is None or date(YEAR, 12, 31) <= e["valid_to"])
        ]
        self.plan_id = plan
        self.plan = raw["plans"][plan]
        self.windows = raw["window_sets"][self.edition["windows"]][plan]
        self.off_peak_days = self._off_peak_days(
            raw["off_peak_day_sets"][self.edition["off_peak_days"]]
        )
        self.prices = self.edition["plans"][plan]
        self.over = raw["over_contract"]
        self.pf = raw["power_factor"]
        (self.coefficient,) = [
            p["value"]
            for p in raw["industry_coefficients"][industry]["periods"]
            if p["from"] <= date(YEAR, 1, 1)
        ]
        self.summer = (_md(self.edition["summer"]["start"]), _md(self.edition["summer"]["end"]))

    @staticmethod
    def _off_peak_days(spec: dict) -> set[date]:
        days = set()
        for f in spec["fixed"]:
            d = date(YEAR, *_md(f["day"]))
            if "listed_from" not in f or d >= f["listed_from"]:
                days.add(d)
        ny, rule = LUNAR_2025["new_year"], spec["lunar_new_year"]
        # from the day before 除夕 (two before 正月初一) through 正月初五
        first = ny - timedelta(days=rule["from_days_before"])
        days |= {first + timedelta(days=k) for k in range((ny - first).days + rule["through_day"])}
        days |= {LUNAR_2025[(x["month"], x["day"])] for x in spec["lunar"]}
        if spec.get("qingming"):
            days.add(QINGMING_2025)
        return days

    def is_summer(self, d: date) -> bool:
        return self.summer[0] <= (d.month, d.day) <= self.summer[1]

    def day_kind(self, d: date) -> str:
        if d.weekday() == 6 or d in self.off_peak_days:
            return "off_peak"
        return "saturday" if d.weekday() == 5 else "weekday"

    def period(self, t: datetime) -> str:
        kind = self.day_kind(t.date())
        if kind == "off_peak":
            return "off_peak"
        season = "summer" if self.is_summer(t.date()) else "non_summer"
        minute = t.hour * 60 + t.minute
        for name, a, b in self.windows[season][kind]:
            if _hm(a) <= minute < _hm(b):
                return name
        return "off_peak"

    def price(self, table: str, key: str, summer: bool) -> float:
        return self.prices[table][key][0 if summer else 1]

    def basic(self, summer: bool) -> float:
        full, disc = self.plan["basic"]["full"], self.plan["basic"]["discounted"]
        out = sum(
            self.price("basic_ntd_per_kw_month", c, summer) * CONTRACTS_KW.get(c, 0) for c in full
        )
        shared = max(
            0.0,
            sum(CONTRACTS_KW.get(c, 0) for c in disc)
            - 0.5 * sum(CONTRACTS_KW.get(c, 0) for c in full),
        )
        (price,) = {self.price("basic_ntd_per_kw_month", c, summer) for c in disc}
        return out + price * shared

    def over_contract(self, summer: bool, max_kw: dict[str, float]) -> float:
        total, largest = 0.0, 0.0
        for name, rule in self.plan["periods"].items():  # in the file's order
            if name not in max_kw:
                continue
            covered = sum(CONTRACTS_KW.get(c, 0) for c in rule["covered_by"])
            raw = max(0.0, max_kw[name] - covered)
            charged = max(0.0, raw - largest)  # no kW counted twice
            largest = max(largest, raw)
            within = min(charged, self.over["within_share"] * covered)
            price = self.price("basic_ntd_per_kw_month", rule["basic_price_of"], summer)
            total += price * (
                self.over["within_multiplier"] * within
                + self.over["above_multiplier"] * (charged - within)
            )
        return total

    def pf_share(self, pf: float) -> float:
        base, step = self.pf["base_pct"], self.pf["step_pct_per_pct"] / 100
        pct = pf * 100
        if pct < base:
            return (base - pct) * step
        return -(min(pct, self.pf["credit_up_to_pct"]) - base) * step


def stored_meter(influx: InfluxClient) -> list[dict]:
    lo = int(datetime(YEAR, 1, 1, tzinfo=TZ).timestamp() * 1000)
    hi = int(datetime(YEAR + 1, 1, 1, tzinfo=TZ).timestamp() * 1000) + BLOCK_MS
    return influx.rows(
        "SELECT import_energy_wh, active_power_w, power_factor FROM meter "
        f"WHERE role = 'main' AND time >= {lo}ms AND time <= {hi}ms"
    )


def month_bills(tf: TariffFile, rows: list[dict]) -> dict[int, dict]:
    """Every month's bill from the stored readings (one main meter, one reading a block)."""
    rows = sorted(rows, key=lambda r: r["time"])
    assert all(b["time"] - a["time"] == BLOCK_MS for a, b in itertools.pairwise(rows))
    energy: dict[int, dict[tuple[bool, str], float]] = defaultdict(lambda: defaultdict(float))
    demand: dict[int, dict[tuple[bool, str], float]] = defaultdict(dict)
    days: dict[int, dict[bool, set]] = defaultdict(lambda: defaultdict(set))
    pf_num: dict[int, float] = defaultdict(float)
    pf_den: dict[int, float] = defaultdict(float)
    for a, b in itertools.pairwise(rows):
        t = datetime.fromtimestamp(a["time"] / 1000, TZ)
        if t.year != YEAR:
            continue
        kwh = (b["import_energy_wh"] - a["import_energy_wh"]) / 1000
        summer = tf.is_summer(t.date())
        key = (summer, tf.period(t))
        energy[t.month][key] += kwh
        demand[t.month][key] = max(demand[t.month].get(key, 0.0), kwh / 0.25)
        days[t.month][summer].add(t.date())
    for r in rows:
        t = datetime.fromtimestamp(r["time"] / 1000, TZ)
        if t.year == YEAR:
            pf_num[t.month] += r["power_factor"] * r["active_power_w"]
            pf_den[t.month] += r["active_power_w"]
    out = {}
    for m in range(1, 13):
        n_days = sum(len(v) for v in days[m].values())
        basic = over = 0.0
        for summer, ds in days[m].items():
            share = len(ds) / n_days
            basic += tf.basic(summer) * share
            max_kw = {p: kw for (s, p), kw in demand[m].items() if s == summer}
            over += tf.over_contract(summer, max_kw) * share
        energy_ntd = sum(
            kwh * tf.price("energy_ntd_per_kwh", p, s) for (s, p), kwh in energy[m].items()
        )
        pf = pf_num[m] / pf_den[m]
        pf_ntd = (basic + energy_ntd) * tf.pf_share(pf)
        by_period: dict[str, float] = defaultdict(float)
        max_by: dict[str, float] = {}
        for (_, p), kwh in energy[m].items():
            by_period[p] += kwh
        for (_, p), kw in demand[m].items():
            max_by[p] = max(max_by.get(p, 0.0), kw)
        out[m] = {
            "energy_kwh": dict(by_period),
            "max_demand_kw": max_by,
            "basic_ntd": basic,
            "energy_ntd": energy_ntd,
            "over_contract_ntd": over,
            "pf_adjust_ntd": pf_ntd,
            "total_ntd": (basic + energy_ntd + over + pf_ntd) * tf.coefficient,
        }
    return out


def test_every_month_of_the_stored_bill_is_reproduced_from_the_tariff_file(year):
    cfg, influx = year
    site = cfg.sites[0]
    assert site.tariff is not None and dict(site.tariff.contracts_kw) == CONTRACTS_KW
    tf = TariffFile(site.tariff.plan, site.tariff.industry)
    rows = stored_meter(influx)
    assert not any("reactive_power_var" in r for r in rows)  # the PF comes from pf readings
    ours = month_bills(tf, rows)
    stored = {
        datetime.fromtimestamp(r["time"] / 1000, TZ).month: r
        for r in influx.rows(f"SELECT * FROM bill_month WHERE site = '{site.id}'")
    }
    assert sorted(stored) == list(range(1, 13))
    for m, mine in ours.items():
        got = stored[m]
        assert got["completeness"] == 1.0, m
        for name in ("basic_ntd", "energy_ntd", "over_contract_ntd", "pf_adjust_ntd", "total_ntd"):
            assert got[name] == pytest.approx(mine[name], rel=1e-9, abs=1e-6), (m, name)
        for p, kwh in mine["energy_kwh"].items():
            assert got[f"energy_kwh_{p}"] == pytest.approx(kwh, rel=1e-9), (m, p)
        for p, kw in mine["max_demand_kw"].items():
            assert got[f"max_demand_kw_{p}"] == pytest.approx(kw, rel=1e-9), (m, p)
    # the parts of the formula this year exercises: a peak period in summer only, an
    # over-contract charge in summer (none in the cool months), a power-factor discount
    summer_months, winter_months = (6, 7, 8, 9), (1, 2, 3, 11, 12)
    assert all("peak" in ours[m]["energy_kwh"] for m in summer_months)
    assert not any("peak" in ours[m]["energy_kwh"] for m in winter_months)
    assert all(ours[m]["over_contract_ntd"] > 0 for m in summer_months)
    assert all(ours[m]["over_contract_ntd"] == 0 for m in (1, 2, 12))
    assert all(ours[m]["pf_adjust_ntd"] < 0 for m in ours)
    print({m: round(b["total_ntd"]) for m, b in ours.items()})


def test_the_tou_periods_differ_visibly(year):
    """Summer weekdays: the 16:00-22:00 peak period's mean demand above the night's
    off-peak; a Saturday's energy between a weekday's and a Sunday's, all year."""
    cfg, influx = year
    site = cfg.sites[0]
    assert site.tariff is not None
    tf = TariffFile(site.tariff.plan, site.tariff.industry)
    rows = sorted(stored_meter(influx), key=lambda r: r["time"])
    demand: dict[tuple[str, str], list[float]] = defaultdict(list)
    day_kwh: dict[date, float] = defaultdict(float)
    for a, b in itertools.pairwise(rows):
        t = datetime.fromtimestamp(a["time"] / 1000, TZ)
        if t.year != YEAR:
            continue
        kwh = (b["import_energy_wh"] - a["import_energy_wh"]) / 1000
        day_kwh[t.date()] += kwh
        if tf.is_summer(t.date()):
            demand[(tf.day_kind(t.date()), tf.period(t))].append(kwh / 0.25)

    def mean(xs):
        return sum(xs) / len(xs)

    peak, semi = mean(demand[("weekday", "peak")]), mean(demand[("weekday", "semi_peak")])
    off = mean(demand[("weekday", "off_peak")])
    sat_semi = mean(demand[("saturday", "sat_semi_peak")])
    sunday = mean(demand[("off_peak", "off_peak")])
    print(
        f"summer mean kW: peak {peak:.1f} semi {semi:.1f} off {off:.1f} "
        f"sat-semi {sat_semi:.1f} sunday {sunday:.1f}"
    )
    assert peak > 1.3 * off and semi > peak
    assert semi > sat_semi > 1.2 * sunday
    # ordinary weeks: no day off in the government's calendar or Taipower's
    days_off = set(holidays.country_holidays("TW", years=YEAR)) | tf.off_peak_days
    by_kind: dict[str, list[float]] = defaultdict(list)
    for d, kwh in day_kwh.items():
        monday = d - timedelta(days=d.weekday())
        week = [monday + timedelta(days=k) for k in range(7)]
        if any(x in days_off or x.year != YEAR for x in week):
            continue
        by_kind["weekday" if d.weekday() < 5 else ("saturday", "sunday")[d.weekday() - 5]].append(
            kwh
        )
    weekday, saturday, sunday_kwh = (mean(by_kind[k]) for k in ("weekday", "saturday", "sunday"))
    print(f"mean kWh a day: weekday {weekday:.0f} saturday {saturday:.0f} sunday {sunday_kwh:.0f}")
    assert weekday > 1.2 * saturday and saturday > 1.1 * sunday_kwh
