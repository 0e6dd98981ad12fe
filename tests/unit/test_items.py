"""rules/items.py: the one catalogue of ledger items, as the reports and the API show it."""

from __future__ import annotations

from typing import get_args

import pytest

from foursave.api.routes.records import AdjustmentCreate
from foursave.core.config import Site
from foursave.core.periods import month
from foursave.reports import model
from foursave.rules import items
from foursave.rules.records import RecordIn


def test_the_catalogue_order_and_units():
    assert items.NAMES == ("electricity", "water", "fuel", "paper")
    assert [i.unit for i in items.ITEMS] == ["kWh", "m³", "L", "online-signing rate"]
    # the reports' adjustments list a paper adjustment in percentage points
    assert [i.adjustment_unit for i in items.ITEMS] == ["kWh", "m³", "L", "%"]
    assert [i.target for i in items.ITEMS] == ["reduction", "reduction", "reduction", "rate"]
    assert items.item("water").unit == "m³"
    with pytest.raises(KeyError):
        items.item("gas")


def test_the_reports_and_the_api_use_the_catalogue_order():
    assert model.ITEMS == items.NAMES
    assert [items.order(n) for n in ("paper", "electricity", "fuel", "water")] == [3, 0, 2, 1]
    assert items.order("gas") == len(items.NAMES)  # unknown names last


def test_the_item_field_accepts_exactly_the_catalogue():
    assert get_args(items.ItemName) == items.NAMES
    for schema in (RecordIn.model_json_schema(), AdjustmentCreate.model_json_schema()):
        item = schema["properties"]["item"]
        enums = [s.get("enum") for s in item.get("anyOf", [item])]
        assert list(items.NAMES) in enums


class _Records:
    def __init__(self, totals: dict[str, float]):
        self._totals = totals

    def totals(self, site, periods, kind):
        return self._totals.get(kind)

    def current(self, site, periods=None):
        return []


class _Sources:
    """Bills and records only, every month recorded; remembers what was judged."""

    def __init__(self, totals: dict[str, float]):
        self.records = _Records(totals)
        self.judged: list[str] = []

    def metered(self, site, p, fname, roles=None, kinds=None):
        return None, None, []

    def adjustments(self, site, p, item):
        return 0.0, []

    def months_recorded(self, site, p, needs):
        return 1.0

    def quantity(self, site, p, item):
        return items.quantity(self, item, site, p)

    def weather_normalised(self, site, p, actual):
        return None

    def judge(self, site, p, row):
        self.judged.append(row.item)


def test_every_item_computes_a_row_in_its_unit():
    site = Site(id="s1", name="Site 1", lat=23.0, lon=120.2)
    src = _Sources(
        {
            "electricity_bill_kwh": 1200.0,
            "water_bill_m3": 30.0,
            "gasoline_l": 40.0,
            "diesel_l": 2.5,
            "docs_online_signed": 90,
            "docs_electronic_received": 60,
            "docs_paper_to_online": 30,
            "docs_self_created": 10,
        }
    )
    rows = [items.compute(src, n, site, month(2025, 7)) for n in items.NAMES]
    assert [(r.item, r.unit, r.period, r.site) for r in rows] == [
        (i.name, i.unit, "2025-07", "s1") for i in items.ITEMS
    ]
    assert [r.actual for r in rows[:3]] == [1200.0, 30.0, 42.5]
    assert rows[3].actual == pytest.approx(90 / 100)  # online-signing rate
    assert src.judged == list(items.NAMES)  # every item is judged by the ledger
    # a baseline's quantity for each item with a reduction target, none for a rate
    assert items.quantity(src, "fuel", site, month(2025, 7)) == 42.5
    with pytest.raises(KeyError):
        items.quantity(src, "paper", site, month(2025, 7))
