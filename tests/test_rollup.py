"""The counter_daily rollup knows its coverage (issue 17), on a real influxd: a warm
ledger issues no raw query older than the open days, days before the first reading are
not scanned again, late data for a closed day is noticed by the late_data marker the
ingester writes (and applied by ``rules --once --rebuild`` too), and PV days of closed
days are read back from pv_daily.  Queries are counted by a client that records the
InfluxQL it sends to the real server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import replace
from datetime import date, timedelta

import pytest
import yaml

from foursave.collector.ingest import Ingester, Message
from foursave.core.clock import ManualClock
from foursave.core.config import parse_config
from foursave.core.influx import InfluxClient
from foursave.core.late import LATE
from foursave.core.periods import day_start_ms, month, year
from foursave.core.reading import Reading, to_line
from foursave.core.topics import reading_topic
from foursave.rules.ledger import Ledger
from foursave.rules.pv import pv_days, pv_lines
from foursave.rules.records import RecordStore
from foursave.rules.rollup import daily_quantities, rebuild_rollup
from foursave.simulators.backfill import run_backfill
from tests.helpers import ROOT, YONGHUA_CONFIG

pytestmark = [pytest.mark.integration, pytest.mark.clock]

TZ = "Asia/Taipei"
RAW = ("meter", "inverter", "water", "weather")


class Recording(InfluxClient):
    """The real client, remembering every statement it sends to the server."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.sent: list[str] = []

    def query(self, q, epoch="ms"):
        self.sent.append(q)
        return super().query(q, epoch)

    def raw(self) -> list[tuple[str, int | None, int | None]]:
        """(statement, lower, upper time bound in ms) of each query of raw readings."""
        out = []
        for q in self.sent:
            m = re.search(r'FROM "(\w+)"', q)
            if m and m.group(1) in RAW:
                lo = re.search(r"time >= (\d+)ms", q)
                hi = re.search(r"time < (\d+)ms", q)
                out.append((q, lo and int(lo.group(1)), hi and int(hi.group(1))))
        return out

    def of(self, measurement: str) -> list[str]:
        return [q for q in self.sent if f'FROM "{measurement}"' in q]


def _env(url: str, database: str) -> dict[str, str]:
    return {"FOURSAVE_INFLUXDB_URL": url, "FOURSAVE_INFLUXDB_DATABASE": database}


@pytest.fixture
def recording(influx_url, database):
    client = Recording(influx_url, database)
    yield client
    client.close()


def ms(d: date) -> int:
    return day_start_ms(d, TZ)


def clock_at(d: date) -> ManualClock:
    """An hour into local day ``d``."""
    return ManualClock(ms(d) / 1000 + 3600)


def same(a, b) -> bool:
    return a.keys() == b.keys() and all(
        a[k].quantity == pytest.approx(b[k].quantity)
        and a[k].completeness == pytest.approx(b[k].completeness)
        and a[k].resets == b[k].resets
        for k in a
    )


def test_a_warm_ledger_reads_no_raw_day_before_the_open_days(
    tmp_path, influx_url, database, influx, recording
):
    cfg = parse_config(YONGHUA_CONFIG, env=_env(influx_url, database))
    # data from 1 March; the ledger asks from 1 January: two months known to be empty
    run_backfill(cfg, date(2025, 3, 1), date(2025, 4, 1), step_s=900, influx=influx)
    start, end = date(2025, 1, 1), date(2025, 4, 1)
    clock = clock_at(end)
    open_from = end - timedelta(days=2)
    rec = recording
    store = RecordStore(tmp_path / "r.sqlite")
    cold = Ledger(cfg, rec, store, clock)
    cold.load(start, end)
    cold_rows = cold.rows([month(2025, 3), year(2025)])
    assert any(lo is not None and lo < ms(date(2025, 3, 1)) for _, lo, _ in rec.raw())

    for _ in range(2):  # warm, and warm again
        rec.sent = []
        warm = Ledger(cfg, rec, store, clock)
        warm.load(start, end)
        rows = warm.rows([month(2025, 3), year(2025)])
        raw = rec.raw()
        # the open days of the four counters and of the outdoor temperature, nothing older
        assert len(raw) == 5, raw
        assert all(lo is not None and lo >= ms(open_from) for _, lo, _ in raw), raw
        assert [r.actual for r in rows] == pytest.approx([r.actual for r in cold_rows])
        assert [r.completeness for r in rows] == pytest.approx([r.completeness for r in cold_rows])
    fresh = daily_quantities(influx, cfg, start, end, use_rollup=False, clock=clock)
    assert same(daily_quantities(influx, cfg, start, end, clock=clock), fresh)
    # a device's first day counts from its first reading, kept in the rollup
    assert fresh[("main", "import_energy_wh")].quantity[date(2025, 3, 1)] > 0


METER_CFG = """
sites: [{id: s, name: S, lat: 22.99, lon: 120.19, floor_area_m2: 1000}]
devices: [{id: main, site: s, kind: meter, role: main, profile: sunspec, host: h, interval_s: 900}]
"""
GAP = [date(2025, 2, 10), date(2025, 2, 11), date(2025, 2, 12)]


def _points(first: date, last: date) -> list[tuple[int, float]]:
    """(time, counter) every 15 minutes of 1 kW, from 31 December."""
    t0 = ms(date(2024, 12, 31))
    return [(t, (t - t0) / 900_000 * 250.0) for t in range(ms(first), ms(last), 900_000)]


