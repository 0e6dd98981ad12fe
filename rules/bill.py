"""The monthly Taipower bill of a site, rebuilt from its main meters' 15-minute data.

``site_bill`` reads the main meters' import counters per 15-minute block (the first
reading of each block, as for demand: ``rules/demand.py``), the month's power factor, and
hands them to ``rules/tariff.compute_bill``.  ``bill_lines`` writes the ``bill_month``
point the rules engine stores per site and billing month; ``bill_text`` prints the bill
line by line the way Taipower's bill reads (``foursave bill``).

Power factor, in this order: the bill's own figure when recorded (manual record
``electricity_bill_pf_pct``), the main meters' active and reactive power (kWh / √(kWh² +
kvarh²) over the period), the mean of their power-factor readings, or none measured (no
adjustment, said on the bill).
"""

from __future__ import annotations

import calendar
import itertools
import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, timedelta

from foursave.core.config import Config, Site, SiteTariff
from foursave.core.influx import InfluxClient
from foursave.core.influxql import agg, every, select, tag_in, time_range
from foursave.core.periods import ZoneLike, add_months, bounds_ms, day_start_ms, month, zone
from foursave.core.reading import to_line
from foursave.rules.records import RecordStore
from foursave.rules.tariff import (
    BLOCK_MS,
    CONTRACT_NAMES,
    PERIOD_NAMES,
    Bill,
    Gap,
    NoTariff,
    Tariffs,
    compute_bill,
    load_tariffs,
)


class NoMeterData(LookupError):
    """No main-meter reading in a billing period: nothing to bill."""


@dataclass(frozen=True)
class BillInputs:
    blocks_kwh: dict[int, float]
    gaps: tuple[Gap, ...]
    power_factor: float | None
    power_factor_source: str


def main_meters(config: Config, site: Site) -> list[str]:
    return [
        d.id for d in config.devices if d.site == site.id and d.kind == "meter" and d.role == "main"
    ]


def block_energies(
    influx: InfluxClient,
    devices: list[str],
    start_ms: int,
    end_ms: int,
    *,
    measurement: str = "meter",
    counter: str = "import_energy_wh",
) -> tuple[dict[int, float], list[Gap]]:
    """15-minute block energies [kWh] of [start_ms, end_ms), summed over ``devices``, and
    the energy the counters measured across gaps (``counter`` of ``measurement``: the
    main meters' import by default; rules/pvvalue.py reads export and PV production).  A block counts as measured when every
    device has its first reading in it and in the next block; the energy a device
    measured around a block another device missed goes with the gaps (energy, no demand)."""
    if not devices:
        return {}, []
    rows = influx.rows(
        select(
            agg("first", counter, "c"),
            measurement,
            where=[tag_in("device", devices), time_range(start_ms, end_ms + BLOCK_MS)],
            group_by=[every("15m"), "device"],
            fill="none",
        )
    )
    firsts: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for r in rows:
        if r["c"] is not None:
            firsts[r["device"]].append((r["time"], r["c"]))
    per_device: dict[str, dict[int, float]] = {}
    gaps: list[Gap] = []
    for dev in devices:
        series = sorted(firsts.get(dev, []))
        own: dict[int, float] = {}
        for (t0, c0), (t1, c1) in itertools.pairwise(series):
            if c1 < c0 or t0 >= end_ms:  # a counter reset: that energy is unknown
                continue
            kwh = (c1 - c0) / 1000
            if t1 == t0 + BLOCK_MS:
                own[t0] = kwh
            else:
                gaps.append(Gap(t0, min(t1, end_ms), kwh))
        per_device[dev] = own
    everyone = set.intersection(*(set(v) for v in per_device.values()))
    blocks = {ms: sum(per_device[d][ms] for d in devices) for ms in everyone if ms >= start_ms}
    for own in per_device.values():
        for ms, kwh in own.items():
            if ms not in everyone and start_ms <= ms < end_ms:
                gaps.append(Gap(ms, ms + BLOCK_MS, kwh))
    return blocks, gaps


