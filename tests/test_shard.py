"""Two collectors sharing one configuration, on real simulators (Modbus TCP), a real
mosquitto with the ACL ``foursave broker-config`` makes, a real ingester and InfluxDB:
each polls only its own devices, under its own id, account and spool."""

from __future__ import annotations

import copy
import signal
import subprocess
import sys

import pytest
import yaml

from foursave.app import load_config
from foursave.core.topics import collector_topic, reading_topic
from foursave.simulators.server import SimulatorThread
from tests.helpers import (
    ROOT,
    CollectorThread,
    IngesterThread,
    Watcher,
    admit,
    demo_raw,
    make_config,
    reap,
    wait_for,
)

pytestmark = pytest.mark.integration

# site -> its devices (demo.yaml's); collector_rule by_site, and water-01 moved to
# collector east by a key of its own
SITES = {"east": ["inv-01", "meter-main"], "west": ["inv-02", "water-01"]}
OWNER = {"inv-01": "east", "meter-main": "east", "inv-02": "west", "water-01": "east"}


def city(tmp_path, broker, influx_url, database):
    """One configuration, two collectors (spools ``spool-{id}.sqlite``)."""
    raw = demo_raw()
    site = raw["sites"][0]
    sites = [dict(copy.deepcopy(site), id=sid) for sid in SITES]
    devices = []
    for sid, ids in SITES.items():
        for d in raw["devices"]:
            if d["id"] in ids:
                devices.append(dict(copy.deepcopy(d), site=sid))
    spool = str(tmp_path / "spool-{id}.sqlite")
    make_config(
        tmp_path,
        broker,
        influx_url,
        database,
        devices=devices,
        sites=sites,
        extra_services={"collector": {"spool_path": spool}},
        admitted=False,  # the ACL is made below, for the two collectors
    )
    path = tmp_path / "config.yaml"
    text = yaml.safe_load(path.read_text(encoding="utf-8"))
    text["collector_rule"] = "by_site"
    next(d for d in text["devices"] if d["id"] == "water-01")["collector"] = "east"
    path.write_text(yaml.safe_dump(text, allow_unicode=True, sort_keys=False), encoding="utf-8")
    cfg = load_config(path, env={})
    admit(broker, cfg)
    return cfg, path


def collect_argv(path, collector: str) -> list[str]:
    """``foursave collect`` as an operator runs one collector of the city's file."""
    return [
        sys.executable,
        "-m",
        "foursave",
        "collect",
        "--config",
        str(path),
        "--collector",
        collector,
    ]


def test_two_collectors_of_one_config_each_poll_only_their_own_devices(
    tmp_path, broker, influx_url, database, influx
):
    cfg, path = city(tmp_path, broker, influx_url, database)
    assert {d.id: cfg.collector_of(d.id) for d in cfg.devices} == OWNER
    site_of = {d.id: d.site for d in cfg.devices}
    watcher = Watcher(broker)

    def readings(device: str) -> list[dict]:
        with watcher.lock:
            return list(watcher.messages.get(reading_topic(site_of[device], device), []))

    log = (tmp_path / "west.log").open("wb")
    west = None
    try:
        # east alone first: the simulators see no request for west's device
        with (
            SimulatorThread(cfg) as sim,
            IngesterThread(cfg),
            CollectorThread(cfg, collector_id="east") as east,
        ):
            assert sorted(p.device.id for p in east.collector.pollers) == [
                "inv-01",
                "meter-main",
                "water-01",
            ]
            wait_for(
                lambda: all(len(readings(d)) >= 3 for d, c in OWNER.items() if c == "east"),
                30,
                "3 readings of each of east's devices",
            )
            assert readings("inv-02") == []
            assert sim.sim.stats_of("inv-02").snapshot()[0] == []  # never asked
            assert sim.sim.stats_of("water-01").snapshot()[0] != []

            # west as an operator runs it, beside east: its own process
            west = subprocess.Popen(
                collect_argv(path, "west"), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
            )
            wait_for(lambda: len(readings("inv-02")) >= 3, 60, "3 readings of inv-02")
            presence = {c: collector_topic(c) for c in ("east", "west")}
            wait_for(
                lambda: all(
                    (watcher.last(t) or {}).get("state") == "online" for t in presence.values()
                ),
                30,
                "both collectors' presence online",
            )
            # a second east on east's spool refuses to start, naming file and setting
            again = subprocess.run(
                collect_argv(path, "east"),
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert again.returncode == 2, again.stderr
            assert str(tmp_path / "spool-east.sqlite") in again.stderr
            assert "services.collector.spool_path" in again.stderr
            assert "Traceback" not in again.stderr
            # the ingester confirms to each collector on its own topic: what it stored
            # leaves that collector's spool (unconfirmed, west's would hold every reading)
            wait_for(lambda: east.collector.publisher.confirmed >= 5, 30, "east confirmed")

            def west_confirmed() -> bool:
                p = watcher.last(presence["west"]) or {}
                return p.get("readings", 0) >= 10 and p["spool_depth"] < p["readings"] / 2

            wait_for(west_confirmed, 60, "west's readings confirmed and out of its spool")
            wait_for(
                lambda: influx.rows(
                    'SELECT count("ac_power_w") AS n FROM "inverter" WHERE "device" = \'inv-02\''
                ),
                30,
                "west's readings stored",
            )
            west.send_signal(signal.SIGTERM)
            assert west.wait(30) == 0
    finally:
        if west is not None:
            reap(west)
        log.close()
        watcher.close()
    # every reading says which collector took it: only the device's own
    for device, owner in OWNER.items():
        assert {r["collector"] for r in readings(device)} == {owner}, device
    assert watcher.last(collector_topic("west"))["state"] == "offline"  # stopped cleanly
    assert (tmp_path / "spool-west.sqlite").exists() and (tmp_path / "spool-east.sqlite").exists()
    assert not (tmp_path / "spool-{id}.sqlite").exists()
