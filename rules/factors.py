"""Date-versioned factors and rates (``rules/data/factors.yaml``), with provenance.

Every lookup returns the value together with its unit, source and confidence, so a
ledger row can say where each number came from.  A grid factor not yet published for
a year falls back to the latest published year and says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any

import yaml

DATA = Path(__file__).parent / "data" / "factors.yaml"


class FactorError(LookupError):
    pass


@dataclass(frozen=True)
class Factor:
    name: str
    value: float
    unit: str
    source: str
    confidence: str
    basis: str  # what the value is valid for, e.g. "data year 2023"
    provisional: bool = False


@cache
def load_factors(path: str | None = None) -> dict[str, Any]:
    return yaml.safe_load(Path(path or DATA).read_text(encoding="utf-8"))


def _period(entries: list[dict], on: date, name: str) -> dict:
    valid = [e for e in entries if _as_date(e["from"]) <= on]
    if not valid:
        raise FactorError(f"{name}: no value valid on {on}")
    return max(valid, key=lambda e: _as_date(e["from"]))


def _as_date(v) -> date:
    return v if isinstance(v, date) else date.fromisoformat(str(v))


def emission_factor(name: str, on: date, data: dict | None = None) -> Factor:
    """Emission factor ``name`` (grid_electricity, gasoline, diesel, tap_water) for
    consumption on ``on``; the grid factor is chosen by data year."""
    d = (data or load_factors())["emission_factors"]
    if name not in d:
        raise FactorError(f"unknown emission factor {name!r}; known: {sorted(d)}")
    e = d[name]
    if "by_year" in e:
        years = sorted(int(y) for y in e["by_year"])
        year = on.year
        provisional = year not in years
        if provisional:
            earlier = [y for y in years if y <= year]
            if not earlier:
                raise FactorError(f"{name}: no factor for {year} or before")
            year = earlier[-1]
        value, conf = e["by_year"][year]
        basis = f"data year {year}" + (
            f" (for {on.year}: not yet published)" if provisional else ""
        )
        return Factor(name, float(value), e["unit"], e["source"], conf, basis, provisional)
    p = _period(e["periods"], on, name)
    return Factor(
        name, float(p["value"]), e["unit"], e["source"], p["confidence"], f"valid from {p['from']}"
    )
