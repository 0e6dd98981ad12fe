"""Labels and number formatting shared by every report format (``zh-TW`` and ``en``).

The renderers take all their words from :func:`t` and all their numbers from :func:`fmt`,
so the PDF shows exactly the strings a reader (or a test) finds in the other formats.
"""

from __future__ import annotations

import math
import re

from foursave.reports.model import (
    ITEMS,
    Adjustment,
    BillRow,
    ContractRow,
    ItemRow,
    PvValueRow,
    ReportData,
    SiteInfo,
)
from foursave.rules.notes import EN as NOTES_EN
from foursave.rules.notes import Note, Wording, note_text
from foursave.rules.tariff import CONTRACT_NAMES, PERIOD_NAMES

LANGS = ("zh-TW", "en")
DASH = "—"  # a missing value: never shown as 0

MONTHS_EN = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)


class ReportError(Exception):
    """A report cannot be produced (e.g. the CJK font is not installed)."""


LABELS: dict[str, dict[str, str]] = {
    "zh-TW": {
        "title_year": "{year}年 四省專案執行報告",
        "title_month": "{year}年{month}月 四省專案執行報告",
        "month_short": "{month}月",
        "electricity": "省電",
        "fuel": "省油",
        "water": "省水",
        "paper": "省紙",
        "online-signing rate": "線上簽核率",
        "period": "報告期間",
        "sites": "場址",
        "site_id": "場址代號",
        "site_name": "場址名稱",
        "floor_area": "樓地板面積 (m²)",
        "pv_capacity": "太陽光電裝置容量 (kWp)",
        "revision": "版次",
        "method_version": "計算方法版本",
        "generated_at": "產製時間",
        "status": "狀態",
        "closed": "已結算（數據凍結）",
        "open": "未結算（暫定數據）",
        "fingerprint": "數據指紋",
        "recomputed": "重新計算",
        "data_note": "資料說明",
        "item": "項目",
        "unit": "單位",
        "actual": "實際值",
        "baseline": "基準值",
        "baseline_rule": "基準規則",
        "target_rate": "目標削減率",
        "target": "目標值",
        "savings_rate": "節約率",
        "result": "達成情形",
        "met": "達成",
        "not_met": "未達成",
        "not_judged": "未判定",
        "eui": "能源使用強度 EUI (kWh/m²)",
        "eui_12m": "近12個月 EUI (kWh/m²)",
        "co2e": "碳排放量 (kg CO2e)",
        "completeness": "資料完整度",
        "adjustments": "調整",
        "notes": "附註",
        "pv": "太陽光電",
        "pv_energy": "發電量 (kWh)",
        "specific_yield": "單位裝置發電量 (kWh/kWp)",
        "reference_yield": "參考日照量 (h)",
        "pr": "性能比 PR",
        "availability": "可用率",
        "co2_avoided": "減碳量 (kg CO2e)",
        "no_pv": "本期無太陽光電資料。",
        "adjustment_records": "調整紀錄",
        "amount": "調整量",
        "reason": "原因",
        "approved_by": "核准人",
        "approved_on": "核准日期",
        "no_adjustments": "本期無調整。",
        "monthly": "月別趨勢",
        "factors": "排放係數",
        "no_factors": "本期未使用排放係數。",
        "signatures": "簽核",
        "sign_prepared": "承辦人",
        "sign_reviewed": "審核",
        "sign_approved": "機關首長",
        "page": "第 {page} 頁",
        "summary_sheet": "總表",
        "monthly_sheet": "月別",
        "pv_sheet": "PV",
        "adjustments_sheet": "調整",
        "notes_sheet": "附註",
        "month": "月份",
        "note": "說明",
        "record_id": "紀錄編號",
        "colon": "：",
        "bills": "台電帳單比對（電表重建值對照帳單）",
        "bills_sheet": "電費比對",
        "bill_month": "帳單月份",
        "billing_period": "計費期間",
        "rebuilt_kwh": "重建度數 (kWh)",
        "billed_kwh": "帳單度數 (kWh)",
        "kwh_diff": "度數差異",
        "rebuilt_ntd": "重建電費 (NT$)",
        "billed_ntd": "帳單電費 (NT$)",
        "ntd_diff": "電費差異",
        "likely_cause": "可能原因",
        "within_limit": "差異在 {limit} 以內",
        "cause_missing_data": "電表資料缺漏",
        "cause_meter_coverage": "總表未涵蓋全部供電（重建度數低於帳單）",
        "cause_tariff": "電價表缺漏或有誤（度數相符、電費不符）",
        "cause_period": "計費期間不明或有誤（抄表日）",
        "cause_unexplained": "重建度數高於帳單（請查抄表日及比流器倍率）",
        "contract_section": "契約容量建議（本年 12 個計費月份電費最低之契約）",
        "contract_sheet": "契約容量",
        "contract_months": "計費月份",
        "margin": "安全裕度",
        "plan": "電價方案",
        "current_contract": "現行契約",
        "recommended_contract": "建議契約",
        "current_annual": "現行契約每年基本及超約電費 (NT$)",
        "recommended_annual": "建議契約每年基本及超約電費 (NT$)",
        "annual_saving": "每年節省 (NT$)",
        "raise_cost": "兩年內再增加契約容量之費用 (NT$)",
        "months_over": "建議契約下超約月份",
        "none": "無",
        "plan_bills": "本方案全年電費（最佳契約）(NT$)",
        "other_plan": "另一電價方案",
        "other_contract": "另一方案建議契約",
        "other_bills": "另一方案全年電費（最佳契約）(NT$)",
        "cheaper_plan": "較便宜之電價方案",
        "cheaper_by": "全年電費差額 (NT$)",
        "confidence": "信心等級",
        "explanation": "說明",
        "two_stage": "二段式",
        "three_stage": "三段式",
        "contract_basis": "契約依本年各月電表 15 分鐘需量及電價檔（tariffs.yaml）逐月計費求得；節省及超約月份依實際需量計（TARIFFS.md §5）。",
        "contract_no_tariff": "未設定台電契約（tariff），無法建議契約容量",
        "contract_too_few_months": "主電表資料僅涵蓋 {have} / 12 個計費月份，無法建議契約容量",
        "contract_no_edition": "電價檔（tariffs.yaml）缺少本年部分期間之電價版本，無法計算",
        "contract_billing_period": "抄表日無法構成計費期間，無法計算",
        "pv_value_section": "太陽光電之電費價值",
        "pv_value_sheet": "PV價值",
        "pv_value_bill": "太陽光電節省之電費",
        "tou_period": "時段",
        "pv_consumed": "自用度數 (kWh)",
        "pv_value_ntd": "價值 (NT$)",
        "demand_with_pv": "最高需量（含光電）(kW)",
        "demand_without_pv": "最高需量（無光電）(kW)",
        "demand_reduction": "需量降低 (kW)",
        "pv_generation": "發電量 (kWh)",
        "pv_exported": "輸出電網 (kWh)",
        "pv_unvalued": "未計價 (kWh)",
        "pv_value_total": "自用價值合計 (NT$)",
        "over_contract_saved": "超約附加費減少 (NT$)",
        "bill_saved": "電費節省 (NT$)",
        "total": "合計",
        "pv_value_basis": "價值以各時段流動電價計（未乘行業別係數）；電費節省為無光電與有光電電費之差（含超約、功率因數調整及係數）；基本電費依契約容量計，不因光電而變。",
        "pv_no_tariff": "未設定台電契約（tariff），光電價值無法計算",
        "pv_no_data": "本計費期間無光電資料",
        "pv_no_edition": "電價檔（tariffs.yaml）缺少本期電價版本，無法計算",
        "pv_billing_period": "抄表日無法構成計費期間，無法計算",
    },
    "en": {
        "title_year": "Four-saving report {year}",
        "title_month": "Four-saving report {month_name} {year}",
        "month_short": "{month_abbr}",
        "electricity": "Electricity",
        "fuel": "Fuel",
        "water": "Water",
        "paper": "Paper",
        "online-signing rate": "online-signing rate",
        "period": "Period",
        "sites": "Sites",
        "site_id": "Site ID",
        "site_name": "Site name",
        "floor_area": "Floor area (m²)",
        "pv_capacity": "PV capacity (kWp)",
        "revision": "Revision",
        "method_version": "Method version",
        "generated_at": "Generated at",
        "status": "Status",
        "closed": "closed (numbers frozen)",
        "open": "open (provisional numbers)",
        "fingerprint": "Fingerprint",
        "recomputed": "Recomputed",
        "data_note": "Data note",
        "item": "Item",
        "unit": "Unit",
        "actual": "Actual",
        "baseline": "Baseline",
        "baseline_rule": "Baseline rule",
        "target_rate": "Target reduction",
        "target": "Target",
        "savings_rate": "Savings rate",
        "result": "Result",
        "met": "met",
        "not_met": "not met",
        "not_judged": "not judged",
        "eui": "EUI (kWh/m²)",
        "eui_12m": "EUI, rolling 12 months (kWh/m²)",
        "co2e": "CO2e (kg)",
        "completeness": "Completeness",
        "adjustments": "Adjustments",
        "notes": "Notes",
        "pv": "Solar PV",
        "pv_energy": "Energy (kWh)",
        "specific_yield": "Specific yield (kWh/kWp)",
        "reference_yield": "Reference yield (h)",
        "pr": "Performance ratio (PR)",
        "availability": "Availability",
        "co2_avoided": "CO2 avoided (kg CO2e)",
        "no_pv": "No PV data for this period.",
        "adjustment_records": "Adjustments",
        "amount": "Amount",
        "reason": "Reason",
        "approved_by": "Approved by",
        "approved_on": "Approved on",
        "no_adjustments": "No adjustments in this period.",
        "monthly": "Monthly trend",
        "factors": "Emission factors",
        "no_factors": "No emission factors used in this period.",
        "signatures": "Signatures",
        "sign_prepared": "Prepared by",
        "sign_reviewed": "Reviewed by",
        "sign_approved": "Approved by",
        "page": "Page {page}",
        "summary_sheet": "Summary",
        "monthly_sheet": "Monthly",
        "pv_sheet": "PV",
        "adjustments_sheet": "Adjustments",
        "notes_sheet": "Notes",
        "month": "Month",
        "note": "Note",
        "record_id": "Record",
        "colon": ": ",
        "bills": "Taipower bill: rebuilt from the meters versus billed",
        "bills_sheet": "Bills",
        "bill_month": "Bill month",
        "billing_period": "Billing period",
        "rebuilt_kwh": "Rebuilt (kWh)",
        "billed_kwh": "Billed (kWh)",
        "kwh_diff": "kWh difference",
        "rebuilt_ntd": "Rebuilt (NT$)",
        "billed_ntd": "Billed (NT$)",
        "ntd_diff": "NT$ difference",
        "likely_cause": "Likely cause",
        "within_limit": "within {limit}",
        "cause_missing_data": "missing meter data",
        "cause_meter_coverage": "the main meters do not cover the whole supply (rebuilt kWh below billed)",
        "cause_tariff": "a tariff edition missing or wrong (kWh agree, NT$ differ)",
        "cause_period": "billing period unknown or wrong (meter-reading dates)",
        "cause_unexplained": "rebuilt kWh above billed (check the meter-reading dates and CT ratio)",
        "contract_section": "Contract capacity: the contracts that would have minimised this year's 12 bills",
        "contract_sheet": "Contract",
        "contract_months": "Billing months",
        "margin": "Safety margin",
        "plan": "Plan",
        "current_contract": "Current contract",
        "recommended_contract": "Recommended contract",
        "current_annual": "Basic + over-contract per year, current contract (NT$)",
        "recommended_annual": "Basic + over-contract per year, recommended (NT$)",
        "annual_saving": "Annual saving (NT$)",
        "raise_cost": "Cost of raising again within 2 years (NT$)",
        "months_over": "Months over contract at the recommendation",
        "none": "none",
        "plan_bills": "Whole bills over the year, this plan at its optimum (NT$)",
        "other_plan": "Other plan",
        "other_contract": "Other plan's recommended contract",
        "other_bills": "Whole bills over the year, other plan at its optimum (NT$)",
        "cheaper_plan": "Cheaper plan",
        "cheaper_by": "Cheaper by, whole bills over the year (NT$)",
        "confidence": "Confidence",
        "explanation": "Explanation",
        "two_stage": "two-stage",
        "three_stage": "three-stage",
        "contract_basis": "Every month of the year billed from the main meters' 15-minute demand and tariffs.yaml; the saving and the months over are on the actual demand (TARIFFS.md §5).",
        "contract_no_tariff": "no Taipower contract ('tariff') configured: no contract advice",
        "contract_too_few_months": "main-meter data in {have} of the 12 billing months: the optimiser needs all 12",
        "contract_no_edition": "tariffs.yaml has no edition for part of the year: not computed",
        "contract_billing_period": "the meter-reading dates make no billing period: not computed",
        "pv_value_section": "What the PV is worth on the bill",
        "pv_value_sheet": "PV value",
        "pv_value_bill": "The bill the PV saved",
        "tou_period": "TOU period",
        "pv_consumed": "Consumed on site (kWh)",
        "pv_value_ntd": "Value (NT$)",
        "demand_with_pv": "Max demand with PV (kW)",
        "demand_without_pv": "Max demand without PV (kW)",
        "demand_reduction": "Demand reduction (kW)",
        "pv_generation": "Generation (kWh)",
        "pv_exported": "Exported (kWh)",
        "pv_unvalued": "Not valued (kWh)",
        "pv_value_total": "Value consumed, total (NT$)",
        "over_contract_saved": "Over-contract charge saved (NT$)",
        "bill_saved": "Bill saved (NT$)",
        "total": "Total",
        "pv_value_basis": "Value at each TOU period's energy price (before the industry coefficient); bill saved: the bill without the PV minus the bill with it (over-contract, power-factor adjustment and coefficient included); the basic charge is on the contract and does not change with the PV.",
        "pv_no_tariff": "no Taipower contract ('tariff') configured: the PV is not valued",
        "pv_no_data": "no PV data in the billing period",
        "pv_no_edition": "tariffs.yaml has no edition for the period: not valued",
        "pv_billing_period": "the meter-reading dates make no billing period: not valued",
    },
}

