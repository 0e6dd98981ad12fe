"""Demand watch on a real influxd: 15-minute block demand, the month's maximum, the
over-contract surcharge and the running block's forecast."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import numpy as np
import pytest

from foursave.app import load_config
from foursave.core.clock import ManualClock
from foursave.core.config import parse_config
from foursave.core.reading import to_line
from foursave.rules import formulas
from foursave.rules.alerts import AlertEngine, AlertSettings, IncidentStore, Notifier
from foursave.rules.demand import forecast, month_demand
from foursave.simulators.backfill import run_backfill
from foursave.simulators.server import register_image
from foursave.simulators.site import SiteModel
from tests.helpers import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.clock]
TAIPEI = timezone(timedelta(hours=8))


def test_block_demand_maximum_and_surcharge_from_history(influx_url, database, influx, monkeypatch):
    monkeypatch.setenv("FOURSAVE_INFLUXDB_URL", influx_url)
    monkeypatch.setenv("FOURSAVE_INFLUXDB_DATABASE", database)
    cfg = load_config(ROOT / "config" / "demo.yaml")
    site = cfg.sites[0].model_copy(update={"contract_capacity_kw": 90.0})  # tight on purpose
    cfg = cfg.model_copy(update={"sites": (site,)})
    run_backfill(cfg, date(2025, 7, 1), date(2025, 8, 1))
    md = month_demand(cfg, influx, site, 2025, 7)

    # the model's minute power averaged over each 15-minute block
    model = SiteModel(cfg, site).frame(date(2025, 7, 1), 31)
    p = model.devices["meter-main"]["active_power_w"].clip(min=0)
    expected = p.reshape(-1, 15).mean(axis=1) / 1000
    starts = model.weather.index[::15].as_unit("ms").asi8
    got = np.array([md.blocks.get(int(t), np.nan) for t in starts])
    assert np.isnan(got).sum() <= 1  # the month's last block needs August's first reading
    ok = ~np.isnan(got)
    # history holds the counter as the meter's register shows it: each block's energy is
    # off by at most one register step, its demand by that step over a quarter hour
    step_kwh = register_image(cfg.device("meter-main")).resolution("import_energy_wh", 0) / 1000
    np.testing.assert_allclose(got[ok], expected[ok], rtol=0, atol=step_kwh / 0.25 + 1e-9)

    assert md.max_demand_kw == pytest.approx(expected[ok].max(), abs=step_kwh / 0.25)
    peak_day = datetime.fromtimestamp(md.max_at_ms / 1000, TAIPEI).date()
    assert peak_day.month == 7  # summer: the 223.6 NT$/kW rate
    assert md.surcharge_ntd == pytest.approx(
        formulas.over_contract_surcharge(md.max_demand_kw, 90.0, 223.6).ntd
    )
    assert md.surcharge_ntd > 0


def test_forecast_of_the_running_block_and_its_alert(tmp_path, influx):
    cfg = parse_config(
        "sites: [{id: demo, name: D, lat: 22.99, lon: 120.19, contract_capacity_kw: 300}]\n"
        "devices: [{id: main, site: demo, kind: meter, role: main, profile: sunspec, host: h}]\n",
        env={},
    )
    block = datetime(2026, 7, 14, 14, 0, tzinfo=TAIPEI).timestamp()

    def point(t, counter_wh, power_w):
        influx.write(
            [
                to_line(
                    "meter",
                    {"site": "demo", "device": "main", "role": "main"},
                    {"import_energy_wh": counter_wh, "active_power_w": power_w},
                    int(t * 1000),
                )
            ]
        )

    point(block - 5, 1_000_000.0, 280_000.0)
    point(block + 300, 1_025_000.0, 320_000.0)  # 25 kWh in 5 minutes, 320 kW now
    fc = forecast(cfg, influx, cfg.sites[0], block + 300)
    # (25 + 320 x 10/60) / 0.25 = 313.3 kW
    assert fc.forecast_kw == pytest.approx((25 + 320 * 10 / 60) / 0.25)

    rule = {
        "id": "demand-forecast",
        "kind": "demand_forecast",
        "title": "Forecast over contract",
        "match": {"kind": "meter", "role": "main"},
        "value": 1.0,
        "clear_value": 0.95,
    }
    settings = AlertSettings.model_validate({"rules": [rule], "mqtt": False})
    engine = AlertEngine(
        cfg,
        settings,
        influx,
        IncidentStore(tmp_path / "i.sqlite"),
        Notifier(settings),
        ManualClock(block + 300),
    )
    assert [e["event"] for e in engine.evaluate()] == ["firing"]  # warned 10 minutes ahead
    point(block + 900 + 300, 1_080_000.0, 150_000.0)  # next block: the load was shed
    point(block + 900, 1_051_000.0, 150_000.0)
    engine.clock = ManualClock(block + 900 + 300)
    assert [e["event"] for e in engine.evaluate()] == ["resolved"]