def measured_power_factor(
    influx: InfluxClient, devices: list[str], start_ms: int, end_ms: int
) -> tuple[float | None, str]:
    if not devices:
        return None, "not measured"
    rows = influx.rows(
        select(
            [
                agg("mean", "active_power_w", "p"),
                agg("mean", "reactive_power_var", "q"),
                agg("mean", "power_factor", "pf"),
            ],
            "meter",
            where=[tag_in("device", devices), time_range(start_ms, end_ms)],
            group_by=["device"],
        )
    )
    by = {r["device"]: r for r in rows}
    if set(by) != set(devices):
        return None, "not measured (a main meter has no power readings)"
    p = sum(by[d]["p"] or 0.0 for d in devices)
    if p <= 0:
        return None, "not measured (no net import)"
    if all(by[d]["q"] is not None for d in devices):
        q = sum(by[d]["q"] for d in devices)
        return p / math.hypot(p, q), "main meters' active and reactive energy"
    if all(by[d]["pf"] is not None and by[d]["p"] for d in devices):
        pf = sum(abs(by[d]["pf"]) * by[d]["p"] for d in devices) / p
        return pf, "mean of the main meters' power-factor readings"
    return None, "not measured (the main meters give no reactive power or power factor)"


def _recorded_pf(records: RecordStore | None, site: str, last: date) -> float | None:
    """The bill's power factor; a bill belongs to the month of its last day (its meter
    reading), the calendar month or the month of ``electricity_bill_read_on``."""
    if records is None:
        return None
    v = records.totals(site, [f"{last:%Y-%m}"], "electricity_bill_pf_pct")
    return None if v is None else v / 100


def bill_inputs(
    config: Config,
    influx: InfluxClient,
    site: Site,
    start: date,
    end: date,
    records: RecordStore | None = None,
) -> BillInputs:
    devices = main_meters(config, site)
    start_ms, end_ms = bounds_ms(start, end, site.timezone)
    blocks, gaps = block_energies(influx, devices, start_ms, end_ms)
    pf = _recorded_pf(records, site.id, end - timedelta(days=1))
    if pf is not None:
        source = "the bill's power factor (manual record)"
    else:
        pf, source = measured_power_factor(influx, devices, start_ms, end_ms)
    return BillInputs(blocks, tuple(gaps), pf, source)


def site_tariff(site: Site) -> SiteTariff:
    if site.tariff is None:
        raise NoTariff(
            f"site {site.id!r} has no 'tariff' (plan and contracts_kw) in its configuration"
        )
    return site.tariff


def site_bill(
    config: Config,
    influx: InfluxClient,
    site: Site,
    start: date,
    end: date,
    records: RecordStore | None = None,
    *,
    plan: str | None = None,
    contracts_kw: dict[str, float] | None = None,
    tariffs: Tariffs | None = None,
    inputs: BillInputs | None = None,
    now_ms: int | None = None,
) -> Bill:
    """The bill of local days [start, end); provisional if ``now_ms`` is inside it.
    ``NoTariff`` (no edition, no tariff configured) or ``NoMeterData`` when it cannot be
    computed."""
    st = site_tariff(site)
    t = tariffs or load_tariffs()
    if plan is not None and plan != st.plan and contracts_kw is None:
        contracts_kw = equivalent_contracts(st, plan, t)
    x = inputs or bill_inputs(config, influx, site, start, end, records)
    if not x.blocks_kwh and not x.gaps:
        raise NoMeterData(
            f"no main-meter data for site {site.id!r} in {start}..{end - timedelta(days=1)}"
            + ("" if main_meters(config, site) else ": it has no meter with role 'main'")
        )
    return compute_bill(
        site.id,
        st,
        start,
        end,
        site.timezone,
        x.blocks_kwh,
        gaps=x.gaps,
        power_factor=x.power_factor,
        power_factor_source=x.power_factor_source,
        plan=plan,
        contracts_kw=contracts_kw,
        tariffs=t,
        now_ms=now_ms,
    )


def equivalent_contracts(st: SiteTariff, plan: str, t: Tariffs) -> dict[str, float]:
    """The site's contracts under the other plan: the semi-peak contract of 三段式 and the
    non-summer one of 二段式 stack in the same place (TARIFFS.md §4.3), the rest are the same."""
    swap = {"semi_peak": "non_summer", "non_summer": "semi_peak"}
    kinds = t.plan(plan).contracts
    out: dict[str, float] = {}
    for k, kw in st.contracts_kw.items():
        k2 = k if k in kinds else swap.get(k, k)
        if k2 in kinds:
            out[k2] = out.get(k2, 0.0) + kw
    return out


