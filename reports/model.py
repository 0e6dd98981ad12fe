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
            }
        )
