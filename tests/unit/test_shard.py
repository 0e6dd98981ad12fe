"""Collectors sharded from one configuration: which collector polls each device
(``Config.collector_of`` / ``collector_devices``), each collector's settings and
account, ``foursave collect --collector`` refusing what it cannot run, and the lock that
keeps two collectors off one spool.  The refusals' exact messages are case folders
(tests/cases/config/collectors-*, collector-rule-*)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from foursave.app import load_config
from foursave.brokerconf import grants, owned_devices
from foursave.cli import main
from foursave.core.config import (
    CollectorService,
    CollectorShare,
    ConfigError,
    UnknownCollector,
    parse_config,
)
from foursave.core.store import InstanceBusy, hold, instance_path
from foursave.core.topics import reading_topic
from tests.helpers import ROOT

SITES = """
sites:
  - {id: east, name: E, lat: 23, lon: 120}
  - {id: west, name: W, lat: 23, lon: 120}
  - {id: hill, name: H, lat: 23, lon: 120}
"""


def water(i: str, site: str, port: int, **more: object) -> str:
    extra = "".join(f", {k}: {v}" for k, v in more.items())
    return (
        f"  - {{id: {i}, site: {site}, kind: water, profile: generic_water_meter, "
        f"host: 10.0.0.1, port: {port}{extra}}}\n"
    )


DEVICES = "devices:\n" + "".join(
    [
        water("e-1", "east", 1),
        water("e-2", "east", 2),
        water("w-1", "west", 3),
        water("w-2", "west", 4),
        water("h-1", "hill", 5),
    ]
)


def config(text: str):
    return parse_config(SITES + DEVICES + text, env={})


def assignment(cfg) -> dict[str, str]:
    return {d.id: cfg.collector_of(d.id) for d in cfg.devices}


def test_without_any_assignment_the_one_collector_owns_every_device_as_before():
    cfg = load_config(ROOT / "config" / "demo.yaml", env={})
    assert cfg.collector_ids() == ["demo-collector"]
    assert cfg.collector_devices("demo-collector") == list(cfg.devices)
    assert set(assignment(cfg).values()) == {"demo-collector"}
    assert cfg.pick_collector(None) == "demo-collector"
    # its settings are services.collector's, untouched
    assert cfg.collector_settings("demo-collector") == cfg.services.collector
    assert cfg.for_collector("demo-collector") == cfg
    assert [a for a in grants(cfg) if a.startswith("collector-")] == ["collector-demo-collector"]


def test_named_collectors_by_site_and_by_device_the_rest_by_the_rule():
    cfg = config(
        """
collectors:
  - {id: north, sites: [east], devices: [h-1]}
  - {id: south, devices: [w-1]}
collector_rule: "{site}-col"
"""
    )
    assert assignment(cfg) == {
        "e-1": "north",
        "e-2": "north",
        "w-1": "south",
        "w-2": "west-col",  # nobody names it: the rule
        "h-1": "north",
    }
    assert cfg.collector_ids() == ["north", "south", "west-col"]
    assert [d.id for d in cfg.collector_devices("north")] == ["e-1", "e-2", "h-1"]
    assert cfg.collector_reason("e-2") == "collectors[0].sites[0]"
    assert cfg.collector_reason("h-1") == "collectors[0].devices[0]"
    assert cfg.collector_reason("w-2") == "collector_rule"


def test_collector_keys_on_sites_and_devices_without_a_list():
    text = SITES.replace("{id: west, name: W,", "{id: west, name: W, collector: b,")
    text += DEVICES.replace("port: 1}", "port: 1, collector: a}")
    text = text.replace("port: 2}", "port: 2, collector: a}")
    text = text.replace("port: 5}", "port: 5, collector: b}")
    cfg = parse_config(text, env={})
    assert assignment(cfg) == {"e-1": "a", "e-2": "a", "w-1": "b", "w-2": "b", "h-1": "b"}
    assert cfg.collector_ids() == ["a", "b"]
    assert cfg.collector_reason("w-1") == "sites[1].collector"
    assert cfg.collector_reason("h-1") == "devices[4].collector"


def test_by_site_gives_each_site_its_collector_and_an_entry_its_settings():
    cfg = config(
        """
services: {collector: {spool_path: "var/spool-{id}.sqlite", max_inflight: 100}}
collector_rule: by_site
collectors:
  - {id: west, max_inflight: 5, spool_path: /data/west.sqlite}
