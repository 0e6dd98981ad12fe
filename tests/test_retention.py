"""Retention for the raw readings, hourly and daily rollups kept for ever (issue 16), on
a real influxd: the retention policies made with the configured duration and altered
when it changes; the ingester's readings in ``raw``, everything else where it always
was; readings stored before retention copied into ``raw`` for the window and read from
where they are by the rollups; hourly and daily rollups equal to a computation of our
own over the same points (a counter reset and a gap among them), per site; readings
that come late to a closed hour computed again; the API's long range served from the
rollup and equal to the readings' aggregate.

The server's retention counts from its own clock, so the points are placed a few days
before this machine's now; which hours are closed is the injected clock's say."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import yaml

from foursave.api.keys import KeyStore
from foursave.api.main import create_app
from foursave.collector.ingest import Ingester, Message
from foursave.core.clock import ManualClock
from foursave.core.config import MIN_RAW_DAYS, parse_config
from foursave.core.influx import InfluxClient
from foursave.core.influx import InfluxClient as Client
from foursave.core.influxadmin import setup
from foursave.core.influxql import ALL, DEFAULT_RP, agg, column, eq, select
from foursave.core.late import late_line
from foursave.core.periods import zone
from foursave.core.reading import Reading, to_line
from foursave.core.retention import DAILY_RP, HOURLY_RP, RAW_RP, policies
from foursave.core.topics import reading_topic, status_topic
from foursave.rules.downsample import run_pass
from tests.api_fixtures import ServerThread
from tests.helpers import make_config

pytestmark = [pytest.mark.integration, pytest.mark.clock]

H = 3_600_000
DAY = 86_400_000
TAIPEI = "Asia/Taipei"
BERLIN = "Europe/Berlin"

CONFIG = """
services:
  influxdb: {{url: "{url}", database: "{db}", retention: {{raw_days: {days}}}}}
sites:
  - {{id: a, name: A, lat: 22.99, lon: 120.18, timezone: Asia/Taipei}}
  - {{id: b, name: B, lat: 52.5, lon: 13.4, timezone: Europe/Berlin}}
devices:
  - {{id: m1, site: a, kind: meter, role: main, profile: sunspec, host: h, port: 1}}
  - {{id: inv1, site: a, kind: inverter, profile: sunspec, host: h, port: 2}}
  - {{id: m2, site: b, kind: meter, role: main, profile: sunspec, host: h, port: 3}}
