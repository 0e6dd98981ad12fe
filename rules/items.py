"""The catalogue of ledger items — electricity, water, fuel, paper — and how each is computed.

:data:`ITEMS` is the one list of the four savings, in the order every report, API
answer and display shows them, with each item's units and the kind of target it has.
Everything that lists items or their units reads it: the ledger (``rules/ledger.py``),
the records' ``item`` field (:data:`ItemName`), the reports (``reports/model.py``,
``reports/build.py``), the display snapshot and the API's ledger order.

Each item's computation is registered here too (``@_computes``: the row of a period;
``@_quantifies``: the bare quantity another period's baseline needs), against the
:class:`Sources` a ledger offers (metered totals, records, adjustments, targets), so
adding an item to the ledger means adding it here — plus its wording
(``reports/i18n.py``) and its target rule in the presets (``rules/data/factors.yaml``).
"""

from __future__ import annotations

from collections.abc import Callable, Set
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, get_args

from foursave.core.config import Site
from foursave.core.periods import Period, add_months, month
from foursave.rules import formulas
from foursave.rules.factors import Factor, FactorError, emission_factor
from foursave.rules.notes import Note
from foursave.rules.rows import LedgerRow

if TYPE_CHECKING:  # records.py reads ItemName from here
    from foursave.rules.records import RecordStore

# The item names as a type (the records' and the API's ``item`` field, its OpenAPI
# enum).  Written out because a type checker cannot read it from ITEMS; the module
# checks below that both say the same, in the same order.
ItemName = Literal["electricity", "water", "fuel", "paper"]


@dataclass(frozen=True)
class Item:
    name: str
    unit: str  # of the row's actual: reports' tables, the ledger measurement, the display
    adjustment_unit: str  # an adjustment's amount, as the reports' adjustments list it
    target: Literal["reduction", "rate"]  # a reduction against a baseline, or a rate to reach


ITEMS: tuple[Item, ...] = (
    Item("electricity", unit="kWh", adjustment_unit="kWh", target="reduction"),
    Item("water", unit="m³", adjustment_unit="m³", target="reduction"),
    Item("fuel", unit="L", adjustment_unit="L", target="reduction"),
    Item("paper", unit="online-signing rate", adjustment_unit="%", target="rate"),
)
NAMES: tuple[str, ...] = tuple(i.name for i in ITEMS)
_BY_NAME = {i.name: i for i in ITEMS}


def item(name: str) -> Item:
    """The catalogue entry of ``name`` (KeyError for a name not in it)."""
    return _BY_NAME[name]


def order(name: str) -> int:
    """Where ``name`` comes in the catalogue (names not in it last)."""
    return NAMES.index(name) if name in _BY_NAME else len(NAMES)


class Sources(Protocol):
    """What an item's computation reads, offered by :class:`rules.ledger.Ledger`."""

    @property
    def records(self) -> RecordStore: ...

    def metered(
        self,
        site: Site,
        p: Period,
        fname: str,
        roles: Set[str] | None = None,
        kinds: Set[str] | None = None,
    ) -> tuple[float | None, float | None, list[Note]]:
        """The devices' total of counter ``fname`` over ``p``, its completeness, notes."""
        ...

    def adjustments(self, site: Site, p: Period, item: str) -> tuple[float, list[Note]]: ...

    def months_recorded(self, site: Site, p: Period, needs: list[set[str]]) -> float: ...

    def quantity(self, site: Site, p: Period, item: str) -> float | None: ...

    def weather_normalised(
        self, site: Site, p: Period, actual: float
    ) -> dict[str, float] | None: ...

    def judge(self, site: Site, p: Period, row: LedgerRow) -> None:
        """Sets the row's baseline, target and verdict (``rules/targets.py``)."""
        ...


RowFn = Callable[[Sources, Site, Period], LedgerRow]
QuantityFn = Callable[[Sources, Site, Period], "float | None"]
_ROWS: dict[str, RowFn] = {}
_QUANTITIES: dict[str, QuantityFn] = {}


def _computes(name: str) -> Callable[[RowFn], RowFn]:
    def register(fn: RowFn) -> RowFn:
        _ROWS[name] = fn
        return fn

    return register


def _quantifies(name: str) -> Callable[[QuantityFn], QuantityFn]:
    def register(fn: QuantityFn) -> QuantityFn:
        _QUANTITIES[name] = fn
        return fn

    return register


def compute(sources: Sources, name: str, site: Site, p: Period) -> LedgerRow:
    """The ledger row of item ``name`` for ``site`` over ``p``, judged against its target."""
    return _ROWS[name](sources, site, p)