# how each unit or quantity is written by :func:`fmt`
_RATES = {"rate", "online-signing rate"}
_DECIMALS = {"eui": 1, "pr": 3}


def check_lang(lang: str) -> str:
    """The language if it is one of :data:`LANGS`, else ``ValueError`` naming it."""
    if lang not in LANGS:
        raise ValueError(f"unknown report language {lang!r}: choose one of {', '.join(LANGS)}")
    return lang


def t(lang: str, key: str) -> str:
    """The label ``key`` in ``lang``."""
    return LABELS[check_lang(lang)][key]


def fmt(value: float | None, kind: str) -> str:
    """A number as the report writes it; ``kind`` is a unit or quantity.

    ``None`` (and NaN) → "—"; ``rate`` / ``online-signing rate`` → percent with 1 decimal
    ("8.8%"); ``eui`` [kWh/m²] → 1 decimal; ``pr`` → 3 decimals ("0.812"); any other unit
    (kWh, m³, L, kg, kWh/kWp, h) → thousands separators, 0 decimals from 1,000, else 1.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return DASH
    if kind in _RATES:
        text, suffix = f"{value * 100:,.1f}", "%"
    else:
        decimals = _DECIMALS.get(kind, 0 if abs(value) >= 999.95 else 1)
        text, suffix = f"{value:,.{decimals}f}", ""
    if text.startswith("-") and not text.strip("-0.,"):
        text = text[1:]  # no "-0.0"
    return text + suffix


# the ledger's notes (rules/notes.py) in Traditional Chinese; English is the notes' own
SOURCES_ZH = {
    "main_meters": "總表",
    "taipower_bills": "台電電費單",
    "water_meters": "水表",
    "water_bills": "水費單",
    "no_data": "無資料",
}
NOTES_ZH: dict[str, Wording] = {
    "counter_back": lambda v: (
        f"{v['device']}：累計值於 {', '.join(v['days'])} 倒退"
        "（自零重新起算者照計；其他倒退使當日資料不明）"
    ),
    "adjustment": lambda v: (
        f"調整 {v['amount']:+g}：{v['reason']}（{v['approved_by']} 於 {v['approved_on']} 核准）"
    ),
    "excluded": lambda v: f"扣除分表 {', '.join(v['roles'])}：{v['kwh']:.1f} kWh",
    "source": lambda v: f"資料來源：{SOURCES_ZH.get(v['source'], v['source'])}",
    "weather_normalised": lambda v: (
        f"以 {v['base_year']} 年為基準之氣候正規化（冷房度日基準 24 °C，本站氣象站）："
        f"CV(RMSE) {v['cv_rmse']:.1%}，NMBE {v['nmbe']:.2%}"
    ),
    "no_co2e": lambda v: f"未計碳排：{v['error']}",
    "grid_factor": lambda v: (
        f"電力排碳係數 {v['value']} {v['unit']}（{v['basis']}；信心 {v['confidence']}）"
    ),
    "tap_water_factor": lambda v: (
        f"自來水排碳係數 {v['value']} {v['unit']}（信心 {v['confidence']}：{v['source']}）"
    ),
    "prorated": lambda v: f"基準值依天數比例換算（{v['from_days']} 天 → {v['to_days']} 天）",
    "incomplete": lambda v: f"資料完整度 {v['share']:.0%}：期間資料完整前不予判定",
    "no_baseline": lambda v: f"無基準資料（{v['rule']}）",
}
NOTE_WORDINGS = {"zh-TW": NOTES_ZH, "en": NOTES_EN}


# the ledger's baseline rules (rules/targets.py words them in English) in Traditional Chinese
_RULES_ZH = (
    (re.compile(r"^previous year \((\d{4}(?:-\d{2})?)\)$"), "前一年（{0}）"),
    (re.compile(r"^base year (\d{4}) \(EUI no growth\)$"), "基準年 {0}（EUI 不成長）"),
    (re.compile(r"^base year (\d{4})$"), "基準年 {0}"),
    (re.compile(r"^online-signing rate against the year's target$"), "線上簽核率對照當年目標"),
)


def baseline_rule_label(lang: str, rule: str) -> str:
    """A ledger row's baseline rule in ``lang``; a rule worded otherwise stays as it is."""
    if check_lang(lang) == "zh-TW":
        for pattern, words in _RULES_ZH:
            m = pattern.match(rule)
            if m:
                return words.format(*m.groups())
    return rule