"""


def config(url: str, db: str, days: int = 120):
    return parse_config(CONFIG.format(url=url, db=db, days=days))


def client(cfg) -> InfluxClient:
    svc = cfg.services.influxdb
    return InfluxClient(svc.url, svc.database, retention=svc.retention)


def count(influx: InfluxClient, measurement: str, rp: str, field: str = "active_power_w") -> int:
    rows = influx.rows(select(agg("count", field), measurement, rp=rp))
    return int(rows[0]["count"]) if rows else 0


def local_midnight(ms: int, tz: str) -> int:
    d = datetime.fromtimestamp(ms / 1000, zone(tz)).date()
    return int(datetime(d.year, d.month, d.day, tzinfo=zone(tz)).timestamp() * 1000)


# ------------------------------------------------------------------ the policies


def test_policies_made_with_the_configured_duration_and_altered_when_it_changes(
    influx_url, database
):
    cfg = config(influx_url, database, days=200)
    with client(cfg) as influx:
        influx.create_database()
        done = influx.ensure_retention(int(time.time() * 1000))
        have = policies(influx._admin, database)
        assert have[RAW_RP] == (200, False) and have[HOURLY_RP] == (None, False)
        assert have[DAILY_RP] == (None, False)
        assert any("created, 200 days" in line for line in done), done
        again = influx.ensure_retention(int(time.time() * 1000))
        assert again == [f"retention policy {RAW_RP}: 200 days"]  # nothing to do twice
    shorter = config(influx_url, database, days=120)
    with client(shorter) as influx:
        done = influx.ensure_retention(int(time.time() * 1000))
        assert policies(influx._admin, database)[RAW_RP] == (120, False)
        assert any("200 days -> 120 days" in line and "deleted" in line for line in done), done


def test_influx_setup_makes_them_and_the_writer_writes_readings_into_raw(influx_auth, database):
    svc = influx_auth.services(database, retention={"raw_days": 150})
    done = setup(svc, influx_auth.secrets())
    assert "retention policy raw: created, 150 days" in done, done
    with Client.for_role(svc, "writer", influx_auth.secrets()) as writer:
        assert writer.ensure_retention(int(time.time() * 1000)) == [
            "retention policy raw: 150 days"
        ]  # nothing to do
    longer = influx_auth.services(database, retention={"raw_days": 160})
    with Client.for_role(longer, "writer", influx_auth.secrets()) as writer:
        # altering a policy is an admin's (403): said, and left to influx-setup
        assert writer.ensure_retention(int(time.time() * 1000)) is None
        now_ms = int(time.time() * 1000)
        writer.write(
            [to_line("meter", {"site": "a", "device": "m1"}, {"active_power_w": 3.0}, now_ms)]
        )
        assert count(writer, "meter", RAW_RP) == 1
    with Client.for_role(svc, "reader", influx_auth.secrets()) as reader:
        assert count(reader, "meter", RAW_RP) == 1  # READ on the database covers raw


def test_readings_go_to_raw_and_the_rest_where_it_always_was(tmp_path, influx_url, database):
    cfg = config(influx_url, database)
    now = time.time()
    with client(cfg) as influx:
        ingester = Ingester(cfg, influx, ManualClock(now))
        ingester._ensure_database()  # as at its start: database and retention policies
        assert RAW_RP in policies(influx._admin, database)
        batch = [
            Message(
                mid=k,
                qos=0,
                topic=reading_topic("a", "m1"),
                payload=Reading(
                    int((now - 600 + k) * 1000),
                    k,
                    "meter",
                    {"active_power_w": 1000.0 + k},
                    role="main",
                ).to_json(),
                received=now,
            )
            for k in range(5)
        ]
        batch.append(
            Message(
                mid=9,
                qos=0,
                topic=status_topic("a", "m1"),
                payload=json.dumps(
                    {
                        "ts": int(now * 1000),
                        "online": True,
                        "poll_ms": 12.0,
                        "errors": 0,
                        "info": {"manufacturer": "Acme", "serial": "S1"},
                    }
                ).encode(),
                received=now,
            )
        )
        try:
            ingester.process(batch)
        finally:
            ingester.dead.close()
        assert count(influx, "meter", RAW_RP) == 5
        assert count(influx, "meter", DEFAULT_RP) == 0
        assert count(influx, "device_status", RAW_RP, "poll_ms") == 1
        # a query of a reading goes to raw without being told (the client's routing)
        assert influx.rows(select(agg("count", "active_power_w"), "meter"))[0]["count"] == 5
        # the device's nameplate is no reading: kept for ever, where it always was
        info = select(column("serial"), "device_info", rp=DEFAULT_RP)
        assert [r["serial"] for r in influx.rows(info)] == ["S1"]
        # a reading older than the raw policy cannot be stored: refused, never elsewhere
        old = to_line("meter", {"site": "a", "device": "m1"}, {"active_power_w": 1.0}, 10**12)
        with pytest.raises(Exception, match="beyond retention"):
            influx.write([old])


def test_readings_stored_before_retention_are_copied_for_the_window_and_the_rest_stays(
    influx_url, database
):
    now_ms = int(time.time() * 1000)
    recent, old = now_ms - 2 * DAY, now_ms - 200 * DAY
    with InfluxClient(influx_url, database) as before:  # no retention yet
        before.create_database()
        before.write(
            [
                to_line("meter", {"site": "a", "device": "m1", "role": "main"}, f, t)
                for t, f in ((old, {"active_power_w": 5.0}), (recent, {"active_power_w": 7.0}))
            ]
        )
    cfg = config(influx_url, database, days=120)
    with client(cfg) as influx:
        done = influx.ensure_retention(now_ms)
        assert any("copied" in line and "meter 1" in line for line in done), done
        assert count(influx, "meter", RAW_RP) == 1  # the window's reading
        assert count(influx, "meter", DEFAULT_RP) == 2  # nothing deleted or moved
        # the rollups read what the raw policy no longer holds from the default one
        run_pass(cfg, influx, ManualClock(now_ms / 1000), server_now_ms=now_ms)
        hours = influx.rows(select(column("active_power_w"), "meter", rp=HOURLY_RP))
        assert sorted(r["active_power_w"] for r in hours) == [5.0, 7.0]


# ------------------------------------------------------------------ the rollups


def readings(start_ms: int, hours: int, seed: int):
    """A meter's and an inverter's readings a minute apart from ``start_ms``: power
    that wanders, an import counter that resets to near zero in hour 5, no readings at
    all in hours 9 and 10 (a gap), the inverter's state changing."""
    rnd = random.Random(seed)
    meter, inverter = [], []
    energy, ac = 5_000_000.0, 80_000.0
    for k in range(hours * 60):
        t = start_ms + k * 60_000
        hour = k // 60
        if hour in (9, 10):
            continue
        p = 20_000 + 5_000 * math.sin(k / 40) + rnd.uniform(-500, 500)
        energy = 120.0 if k == 5 * 60 + 17 else energy + p / 60
        meter.append((t, {"active_power_w": round(p, 3), "import_energy_wh": round(energy, 3)}))
        ac += 50
        state = 4 if 6 <= (hour % 24) <= 18 else 8
        inverter.append((t, {"ac_power_w": round(p / 4, 3), "ac_energy_wh": ac, "state": state}))
    return meter, inverter