class BillingPeriodError(ValueError):
    """The recorded meter-reading dates do not make a monthly billing period."""


# a 高壓 bill covers one month between meter readings (TARIFFS.md §4.1): periods outside
# these lengths are a mistyped reading day, not a bill
BILLING_DAYS = (20, 40)


def read_dates(records: RecordStore | None, site: str, months: list[str]) -> dict[str, date]:
    """Meter-reading dates (records ``electricity_bill_read_on`` in force) by bill month."""
    if records is None:
        return {}
    out: dict[str, date] = {}
    for r in records.current(site, months):
        if r.kind == "electricity_bill_read_on":
            out[r.period] = date(int(r.period[:4]), int(r.period[5:]), int(r.value))
    return out


def _month_later(d: date) -> date:
    y, m = add_months(d.year, d.month, 1)
    return date(y, m, min(d.day, calendar.monthrange(y, m)[1]))


def billing_periods(
    site: Site, y: int, m: int, records: RecordStore | None = None
) -> list[tuple[date, date]]:
    """Billing periods of bill month (y, m), local days [start, end).

    A 高壓 bill runs from the day after one meter reading to the next reading's day
    (TARIFFS.md §4.1).  With the month's reading date recorded (``electricity_bill_read_on``)
    and the previous month's: [previous + 1 day, this + 1 day).  With only the previous
    month's: the next reading is expected a month after it (the running bill).  With the
    month's reading but not the previous one, the period's start is unknown: none (the
    previous reading date is printed on the bill as 上期抄表日: record it for the month
    before).  Without readings: the calendar month.  ``BillingPeriodError`` when the
    readings make no monthly bill (shorter than 20 or longer than 40 days)."""
    this_m, prev_m = f"{y:04d}-{m:02d}", "{:04d}-{:02d}".format(*add_months(y, m, -1))
    reads = read_dates(records, site.id, [this_m, prev_m])
    this, prev = reads.get(this_m), reads.get(prev_m)
    if this is None and prev is None:
        p = month(y, m)
        return [(p.start, p.end)]
    if this is None:
        assert prev is not None
        return [(prev + timedelta(days=1), _month_later(prev) + timedelta(days=1))]
    if prev is None:
        return []
    days = (this - prev).days
    lo, hi = BILLING_DAYS
    if not lo <= days <= hi:
        raise BillingPeriodError(
            f"site {site.id!r}: electricity_bill_read_on {prev_m} is {prev} and {this_m} is "
            f"{this}: "
            + (
                "the reading date goes backwards"
                if days <= 0
                else f"{days} days between meter readings, not a monthly bill ({lo}..{hi} days)"
            )
            + "; correct one of the two records"
        )
    return [(prev + timedelta(days=1), this + timedelta(days=1))]


def bill_lines(bill: Bill, tz: ZoneLike) -> list[str]:
    """The ``bill_month`` point, at the billing period's local start."""
    fields: dict[str, float | int] = {}
    for period, kwh in sorted(bill.energy_kwh.items()):
        fields[f"energy_kwh_{period}"] = kwh
    for period, kw in sorted(bill.max_demand_kw.items()):
        fields[f"max_demand_kw_{period}"] = kw
    fields.update(
        {
            "energy_kwh": bill.total_kwh,
            "basic_ntd": bill.basic_ntd,
            "energy_ntd": bill.energy_ntd,
            "over_contract_ntd": bill.over_contract_ntd,
            "pf_adjust_ntd": bill.pf_adjust_ntd,
            "coefficient": bill.coefficient,
            "total_ntd": bill.total_ntd,
            "completeness": bill.completeness,
            "unallocated_kwh": bill.unallocated_kwh,
            "days": bill.days,
            "provisional": bill.provisional,
        }
    )
    if bill.power_factor is not None:
        fields["power_factor"] = bill.power_factor
    tags = {"site": bill.site, "plan": bill.plan, "tariff": bill.tariff_tag}
    return [to_line("bill_month", tags, fields, day_start_ms(bill.start, zone(tz)))]


