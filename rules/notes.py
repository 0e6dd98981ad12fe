"""Structured notes on ledger rows: a code and its values, worded by whoever shows them.

The ledger says *what* it noticed (``Note("incomplete", {"share": 0.42})``); the English
wording below is the default (``str(note)``) and a report renderer words it in its own
language (``reports/i18n.py`` for Traditional Chinese).  Notes stored in frozen
reports before notes were structured are plain strings and are shown as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

# where a quantity came from (code -> English words)
SOURCES_EN = {
    "main_meters": "main meters",
    "taipower_bills": "Taipower bills",
    "water_meters": "water meters",
    "water_bills": "water bills",
    "no_data": "no data",
}

Wording = Callable[[Mapping[str, Any]], str]

EN: dict[str, Wording] = {
    "counter_back": lambda v: (
        f"{v['device']}: counter went back on {', '.join(v['days'])} "
        "(restart counted from zero; any other step back leaves that day unknown)"
    ),
    "adjustment": lambda v: (
        f"adjustment {v['amount']:+g}: {v['reason']} "
        f"(approved by {v['approved_by']} on {v['approved_on']})"
    ),
    "excluded": lambda v: f"excluded sub-meters {list(v['roles'])}: {v['kwh']:.1f} kWh",
    "source": lambda v: f"source: {SOURCES_EN.get(v['source'], v['source'])}",
    "weather_normalised": lambda v: (
        f"weather-normalised against {v['base_year']} (CDD base 24 °C, own weather station): "
        f"CV(RMSE) {v['cv_rmse']:.1%}, NMBE {v['nmbe']:.2%}"
    ),
    "no_co2e": lambda v: f"no CO2e: {v['error']}",
    "grid_factor": lambda v: (
        f"grid factor {v['value']} {v['unit']} ({v['basis']}; {v['confidence']})"
    ),
    "tap_water_factor": lambda v: (
        f"tap-water factor {v['value']} {v['unit']} ({v['confidence']}: {v['source']})"
    ),
    "prorated": lambda v: f"baseline pro-rated from {v['from_days']} to {v['to_days']} days",
    "incomplete": lambda v: (
        f"data {v['share']:.0%} complete: not judged until the period is complete"
    ),
    "no_baseline": lambda v: f"no baseline data for {v['rule']}",
}


@dataclass(frozen=True)
class Note:
    """What the ledger noticed about a row: ``code`` (a key of ``EN``) and its values
    (JSON types only: frozen reports store them)."""

    code: str
    values: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.code not in EN:
            raise ValueError(f"unknown note code {self.code!r}")

    def text(self, wordings: Mapping[str, Wording] = EN) -> str:
        wording = wordings.get(self.code) or EN[self.code]
        return wording(self.values)

    def __str__(self) -> str:
        return self.text()

    @classmethod
    def load(cls, raw: Note | Mapping[str, Any] | str) -> Note | str:
        """A note back from JSON (a frozen report); an old plain-text note stays text."""
        if isinstance(raw, Note | str):
            return raw
        return cls(raw["code"], dict(raw.get("values", {})))


def note_text(note: Note | str, wordings: Mapping[str, Wording] = EN) -> str:
    return note if isinstance(note, str) else note.text(wordings)