def expected(points, bucket_of, stats):
    """Our own rollup of ``points``: bucket -> field -> value (module docstring of
    rules/downsample.py), from the points as written."""
    per: dict[int, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for t, fields in sorted(points):
        for f, v in fields.items():
            per[bucket_of(t)][f].append(v)
    out: dict[int, dict[str, float]] = {}
    for b, fields in per.items():
        row: dict[str, float] = {}
        for f, vs in fields.items():
            kind = stats[f]
            row[f"{f}_n"] = len(vs)
            if kind == "gauge":
                row.update(
                    {f: sum(vs) / len(vs), f"{f}_min": min(vs), f"{f}_max": max(vs)}
                    | {f"{f}_sum": sum(vs)}
                )
            elif kind == "counter":
                row.update({f: vs[-1], f"{f}_first": vs[0]})
            else:
                row[f] = vs[-1]
        out[b] = row
    return out


def rollup_rows(influx, measurement: str, rp: str, site: str, device: str) -> dict[int, dict]:
    rows = influx.rows(
        select(ALL, measurement, where=[eq("site", site), eq("device", device)], rp=rp)
    )
    return {
        r["time"]: {k: v for k, v in r.items() if v is not None and k not in TAGS} for r in rows
    }


TAGS = {"time", "site", "device", "role", "string"}
METER = {"active_power_w": "gauge", "import_energy_wh": "counter"}
INVERTER = {"ac_power_w": "gauge", "ac_energy_wh": "counter", "state": "state"}


def same(got: dict[int, dict], want: dict[int, dict]) -> None:
    assert got.keys() == want.keys(), sorted(set(got) ^ set(want))
    for b, row in want.items():
        assert got[b].keys() == row.keys(), (b, sorted(set(got[b]) ^ set(row)))
        for f, v in row.items():
            assert got[b][f] == pytest.approx(v, rel=1e-9, abs=1e-6), (b, f)


@pytest.fixture
def site_data(influx_url, database):
    """Three days and a bit of site a's readings and a day of site b's, written through
    a client with retention on (so into ``raw``)."""
    cfg = config(influx_url, database)
    influx = client(cfg)
    influx.create_database()
    influx.ensure_retention(int(time.time() * 1000))
    start = local_midnight(int(time.time() * 1000) - 6 * DAY, TAIPEI)
    meter, inverter = readings(start, 3 * 24 + 6, seed=1)
    b_start = local_midnight(int(time.time() * 1000) - 6 * DAY, BERLIN)
    meter_b, _ = readings(b_start, 26, seed=2)
    influx.write(
        [to_line("meter", {"site": "a", "device": "m1", "role": "main"}, f, t) for t, f in meter]
        + [to_line("inverter", {"site": "a", "device": "inv1"}, f, t) for t, f in inverter]
        + [
            to_line("meter", {"site": "b", "device": "m2", "role": "main"}, f, t)
            for t, f in meter_b
        ]
    )
    yield cfg, influx, start, meter, inverter, b_start, meter_b
    influx.close()


def test_hourly_and_daily_rollups_equal_our_own_per_site(site_data):
    cfg, influx, start, meter, inverter, _, meter_b = site_data
    end = start + (3 * 24 + 6) * H
    clock = ManualClock(end / 1000 + 600)  # ten minutes after the last hour ended
    site_a = [s for s in cfg.sites if s.id == "a"]
    run_pass(cfg, influx, clock, sites=site_a)  # a partition of site a alone
    assert rollup_rows(influx, "meter", HOURLY_RP, "b", "m2") == {}  # not its site

    hour = lambda t: t - (t - start) % H  # noqa: E731 - Taipei has whole hours
    want_m = expected(meter, hour, METER)
    assert 9 * H + start not in want_m and 10 * H + start not in want_m  # the gap
    got_m = rollup_rows(influx, "meter", HOURLY_RP, "a", "m1")
    same(got_m, want_m)
    same(
        rollup_rows(influx, "inverter", HOURLY_RP, "a", "inv1"), expected(inverter, hour, INVERTER)
    )
    # the reset: the hour's last is below its first, as in the readings
    reset = got_m[start + 5 * H]
    assert reset["import_energy_wh"] < reset["import_energy_wh_first"]

    day_of = lambda t: local_midnight(t, TAIPEI)  # noqa: E731
    want_d = expected(meter, day_of, METER)
    del want_d[start + 3 * DAY]  # the fourth day has not ended: not rolled up yet
    got_d = rollup_rows(influx, "meter", DAILY_RP, "a", "m1")
    same(got_d, want_d)
    assert len(got_d) == 3

    run_pass(cfg, influx, clock, sites=[s for s in cfg.sites if s.id == "b"])
    berlin_day = lambda t: local_midnight(t, BERLIN)  # noqa: E731
    same(rollup_rows(influx, "meter", DAILY_RP, "b", "m2"), expected(meter_b, berlin_day, METER))


def test_each_bucket_is_read_again_once_final_and_late_data_recomputes_it(site_data):
    cfg, influx, start, meter, *_ = site_data
    site_a = [s for s in cfg.sites if s.id == "a"]
    end = start + (3 * 24 + 6) * H
    t = end / 1000 + 600
    run_pass(cfg, influx, ManualClock(t), sites=site_a)
    # readings for the last hour that came in a while late (no marker: less than a day
    # late): the hour is provisional, and computed again when it becomes final
    last = start + (3 * 24 + 5) * H
    extra = [(last + 30_000 + k * 60_000, {"active_power_w": 99_999.0}) for k in range(3)]
    influx.write(
        [to_line("meter", {"site": "a", "device": "m1", "role": "main"}, f, t) for t, f in extra]
    )
    quiet = run_pass(cfg, influx, ManualClock(t + 60), sites=site_a)
    assert quiet.points == {"1h": 0, "1d": 0} and quiet.queries == {"1h": 0, "1d": 0}
    hourly = lambda: rollup_rows(influx, "meter", HOURLY_RP, "a", "m1")  # noqa: E731
    assert hourly()[last]["active_power_w_n"] == 60  # still the provisional value
    run_pass(cfg, influx, ManualClock(t + 86_400 + 3600), sites=site_a)
    assert hourly()[last]["active_power_w_n"] == 63
    assert hourly()[last]["active_power_w_max"] == 99_999.0

    # a day later still: readings for a final hour, stored with their late_data marker
    # (as the ingester and backfill leave one): that hour is computed again, once
    now = t + 2 * 86_400 + 3600
    run_pass(cfg, influx, ManualClock(now), sites=site_a)
    early = start + 2 * H
    late = [(early + 15_000, {"active_power_w": -1.0, "import_energy_wh": 1.0})]
    influx.write(
        [to_line("meter", {"site": "a", "device": "m1", "role": "main"}, f, t) for t, f in late]
    )
    before = hourly()[early]
    run_pass(cfg, influx, ManualClock(now + 60), sites=site_a)
    assert hourly()[early] == before  # no marker yet: not noticed
    influx.write([late_line(late[0][0], late[0][0], 1, int(now * 1000) + 120_000)])
    again = run_pass(cfg, influx, ManualClock(now + 180), sites=site_a)
    hour = lambda t: t - (t - start) % H  # noqa: E731
    want = expected(meter + late, hour, METER)[early]
    same({early: hourly()[early]}, {early: want})
    assert want["active_power_w_min"] == -1.0
    day = local_midnight(early, TAIPEI)
    daily = rollup_rows(influx, "meter", DAILY_RP, "a", "m1")[day]
    want_day = expected(meter + late, lambda t: local_midnight(t, TAIPEI), METER)[day]
    same({day: daily}, {day: want_day})
    assert daily["active_power_w_n"] == 22 * 60 + 1  # the gap's two hours, the late one
    assert again.queries["1h"] > 0
    done = run_pass(cfg, influx, ManualClock(now + 240), sites=site_a)
    assert done.queries == {"1h": 0, "1d": 0}  # the marker is handled: once


# ------------------------------------------------------------------ the API


def test_the_api_serves_a_long_range_from_the_rollup_equal_to_the_readings(
    tmp_path, broker, influx_url, database
):
    cfg = make_config(
        tmp_path,
        broker,
        influx_url,
        database,
        extra_services={
            "influxdb": {"retention": {"raw_days": 120}},
            "api": {"keys_path": str(tmp_path / "keys.sqlite")},
            "rules": {"state_path": str(tmp_path / "state.sqlite")},
        },
    )
    site = next(d.site for d in cfg.devices if d.id == "meter-main")
    tz = next(s.timezone for s in cfg.sites if s.id == site)
    influx = client(cfg)
    influx.create_database()
    influx.ensure_retention(int(time.time() * 1000))
    start = local_midnight(int(time.time() * 1000) - 8 * DAY, tz)
    meter, _ = readings(start, 5 * 24, seed=3)
    influx.write(
        [
            to_line("meter", {"site": site, "device": "meter-main", "role": "main"}, f, t)
            for t, f in meter
        ]
    )
    now = start + 5 * 24 * H + 3 * 86_400_000  # every hour final
    run_pass(cfg, influx, ManualClock(now / 1000))
    ks = KeyStore(cfg.services.api.keys_path)
    key = ks.create("t", "viewer", "test")[1]
    ks.close()
    app = create_app(cfg, clock=ManualClock(now / 1000), refresh=False)
    iso = lambda ms: datetime.fromtimestamp(ms / 1000, zone(tz)).isoformat()  # noqa: E731
    with ServerThread(app) as server:

        def get(**params):
            r = httpx.get(
                server.url + "/api/v1/series",
                params={"device": "meter-main", "start": iso(start), "end": iso(start + 5 * DAY)}
                | params,
                headers={"X-API-Key": key},
                timeout=60,
            )
            assert r.status_code == 200, r.text
            return r

        for aggregate in ("mean", "min", "max", "count"):
            r = get(field="active_power_w", interval="6h", aggregate=aggregate)
            body = r.json()
            assert body["resolution"] == "1h" and r.headers["X-Foursave-Resolution"] == "1h"
            buckets: dict[int, list[float]] = defaultdict(list)
            for t, f in meter:
                buckets[t - (t - start) % (6 * H)].append(f["active_power_w"])
            fn = {"mean": lambda v: sum(v) / len(v), "min": min, "max": max, "count": len}
            want = sorted((b, fn[aggregate](v)) for b, v in buckets.items())
            assert [p[0] for p in body["points"]] == [b for b, _ in want]
            for (_, got), (_, w) in zip(body["points"], want, strict=True):
                assert got == pytest.approx(w, rel=1e-9)
        last = get(field="import_energy_wh", interval="1d", aggregate="last").json()
        assert last["resolution"] == "1h"
        per_day: dict[int, float] = {}
        for t, f in meter:
            per_day[local_midnight(t, tz)] = f["import_energy_wh"]
        assert last["points"] == [[d, pytest.approx(v)] for d, v in sorted(per_day.items())]
        # a short range is the readings', as before
        short = httpx.get(
            server.url + "/api/v1/series",
            params={
                "device": "meter-main",
                "field": "active_power_w",
                "start": iso(start),
                "end": iso(start + 6 * H),
                "interval": "1h",
            },
            headers={"X-API-Key": key},
            timeout=60,
        ).json()
        assert short["resolution"] == "raw" and len(short["points"]) == 6
    influx.close()


# ------------------------------------------------------------------ the dashboards


def test_every_reading_panel_returns_data_at_every_resolution(tmp_path, influx_url, database):
    """The dashboards built for retention, against a database with it: each panel that
    reads the readings (``"$rp"."m"``) has data with ``$rp`` = raw, rollup_1h and
    rollup_1d; the readings that are not rolled up are read from ``raw``; every other
    query runs (the results are tests/test_dashboards.py's)."""
    from foursave.dashboards.build import DASHBOARDS, RESOLUTIONS, dashboard_json
    from foursave.simulators.backfill import run_backfill
    from tests.helpers import demo_raw, expand, panels

    raw = demo_raw()
    raw["services"]["influxdb"] = {
        "url": influx_url,
        "database": database,
        "retention": {"raw_days": 120},
    }
    raw["services"]["simulator"]["cache_dir"] = str(tmp_path / "sim-cache")
    cfg = parse_config(yaml.safe_dump(raw, allow_unicode=True))
    influx = client(cfg)
    influx.create_database()
    influx.ensure_retention(int(time.time() * 1000))
    today = datetime.now(UTC).date()
    start, end = today - timedelta(days=4), today - timedelta(days=1)
    run_backfill(cfg, start, end, step_s=900, influx=influx, writers=1)
    t0 = int(datetime(start.year, start.month, start.day, tzinfo=UTC).timestamp() * 1000) + DAY // 2
    influx.write(  # the strings come live only (models 160): a point an hour for a day
        [
            to_line(
                "inverter_string",
                {"site": "demo", "device": "inv-01", "string": "1"},
                {"dc_power_w": 1960.0, "dc_voltage_v": 602.0, "dc_current_a": 3.3},
                t0 + k * H,
            )
            for k in range(24)
        ]
    )
    run_pass(cfg, influx, ManualClock(time.time()))
    lo, hi = t0 - DAY, int(time.time() * 1000)
    empty, ran = [], 0
    for name in DASHBOARDS:
        d = dashboard_json(name, retention=True)
        for p in panels(d):
            for t in p.get("targets", []):
                if '"$rp".' not in t["query"]:
                    influx.rows(expand(t["query"], lo, hi, "demo", ["inv-01", "inv-02"]))
                    ran += 1
                    continue
                for _, rp in RESOLUTIONS:
                    q = expand(t["query"].replace("$rp", rp), lo, hi, "demo", ["inv-01", "inv-02"])
                    rows = influx.rows(q)
                    ran += 1
                    if not any(v is not None for r in rows for k, v in r.items() if k != "time"):
                        empty.append((name, p["title"], rp))
    assert not empty, empty
    assert ran > 20
    influx.close()


# ------------------------------------------------------------------ what it costs


def _demo_with(tmp_path, **influxdb) -> Path:
    from tests.helpers import demo_raw

    raw = demo_raw()
    raw["services"]["influxdb"] = {**raw["services"].get("influxdb", {}), **influxdb}
    path = tmp_path / "retention.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False))
    return path


def test_check_config_refuses_too_few_days_and_says_what_older_data_loses(tmp_path):
    from tests.helpers import ROOT

    def check(path):
        return subprocess.run(
            [sys.executable, "-m", "foursave", "check-config", str(path)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
        )

    short = check(_demo_with(tmp_path, retention={"raw_days": 60}))
    assert short.returncode == 2 and "Traceback" not in short.stdout + short.stderr
    assert "services.influxdb.retention.raw_days: 60 days is too short" in short.stdout
    assert f"keep at least {MIN_RAW_DAYS}" in short.stdout and "62 days" in short.stdout
    ok = check(_demo_with(tmp_path, retention={"raw_days": 400}))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "raw readings kept 400 days" in ok.stdout
    assert "at most 10 billing months" in ok.stdout and "--rebuild" in ok.stdout
    never = check(ROOT / "config" / "demo.yaml")
    assert "every reading kept for ever" in never.stdout


def test_the_contract_optimiser_refuses_months_whose_readings_are_gone(influx_url, database):
    from foursave.rules.contract import TooFewMonths, load_months, months_within

    cfg = config(influx_url, database, days=400)
    site = cfg.sites[0]
    today = datetime.now(UTC).date()
    end = (today.year - 1, 12) if today.month == 1 else (today.year, today.month - 1)
    with pytest.raises(TooFewMonths, match=r"kept 400 days .* at most 10 months"):
        load_months(cfg, None, site, end, 24)  # refused before reading anything
    assert months_within(400) == 10
    # ten months fit: it goes on to read them (and finds none, said so)
    with client(cfg) as influx:
        influx.create_database()
        influx.ensure_retention(int(time.time() * 1000))
        with pytest.raises(TooFewMonths, match="main-meter data in 0 of the 10"):
            load_months(cfg, influx, site, end, 10)


def test_a_rebuild_keeps_the_counter_rollup_of_days_whose_readings_are_gone(influx_url, database):
    from foursave.rules.rollup import daily_quantities, rebuild_rollup

    now_ms = int(time.time() * 1000)
    old_start = local_midnight(now_ms - 200 * DAY, TAIPEI)
    old_day = datetime.fromtimestamp(old_start / 1000, zone(TAIPEI)).date()
    legacy = [(old_start + k * H, {"import_energy_wh": 1000.0 + 100 * k}) for k in range(24 * 3)]
    # stored before retention, in the default policy; the counter rollup made of them
    with InfluxClient(influx_url, database) as before:
        before.create_database()
        before.write(
            [
                to_line("meter", {"site": "a", "device": "m1", "role": "main"}, f, t)
                for t, f in legacy
            ]
        )
        clock = ManualClock(now_ms / 1000)
        span = (old_day, old_day + timedelta(days=30))  # its days closed, long ago
        was = daily_quantities(
            before, _no_retention(config(influx_url, database)), *span, clock=clock
        )
    assert was[("m1", "import_energy_wh")].quantity[old_day + timedelta(days=1)] == 2400.0
    cfg = config(influx_url, database, days=120)
    with client(cfg) as influx:  # retention on: those readings are out of reach
        influx.ensure_retention(now_ms)
        generation = rebuild_rollup(influx, cfg, clock=clock)
        assert generation == 1
        now = daily_quantities(influx, cfg, *span, clock=clock)
    assert now[("m1", "import_energy_wh")].quantity == was[("m1", "import_energy_wh")].quantity


def _no_retention(cfg):
    svc = cfg.services
    influxdb = svc.influxdb.model_copy(update={"retention": type(svc.influxdb.retention)()})
    return cfg.model_copy(update={"services": svc.model_copy(update={"influxdb": influxdb})})