# ---------------------------------------------------------------------- the printed bill

_L = {
    "title": ("電費帳單（由電表資料重建）", "Electricity bill (rebuilt from meter data)"),
    "period": ("計費期間", "billing period"),
    "plan": ("電價", "plan"),
    "tariff": ("電價表", "tariff"),
    "contract": ("契約容量", "contract capacity"),
    "completeness": ("資料完整度", "data completeness"),
    "basic": ("基本電費", "basic charge"),
    "energy": ("流動電費", "energy charge"),
    "over": ("超約附加費", "over-contract charge"),
    "pf": ("功率因數調整", "power-factor adjustment"),
    "subtotal": ("小計", "subtotal"),
    "coefficient": ("電價調整係數", "price coefficient"),
    "total": ("應繳電費", "total"),
    "summer": ("夏月", "summer"),
    "non_summer": ("非夏月", "non-summer"),
    "shared": (
        "週六半尖峰及離峰契約超過經常與半尖峰契約半數部分",
        "Saturday + off-peak above half",
    ),
    "no_use": ("當月未用電：基本電費 50 %", "no use this month: basic charge at 50 %"),
    "days": ("日", "days"),
    "confidence": ("可信度", "confidence"),
    "max_kw": ("最高需量", "max kW"),
    "over_kw": ("超約 kW", "over kW"),
    "at": ("單價", "at"),
    "pf_base_basic_energy": ("(基本電費 + 流動電費)", "(basic + energy)"),
    "pf_base_basic": ("基本電費", "the basic charge"),
    "pf_base_total": ("(基本 + 流動 + 超約附加費)", "(basic + energy + over-contract)"),
    "note": ("註", "note"),
    "provisional": (
        "計費期間尚未結束：至今為止的帳單",
        "the billing period is still open: the bill so far",
    ),
    "blocks": ("15 分鐘區間", "15-minute blocks"),
    "missing": (
        "部分區間無資料：帳單可能偏低",
        "blocks without data: the bill may be low by about their share",
    ),
}


# where the power factor came from, in the committee's language
_PF_SOURCES_ZH = {
    "not measured": "未量測：不調整",
    "not measured (a main meter has no power readings)": "未量測（總表無功率讀值）：不調整",
    "not measured (no net import)": "未量測（無淨購電）：不調整",
    "not measured (the main meters give no reactive power or power factor)": (
        "未量測（總表無虛功率或功率因數讀值）：不調整"
    ),
    "main meters' active and reactive energy": "總表有效及無效電能",
    "mean of the main meters' power-factor readings": "總表功率因數讀值平均",
    "the bill's power factor (manual record)": "帳單所載功率因數（人工紀錄）",
}


def _pf_source(source: str, lang: str) -> str:
    return _PF_SOURCES_ZH.get(source, source) if lang == "zh-TW" else source


def _t(key: str, lang: str) -> str:
    zh, en = _L[key]
    return zh if lang == "zh-TW" else en


def _name(table: dict[str, tuple[str, str]], key: str, lang: str) -> str:
    zh, en = table.get(key, (key, key))
    return zh if lang == "zh-TW" else f"{en} ({zh})"