def quantity(sources: Sources, name: str, site: Site, p: Period) -> float | None:
    """Item ``name``'s actual over ``p`` without judging it (a baseline's quantity)."""
    return _QUANTITIES[name](sources, site, p)


def _row(name: str, site: Site, p: Period, actual: float | None, **kw: Any) -> LedgerRow:
    return LedgerRow(site.id, name, p.label, item(name).unit, actual, **kw)


def _factor_values(f: Factor) -> dict[str, Any]:
    return {"value": f.value, "unit": f.unit, "basis": f.basis, "confidence": f.confidence}


# ---------------------------------------------------------------------- electricity
@_computes("electricity")
def _electricity(src: Sources, site: Site, p: Period) -> LedgerRow:
    st = site.ledger
    imp, comp, notes = src.metered(site, p, "import_energy_wh", roles={"main"})
    exp_, _, _ = src.metered(site, p, "export_energy_wh", roles={"main"})
    excl, _, _ = src.metered(site, p, "import_energy_wh", roles=set(st.exclusions))
    pv, _, _ = src.metered(site, p, "import_energy_wh", roles={"pv"})
    if pv is None:
        pv, _, _ = src.metered(site, p, "ac_energy_wh", kinds={"inverter"})
    source = "main_meters"
    if imp is None:
        bill = src.records.totals(site.id, p.months, "electricity_bill_kwh")
        imp_kwh = bill
        source, comp = ("taipower_bills", 1.0) if bill is not None else ("no_data", 0.0)
    else:
        imp_kwh = imp / 1000
    adj, adj_notes = src.adjustments(site, p, "electricity")
    actual = None if imp_kwh is None else imp_kwh - (excl or 0) / 1000 + adj
    row = _row(
        "electricity",
        site,
        p,
        actual,
        completeness=comp,
        adjustments=adj,
        notes=notes + adj_notes,
    )
    row.details = {
        "grid_import_kwh": imp_kwh or 0.0,
        "grid_export_kwh": (exp_ or 0) / 1000,
        "excluded_kwh": (excl or 0) / 1000,
        "pv_generation_kwh": (pv or 0) / 1000,
    }
    if excl:
        row.notes.append(Note("excluded", {"roles": list(st.exclusions), "kwh": excl / 1000}))
    row.notes.append(Note("source", {"source": source}))
    if site.floor_area_m2 and actual is not None:
        row.details["eui_kwh_m2"] = formulas.eui_kwh_m2(
            actual, site.floor_area_m2, st.parking_area_m2
        )
        if len(p.label) == 7:  # a month: also the rolling 12 months ending with it
            y, m = int(p.label[:4]), int(p.label[5:])
            months12 = [month(*add_months(y, m, -k)) for k in range(12)]
            vals = [src.quantity(site, q, "electricity") for q in months12]
            known = [v for v in vals if v is not None]
            if len(known) == len(vals):
                row.details["eui_rolling_12m_kwh_m2"] = formulas.eui_kwh_m2(
                    sum(known), site.floor_area_m2, st.parking_area_m2
                )
    if actual is not None:
        wn = src.weather_normalised(site, p, actual)
        if wn:
            row.details.update({k: v for k, v in wn.items() if v == v})  # drop NaN
            row.notes.append(
                Note(
                    "weather_normalised",
                    {
                        "base_year": st.base_year,
                        "cv_rmse": wn["baseline_cv_rmse"],
                        "nmbe": wn["baseline_nmbe"],
                    },
                )
            )
        try:
            f = emission_factor("grid_electricity", p.start)
        except FactorError as exc:
            row.notes.append(Note("no_co2e", {"error": str(exc)}))
            src.judge(site, p, row)
            return row
        row.co2e_kg = formulas.co2e_kg(actual, f.value)
        row.details["pv_co2e_avoided_kg"] = formulas.co2e_kg(
            row.details["pv_generation_kwh"], f.value
        )
        row.notes.append(Note("grid_factor", _factor_values(f)))
    src.judge(site, p, row)
    return row


@_quantifies("electricity")
def _electricity_quantity(src: Sources, site: Site, p: Period) -> float | None:
    imp, _, _ = src.metered(site, p, "import_energy_wh", roles={"main"})
    excl, _, _ = src.metered(site, p, "import_energy_wh", roles=set(site.ledger.exclusions))
    adj, _ = src.adjustments(site, p, "electricity")
    if imp is None:
        bill = src.records.totals(site.id, p.months, "electricity_bill_kwh")
        return None if bill is None else bill + adj
    return imp / 1000 - (excl or 0) / 1000 + adj


