"""The rules engine's derived results: four-saving ledger, PV performance, demand.

These read what ``foursave rules`` wrote to InfluxDB (``ledger``, ``ledger_daily``,
``pv_daily``, ``demand_month``, ``demand``), so the API shows exactly the engine's
numbers and never recomputes them."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel

from foursave.api.deps import TOO_MANY, Reader, State, Throttled
from foursave.api.routes.sites import _site
from foursave.core.influxql import ALL, column, eq, select, time_range
from foursave.core.periods import day_start_ms, local_date
from foursave.core.periods import month as month_period
from foursave.core.periods import zone as zone_of
from foursave.rules.items import order

router = APIRouter(prefix="/api/v1", tags=["four-saving results"])

Year = Annotated[int, Query(ge=2000, le=2100)]
Month = Annotated[int | None, Query(ge=1, le=12)]


class LedgerEntry(BaseModel):
    site: str
    item: str
    period: str
    method: str | None
    values: dict[str, float | bool]  # actual, baseline, savings_rate, target, met, co2e_kg ...


class PvDayOut(BaseModel):
    site: str
    device: str
    day: date
    values: dict[str, float | bool]  # e_ac_kwh, y_f, y_r, pr, pr_temp, availability ...


class DemandOut(BaseModel):
    site: str
    month: str
    values: dict[str, float]  # max_demand_kw, max_at_ms, contract_kw, surcharge_ntd
    blocks: list[tuple[int, float]]  # 15-minute block start [epoch ms], demand [kW]


def _values(row: dict[str, Any], skip: set[str]) -> dict[str, float | bool]:
    return {k: v for k, v in row.items() if k not in skip and v is not None}


def _local_ms(day: date, tz: str) -> int:
    """Epoch ms at which local date ``day`` begins in the site's zone ``tz``."""
    return day_start_ms(day, tz)


@router.get("/ledger")
def ledger(
    who: Reader, state: State, site: str, year: Year, month: Month = None
) -> list[LedgerEntry]:
    """The four-saving ledger of a site for a year or a month, per item."""
    _site(state, site)
    period = f"{year:04d}" if month is None else f"{year:04d}-{month:02d}"
    rows = state.influx.rows(
        select(ALL, "ledger", where=[eq("site", site), eq("period", period)], newest_first=True)
    )
    seen: dict[str, LedgerEntry] = {}
    tags = {"time", "site", "item", "period", "granularity", "method"}
    for r in rows:  # one point per item (rewritten in place by each engine pass)
        seen.setdefault(
            r["item"],
            LedgerEntry(
                site=site,
                item=r["item"],
                period=period,
                method=r.get("method"),
                values=_values(r, tags),
            ),
        )
    return sorted(seen.values(), key=lambda e: order(e.item))  # catalogue order


@router.get("/ledger/daily")
def ledger_daily(
    who: Reader, state: State, site: str, start: date, end: date
) -> list[dict[str, Any]]:
    """Per local day: the quantities behind the ledger (electricity, grid import and
    export, PV generation, water, completeness)."""
    rows, zone = _days(state, "ledger_daily", site, start, end)
    return [
        {
            "day": local_date(r["time"], zone).isoformat(),
            **_values(r, {"time", "site", "method"}),
        }
        for r in rows
    ]


@router.get("/pv")
def pv(who: Reader, state: State, site: str, start: date, end: date) -> list[PvDayOut]:
    """Daily PV performance per inverter (IEC 61724-1 yields, PR, availability)."""
    rows, zone = _days(state, "pv_daily", site, start, end)
    return [
        PvDayOut(
            site=site,
            device=r["device"],
            day=local_date(r["time"], zone),
            values=_values(r, {"time", "site", "device"}),
        )
        for r in rows
    ]


