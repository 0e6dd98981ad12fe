"""History backfill: the same physics, straight into a real influxd."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date, datetime, timedelta, timezone

import numpy as np
import pytest

from foursave.app import load_config
from foursave.simulators.backfill import run_backfill
from foursave.simulators.server import register_image
from foursave.simulators.site import site_models
from tests.helpers import ROOT

pytestmark = pytest.mark.integration
TAIPEI = timezone(timedelta(hours=8))


@pytest.fixture
def demo(influx_url, database, monkeypatch):
    monkeypatch.setenv("FOURSAVE_INFLUXDB_URL", influx_url)
    monkeypatch.setenv("FOURSAVE_INFLUXDB_DATABASE", database)
    return load_config(ROOT / "config" / "demo.yaml")


def test_a_month_of_history_matches_the_physics(demo, influx):
    start, end = date(2025, 9, 1), date(2025, 10, 1)
    result = run_backfill(demo, start, end)
    assert result.lines == 30 * 1440 * 6

    counts = {
        r["device"]: max(v for k, v in r.items() if k.startswith("count_"))
        for m in ("inverter", "meter", "weather", "water")
        for r in influx.rows(
            f'SELECT count(*) FROM "{m}" WHERE source = \'backfill\' GROUP BY "device"'
        )
    }
    assert counts == {d.id: 30 * 1440 for d in demo.devices}

    site = site_models(demo)["demo"]
    for device, counter in (
        ("inv-01", "ac_energy_wh"),
        ("meter-main", "import_energy_wh"),
        ("water-01", "volume_m3"),
    ):
        kind = demo.device(device).kind
        rows = influx.rows(
            f'SELECT first({counter}) FROM "{kind}" WHERE "device" = \'{device}\' '
            f"GROUP BY time(1d) tz('Asia/Taipei')"
        )
        at_midnight = [r["first"] for r in rows if r["first"] is not None]
        assert len(at_midnight) == 30
        image = register_image(demo.device(device))
        for k in range(29):
            stored = at_midnight[k + 1] - at_midnight[k]
            model = site.daily_totals(start + timedelta(days=k))[device][counter]
            # counters are stored as the device's register carries them: one step of
            # its resolution at each end of the day at most
            step = image.resolution(counter, at_midnight[k + 1])
            assert stored == pytest.approx(model, rel=1e-6, abs=2 * step), (device, k)
            on_grid = round(at_midnight[k] / step) * step
            assert at_midnight[k] == pytest.approx(on_grid, abs=step * 1e-6), (device, k)

    # PV energy per day equals the integral of the stored power (within 1 %)
    energy = influx.rows(
        "SELECT spread(ac_energy_wh) AS e, integral(ac_power_w, 1h) AS i FROM inverter "
        "WHERE \"device\" = 'inv-01' GROUP BY time(1d) tz('Asia/Taipei')"
    )
    for r in energy:
        if r["e"] and r["e"] > 1000:
            assert r["i"] == pytest.approx(r["e"], rel=0.01)

    # live simulation continues where history ends: the counter the live simulator
    # shows at the end equals history's last value plus its last minute
    last = influx.rows(
        "SELECT last(ac_energy_wh), last(ac_power_w) AS p FROM inverter WHERE \"device\" = 'inv-01'"
    )[0]
    t_end = datetime(2025, 10, 1, tzinfo=TAIPEI).timestamp()
    live = site.values_at("inv-01", t_end)["ac_energy_wh"]
    assert live == pytest.approx(last["last"] + last["p"] / 60, abs=1.0)  # 1 Wh register step
    # and what the live simulator serves never steps back from history's last value
    served = register_image(demo.device("inv-01")).quantize("ac_energy_wh", np.array([live]))[0]
    assert served >= last["last"]


def test_backfill_command(demo, influx, influx_url, database):
    env = {
        **os.environ,
        "FOURSAVE_INFLUXDB_URL": influx_url,
        "FOURSAVE_INFLUXDB_DATABASE": database,
    }
    ok = subprocess.run(
        [
            sys.executable,
            "-m",
            "foursave",
            "backfill",
            "--config",
            "config/demo.yaml",
            "--from",
            "2025-09-01",
            "--to",
            "2025-09-03",
            "--quiet",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    assert "backfilled 2 days, 17,280 points" in ok.stdout
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "foursave",
            "backfill",
            "--from",
            "2025-13-01",
            "--to",
            "2025-09-03",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (
        bad.returncode == 2
        and "expected a date like" in bad.stderr
        and "Traceback" not in bad.stderr
    )
    backwards = subprocess.run(
        [
            sys.executable,
            "-m",
            "foursave",
            "backfill",
            "--from",
            "2025-09-03",
            "--to",
            "2025-09-01",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert backwards.returncode == 2 and "must be after" in backwards.stderr