"""
    )
    assert assignment(cfg) == {
        "e-1": "east",
        "e-2": "east",
        "w-1": "west",
        "w-2": "west",
        "h-1": "hill",
    }
    assert cfg.collector_ids() == ["west", "east", "hill"]  # listed first
    east, west = cfg.collector_settings("east"), cfg.collector_settings("west")
    assert (east.id, east.spool_path, east.max_inflight) == ("east", "var/spool-east.sqlite", 100)
    assert (west.id, west.spool_path, west.max_inflight) == ("west", "/data/west.sqlite", 5)
    assert cfg.collector_setting_path("west", "spool_path") == "collectors[0].spool_path"
    assert cfg.collector_setting_path("east", "spool_path") == "services.collector.spool_path"
    mine = cfg.for_collector("west")
    assert mine.services.collector == west
    assert mine.services.mqtt_account("collector") == "collector-west"
    assert cfg.services.mqtt_account("collector") == "collector-collector-1"  # untouched


def test_the_settings_an_entry_overrides_are_the_collectors_own():
    """A setting added to services.collector must be overridable per collector (or
    deliberately not): the two lists are held together here."""
    own = set(CollectorShare.model_fields) - {"id", "sites", "devices"}
    assert own == set(CollectorService.model_fields) - {"id"}
    with pytest.raises(ConfigError, match=r"collectors\[0\]\.max_inflight"):
        config("collectors: [{id: a, sites: [east, west, hill], max_inflight: 0}]\n")


def test_each_collector_gets_an_account_for_its_own_devices_only():
    cfg = config("collector_rule: by_site\n")
    accounts = grants(cfg)
    assert [a for a in accounts if a.startswith("collector-")] == [
        "collector-east",
        "collector-west",
        "collector-hill",
    ]
    writes = {g.topic for g in accounts["collector-west"] if g.access == "write"}
    assert reading_topic("west", "w-1") in writes
    assert reading_topic("east", "e-1") not in writes
    assert owned_devices(cfg, "west") == [("west", "w-1"), ("west", "w-2")]
    assert owned_devices(cfg, "nobody") == []


def test_collect_refuses_an_unknown_collector_and_several_without_one(tmp_path, capsys):
    path = tmp_path / "city.yaml"
    path.write_text(SITES + DEVICES + "collector_rule: by_site\n")
    assert main(["collect", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "3 collectors: east, west, hill" in err and "--collector ID" in err
    assert main(["collect", "--config", str(path), "--collector", "south"]) == 2
    err = capsys.readouterr().err
    assert "no collector 'south'" in err and "east, west, hill" in err
    assert main(["collect", "--config", str(path), "--collector", "east", "--device", "w-1"]) == 2
    assert "device 'w-1' is collector west's, not collector east's" in capsys.readouterr().err
    cfg = load_config(path, env={})
    with pytest.raises(UnknownCollector, match="no collector 'south'"):
        cfg.collector_devices("south")


def test_check_config_prints_the_assignment(tmp_path, capsys):
    path = tmp_path / "city.yaml"
    path.write_text(
        SITES + DEVICES + "collector_rule: by_site\n"
        "services: {collector: {spool_path: 'var/s-{id}.sqlite'}}\n"
    )
    assert main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "3 collectors (`foursave collect --collector ID` runs one):" in out
    assert "collector west: 2 device(s) at 1 site(s) (west); spool var/s-west.sqlite holds" in out
    assert "w-1 (site west)" not in out
    assert main(["check-config", "-v", str(path)]) == 0
    assert "    w-1 (site west): collector_rule" in capsys.readouterr().out
    assert main(["-v", "check-config", str(path)]) == 0
    assert "    w-1 (site west): collector_rule" in capsys.readouterr().out


def test_instance_path_puts_the_id_in():
    assert instance_path("var/spool-{id}.sqlite", "east") == "var/spool-east.sqlite"
    assert instance_path("var/collector-spool.sqlite", "east") == "var/collector-spool.sqlite"


def test_a_held_file_refuses_a_second_holder_until_its_process_ends(tmp_path):
    path = tmp_path / "spool.sqlite"
    busy = r"spool\.sqlite is in use .* services\.collector\.spool_path must name"
    with (
        hold(path, "services.collector.spool_path"),
        pytest.raises(InstanceBusy, match=busy),
        hold(path, "services.collector.spool_path"),
    ):
        pass
    with hold(path, "x"):  # released
        pass
    # another process's hold, ended by SIGKILL: no goodbye, the kernel lets go of it
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from foursave.core.store import hold\n"
            f"with hold({str(path)!r}, 's'):\n    print('held', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "held\n"
        with pytest.raises(InstanceBusy, match=f"pid {child.pid}"), hold(path, "s"):
            pass
    finally:
        child.kill()
        child.wait(30)
        for pipe in (child.stdin, child.stdout):
            if pipe is not None:
                pipe.close()
    with hold(path, "s"):
        pass
