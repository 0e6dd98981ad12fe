"""What a four-saving report says, independent of its file format.

A :class:`ReportData` is built from the rules engine's :class:`rules.ledger.Ledger`
(``reports/build.py``) and frozen for closed periods (``reports/store.py``);
the renderers (``pdf.py``, ``xlsx.py``, ``csv.py``) only lay it out, so every format
carries exactly the same numbers.  It round-trips through JSON (``to_dict`` /
``from_dict``) because frozen reports are stored that way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from foursave.rules.items import NAMES
from foursave.rules.notes import Note

ITEMS = NAMES  # the item names in report order: rules/items.py's catalogue


@dataclass(frozen=True)
class SiteInfo:
    id: str
    name: str  # as configured, usually Traditional Chinese
    name_en: str | None
    floor_area_m2: float | None
    parking_area_m2: float
    pv_capacity_kwp: float | None
    preset: str  # plan_2011 | plan_2016


@dataclass(frozen=True)
class ItemRow:
    """One ledger row: an item of a site over the report's period (rules.ledger.LedgerRow)."""

    site: str
    item: str  # a name in ITEMS: electricity | water | fuel | paper
    period: str  # "2025" or "2025-07"
    unit: str  # kWh | m³ | L | online-signing rate
    actual: float | None
    baseline: float | None
    baseline_rule: str
    target_rate: float | None  # required reduction (paper: required online-signing rate)
    target: float | None  # the quantity to stay under: baseline × (1 − target_rate)
    savings_rate: float | None  # (baseline − actual) ÷ baseline
    met: bool | None  # None: not judged (incomplete data or no baseline)
    co2e_kg: float | None
    completeness: float | None  # share of expected readings, 0..1
    adjustments: float  # sum of approved adjustments, in the item's unit
    details: dict[str, float] = field(default_factory=dict)  # eui_kwh_m2, pv_generation_kwh ...
    # rules/notes.py: worded by each renderer in its language; plain text in revisions
    # frozen before notes were structured
    notes: tuple[Note | str, ...] = ()


@dataclass(frozen=True)
class MonthBar:
    """One month of one item for the charts: actual against baseline and target."""

    site: str
    item: str
    month: str  # "2025-07"
    actual: float | None
    baseline: float | None
    target: float | None


@dataclass(frozen=True)
class PvRow:
    """PV performance of a site over the period (IEC 61724-1 yields)."""

    site: str
    energy_kwh: float | None
    specific_yield_kwh_kwp: float | None  # Y_f
    reference_yield_h: float | None  # Y_r
    performance_ratio: float | None  # PR = Y_f / Y_r
    availability: float | None
    co2e_avoided_kg: float | None


@dataclass(frozen=True)
class Adjustment:
    record_id: int
    site: str
    item: str
    period: str
    amount: float
    unit: str
    reason: str
    approved_by: str
    approved_on: str  # ISO date


@dataclass(frozen=True)
class BillRow:
    """One billing period: the bill rebuilt from the main meters against the Taipower
    bill recorded for its month (rules/realbill.py)."""

    site: str
    month: str  # bill month "2025-07" (of its meter reading)
    start: str | None  # first day of the billing period (ISO); None: unknown
    last: str | None  # its last day (the meter-reading day)
    rebuilt_kwh: float | None
    billed_kwh: float | None
    kwh_diff_share: float | None  # (rebuilt - billed) / billed
    rebuilt_ntd: float | None
    billed_ntd: float | None
    ntd_diff_share: float | None
    completeness: float | None
    limit_share: float  # the site's tariff.bill_difference_share
    cause: str | None  # rules.realbill.CAUSES; None: within the limit


@dataclass(frozen=True)
class ContractRow:
    """The contract capacity that would have minimised the site's bills over the report's
    12 billing months (``rules/contract.advise``), annual reports only.  With ``reason``
    set nothing was optimised and the numbers are None: ``no_tariff`` (no ``tariff``
    configured), ``no_edition`` (tariffs.yaml has no edition for a month), ``too_few_months``
    (main-meter data in fewer than 12 billing months; ``months`` are those that have it),
    ``billing_period`` (meter-reading dates that make no billing period)."""

    site: str
    months: tuple[str, ...]  # the billing months used ("2025-01" .. "2025-12")
    margin_pct: float  # safety margin the recommendation was chosen with
    plan: str | None  # the site's plan (two_stage | three_stage)
    current_kw: dict[str, float]  # contract type -> kW (rules/tariff.CONTRACT_NAMES)
    recommended_kw: dict[str, float]
    current_annual_ntd: float | None  # basic + over-contract per year at the current contract
    recommended_annual_ntd: float | None  # at the recommendation, raising cost included
    annual_saving_ntd: float | None
    raise_cost_ntd: float | None  # raising again within 2 years, in the months' sum
    months_over: tuple[str, ...]  # months the recommendation would have gone over contract
    other_plan: str | None  # the other plan, at its own optimum
    other_recommended_kw: dict[str, float]
    plan_bills_ntd: float | None  # whole bills over the months, the site's plan at its optimum
    other_bills_ntd: float | None  # the same, the other plan
    cheaper_plan: str | None
    cheaper_by_ntd: float | None  # |plan_bills_ntd - other_bills_ntd|
    confidence: str | None  # TARIFFS.md: L when the raising cost counts, else M
    reason: str | None = None  # why there is no recommendation (see the class docstring)
    detail: str | None = None  # the optimiser's own words for it (English)