# ---------------------------------------------------------------------- water
@_computes("water")
def _water(src: Sources, site: Site, p: Period) -> LedgerRow:
    vol, comp, notes = src.metered(site, p, "volume_m3", kinds={"water"})
    source = "water_meters"
    if vol is None:
        vol = src.records.totals(site.id, p.months, "water_bill_m3")
        source, comp = ("water_bills", 1.0) if vol is not None else ("no_data", 0.0)
    adj, adj_notes = src.adjustments(site, p, "water")
    actual = None if vol is None else vol + adj
    row = _row(
        "water",
        site,
        p,
        actual,
        completeness=comp,
        adjustments=adj,
        notes=[*notes, *adj_notes, Note("source", {"source": source})],
    )
    if actual is not None:
        f = emission_factor("tap_water", p.start)
        row.co2e_kg = formulas.co2e_kg(actual, f.value)
        row.notes.append(
            Note(
                "tap_water_factor",
                {
                    **_factor_values(f),
                    "source": site.ledger.water_factor_source or f.source,
                },
            )
        )
    src.judge(site, p, row)
    return row


@_quantifies("water")
def _water_quantity(src: Sources, site: Site, p: Period) -> float | None:
    vol, _, _ = src.metered(site, p, "volume_m3", kinds={"water"})
    if vol is None:
        vol = src.records.totals(site.id, p.months, "water_bill_m3")
    adj, _ = src.adjustments(site, p, "water")
    return None if vol is None else vol + adj


# ---------------------------------------------------------------------- fuel
@_computes("fuel")
def _fuel(src: Sources, site: Site, p: Period) -> LedgerRow:
    gas = src.records.totals(site.id, p.months, "gasoline_l")
    diesel = src.records.totals(site.id, p.months, "diesel_l")
    adj, adj_notes = src.adjustments(site, p, "fuel")
    actual = None if gas is None and diesel is None else (gas or 0) + (diesel or 0) + adj
    row = _row(
        "fuel",
        site,
        p,
        actual,
        adjustments=adj,
        notes=adj_notes,
        # the share of the period's months with a fuel record: a year with eleven
        # months entered is not judged against a whole previous year
        completeness=src.months_recorded(site, p, [{"gasoline_l", "diesel_l"}]),
    )
    row.details = {"gasoline_l": gas or 0.0, "diesel_l": diesel or 0.0}
    if actual is not None:
        g, d = emission_factor("gasoline", p.start), emission_factor("diesel", p.start)
        row.co2e_kg = formulas.co2e_kg(gas or 0, g.value) + formulas.co2e_kg(diesel or 0, d.value)
    src.judge(site, p, row)
    return row


@_quantifies("fuel")
def _fuel_quantity(src: Sources, site: Site, p: Period) -> float | None:
    gas = src.records.totals(site.id, p.months, "gasoline_l")
    diesel = src.records.totals(site.id, p.months, "diesel_l")
    adj, _ = src.adjustments(site, p, "fuel")
    return None if gas is None and diesel is None else (gas or 0) + (diesel or 0) + adj


# ---------------------------------------------------------------------- paper
PAPER_COUNTS = (
    "docs_online_signed",
    "docs_electronic_received",
    "docs_paper_to_online",
    "docs_self_created",
)


@_computes("paper")
def _paper(src: Sources, site: Site, p: Period) -> LedgerRow:
    counts = {k: src.records.totals(site.id, p.months, k) for k in PAPER_COUNTS}
    reams = src.records.totals(site.id, p.months, "paper_reams")
    rate = None
    known = [int(v) for v in counts.values() if v is not None]
    if len(known) == len(counts):
        rate = formulas.online_signing_rate(*known)
    row = _row(
        "paper",
        site,
        p,
        rate,
        completeness=src.months_recorded(site, p, [{k} for k in counts]),
    )
    row.details = {k: float(v or 0) for k, v in counts.items()} | {"paper_reams": reams or 0.0}
    src.judge(site, p, row)
    return row


# every item is computed, and every item with a reduction target has a quantity for
# its baselines; ItemName says what ITEMS says
if set(_ROWS) != set(NAMES):
    raise RuntimeError(f"items without a computation: {set(NAMES) ^ set(_ROWS)}")
if set(_QUANTITIES) != {i.name for i in ITEMS if i.target == "reduction"}:
    raise RuntimeError(f"reduction items and their quantities differ: {sorted(_QUANTITIES)}")
if get_args(ItemName) != NAMES:
    raise RuntimeError(f"ItemName {get_args(ItemName)} is not the catalogue's {NAMES}")
