"""A simulator started from its kept daily totals (simulators/daycache.py) answers over
real Modbus TCP exactly as one that integrated its counters from commissioning."""

from __future__ import annotations

import asyncio
from datetime import date, datetime, timedelta, timezone

import pytest
import yaml

from foursave.collector.modbus import ModbusLink, reader_for
from foursave.core.clock import ManualClock
from foursave.simulators.server import SimulatorThread
from tests.helpers import ROOT, make_config

pytestmark = pytest.mark.integration

TAIPEI = timezone(timedelta(hours=8))


def read_all(cfg) -> dict[str, dict]:
    """Every device's fields as the collector reads and decodes them."""

    async def main():
        out = {}
        for d in cfg.devices:
            async with ModbusLink(d) as link:
                r = await reader_for(d).read(link)
            assert r.fields and not r.errors, (d.id, r.errors)
            out[d.id] = r.fields
        return out

    return asyncio.run(main())


@pytest.mark.parametrize("iso", ["2025-01-20T12:00:00", "2025-01-21T00:00:30"])
def test_the_city_hall_answers_the_same_from_its_cache(tmp_path, iso):
    raw = yaml.safe_load((ROOT / "config" / "tainan.yaml").read_text())
    cfg = make_config(
        tmp_path,
        1,
        "http://127.0.0.1:1",
        "x",
        devices=raw["devices"],
        sites=raw["sites"],
        commissioned=date(2025, 1, 1),
    )
    t = datetime.fromisoformat(iso).replace(tzinfo=TAIPEI).timestamp()
    days = (datetime.fromtimestamp(t, TAIPEI).date() - date(2025, 1, 1)).days
    with SimulatorThread(cfg, clock=ManualClock(t)) as cold:
        assert {m.days_integrated for m in cold.sim.sites.values()} == {days}
        integrated = read_all(cfg)
    with SimulatorThread(cfg, clock=ManualClock(t)) as warm:
        assert {m.days_integrated for m in warm.sim.sites.values()} == {0}
        cached = read_all(cfg)
        assert all(m.cache and not m.cache.problems for m in warm.sim.sites.values())
    assert set(cached) == {d["id"] for d in raw["devices"]}
    assert cached == integrated
    # the counters are there (not zero): a day and more of energy
    assert cached["yh-main"]["import_energy_wh"] > 1000 * 1000