def test_late_data_for_a_closed_day_is_noticed_and_rescanned(
    tmp_path, influx_url, database, influx, recording
):
    raw_cfg = yaml.safe_load(METER_CFG)
    raw_cfg["services"] = {
        "influxdb": {"url": influx_url, "database": database},
        "rules": {"records_path": str(tmp_path / "records.sqlite")},
        "ingester": {"dead_letter_path": str(tmp_path / "dead.sqlite")},
    }
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(raw_cfg))
    cfg = parse_config(path.read_text(), env={})
    tags = {"site": "s", "device": "main", "role": "main"}
    # the meter's collector was cut off 10..12 February: its readings come later
    before = _points(date(2024, 12, 31), GAP[0]) + _points(
        GAP[-1] + timedelta(days=1), date(2025, 4, 1)
    )
    influx.write([to_line("meter", tags, {"import_energy_wh": c}, t) for t, c in before])
    start, end = date(2025, 1, 1), date(2025, 4, 1)
    clock = clock_at(end)
    rec = recording
    first = daily_quantities(rec, cfg, start, end, clock=clock)
    q = first[("main", "import_energy_wh")].quantity
    assert not any(d in q for d in GAP) and q[GAP[-1] + timedelta(days=1)] == pytest.approx(96_000)

    # the spool delivers: the real ingester stores the readings and its late_data marker
    ingester = Ingester(cfg, influx, ManualClock(time.time()))
    late = _points(GAP[0], GAP[-1] + timedelta(days=1))
    batch = [
        Message(
            mid=k,
            qos=0,
            topic=reading_topic("s", "main"),
            payload=Reading(t, k, "meter", {"import_energy_wh": c}, role="main").to_json(),
            received=time.time(),
        )
        for k, (t, c) in enumerate(late)
    ]
    try:
        ingester.process(batch)
    finally:
        ingester.dead.close()
        ingester.client.loop_stop()
    assert len(influx.rows(f'SELECT "n" FROM "{LATE}"')) >= 1

    rec.sent = []
    seen = daily_quantities(rec, cfg, start, end, clock=clock)
    truth = daily_quantities(influx, cfg, start, end, use_rollup=False, clock=clock)
    assert same(seen, truth)
    q = seen[("main", "import_energy_wh")].quantity
    assert all(q[d] == pytest.approx(24_000) for d in GAP)
    # the cheap check: only the marked days were read again (plus the open days)
    older = [(lo, hi) for _, lo, hi in rec.raw() if lo < ms(end - timedelta(days=2))]
    # (one query per counter field)
    assert older == [(ms(GAP[0]), ms(GAP[-1] + timedelta(days=1)))] * 4
    rec.sent = []
    assert same(daily_quantities(rec, cfg, start, end, clock=clock), truth)  # handled once
    assert all(lo >= ms(end - timedelta(days=2)) for _, lo, _ in rec.raw())

    # written by hand, past any marker: `rules --once --rebuild` applies it
    influx.write(
        [
            to_line("meter", tags, {"import_energy_wh": c + 5000.0}, t)
            for t, c in _points(date(2025, 3, 10), date(2025, 3, 11))
        ]
    )
    env = {
        **os.environ,
        "FOURSAVE_INFLUXDB_URL": influx_url,
        "FOURSAVE_INFLUXDB_DATABASE": database,
    }
    rules = [
        sys.executable,
        "-m",
        "foursave",
        "rules",
        "--once",
        "--no-alerts",
        "--config",
        str(path),
    ]
    out = subprocess.run(rules, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr

    def day_10_11() -> list[float]:
        q = daily_quantities(influx, cfg, start, end, clock=clock)[("main", "import_energy_wh")]
        return [q.quantity[date(2025, 3, 10)], q.quantity[date(2025, 3, 11)]]

    assert day_10_11() == pytest.approx([24_000, 24_000])  # not noticed: the rollup stands
    out = subprocess.run(
        [*rules, "--rebuild"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "rebuilt the counter_daily rollup" in out.stdout
    assert day_10_11() == pytest.approx([29_000, 19_000])  # the step on 10 March, back on 11
    assert same(
        daily_quantities(influx, cfg, start, end, clock=clock),
        daily_quantities(influx, cfg, start, end, use_rollup=False, clock=clock),
    )


PV_CONFIG = YONGHUA_CONFIG.replace("dc_kwp: 14, commissioned", "dc_kwp: 12, commissioned", 1)


def test_pv_days_of_closed_days_are_read_from_pv_daily(influx_url, database, influx, recording):
    cfg = parse_config(PV_CONFIG, env=_env(influx_url, database))
    start, end = date(2025, 10, 20), date(2025, 10, 28)
    run_backfill(cfg, start, end, influx=influx)
    clock = clock_at(end)
    open_from = end - timedelta(days=2)
    computed = pv_days(cfg, influx, start, end, clock, stored=False)
    assert {r.day for r in computed} == {start + timedelta(days=k) for k in range(8)}
    influx.write(pv_lines(computed, TZ))  # what the rules engine writes

    rec = recording
    again = pv_days(cfg, rec, start, end, clock)
    assert len(rec.of("pv_daily")) == 1
    raw = rec.raw()  # the open days only
    assert raw and all(lo >= ms(open_from) for _, lo, _ in raw), raw
    assert again == computed  # every field, labels included
    assert any(r.pr is not None and r.availability for r in again if r.day < open_from)
    # a rebuild (a new scan of every day) makes the stored rows stale: computed again
    rebuild_rollup(influx, cfg, start, end, clock=clock)
    rec.sent = []
    rebuilt = pv_days(cfg, rec, start, end, clock)
    assert [replace(r, rollup_at_ms=None) for r in rebuilt] == [
        replace(r, rollup_at_ms=None) for r in computed
    ]
    assert all(
        r.rollup_at_ms != c.rollup_at_ms
        for r, c in zip(rebuilt, computed, strict=True)
        if c.rollup_at_ms
    )
    assert any(lo < ms(open_from) for _, lo, _ in rec.raw())