def note_label(lang: str, note: Note | str) -> str:
    """A ledger note in ``lang`` (plain-text notes of older revisions as they are)."""
    return note_text(note, NOTE_WORDINGS[check_lang(lang)])


def labelled(lang: str, key: str, value: str) -> str:
    """ "label：value" / "Label: value"."""
    return f"{t(lang, key)}{t(lang, 'colon')}{value}"


def unit_label(lang: str, unit: str) -> str:
    """A ledger unit in ``lang`` (only the paper rate has words)."""
    return LABELS[check_lang(lang)].get(unit, unit)


def item_label(lang: str, item: str) -> str:
    return t(lang, item)


def met_label(lang: str, met: bool | None) -> str:
    return t(lang, "not_judged" if met is None else "met" if met else "not_met")


def site_name(lang: str, site: SiteInfo) -> str:
    """zh-TW: the configured name; en: the English name when there is one."""
    return site.name if check_lang(lang) == "zh-TW" else site.name_en or site.name


def month_label(lang: str, month: str) -> str:
    """A short axis label for "2025-07": "7月" / "Jul"."""
    m = int(month[5:7])
    return t(lang, "month_short").format(month=m, month_abbr=MONTHS_EN[m - 1][:3])


def title(data: ReportData, lang: str) -> str:
    """ "2025年7月 四省專案執行報告" / "Four-saving report July 2025"."""
    if data.month is None:
        return t(lang, "title_year").format(year=data.year)
    return t(lang, "title_month").format(
        year=data.year, month=data.month, month_name=MONTHS_EN[data.month - 1]
    )


