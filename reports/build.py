"""From the rules engine's ledger to a :class:`ReportData`, and the freezing rule.

The numbers come from :class:`rules.ledger.Ledger` — the same code, data and records
the rules engine uses for the ``ledger`` measurement — and PV performance from
:func:`rules.pv.pv_days`, so a report and the engine cannot disagree.

Reproducibility: a period is *closed* ``services.api.close_after_days`` after it ends.
The first report of a closed period is stored as revision 1; later requests get the
stored numbers, byte for byte.  If data that arrived since would change a number, the
report says so (``later_data_note``) but keeps its numbers until someone recomputes it
with a reason, which issues the next revision and prints the reason on it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, replace
from datetime import UTC, date, datetime, timedelta

from foursave.core.clock import ManualClock
from foursave.core.config import Config
from foursave.core.influx import InfluxClient
from foursave.core.periods import Period, local_date, month, months_between, year, zone
from foursave.reports.model import (
    ITEMS,
    Adjustment,
    BillRow,
    ContractRow,
    ItemRow,
    MonthBar,
    PvRow,
    PvValueRow,
    ReportData,
    SiteInfo,
)
from foursave.reports.store import ReportStore
from foursave.rules import items as catalogue
from foursave.rules.bill import BillingPeriodError, NoMeterData, billing_periods
from foursave.rules.contract import TooFewMonths, advise, load_months
from foursave.rules.factors import FactorError, emission_factor
from foursave.rules.ledger import Ledger
from foursave.rules.notes import Note, note_text
from foursave.rules.pv import pv_days
from foursave.rules.pvvalue import pv_source, site_pv_value
from foursave.rules.records import RecordStore
from foursave.rules.rows import METHOD_VERSION, LedgerRow
from foursave.rules.targets import target_of
from foursave.rules.tariff import NoTariff, Tariffs, load_tariffs

# The safety margin of the annual report's contract advice: none.  The site's
# configuration has no margin setting, and the report shows the plain optimum of the
# year it covers together with the months that optimum would have gone over, which is
# what a margin would be chosen from (``foursave contract --margin-pct`` tries others).
CONTRACT_MARGIN_PCT = 0.0
# the optional sections a report computed now carries (ReportData.sections)
SECTIONS = ("contracts", "pv_value")

BUILDS = [0]  # reports built in this process (the cache's tests count them)


class ReportUnchanged(Exception):
    """A recomputation was asked for but no number would change."""


def period_of(y: int, m: int | None) -> Period:
    if not 2000 <= y <= 2100:
        raise ValueError(f"year {y} is outside 2000..2100")
    if m is not None and not 1 <= m <= 12:
        raise ValueError(f"month {m} is not 1..12")
    return year(y) if m is None else month(y, m)


def _item(r: LedgerRow) -> ItemRow:
    target = target_of(catalogue.item(r.item).target, r.baseline, r.target_rate)
    return ItemRow(
        site=r.site,
        item=r.item,
        period=r.period,
        unit=r.unit,
        actual=r.actual,
        baseline=r.baseline,
        baseline_rule=r.baseline_rule,
        target_rate=r.target_rate,
        target=target,
        savings_rate=r.savings_rate,
        met=r.met,
        co2e_kg=r.co2e_kg,
        completeness=r.completeness,
        adjustments=r.adjustments,
        details=dict(r.details),
        notes=tuple(r.notes),
    )


def _pv(
    config: Config, influx: InfluxClient, p: Period, rows: list[ItemRow], now: datetime
) -> list[PvRow]:
    days = pv_days(config, influx, p.start, p.end, ManualClock(now.timestamp()))
    out = []
    avoided = {r.site: r.details.get("pv_co2e_avoided_kg") for r in rows if r.item == "electricity"}
    for site in config.sites:
        mine = [d for d in days if d.site == site.id]
        if not mine:
            continue
        p0 = {d.device: d.p0_kwp for d in mine}
        energy = sum(d.e_ac_kwh for d in mine)
        judged = [d for d in mine if d.pr is not None and d.y_r is not None]
        ref = sum(d.p0_kwp * d.y_r for d in judged if d.y_r is not None)
        y_r = [d.y_r for d in mine if d.y_r is not None]
        avail = [d.availability for d in mine if d.availability is not None]
        out.append(
            PvRow(
                site=site.id,
                energy_kwh=energy,
                specific_yield_kwh_kwp=energy / sum(p0.values()) if p0 else None,
                # per inverter-day Y_r averaged over inverters, summed over days
                reference_yield_h=sum(y_r) / len(p0) if y_r else None,
                performance_ratio=sum(d.e_ac_kwh for d in judged) / ref if ref > 0 else None,
                availability=sum(avail) / len(avail) if avail else None,
                co2e_avoided_kg=avoided.get(site.id),
            )
        )
    return out


def _bills(ledger: Ledger, config: Config, p: Period) -> list[BillRow]:
    """Rebuilt versus billed per billing period of the months of ``p`` with a recorded
    Taipower bill (rules/realbill.py through the ledger)."""
    out = []
    for site in config.sites:
        for c in ledger.bill_checks(site, p):
            out.append(
                BillRow(
                    site=c.site,
                    month=c.month,
                    start=None if c.start is None else c.start.isoformat(),
                    last=None if c.end is None else (c.end - timedelta(days=1)).isoformat(),
                    rebuilt_kwh=c.rebuilt_kwh,
                    billed_kwh=c.billed_kwh,
                    kwh_diff_share=c.kwh_diff_share,
                    rebuilt_ntd=c.rebuilt_ntd,
                    billed_ntd=c.billed_ntd,
                    ntd_diff_share=c.ntd_diff_share,
                    completeness=c.completeness,
                    limit_share=c.limit_share,
                    cause=c.cause,
                )
            )
    return out


def _no_contract(site: str, reason: str, detail: str, months: tuple[str, ...] = ()) -> ContractRow:
    return ContractRow(
        site, months, CONTRACT_MARGIN_PCT, None, {}, {}, None, None, None, None, (), None, {},
        None, None, None, None, None, reason, detail,
    )  # fmt: skip


def _contracts(ledger: Ledger, config: Config, y: int, t: Tariffs) -> list[ContractRow]:
    """The contract capacity advice per site over the 12 billing months of year ``y``
    (``rules/contract.advise``, ending December); one explaining row for a site it cannot
    advise (no tariff, a month without main-meter data or without a tariff edition).
    The months are read one at a time (``load_months`` of one month each: the same reads
    ``advise`` makes) so the row can name the months that have data."""
    out = []
    for site in config.sites:
        if site.tariff is None:
            out.append(_no_contract(site.id, "no_tariff", f"site {site.id!r} has no 'tariff'"))
            continue
        months, missing = [], []
        try:
            for m in range(1, 13):
                try:
                    months += load_months(config, ledger.influx, site, (y, m), 1, ledger.records)
                except TooFewMonths:
                    missing.append(f"{y:04d}-{m:02d}")
            if missing:
                raise TooFewMonths(
                    f"no main-meter data in the billing months {', '.join(missing)} of {y}"
                )
            a = advise(
                config, ledger.influx, site, (y, 12), 12, CONTRACT_MARGIN_PCT, ledger.records,
                tariffs=t, months=months,
            )  # fmt: skip
        except TooFewMonths as exc:
            out.append(
                _no_contract(site.id, "too_few_months", str(exc), tuple(x.label for x in months))
            )
            continue
        except NoTariff as exc:
            out.append(_no_contract(site.id, "no_edition", str(exc)))
            continue
        except (BillingPeriodError, NoMeterData) as exc:
            reason = "billing_period" if isinstance(exc, BillingPeriodError) else "too_few_months"
            out.append(_no_contract(site.id, reason, str(exc)))
            continue
        r, o = a.current, a.other
        out.append(
            ContractRow(
                site=site.id,
                months=a.months,
                margin_pct=a.margin_pct,
                plan=a.plan,
                current_kw=dict(r.current_kw),
                recommended_kw=dict(r.recommended_kw),
                current_annual_ntd=r.current_annual_ntd,
                recommended_annual_ntd=r.recommended_annual_ntd,
                annual_saving_ntd=r.annual_saving_ntd,
                raise_cost_ntd=r.raise_cost_ntd,
                months_over=tuple(r.months_over),
                other_plan=None if o is None else o.plan,
                other_recommended_kw={} if o is None else dict(o.recommended_kw),
                plan_bills_ntd=r.bills_total_ntd,
                other_bills_ntd=None if o is None else o.bills_total_ntd,
                cheaper_plan=a.cheaper_plan,
                cheaper_by_ntd=None if o is None else abs(r.bills_total_ntd - o.bills_total_ntd),
                confidence=a.confidence,
            )
        )
    return out


def _no_pv_value(
    site: str, month: str, reason: str, detail: str, period: tuple[date, date] | None = None
) -> PvValueRow:
    start = last = None
    if period is not None:
        start, last = period[0].isoformat(), (period[1] - timedelta(days=1)).isoformat()
    return PvValueRow(
        site, month, start, last, None, None, None, None, {}, {}, None, {}, {}, {}, None, None,
        reason, detail,
    )  # fmt: skip


def _pv_value(
    ledger: Ledger, config: Config, p: Period, t: Tariffs, now: datetime
) -> list[PvValueRow]:
    """PV value per site with PV and billing period of the months of ``p``, computed by
    ``rules/pvvalue.site_pv_value`` from the stored 15-minute data, as the ledger's
    numbers are computed rather than read from the ``ledger`` measurement: the report
    then shows what the data says now, whether or not the rules pass has written its
    ``pv_value_month`` since (a late record or a corrected meter reading included), and
    a frozen report's later-data check sees a change in it.  A site with PV but no
    tariff gets one explaining row; a billing period that cannot be valued, one each
    (none for the periods that begin after ``now``: the rest of an open year)."""
    out = []
    for site in config.sites:
        if pv_source(config, site) is None:
            continue
        today = local_date(now.timestamp() * 1000, site.timezone)
        if site.tariff is None:
            detail = f"site {site.id!r} has no 'tariff': its PV cannot be valued"
            out.append(_no_pv_value(site.id, p.label, "no_tariff", detail))
            continue
        for label in p.months:
            y, m = int(label[:4]), int(label[5:])
            try:
                periods = billing_periods(site, y, m, ledger.records)
            except BillingPeriodError as exc:
                out.append(_no_pv_value(site.id, label, "billing_period", str(exc)))
                continue
            for b in (b for b in periods if b[0] <= today):
                try:
                    v = site_pv_value(config, ledger.influx, site, *b, ledger.records, tariffs=t)
                except NoTariff as exc:
                    out.append(_no_pv_value(site.id, label, "no_edition", str(exc), b))
                    continue
                except NoMeterData as exc:
                    out.append(_no_pv_value(site.id, label, "no_data", str(exc), b))
                    continue
                if v is None:
                    continue
                out.append(
                    PvValueRow(
                        site=site.id,
                        month=label,
                        start=v.start.isoformat(),
                        last=(v.end - timedelta(days=1)).isoformat(),
                        plan=v.plan,
                        generation_kwh=v.generation_kwh,
                        exported_kwh=v.exported_kwh,
                        unvalued_kwh=v.unvalued_kwh,
                        consumed_kwh=dict(v.consumed_kwh),
                        value_ntd=dict(v.value_ntd),
                        value_total_ntd=v.total_value_ntd,
                        demand_kw=dict(v.demand_kw),
                        demand_without_pv_kw=dict(v.demand_without_pv_kw),
                        demand_reduction_kw=v.demand_reduction_kw(),
                        over_contract_saved_ntd=v.over_contract_saved_ntd,
                        bill_saved_ntd=v.bill_saved_ntd,
                    )
                )
    return out


def _factors(on: date) -> list[str]:
    out = []
    for name in ("grid_electricity", "tap_water", "gasoline", "diesel"):
        try:
            f = emission_factor(name, on)
        except FactorError as exc:
            out.append(f"{name}: {exc}")
            continue
        out.append(
            f"{name}: {f.value} {f.unit} ({f.basis}; {f.source}; confidence {f.confidence}"
            + ("; provisional" if f.provisional else "")
            + ")"
        )
    return out


def fingerprint(data: ReportData) -> str:
    numbers = {k: asdict(data)[k] for k in ("items", "monthly", "pv", "adjustments")}
    if data.bills:  # only then: a report without real bills keeps the fingerprint it had
        numbers["bills"] = asdict(data)["bills"]
    for section in SECTIONS:  # the same: a report without them keeps its fingerprint
        if getattr(data, section):
            numbers[section] = asdict(data)[section]
    # notes count in their English words, as when they were plain text: a revision
    # frozen before notes were structured keeps its fingerprint
    for item in numbers["items"]:
        item["notes"] = [note_text(Note.load(n)) for n in item["notes"]]
    blob = json.dumps(numbers, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def build_report(
    config: Config,
    influx: InfluxClient,
    records: RecordStore,
    y: int,
    m: int | None,
    now: datetime,
) -> ReportData:
    """The report as the data stands now (not stored: see :func:`report_for`)."""
    BUILDS[0] += 1
    p = period_of(y, m)
    tariffs = load_tariffs()
    ledger = Ledger(config, influx, records, ManualClock(now.timestamp()))
    base_years = [st.ledger.base_year for st in config.sites]
    ledger.load(date(min([y - 1, *base_years]), 1, 1), p.end)
    items = [_item(r) for r in ledger.rows([p])]
    months = months_between(date(y, 1, 1), p.end)
    monthly = [
        MonthBar(r.site, r.item, r.period, r.actual, r.baseline, i.target)
        for r, i in ((r, _item(r)) for r in ledger.rows(months))
        if catalogue.item(r.item).target == "reduction"  # a rate (paper) has no bars
    ]
    adjustments = [
        Adjustment(
            record_id=r.id,
            site=r.site,
            item=r.item or "",
            period=r.period,
            amount=r.value,
            unit=catalogue.item(r.item).adjustment_unit if r.item in catalogue.NAMES else "",
            reason=r.reason or "",
            approved_by=r.approved_by or "",
            approved_on=str(r.approved_on or ""),
        )
        for site in config.sites
        for r in records.current(site.id, p.months)
        if r.kind == "adjustment"
    ]
    sites = [
        SiteInfo(
            s.id,
            s.name,
            s.name_en,
            s.floor_area_m2,
            s.ledger.parking_area_m2,
            s.pv_capacity_kwp,
            s.ledger.preset,
        )
        for s in config.sites
    ]
    data = ReportData(
        year=y,
        month=m,
        period=p.label,
        method_version=METHOD_VERSION,
        generated_at=now.isoformat(timespec="seconds"),
        revision=0,
        closed=False,
        recomputed_reason=None,
        fingerprint="",
        sites=tuple(sites),
        items=tuple(sorted(items, key=lambda r: (r.site, ITEMS.index(r.item)))),
        monthly=tuple(monthly),
        pv=tuple(_pv(config, influx, p, items, now)),
        adjustments=tuple(adjustments),
        factors=tuple(_factors(p.start)),
        bills=tuple(_bills(ledger, config, p)),
        contracts=tuple(_contracts(ledger, config, y, tariffs) if m is None else ()),
        pv_value=tuple(_pv_value(ledger, config, p, tariffs, now)),
        sections=SECTIONS,
    )
    return replace(data, fingerprint=fingerprint(data))


def as_issued(fresh: ReportData, issued: ReportData) -> ReportData:
    """``fresh`` without the optional sections ``issued`` was computed without (a report
    frozen before they existed), so that adding a section to the code is not taken for
    newer data changing a frozen report; its fingerprint recomputed."""
    dropped = {s: () for s in fresh.sections if s not in issued.sections}
    if not dropped:
        return fresh
    kept = replace(fresh, **dropped, sections=issued.sections)  # type: ignore[arg-type]
    return replace(kept, fingerprint=fingerprint(kept))


def _changes(old: ReportData, new: ReportData, limit: int = 5) -> str:
    before = {(r.site, r.item): r.actual for r in old.items}
    out = []
    for r in new.items:
        a = before.get((r.site, r.item))
        if a != r.actual:
            out.append(
                f"{r.site} {r.item} {a if a is None else f'{a:,.6g}'} → "
                f"{r.actual if r.actual is None else f'{r.actual:,.6g}'}"
            )
    if not out:
        out.append("monthly, PV or adjustment figures")
    return "; ".join(out[:limit]) + (" …" if len(out) > limit else "")


def is_closed(p: Period, today: date, close_after_days: int) -> bool:
    return today >= p.end + timedelta(days=close_after_days)


def report_today(config: Config, p: Period, now: datetime) -> tuple[datetime, date, bool]:
    """``now`` in the sites' zone (UTC if they have several), the earliest local today
    and whether ``p`` is closed by then (see :func:`report_for`)."""
    zones = {s.timezone for s in config.sites}
    now = now.astimezone(zone(zones.pop()) if len(zones) == 1 else UTC)
    today = min(local_date(now.timestamp() * 1000, s.timezone) for s in config.sites)
    return now, today, is_closed(p, today, config.services.api.close_after_days)


def report_for(
    config: Config,
    influx: InfluxClient,
    records: RecordStore,
    store: ReportStore,
    y: int,
    m: int | None,
    now: datetime,
    recompute_reason: str | None = None,
    by: str = "",
) -> ReportData:
    """The report to hand out: frozen for a closed period, current for an open one.

    A report covers every site, and sites may keep different local dates: the period
    counts as closed once it is closed at every site (by the earliest local today),
    and ``generated_at`` is written in the sites' zone, or in UTC if they have several.
    """
    p = period_of(y, m)
    now, _, closed = report_today(config, p, now)
    fresh = build_report(config, influx, records, y, m, now)
    if not closed:
        if recompute_reason:
            raise ReportUnchanged(
                f"{p.label} is still open: its report is recomputed on every request"
            )
        return fresh
    latest = store.latest(p.label)
    if recompute_reason:
        if latest is not None and latest.fingerprint == fresh.fingerprint:
            raise ReportUnchanged(
                f"recomputing {p.label} changes no number: revision {latest.revision} stands"
            )
        rev = (latest.revision if latest else 0) + 1
        why = f"{recompute_reason} (by {by})" if by else recompute_reason
        if latest is not None:
            why += f"; replaces revision {latest.revision}: {_changes(latest, fresh)}"
        new = replace(fresh, revision=rev, closed=True, recomputed_reason=why)
        store.save(new)
        return new
    if latest is None:
        new = replace(fresh, revision=1, closed=True)
        store.save(new)
        return new
    seen = as_issued(fresh, latest)  # only the sections the issued report has
    if latest.fingerprint != seen.fingerprint:
        return replace(
            latest,
            later_data_note=(
                f"data or records changed after this report was issued ({latest.generated_at}) "
                f"would change: {_changes(latest, seen)}. The report stays as issued until "
                "it is recomputed with a reason (a new revision)."
            ),
        )
    return latest
