"""The rules engine partitioned by site, on a real mosquitto and influxd: two ``foursave
rules`` processes (``--shard 1/2`` and ``--shard 2/2``) over one configuration of four
sites raise each incident once and derive only their own sites' results; a partition
that would share a site with a running one is refused; the claims on the broker
(rules/claim.py) hold under a race and outlive no process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from foursave.app import load_config
from foursave.core.clock import ManualClock, simulated_clock
from foursave.core.config import parse_config
from foursave.core.late import late_line
from foursave.core.periods import day_start_ms, zone
from foursave.core.reading import to_line
from foursave.core.topics import RULES_CLAIMS_FILTER, rules_claim_topic
from foursave.rules.claim import Claim, ClaimRefused
from foursave.rules.partition import shard, shard_of, sites_partition, whole
from foursave.rules.rollup import LATE_SEEN, ROLLUP, daily_quantities, site_marker
from tests.helpers import ROOT, admit, broker_secrets, mqtt_anyone, reap, wait_for

pytestmark = pytest.mark.integration

TZ = zone("Asia/Taipei")
SIM_START = "2025-07-04T12:00:00+08:00"
NAMES = ["anping", "annan", "beimen", "dongshan", "guiren", "houbi", "jiali", "liujia", "madou"]
NAMES += ["nanxi", "qigu", "rende", "shanhua", "xinhua", "xinying", "yujing", "zuozhen"]


def four_sites() -> dict[int, list[str]]:
    """Four site ids, two in each of two shards (by the assignment itself)."""
    shards: dict[int, list[str]] = {1: [], 2: []}
    for s in NAMES:
        i = shard_of(s, 2)
        if len(shards[i]) < 2:
            shards[i].append(s)
    assert all(len(v) == 2 for v in shards.values()), shards
    return shards


def city_raw(sites: list[str]) -> dict:
    return {
        "sites": [
            {
                "id": s,
                "name": s,
                "lat": 23.0,
                "lon": 120.2,
                "floor_area_m2": 2000,
                "ledger": {"base_year": 2025},
            }
            for s in sites
        ],
        "devices": [
            {
                "id": f"main-{s}",
                "site": s,
                "kind": "meter",
                "role": "main",
                "profile": "sunspec",
                "host": "127.0.0.1",
                "port": 15100 + k,
                "interval_s": 900,
            }
            for k, s in enumerate(sites)
        ],
    }


def counter_lines(device: str, site: str, first_ms: int, last_ms: int) -> list[str]:
    """A main meter of 1 kW: a point every 15 minutes in [first_ms, last_ms)."""
    tags = {"site": site, "device": device, "role": "main"}
    return [
        to_line(
            "meter",
            tags,
            {"import_energy_wh": (t - first_ms) / 900_000 * 250.0, "active_power_w": 1000.0},
            t,
        )
        for t in range(first_ms, last_ms, 900_000)
    ]


# ------------------------------------------------------------------ two real partitions


class City:
    """The configuration file of four sites, and ``foursave rules`` processes over it."""

    def __init__(self, tmp_path: Path, broker, influx_url: str, database: str):
        self.tmp = tmp_path
        self.shards = four_sites()
        self.sites = self.shards[1] + self.shards[2]
        raw = city_raw(self.sites)
        raw["services"] = {
            "mqtt": {"url": f"mqtt://127.0.0.1:{broker.port}"},
            "secrets_file": str(broker_secrets(broker)),
            "influxdb": {"url": influx_url, "database": database},
            "rules": {
                "records_path": str(tmp_path / "records.sqlite"),
                # one incident store on the machine, as the API reads it
                "state_path": str(tmp_path / "rules-state.sqlite"),
                "alerts_path": str(tmp_path / "alerts.yaml"),
                "alert_interval_s": 0.5,
                "interval_s": 600,
                "clock": "simulated",  # "now" is the simulated noon: any hour, any zone
            },
            "simulator": {
                "start": SIM_START,
                "speed": 1,
                "anchor": datetime.now(UTC).isoformat(),
            },
        }
        (tmp_path / "alerts.yaml").write_text(
            yaml.safe_dump(
                {
                    "rules": [
                        {
                            "id": "meter-silent",
                            "kind": "stale",
                            "title": "Meter not reporting",
                            "match": {"kind": "meter"},
                            "stale_s": 600,
                        }
                    ]
                }
            )
        )
        self.path = tmp_path / "city.yaml"
        self.path.write_text(yaml.safe_dump(raw, sort_keys=False))
        self.config = load_config(self.path, env={})
        admit(broker, self.config)
        self.clock = simulated_clock(self.config.services.simulator)
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, *args: str) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "wb")  # noqa: SIM115 - the child's until reaped
        proc = subprocess.Popen(
            [sys.executable, "-m", "foursave", "rules", "--config", str(self.path), *args],
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.procs[name] = proc
        return proc

    def refused(self, *args: str) -> str:
        """A ``foursave rules`` that must not start: its message."""
        out = subprocess.run(
            [sys.executable, "-m", "foursave", "rules", "--config", str(self.path), *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 1, (out.returncode, out.stdout, out.stderr)
        assert "Traceback" not in out.stderr, out.stderr
        return out.stderr

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, self.log(name)
        assert "Traceback" not in self.log(name), self.log(name)

    def close(self) -> None:
        for proc in self.procs.values():
            reap(proc)


class Listener:
    """Alert events and claims on the broker, as a plain subscriber sees them."""

    def __init__(self, broker):
        self.alerts: list[dict] = []
        self.claims: dict[str, dict] = {}  # topic -> the retained claim (deleted: gone)
        self.lock = threading.Lock()
        self.c = mqtt_anyone(broker, f"listen-{os.urandom(3).hex()}")
        self.c.on_message = self._on_message
        subscribed = threading.Event()
        self.c.on_subscribe = lambda *a: subscribed.set()
        self.c.subscribe([("foursave/v1/+/alert/#", 1), (RULES_CLAIMS_FILTER, 1)])
        assert subscribed.wait(10), "no SUBACK"

    def _on_message(self, client, userdata, msg):
        with self.lock:
            if "/alert/" in msg.topic:
                self.alerts.append(json.loads(msg.payload))
            elif msg.payload:
                self.claims[msg.topic] = json.loads(msg.payload)
            else:
                self.claims.pop(msg.topic, None)

    def events(self, kind: str) -> list[tuple[str, str]]:
        with self.lock:
            return sorted((e["site"], e["device"]) for e in self.alerts if e["event"] == kind)

    def partitions(self) -> list[str]:
        with self.lock:
            return sorted(c["partition"] for c in self.claims.values())

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


def history_events(influx, kind: str) -> list[tuple[str, str]]:
    rows = influx.rows(
        f"SELECT \"incident\", site, device FROM alert_events WHERE event = '{kind}'"
    )
    return sorted((r["site"], r["device"]) for r in rows)


def tag_values(influx, measurement: str, key: str) -> set[str]:
    return {
        r["value"] for r in influx.rows(f'SHOW TAG VALUES FROM "{measurement}" WITH KEY = "{key}"')
    }


def test_two_partitions_raise_each_incident_once_and_derive_only_their_sites(
    tmp_path, broker, influx_url, database, influx
):
    city = City(tmp_path, broker, influx_url, database)
    one, two = city.shards[1], city.shards[2]
    # every meter reported until an hour before the simulated noon: all silent by then
    now_ms = int(city.clock.time() * 1000)
    first = day_start_ms(date(2025, 7, 1), TZ)
    for s in city.sites:
        influx.write(counter_lines(f"main-{s}", s, first, now_ms - 3_600_000))
    listen = Listener(broker)
    try:
        city.start("shard-1", "--shard", "1/2")
        wait_for(lambda: len(history_events(influx, "firing")) >= 2, 90, "shard 1's incidents")
        wait_for(lambda: influx.rows("SELECT count(actual) FROM ledger"), 60, "shard 1's ledger")
        # shard 1 alone: its two sites' incidents, ledger and rollup, nothing of the others
        mine = [(s, f"main-{s}") for s in one]
        assert history_events(influx, "firing") == sorted(mine)
        assert tag_values(influx, "ledger", "site") == set(one)
        assert tag_values(influx, "ledger_daily", "site") == set(one)
        rolled = tag_values(influx, ROLLUP, "device")
        assert {d for d in rolled if not d.startswith("_")} == {f"main-{s}" for s in one}
        assert {site_marker(s) for s in one} <= rolled
        assert not any(s in d for d in rolled for s in two), rolled  # no marker of theirs
        assert listen.partitions() == ["shard-1-of-2"]

        # the same shard again, or sites of both shards: refused, naming who holds them
        said = city.refused("--shard", "1/2")
        assert "shard-1-of-2" in said and all(s in said for s in one), said
        said = city.refused("--sites", f"{one[0]},{two[0]}")
        assert "shard-1-of-2" in said and f"site(s) {one[0]}" in said, said

        city.start("shard-2", "--shard", "2/2")
        wait_for(lambda: len(history_events(influx, "firing")) >= 4, 90, "shard 2's incidents")
        wait_for(lambda: tag_values(influx, "ledger", "site") == set(city.sites), 60, "ledgers")
        assert listen.partitions() == ["shard-1-of-2", "shard-2-of-2"]
        # every site's partition: no other one (a new --shard 1/3 overlaps one of them)
        said = city.refused()  # `foursave rules` of every site
        assert "shard-1-of-2" in said and "shard-2-of-2" in said, said

        # the meters report again: every incident resolves, in both partitions
        now_ms = int(city.clock.time() * 1000)
        for s in city.sites:
            influx.write(counter_lines(f"main-{s}", s, now_ms - 60_000, now_ms))
        wait_for(lambda: len(history_events(influx, "resolved")) >= 4, 60, "resolutions")
        everyone = sorted((s, f"main-{s}") for s in city.sites)
        wait_for(lambda: listen.events("resolved") == everyone, 30, "the MQTT events")
        # shard 1 killed and started again: its claim went with it (the broker's will),
        # and the incidents it resolved stay resolved
        city.procs["shard-1"].send_signal(signal.SIGKILL)
        city.procs.pop("shard-1").wait(30)
        wait_for(lambda: listen.partitions() == ["shard-2-of-2"], 30, "the killed one's claim")
        city.start("shard-1", "--shard", "1/2")
        wait_for(lambda: listen.partitions() == ["shard-1-of-2", "shard-2-of-2"], 60, "its claim")
        assert city.procs["shard-1"].poll() is None, city.log("shard-1")

        # each incident exactly once: in alert history and on MQTT
        assert history_events(influx, "firing") == everyone
        assert history_events(influx, "resolved") == everyone
        assert listen.events("firing") == everyone
        assert listen.events("resolved") == everyone
        # each partition's derived results: every site's, each written by its owner
        assert tag_values(influx, "ledger", "site") == set(city.sites)
        assert {site_marker(s) for s in city.sites} <= tag_values(influx, ROLLUP, "device")
        for name in ("shard-1", "shard-2"):
            city.stop(name)
        # a clean stop deletes the claim: nothing is left on the broker
        wait_for(lambda: listen.partitions() == [], 30, "the claims deleted")
    finally:
        listen.close()
        city.close()


# ------------------------------------------------------------------ the rollup, partitioned


def test_partitions_keep_their_own_rollup_and_late_data_bookkeeping(influx):
    """Both partitions' rollups over one database: each writes only its devices and
    markers, each notices late data for its own sites (one partition handling a
    late_data marker does not hide it from the other), and both equal the whole."""
    shards = four_sites()
    cfg = parse_config(yaml.safe_dump(city_raw(shards[1] + shards[2])), env={})
    parts = [shard(cfg, 1, 2), shard(cfg, 2, 2)]
    start, end = date(2025, 7, 1), date(2025, 7, 11)
    clock = ManualClock(day_start_ms(end, TZ) / 1000 + 3600)
    gap = (day_start_ms(date(2025, 7, 4), TZ), day_start_ms(date(2025, 7, 5), TZ))
    t0, t1 = day_start_ms(start - timedelta(days=1), TZ), day_start_ms(end, TZ)
    for s in cfg.sites:
        lines = counter_lines(f"main-{s.id}", s.id, t0, t1)
        # 4 July comes late (a collector cut off): every meter's
        influx.write([ln for ln in lines if not gap[0] <= int(ln.rsplit(" ", 1)[1]) < gap[1]])

    def quantities(part):
        return daily_quantities(influx, part.restrict(cfg), start, end, clock=clock)

    before = [quantities(p) for p in parts]
    for p, q in zip(parts, before, strict=True):
        assert {dev for dev, _ in q} == {f"main-{s}" for s in p.sites}
        assert date(2025, 7, 4) not in q[(f"main-{p.sites[0]}", "import_energy_wh")].quantity
    rolled = tag_values(influx, ROLLUP, "device")
    assert {d for d in rolled if d.startswith("_")} == {site_marker(s.id) for s in cfg.sites}

    late = []
    for s in cfg.sites:
        late += [
            ln
            for ln in counter_lines(f"main-{s.id}", s.id, t0, t1)
            if gap[0] <= int(ln.rsplit(" ", 1)[1]) < gap[1]
        ]
    influx.write(late)
    influx.write([late_line(gap[0], gap[1] - 900_000, len(late), int(time.time() * 1000))])
    # partition 1 handles the late data first; partition 2 must still see it
    after = [quantities(p) for p in parts]
    truth = daily_quantities(influx, whole(cfg).restrict(cfg), start, end, use_rollup=False)
    for q in after:
        for key, dd in q.items():
            assert dd.quantity == pytest.approx(truth[key].quantity), key
            assert dd.quantity[date(2025, 7, 4)] == pytest.approx(24_000)
    assert tag_values(influx, LATE_SEEN, "rollup") == {site_marker(s.id) for s in cfg.sites}
    # the whole configuration reads both partitions' rollups as its own
    assert daily_quantities(influx, cfg, start, end, clock=clock).keys() == truth.keys()


# ------------------------------------------------------------------ the claims


def _claims_config(broker, influx_url: str, database: str, sites: list[str]):
    raw = city_raw(sites)
    raw["services"] = {
        "mqtt": {"url": f"mqtt://127.0.0.1:{broker.port}"},
        "secrets_file": str(broker_secrets(broker)),
        "influxdb": {"url": influx_url, "database": database},
    }
    cfg = parse_config(yaml.safe_dump(raw), env={})
    admit(broker, cfg)
    return cfg


def _race(claims: list[Claim]) -> dict[int, str]:
    """Both claims acquired at the same moment: "runs" or the refusal, per claim."""
    go = threading.Barrier(len(claims))
    outcome: dict[int, str] = {}

    def acquire(k: int) -> None:
        go.wait()
        try:
            claims[k].acquire()
            outcome[k] = "runs"
        except ClaimRefused as exc:
            outcome[k] = str(exc)

    threads = [threading.Thread(target=acquire, args=(k,)) for k in range(len(claims))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return outcome


def test_of_two_racing_overlapping_partitions_exactly_one_runs(broker, database):
    cfg = _claims_config(broker, "http://127.0.0.1:1", database, ["north", "south", "east"])
    a = sites_partition(cfg, ["north", "south"], "city.yaml")
    b = sites_partition(cfg, ["south", "east"], "city.yaml")
    for _ in range(4):
        claims = [Claim(cfg.services, p, database) for p in (a, b)]
        outcome = _race(claims)
        assert sorted(outcome) == [0, 1]
        winners = [k for k, o in outcome.items() if o == "runs"]
        assert len(winners) == 1, outcome
        loser = outcome[1 - winners[0]]
        assert "site(s) south" in loser and claims[winners[0]].partition.id in loser, loser
        for c in claims:
            c.release()


def test_a_claim_left_behind_is_deleted_but_a_live_one_with_an_old_clock_is_not(broker, database):
    cfg = _claims_config(broker, "http://127.0.0.1:1", database, ["north", "south"])
    part = whole(cfg)
    anyone = mqtt_anyone(broker)
    old_ms = int(time.time() * 1000) - 3_600_000
    dead = rules_claim_topic("sites-north", "gone-host-1-abcdef")
    body = {
        "state": "online",
        "partition": "sites-north",
        "instance": "gone-host-1-abcdef",
        "host": "gone-host",
        "pid": 1,
        "database": database,
        "sites": ["north"],
        "since_ms": old_ms,
        "beat_ms": old_ms,
    }
    try:
        # a claim the broker kept after its process was gone: an hour old, never again
        anyone.publish(dead, json.dumps(body), qos=1, retain=True).wait_for_publish(10)
        claim = Claim(cfg.services, part, database, beat_s=0.5)
        claim.acquire()  # waited for it 0.75 s, then deleted it
        claim.release()
        # a live process whose clock is an hour behind: it publishes again and again
        stop = threading.Event()
        other = {**body, "instance": "skewed-host-2-abcdef", "host": "skewed-host", "pid": 2}
        topic = rules_claim_topic("sites-north", "skewed-host-2-abcdef")

        def beat() -> None:
            while not stop.wait(0.2):
                anyone.publish(topic, json.dumps(other), qos=1, retain=True)

        anyone.publish(topic, json.dumps(other), qos=1, retain=True).wait_for_publish(10)
        beating = threading.Thread(target=beat)
        beating.start()
        try:
            with pytest.raises(ClaimRefused, match="skewed-host"):
                Claim(cfg.services, part, database, beat_s=0.5).acquire()
        finally:
            stop.set()
            beating.join(10)
            anyone.publish(topic, b"", qos=1, retain=True).wait_for_publish(10)
        # another database's partitions are no concern of this one
        held = Claim(cfg.services, part, database)
        held.acquire()
        try:
            elsewhere = Claim(cfg.services, part, database + "_other")
            elsewhere.acquire()
            elsewhere.release()
            with pytest.raises(ClaimRefused, match=held.instance):
                Claim(cfg.services, part, database).acquire()
        finally:
            held.release()
    finally:
        anyone.loop_stop()
        anyone.disconnect()