def eui(row: ItemRow, key: str = "eui_kwh_m2") -> float | None:
    """The electricity row's EUI [kWh/m²] (``eui_rolling_12m_kwh_m2`` for 12 months)."""
    return row.details.get(key) if row.item == "electricity" else None


def site_rows(data: ReportData, site: str) -> list[ItemRow]:
    """The site's ledger rows of the report's period, in the order of ``model.ITEMS``."""
    rows = [r for r in data.items if r.site == site and r.period == data.period]
    return sorted(rows, key=lambda r: ITEMS.index(r.item) if r.item in ITEMS else len(ITEMS))


def summary_row(data: ReportData, row: ItemRow, lang: str) -> list:
    """One ItemRow as the xlsx summary and the CSV carry it: raw numbers, words in ``lang``."""
    sites = {s.id: s for s in data.sites}
    name = site_name(lang, sites[row.site]) if row.site in sites else row.site
    return [
        row.site,
        name,
        item_label(lang, row.item),
        row.period,
        unit_label(lang, row.unit),
        row.actual,
        row.baseline,
        baseline_rule_label(lang, row.baseline_rule),
        row.target_rate,
        row.target,
        row.savings_rate,
        met_label(lang, row.met),
        row.co2e_kg,
        row.completeness,
        row.adjustments,
        eui(row),
    ]


