"""A ledger row: one item of one site over one period, with everything a committee
report needs to reproduce it (baseline, target, verdict, CO2e, completeness,
adjustments, notes and the method version).

Kept apart from ``rules/ledger.py`` so that the item catalogue (``rules/items.py``),
which builds rows, and the ledger, which orchestrates them, both sit above it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from foursave.rules.notes import Note

METHOD_VERSION = "ledger/1"


@dataclass
class LedgerRow:
    site: str
    item: str  # a name in rules/items.py's ITEMS: electricity | water | fuel | paper
    period: str
    unit: str
    actual: float | None
    baseline: float | None = None
    baseline_rule: str = ""
    savings_rate: float | None = None
    target_rate: float | None = None
    met: bool | None = None
    co2e_kg: float | None = None
    completeness: float | None = None
    adjustments: float = 0.0
    details: dict[str, float] = field(default_factory=dict)
    notes: list[Note] = field(default_factory=list)  # rules/notes.py: code and values
    method_version: str = METHOD_VERSION
