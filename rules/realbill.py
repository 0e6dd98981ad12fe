"""The rebuilt bill against the real one: per billing period, the kWh and NT$ rebuilt
from the main meters (``rules/bill.site_bill``) against the figures Taipower billed
(manual records ``electricity_bill_kwh`` and ``electricity_bill_ntd`` of the bill month),
and when they differ by more than the site's ``tariff.bill_difference_share``, the
likely cause:

- ``missing_data``: the period's 15-minute data is incomplete (completeness < 1: gaps,
  a silent meter) and the kWh differ, or there is no meter data at all;
- ``meter_coverage``: the data is complete but the rebuilt kWh are below the billed ones:
  the main meters do not cover the whole supply (a feeder, a sub-board before the meter);
- ``tariff``: the kWh agree but the NT$ differ (an edition missing or wrong, a contract or
  option that differs from the bill's), or no tariff edition covers the period (NoTariff);
- ``period``: the billing period is unknown (the previous meter-reading date is not
  recorded) or the reading dates make no monthly bill;
- ``unexplained``: the data is complete and the rebuilt kWh are above the billed ones
  (check the meter-reading dates and the meter's CT ratio).

The rebuilt figures come from ``site_bill`` itself rather than the stored ``bill_month``
point: that point is only as fresh as the last rules pass (the report, the CLI and a
test would otherwise read a stale or missing copy), and a period from meter-reading
dates is then always the period asked for.  The rules engine writes each check as a
``bill_check`` point (:func:`check_lines`), which the ``bill_difference`` alert reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from foursave.core.config import Config, Site
from foursave.core.influx import InfluxClient
from foursave.core.periods import ZoneLike, day_start_ms, zone
from foursave.core.reading import to_line
from foursave.rules.bill import (
    BillingPeriodError,
    NoMeterData,
    billing_periods,
    site_bill,
)
from foursave.rules.records import RecordStore
from foursave.rules.tariff import Bill, NoTariff, Tariffs

# cause -> code in the bill_check point (InfluxQL has no string aggregates worth using)
CAUSES = ("missing_data", "meter_coverage", "tariff", "period", "unexplained")
CAUSE_TEXT = {
    "missing_data": "missing meter data (gaps or a silent main meter)",
    "meter_coverage": "the main meters do not cover the whole supply (rebuilt kWh below billed)",
    "tariff": "a tariff edition missing or wrong (kWh agree, NT$ differ)",
    "period": "the billing period is unknown or wrong (meter-reading dates)",
    "unexplained": "rebuilt kWh above billed (check the meter-reading dates and CT ratio)",
}


@dataclass(frozen=True)
class BillCheck:
    site: str
    month: str  # the bill month "2025-07" (of its meter reading)
    start: date | None  # billing period, local days [start, end); None: unknown
    end: date | None
    rebuilt_kwh: float | None
    billed_kwh: float | None
    rebuilt_ntd: float | None
    billed_ntd: float | None
    completeness: float | None
    limit_share: float  # the site's tariff.bill_difference_share
    cause: str | None  # a name in CAUSES; None: within the limit
    detail: str  # in words (English): the figures and the cause

    @property
    def kwh_diff_share(self) -> float | None:
        return _share(self.rebuilt_kwh, self.billed_kwh)

    @property
    def ntd_diff_share(self) -> float | None:
        return _share(self.rebuilt_ntd, self.billed_ntd)

    @property
    def exceeds(self) -> bool:
        return self.cause is not None


def _share(rebuilt: float | None, billed: float | None) -> float | None:
    if rebuilt is None or billed is None or billed == 0:
        return None
    return (rebuilt - billed) / billed


def _off(rebuilt: float, billed: float | None, limit_share: float) -> bool:
    """Rebuilt off billed by more than ``limit_share`` of it (a bill of 0: any use)."""
    if billed is None:
        return False
    if billed == 0:
        return rebuilt != 0
    return abs(rebuilt - billed) / billed > limit_share


def likely_cause(
    rebuilt_kwh: float,
    billed_kwh: float | None,
    rebuilt_ntd: float,
    billed_ntd: float | None,
    completeness: float,
    limit_share: float,
) -> str | None:
    """The cause of a difference above ``limit_share`` (None: within it)."""
    kwh_off = _off(rebuilt_kwh, billed_kwh, limit_share)
    ntd_off = _off(rebuilt_ntd, billed_ntd, limit_share)
    incomplete = completeness < 1
    if kwh_off:
        if incomplete:
            return "missing_data"
        assert billed_kwh is not None
        return "meter_coverage" if rebuilt_kwh < billed_kwh else "unexplained"
    if ntd_off:
        # without a billed kWh the energy cannot be ruled out: incomplete data first
        return "missing_data" if incomplete and billed_kwh is None else "tariff"
    return None


def _fmt(v: float | None, unit: str) -> str:
    return "—" if v is None else f"{v:,.0f} {unit}"


def check(
    site: Site,
    bill_month: str,
    start: date | None,
    end: date | None,
    billed_kwh: float | None,
    billed_ntd: float | None,
    bill: Bill | None,
    failure: str | None = None,
    failure_cause: str | None = None,
) -> BillCheck:
    """One billing period's check from its rebuilt bill (or why there is none)."""
    limit = site.tariff.bill_difference_share if site.tariff else 0.02
    if bill is None:
        return BillCheck(
            site.id,
            bill_month,
            start,
            end,
            None,
            billed_kwh,
            None,
            billed_ntd,
            None,
            limit,
            failure_cause,
            f"bill {bill_month}: no rebuilt bill: {failure}; likely cause: "
            f"{CAUSE_TEXT[failure_cause or 'unexplained']}",
        )
    cause = likely_cause(
        bill.total_kwh, billed_kwh, bill.total_ntd, billed_ntd, bill.completeness, limit
    )
    c = BillCheck(
        site.id,
        bill_month,
        start,
        end,
        bill.total_kwh,
        billed_kwh,
        bill.total_ntd,
        billed_ntd,
        bill.completeness,
        limit,
        cause,
        "",
    )
    last = bill.end - timedelta(days=1)
    words = (
        f"bill {bill_month} ({bill.start}..{last}): rebuilt {_fmt(bill.total_kwh, 'kWh')} / "
        f"billed {_fmt(billed_kwh, 'kWh')}"
        + (f" ({c.kwh_diff_share:+.1%})" if c.kwh_diff_share is not None else "")
        + f", rebuilt NT$ {bill.total_ntd:,.0f} / billed "
        + ("—" if billed_ntd is None else f"NT$ {billed_ntd:,.0f}")
        + (f" ({c.ntd_diff_share:+.1%})" if c.ntd_diff_share is not None else "")
        + f", data completeness {bill.completeness:.1%}"
        + (
            f"; above {limit:.0%}: likely cause: {CAUSE_TEXT[cause]}"
            if cause
            else f"; within {limit:.0%}"
        )
    )
    return BillCheck(**{**c.__dict__, "detail": words})


