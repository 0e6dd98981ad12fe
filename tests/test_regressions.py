"""Regressions named after what they pin (found in review)."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from foursave.core.config import parse_config
from foursave.core.periods import month
from foursave.core.reading import to_line
from foursave.rules.demand import block_demands
from foursave.rules.ledger import Ledger
from foursave.rules.records import RecordStore
from foursave.rules.rollup import daily_quantities

pytestmark = pytest.mark.integration
TAIPEI = timezone(timedelta(hours=8))
CFG = """
sites: [{id: s, name: S, lat: 22.99, lon: 120.19, floor_area_m2: 1000, contract_capacity_kw: 300}]
devices: [{id: main, site: s, kind: meter, role: main, profile: sunspec, host: h, interval_s: 60}]
"""


def meter_points(influx, start: datetime, minutes: int, watts: float, counter0: float, skip=()):
    lines, c = [], counter0
    for k in range(minutes):
        t = start + timedelta(minutes=k)
        if k not in skip:
            lines.append(
                to_line(
                    "meter",
                    {"site": "s", "device": "main", "role": "main"},
                    {"import_energy_wh": c, "active_power_w": watts},
                    int(t.timestamp() * 1000),
                )
            )
        c += watts / 60
    for i in range(0, len(lines), 5000):
        influx.write(lines[i : i + 5000])
    return c


def test_a_counter_stepping_back_is_not_a_lifetime_of_energy(influx):
    cfg = parse_config(CFG, env={})
    t0 = datetime(2026, 2, 1, tzinfo=TAIPEI)
    c = meter_points(influx, t0, 9 * 1440, 40.0, 10_000_000.0)  # a small load: ~1 kWh a day
    # a replaced meter reads 5 kWh less than the old one on the 10th
    meter_points(influx, t0 + timedelta(days=9), 1440, 40.0, c - 5000)
    dq = daily_quantities(influx, cfg, date(2026, 2, 1), date(2026, 2, 11), use_rollup=False)[
        ("main", "import_energy_wh")
    ]
    assert (
        date(2026, 2, 10) in dq.resets and date(2026, 2, 10) not in dq.quantity
    )  # unknown, flagged
    assert max(dq.quantity.values()) == pytest.approx(960, rel=0.02)  # never 10 MWh in a day


def test_a_gap_is_not_one_block_of_demand(influx):
    t0 = datetime(2026, 3, 2, 9, 0, tzinfo=TAIPEI)
    meter_points(influx, t0, 240, 100_000.0, 0.0, skip=range(60, 105))  # 45 minutes silent
    blocks = block_demands(
        influx,
        ["main"],
        int(t0.timestamp() * 1000),
        int((t0 + timedelta(hours=4)).timestamp() * 1000),
    )
    assert blocks and max(blocks.values()) == pytest.approx(100.0, rel=0.01)


def test_an_incomplete_period_is_not_judged(tmp_path, influx):
    cfg = parse_config(CFG, env={})
    t0 = datetime(2025, 3, 1, tzinfo=TAIPEI)
    c = meter_points(influx, t0, 31 * 1440, 1000.0, 0.0)
    meter_points(influx, datetime(2026, 3, 1, tzinfo=TAIPEI), 14 * 1440, 1000.0, c)  # half of March
    ledger = Ledger(
        cfg.model_copy(
            update={
                "sites": (
                    cfg.sites[0].model_copy(
                        update={
                            "ledger": cfg.sites[0].ledger.model_copy(update={"base_year": 2025})
                        }
                    ),
                )
            }
        ),
        influx,
        RecordStore(tmp_path / "r.sqlite"),
    )
    ledger.load(date(2025, 3, 1), date(2026, 4, 1))
    row = ledger.electricity(ledger.config.sites[0], month(2026, 3))
    assert row.completeness < 0.5 and row.met is None and row.savings_rate is None
    assert any("not judged" in str(n) for n in row.notes)