@dataclass(frozen=True)
class PvValueRow:
    """What the site's PV was worth on its Taipower bill in one billing period
    (``rules/pvvalue.site_pv_value``).  With ``reason`` set nothing was valued:
    ``no_tariff``, ``no_data`` (no PV data in the period), ``no_edition``,
    ``billing_period``; the numbers are then None / empty."""

    site: str
    month: str  # bill month "2025-07"
    start: str | None  # first day of the billing period (ISO)
    last: str | None  # its last day
    plan: str | None
    generation_kwh: float | None
    exported_kwh: float | None
    unvalued_kwh: float | None  # PV in blocks without main-meter data
    consumed_kwh: dict[str, float]  # TOU period -> PV consumed on site
    value_ntd: dict[str, float]  # TOU period -> its value at the energy price
    value_total_ntd: float | None  # before the bill's industry coefficient
    demand_kw: dict[str, float]  # TOU period -> maximum demand with PV (the bill's)
    demand_without_pv_kw: dict[str, float]
    demand_reduction_kw: dict[str, float]
    over_contract_saved_ntd: float | None
    bill_saved_ntd: float | None  # bill total without PV minus with PV
    reason: str | None = None
    detail: str | None = None


@dataclass(frozen=True)
class ReportData:
    year: int
    month: int | None  # None: the annual report
    period: str  # "2025" or "2025-07"
    method_version: str  # the ledger's METHOD_VERSION
    generated_at: str  # ISO date-time of the computation this report shows (frozen)
    revision: int  # 1, then +1 at every deliberate recomputation
    closed: bool  # the period is closed: the numbers are frozen
    recomputed_reason: str | None  # why this revision replaced the previous one
    fingerprint: str  # sha256 of the numbers (changes iff a number changes)
    sites: tuple[SiteInfo, ...]
    items: tuple[ItemRow, ...]
    monthly: tuple[MonthBar, ...]
    pv: tuple[PvRow, ...]
    adjustments: tuple[Adjustment, ...]
    factors: tuple[str, ...] = ()  # emission factors used, with source and confidence
    later_data_note: str | None = None  # set when newer data would change a frozen report
    bills: tuple[BillRow, ...] = ()  # rebuilt vs billed per billing period (real bills)
    contracts: tuple[ContractRow, ...] = ()  # contract capacity advice (annual reports)
    pv_value: tuple[PvValueRow, ...] = ()  # PV value per site and billing period
    # the optional sections the code that built this report computes ("contracts",
    # "pv_value"), empty or not; a report frozen before they existed has none, and its
    # later-data check leaves them out (reports/build.py as_issued)
    sections: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ReportData:
        return cls(
            **{
                **d,
                "sites": tuple(SiteInfo(**s) for s in d["sites"]),
                "items": tuple(
                    ItemRow(**{**r, "notes": tuple(Note.load(n) for n in r["notes"])})
                    for r in d["items"]
                ),
                "monthly": tuple(MonthBar(**m) for m in d["monthly"]),
                "pv": tuple(PvRow(**p) for p in d["pv"]),
                "adjustments": tuple(Adjustment(**a) for a in d["adjustments"]),
                "factors": tuple(d.get("factors", ())),
                "bills": tuple(BillRow(**b) for b in d.get("bills", ())),
                "contracts": tuple(
                    ContractRow(
                        **{
                            **c,
                            "months": tuple(c["months"]),
                            "months_over": tuple(c["months_over"]),
                        }
                    )
                    for c in d.get("contracts", ())
                ),
                "pv_value": tuple(PvValueRow(**v) for v in d.get("pv_value", ())),
                "sections": tuple(d.get("sections", ())),
            }
        )