SUMMARY_KEYS = (
    "site_id",
    "site_name",
    "item",
    "period",
    "unit",
    "actual",
    "baseline",
    "baseline_rule",
    "target_rate",
    "target",
    "savings_rate",
    "result",
    "co2e",
    "completeness",
    "adjustments",
    "eui",
)
ADJUSTMENT_KEYS = (
    "record_id",
    "site_id",
    "item",
    "period",
    "amount",
    "unit",
    "reason",
    "approved_by",
    "approved_on",
)


def adjustment_row(adj: Adjustment, lang: str) -> list:
    """One Adjustment as the xlsx and the CSV carry it (the amount raw)."""
    return [
        adj.record_id,
        adj.site,
        item_label(lang, adj.item),
        adj.period,
        adj.amount,
        unit_label(lang, adj.unit),
        adj.reason,
        adj.approved_by,
        adj.approved_on,
    ]


BILL_KEYS = (
    "site_id",
    "bill_month",
    "billing_period",
    "rebuilt_kwh",
    "billed_kwh",
    "kwh_diff",
    "rebuilt_ntd",
    "billed_ntd",
    "ntd_diff",
    "completeness",
    "likely_cause",
)


def billing_period_label(b: BillRow) -> str:
    return DASH if b.start is None or b.last is None else f"{b.start} .. {b.last}"