def bill_checks(
    config: Config,
    influx: InfluxClient,
    site: Site,
    y: int,
    m: int,
    records: RecordStore,
    tariffs: Tariffs | None = None,
) -> list[BillCheck]:
    """The checks of bill month (y, m): one per billing period, none when the month has
    no billed kWh or NT$ recorded (or the site no tariff)."""
    label = f"{y:04d}-{m:02d}"
    billed_kwh = records.totals(site.id, [label], "electricity_bill_kwh")
    billed_ntd = records.totals(site.id, [label], "electricity_bill_ntd")
    if site.tariff is None or (billed_kwh is None and billed_ntd is None):
        return []
    try:
        periods = billing_periods(site, y, m, records)
    except BillingPeriodError as exc:
        return [check(site, label, None, None, billed_kwh, billed_ntd, None, str(exc), "period")]
    if not periods:
        why = (
            f"the meter-reading date of {label} is recorded but not the previous month's "
            "(上期抄表日 on the bill): record it as electricity_bill_read_on"
        )
        return [check(site, label, None, None, billed_kwh, billed_ntd, None, why, "period")]
    out = []
    for start, end in periods:
        try:
            bill = site_bill(config, influx, site, start, end, records, tariffs=tariffs)
        except NoTariff as exc:
            out.append(
                check(site, label, start, end, billed_kwh, billed_ntd, None, str(exc), "tariff")
            )
            continue
        except NoMeterData as exc:
            out.append(
                check(
                    site, label, start, end, billed_kwh, billed_ntd, None, str(exc), "missing_data"
                )
            )
            continue
        out.append(check(site, label, start, end, billed_kwh, billed_ntd, bill))
    return out


def check_lines(checks: list[BillCheck], tz: ZoneLike) -> list[str]:
    """``bill_check`` points, at the bill month's first local day (a period from reading
    dates starts in the month before; its bounds are fields ``start_ms``/``end_ms``).
    ``exceeds``, ``cause_code`` (0: within, else 1 + its index in CAUSES), ``month`` and
    ``detail`` are written every time; the figures only when known."""
    z = zone(tz)
    lines = []
    for c in checks:
        fields: dict[str, float | int | bool] = {
            "exceeds": c.exceeds,
            "cause_code": CAUSES.index(c.cause) + 1 if c.cause else 0,
            "limit_share": c.limit_share,
        }
        for k in ("rebuilt_kwh", "billed_kwh", "rebuilt_ntd", "billed_ntd", "completeness"):
            v = getattr(c, k)
            if v is not None:
                fields[k] = float(v)
        for k in ("kwh_diff_share", "ntd_diff_share"):
            v = getattr(c, k)
            if v is not None:
                fields[k] = float(v)
        if c.start is not None and c.end is not None:
            fields["start_ms"] = day_start_ms(c.start, z)
            fields["end_ms"] = day_start_ms(c.end, z)
        first = date(int(c.month[:4]), int(c.month[5:]), 1)
        head, ts = to_line("bill_check", {"site": c.site}, fields, day_start_ms(first, z)).rsplit(
            " ", 1
        )
        text = c.detail.replace("\\", "\\\\").replace('"', '\\"')
        lines.append(f'{head},month="{c.month}",detail="{text}" {ts}')
    return lines