@router.get("/demand")
def demand(
    who: Reader, state: State, site: str, year: Year, month: Annotated[int, Query(ge=1, le=12)]
) -> DemandOut:
    """A month's maximum 15-minute demand, its surcharge, and every block."""
    s = _site(state, site)
    p = month_period(year, month)
    label, start, end = p.label, p.start, p.end
    m = state.influx.rows(
        select(
            ALL,
            "demand_month",
            where=[eq("site", site), eq("month", label)],
            newest_first=True,
            limit=1,
        )
    )
    blocks = state.influx.rows(
        select(
            column("demand_kw"),
            "demand",
            where=[
                eq("site", site),
                time_range(_local_ms(start, s.timezone), _local_ms(end, s.timezone)),
            ],
        )
    )
    return DemandOut(
        site=site,
        month=label,
        values=_values(m[0], {"time", "site", "month"}) if m else {},
        blocks=[(r["time"], r["demand_kw"]) for r in blocks if r["demand_kw"] is not None],
    )


def _days(state, measurement: str, site: str, start: date, end: date):
    """A daily measurement's rows over local days [start, end), and the site's zone."""
    s = _site(state, site)
    _range(start, end, 400)
    rows = state.influx.rows(
        select(
            ALL,
            measurement,
            where=[
                eq("site", site),
                time_range(_local_ms(start, s.timezone), _local_ms(end, s.timezone)),
            ],
        )
    )
    return rows, zone_of(s.timezone)


def _range(start: date, end: date, max_days: int) -> None:
    if end <= start:
        raise HTTPException(422, f"end ({end}) must be after start ({start})")
    if end - start > timedelta(days=max_days):
        raise HTTPException(413, f"{(end - start).days} days asked; at most {max_days} per request")


# ---------------------------------------------------------------------- contract capacity


class ContractPlanOut(BaseModel):
    plan: str
    current_kw: dict[str, float]
    recommended_kw: dict[str, float]
    current_annual_ntd: float  # basic + over-contract per year at the current contracts
    recommended_annual_ntd: float  # the same at the recommendation, raising cost included
    raise_cost_ntd: float
    annual_saving_ntd: float
    months_over: list[str]
    bills_total_ntd: float  # whole bills over the months at the recommendation
    current_bills_total_ntd: float
    pairs: int
    pairs_searched: int
    candidates: int


class ContractOut(BaseModel):
    site: str
    months: list[str]
    margin_pct: float
    plan: str
    raise_fee_ntd_per_kw_month: float
    confidence: str
    current: ContractPlanOut  # the site's plan
    other: ContractPlanOut | None  # the other plan at its own optimum
    cheaper_plan: str
    notes: list[str]


@router.get("/sites/{site_id}/contract", responses=TOO_MANY)
def contract(
    who: Reader,
    state: State,
    _: Throttled,
    site_id: str,
    months: Annotated[int, Query(description="12 or 24")] = 12,
    margin_pct: Annotated[float, Query(ge=0, le=100)] = 0.0,
    until: Annotated[str | None, Query(pattern=r"^20\d{2}-(0[1-9]|1[0-2])$")] = None,
) -> ContractOut:
    """The contract capacity that would have minimised the site's bills over the last 12
    or 24 billing months (rules/contract.py), and the plan comparison.  ``until``: the last
    billing month (default: the last complete one at the site)."""
    from datetime import datetime

    from foursave.rules.bill import NoMeterData
    from foursave.rules.contract import TooFewMonths, advice_dict, advise, last_complete_month
    from foursave.rules.tariff import NoTariff

    s = _site(state, site_id)
    if months not in (12, 24):
        raise HTTPException(422, f"months={months}: the optimiser uses 12 or 24 billing months")
    if until is None:
        end = last_complete_month(
            datetime.fromtimestamp(state.clock.time(), zone_of(s.timezone)).date()
        )
    else:
        end = (int(until[:4]), int(until[5:]))
    try:
        a = advise(state.config, state.influx, s, end, months, margin_pct, state.records)
    except (NoTariff, NoMeterData, TooFewMonths, ValueError) as exc:
        raise HTTPException(422, str(exc)) from None
    return ContractOut.model_validate(advice_dict(a))