def cause_label(lang: str, b: BillRow) -> str:
    """The likely cause of a difference above the site's limit, or "within 2 %"."""
    if b.cause is None:
        return t(lang, "within_limit").format(limit=f"{b.limit_share:.0%}")
    return t(lang, f"cause_{b.cause}")


def bill_row(b: BillRow, lang: str) -> list:
    """One billing period as the xlsx and the CSV carry it (numbers raw)."""
    return [
        b.site,
        b.month,
        billing_period_label(b),
        b.rebuilt_kwh,
        b.billed_kwh,
        b.kwh_diff_share,
        b.rebuilt_ntd,
        b.billed_ntd,
        b.ntd_diff_share,
        b.completeness,
        cause_label(lang, b),
    ]


# ---------------------------------------------------------------------- contract capacity


def plan_label(lang: str, plan: str | None) -> str:
    """ "三段式" / "three-stage"; a plan the labels do not know as it is."""
    return DASH if plan is None else LABELS[check_lang(lang)].get(plan, plan)


def contracts_label(lang: str, contracts: dict[str, float]) -> str:
    """ "經常契約 300 kW、離峰契約 50 kW" / "regular 300 kW, off-peak 50 kW" (the contract
    types in the tariff file's order; only those above 0 kW)."""
    parts = []
    for k in [*CONTRACT_NAMES, *sorted(set(contracts) - set(CONTRACT_NAMES))]:
        kw = contracts.get(k, 0.0)
        if kw:
            zh, en = CONTRACT_NAMES.get(k, (k, k))
            parts.append(f"{zh if check_lang(lang) == 'zh-TW' else en} {kw:,.0f} kW")
    return ("、" if lang == "zh-TW" else ", ").join(parts) or DASH


def months_label(lang: str, months: tuple[str, ...]) -> str:
    """The months a recommendation would have gone over, or "none"."""
    return ", ".join(months) if months else t(lang, "none")


def contract_reason_label(lang: str, c: ContractRow) -> str:
    """Why a site has no contract advice (one line), "" when it has."""
    if c.reason is None:
        return ""
    return t(lang, f"contract_{c.reason}").format(have=len(c.months))


CONTRACT_KEYS = (
    "site_id",
    "contract_months",
    "margin",
    "plan",
    "current_contract",
    "recommended_contract",
    "current_annual",
    "recommended_annual",
    "annual_saving",
    "raise_cost",
    "months_over",
    "plan_bills",
    "other_plan",
    "other_contract",
    "other_bills",
    "cheaper_plan",
    "cheaper_by",
    "confidence",
    "explanation",
)