def bill_text(bill: Bill, lang: str = "en", site_name: str | None = None) -> str:
    """The bill line by line, as Taipower's bill reads; amounts in NT$."""
    t = load_tariffs()
    plan = t.plan(bill.plan)
    last = bill.end - timedelta(days=1)
    out = [
        f"{_t('title', lang)}: {site_name or bill.site}",
        f"  {_t('period', lang)}: {bill.start} .. {last} ({bill.days} {_t('days', lang)})",
        f"  {_t('plan', lang)}: {plan.name_zh if lang == 'zh-TW' else plan.name_en}",
        f"  {_t('tariff', lang)}: {bill.tariff_tag} ({_t('confidence', lang)} {bill.confidence})",
        f"  {_t('contract', lang)}: "
        + ", ".join(
            f"{_name(CONTRACT_NAMES, c, lang)} {bill.contracts_kw.get(c, 0):g} kW"
            for c in plan.contracts
        ),
        f"  {_t('completeness', lang)}: {bill.completeness:.1%} "
        f"({bill.blocks_measured} / {bill.blocks_expected} {_t('blocks', lang)})",
    ]
    if bill.provisional:
        out.append(f"  ! {_t('provisional', lang)}")
    if bill.completeness < 1:
        out.append(f"  ! {_t('missing', lang)}")
    out.append("")
    out.append(f"{_t('basic', lang):<44}{'kW':>10}{'NT$/kW':>10}{'NT$':>14}")
    for s in bill.segments:
        season = _t("summer" if s.summer else "non_summer", lang)
        share = f"{s.days}/{bill.days} {_t('days', lang)}"
        out.append(f"  {season} {s.first} .. {s.last} ({share}, {s.edition})")
        for part in s.basic:
            label = (
                _t("shared", lang)
                if part.label == "saturday_off_peak"
                else _name(CONTRACT_NAMES, part.label, lang)
            )
            out.append(
                f"    {label:<40}{part.kw:>10,.0f}{part.price_ntd_per_kw:>10.2f}"
                f"{part.ntd * s.share:>14,.0f}"
            )
    if bill.no_use:
        out.append(f"    {_t('no_use', lang)}")
    out.append(f"{'':<44}{'':>10}{'':>10}{bill.basic_ntd:>14,.0f}")
    out.append(f"{_t('energy', lang):<44}{'kWh':>10}{'NT$/kWh':>10}{'NT$':>14}")
    for s in bill.segments:
        season = _t("summer" if s.summer else "non_summer", lang)
        for rule in plan.periods:
            kwh = s.energy_kwh.get(rule.name)
            if kwh is None:
                continue
            ntd = s.energy_ntd_by_period[rule.name]
            price = ntd / kwh if kwh else 0.0
            label = f"{season} {_name(PERIOD_NAMES, rule.name, lang)}"
            out.append(f"    {label:<40}{kwh:>10,.0f}{price:>10.2f}{ntd:>14,.0f}")
    out.append(f"{'':<44}{'':>10}{'':>10}{bill.energy_ntd:>14,.0f}")
    out.append(
        f"{_t('over', lang):<44}{_t('max_kw', lang):>10}{_t('over_kw', lang):>10}{'NT$':>14}"
    )
    for s in bill.segments:
        for x in s.excesses:
            if x.excess_kw <= 0:
                continue
            label = f"{_name(PERIOD_NAMES, x.period, lang)} (>{x.covered_kw:g} kW)"
            detail = (
                f"x2 {x.within_kw:,.1f} kW, x3 {x.above_kw:,.1f} kW, "
                f"{_t('at', lang)} {x.price_ntd_per_kw:.2f} NT$/kW"
            )
            out.append(
                f"    {label:<40}{x.max_demand_kw:>10,.1f}{x.excess_kw:>10,.1f}"
                f"{x.ntd * s.share:>14,.0f}"
            )
            out.append(f"      {detail}")
    out.append(f"{'':<44}{'':>10}{'':>10}{bill.over_contract_ntd:>14,.0f}")
    if bill.power_factor is None:
        detail = _pf_source(bill.power_factor_source, lang)
    else:
        detail = (
            f"PF {bill.power_factor:.1%} ({_pf_source(bill.power_factor_source, lang)}), "
            f"{bill.pf_adjust_share:+.2%} x {_t('pf_base_' + bill.pf_adjust_base, lang)}"
        )
    out.append(f"{_t('pf', lang):<64}{bill.pf_adjust_ntd:>14,.0f}")
    out.append(f"    {detail}")
    subtotal = bill.basic_ntd + bill.energy_ntd + bill.over_contract_ntd + bill.pf_adjust_ntd
    out.append(f"{_t('subtotal', lang):<64}{subtotal:>14,.0f}")
    ind = t.industries[bill.industry]
    out.append(
        f"{_t('coefficient', lang) + f' {bill.industry} {ind.name}':<54}x {bill.coefficient:<8g}"
    )
    out.append(f"{_t('total', lang):<64}{bill.total_ntd:>14,.0f}")
    for note in bill.notes:
        out.append(f"{_t('note', lang)}: {note}")
    return "\n".join(out)