def contract_row(c: ContractRow, lang: str) -> list:
    """One site's contract advice as the xlsx and the CSV carry it (numbers raw, the
    margin as a share as the other rates are)."""
    advised = c.reason is None
    return [
        c.site,
        f"{c.months[0]} .. {c.months[-1]}" if c.months else "",
        c.margin_pct / 100,
        plan_label(lang, c.plan) if advised else "",
        contracts_label(lang, c.current_kw) if advised else "",
        contracts_label(lang, c.recommended_kw) if advised else "",
        c.current_annual_ntd,
        c.recommended_annual_ntd,
        c.annual_saving_ntd,
        c.raise_cost_ntd,
        months_label(lang, c.months_over) if advised else "",
        c.plan_bills_ntd,
        plan_label(lang, c.other_plan) if c.other_plan else "",
        contracts_label(lang, c.other_recommended_kw) if c.other_plan else "",
        c.other_bills_ntd,
        plan_label(lang, c.cheaper_plan) if c.cheaper_plan else "",
        c.cheaper_by_ntd,
        c.confidence,
        contract_reason_label(lang, c),
    ]


# ---------------------------------------------------------------------- PV value


def tou_label(lang: str, period: str) -> str:
    """A TOU period: "尖峰" / "peak" (rules/tariff.PERIOD_NAMES)."""
    zh, en = PERIOD_NAMES.get(period, (period, period))
    return zh if check_lang(lang) == "zh-TW" else en


def tou_periods(v: PvValueRow) -> list[str]:
    """The row's TOU periods in the tariff's order (peak first)."""
    seen = set(v.consumed_kwh) | set(v.demand_kw)
    return [p for p in PERIOD_NAMES if p in seen] + sorted(seen - set(PERIOD_NAMES))


def pv_reason_label(lang: str, v: PvValueRow) -> str:
    return "" if v.reason is None else t(lang, f"pv_{v.reason}")


def pv_period_label(v: PvValueRow) -> str:
    return DASH if v.start is None or v.last is None else f"{v.start} .. {v.last}"


PV_PERIOD_KEYS = (
    "site_id",
    "bill_month",
    "tou_period",
    "pv_consumed",
    "pv_value_ntd",
    "demand_with_pv",
    "demand_without_pv",
    "demand_reduction",
)
PV_BILL_KEYS = (
    "site_id",
    "bill_month",
    "billing_period",
    "plan",
    "pv_generation",
    "pv_exported",
    "pv_unvalued",
    "pv_consumed",
    "pv_value_total",
    "over_contract_saved",
    "bill_saved",
    "explanation",
)


def pv_period_rows(v: PvValueRow, lang: str) -> list[list]:
    """A billing period's PV per TOU period (numbers raw; None where not measured)."""
    return [
        [
            v.site,
            v.month,
            tou_label(lang, p),
            v.consumed_kwh.get(p),
            v.value_ntd.get(p),
            v.demand_kw.get(p),
            v.demand_without_pv_kw.get(p),
            v.demand_reduction_kw.get(p),
        ]
        for p in tou_periods(v)
    ]


def pv_bill_row(v: PvValueRow, lang: str) -> list:
    """A billing period's PV totals and the bill it saved (numbers raw)."""
    return [
        v.site,
        v.month,
        pv_period_label(v),
        plan_label(lang, v.plan) if v.plan else "",
        v.generation_kwh,
        v.exported_kwh,
        v.unvalued_kwh,
        sum(v.consumed_kwh.values()) if v.reason is None else None,
        v.value_total_ntd,
        v.over_contract_saved_ntd,
        v.bill_saved_ntd,
        pv_reason_label(lang, v),
    ]


def pv_total_row(rows: list[PvValueRow], site: str, lang: str) -> list:
    """The site's sums over the report's billing periods (the annual report's total line)."""
    mine = [v for v in rows if v.site == site and v.reason is None]

    def total(get) -> float | None:
        values = [x for x in map(get, mine) if x is not None]
        return sum(values) if values else None

    return [
        site,
        t(lang, "total"),
        "",
        "",
        total(lambda v: v.generation_kwh),
        total(lambda v: v.exported_kwh),
        total(lambda v: v.unvalued_kwh),
        total(lambda v: sum(v.consumed_kwh.values())),
        total(lambda v: v.value_total_ntd),
        total(lambda v: v.over_contract_saved_ntd),
        total(lambda v: v.bill_saved_ntd),
        "",
    ]
