"""Several ingesters from one configuration (``foursave ingest --ingester ID``): each
its own client id, account, session expiry and files, a file held by one process only
(core/store.py), and what a member of a shared subscription counts of the seqs."""

from __future__ import annotations

import json

import pytest
import yaml

from foursave.cli import main
from foursave.collector.ingest import (
    Ingester,
    Message,
    SeqTracker,
    UnknownIngester,
    instance_settings,
    session_properties,
)
from foursave.core.clock import ManualClock
from foursave.core.config import Config, IngesterService
from foursave.core.influx import InfluxClient
from foursave.core.store import InstanceBusy, hold, instance_path
from tests.helpers import YONGHUA_CONFIG

NOW_MS = 1_790_000_000_000


def config(tmp_path, **ingester) -> Config:
    raw = yaml.safe_load(YONGHUA_CONFIG)
    raw["services"]["ingester"] = {"dead_letter_path": str(tmp_path / "dead-{id}.sqlite")}
    raw["services"]["ingester"].update(ingester)
    return Config.model_validate(raw)


def make(cfg: Config, instance: str | None = None) -> Ingester:
    influx = InfluxClient("http://127.0.0.1:9", "unused")
    return Ingester(cfg, influx, ManualClock(NOW_MS / 1000), instance=instance)


def test_each_ingester_of_a_file_has_its_own_client_id_account_and_files(tmp_path):
    svc = IngesterService(id="north", instances=["south"], dead_letter_path="var/dl-{id}.db")
    north, south = instance_settings(svc), instance_settings(svc, "south")
    assert (north.id, north.client_id, north.dead_letter_path) == (
        "north",
        "foursave-north",
        "var/dl-north.db",
    )
    assert (south.id, south.client_id, south.dead_letter_path) == (
        "south",
        "foursave-south",
        "var/dl-south.db",
    )
    # the defaults of a single ingester are what they were: its session and file stay
    one = instance_settings(IngesterService())
    assert (one.client_id, one.dead_letter_path) == (
        "foursave-ingester-1",
        "var/dead-letters.sqlite",
    )
    # a client id without {id}: the configured ingester keeps it, the others append theirs
    fixed = IngesterService(id="north", instances=["south"], client_id="city-ingest")
    assert instance_settings(fixed).client_id == "city-ingest"
    assert instance_settings(fixed, "south").client_id == "city-ingest-south"
    cfg = config(tmp_path, id="north", instances=["south"])
    ing = make(cfg, "south")
    try:
        assert ing.services.mqtt_account("ingester") == "ingester-south"
        assert ing.cfg.dead_letter_path == str(tmp_path / "dead-south.sqlite")
    finally:
        ing.dead.close()


def test_an_ingester_the_file_does_not_name_is_refused(tmp_path, capsys):
    svc = IngesterService(id="north", instances=["south"])
    with pytest.raises(UnknownIngester, match=r"no ingester 'east'.*'north', 'south'"):
        instance_settings(svc, "east")
    path = tmp_path / "c.yaml"
    raw = yaml.safe_load(YONGHUA_CONFIG)
    raw["services"]["ingester"] = {"id": "north", "instances": ["south"]}
    path.write_text(yaml.safe_dump(raw))
    assert main(["ingest", "--config", str(path), "--ingester", "East!"]) == 2
    err = capsys.readouterr().err
    assert f"{path}: no ingester 'East!'" in err and "Traceback" not in err


@pytest.mark.parametrize("bad", [["North"], ["a", "a"], ["x y"]])
def test_instances_must_be_distinct_slugs(bad):
    with pytest.raises(ValueError, match=r"slug|listed twice"):
        IngesterService(instances=bad)


def test_a_file_in_use_by_another_holder_is_refused_naming_it_and_the_setting(tmp_path):
    path = tmp_path / "spool.sqlite"
    with hold(path, "services.collector.spool_path"):
        with pytest.raises(InstanceBusy) as exc, hold(path, "services.collector.spool_path"):
            pass
        text = str(exc.value)
        assert str(path) in text and "services.collector.spool_path" in text
        assert "process " in text and "{id}" in text
    with hold(path, "services.collector.spool_path"):  # let go: free again
        pass
    assert instance_path("var/spool-{id}.sqlite", "c2") == "var/spool-c2.sqlite"
    assert instance_path("var/spool.sqlite", "c2") == "var/spool.sqlite"


def test_two_ingesters_with_one_dead_letter_file_cannot_run_at_once(tmp_path, capsys):
    shared_file = config(tmp_path, id="north", instances=["south"])
    shared_file = shared_file.model_copy(
        update={
            "services": shared_file.services.model_copy(
                update={
                    "ingester": shared_file.services.ingester.model_copy(
                        update={"dead_letter_path": str(tmp_path / "one.sqlite")}
                    )
                }
            )
        }
    )
    first = make(shared_file)
    try:
        with pytest.raises(InstanceBusy, match=r"services\.ingester\.dead_letter_path"):
            make(shared_file, "south")
        own = make(config(tmp_path, id="north", instances=["south"]), "south")  # {id}: its own
        own.dead.close()
    finally:
        first.dead.close()
    make(shared_file, "south").dead.close()  # the first one closed its store: free


def test_mqtt_5_by_default_and_3_1_1_when_asked(tmp_path):
    import paho.mqtt.client as mqtt

    for version, protocol in (("5", mqtt.MQTTv5), ("3.1.1", mqtt.MQTTv311)):
        ing = make(config(tmp_path, mqtt_version=version))
        try:
            assert ing.client.protocol == protocol
        finally:
            ing.dead.close()
            ing.influx.close()


def test_the_session_expiry_is_set_and_never_zero():
    assert session_properties(3600).SessionExpiryInterval == 3600
    assert session_properties(None).SessionExpiryInterval == 0xFFFFFFFF  # never expires
    assert IngesterService().session_expiry_s == 3600
    with pytest.raises(ValueError):
        IngesterService(session_expiry_s=0)  # 0 would end the session at each disconnect


def test_a_shared_member_counts_no_gaps_it_cannot_see():
    """A member of a shared group gets about every other seq of a device: counting the
    rest as missing would report half of everything lost."""
    solo, member = SeqTracker(), SeqTracker(count_gaps=False)
    for seq in (0, 2, 4, 6, 5):  # 1 and 3 went to the other member; 5 came late
        solo.see("s/m", seq)
        member.see("s/m", seq)
    assert (solo.devices["s/m"].gaps, solo.devices["s/m"].received) == (2, 5)
    s = member.devices["s/m"]
    assert (s.gaps, s.duplicates, s.received, s.last_seq) == (0, 0, 5, 6)
    member.see("s/m", 0)  # a collector that lost its spool counts again from 0 ...
    assert member.devices["s/m"].last_seq == 6  # ... noticed only far below the last
    member.see("s/m", 20_000)
    member.see("s/m", 1)
    assert (member.devices["s/m"].last_seq, member.devices["s/m"].resets) == (1, 1)


def test_every_reading_point_holds_its_seq(tmp_path):
    ing = make(config(tmp_path, shared_group="city"))
    try:
        assert ing.filters[0] == "$share/city/foursave/v1/+/+/reading"
        body = {"ts": NOW_MS, "seq": 41, "kind": "meter", "fields": {"voltage_v": 230.0}}
        msg = Message(1, 1, "foursave/v1/s/m1/reading", json.dumps(body).encode(), 0.0)
        lines, error = ing._to_lines(msg)
        assert error is None
        assert lines == [f"meter,device=m1,site=s voltage_v=230.0,seq=41i {NOW_MS}"]
        # a reading with parts only: its own point holds the seq alone
        parts = {
            "ts": NOW_MS,
            "seq": 42,
            "kind": "inverter",
            "fields": {},
            "parts": [
                {
                    "measurement": "inverter_string",
                    "tags": {"string": "1"},
                    "fields": {"dc_power_w": 5.0},
                }
            ],
        }
        msg = Message(2, 1, "foursave/v1/s/i1/reading", json.dumps(parts).encode(), 0.0)
        lines, error = ing._to_lines(msg)
        assert error is None
        assert lines[0] == f"inverter,device=i1,site=s seq=42i {NOW_MS}"
        assert lines[1].startswith("inverter_string,device=i1,site=s,string=1 dc_power_w=5.0 ")
    finally:
        ing.dead.close()
        ing.influx.close()


def test_broker_config_gives_each_ingester_its_account_and_only_its_status(tmp_path):
    from foursave.brokerconf import grants
    from foursave.core.topics import ingester_topic

    got = grants(config(tmp_path, id="north", instances=["south"]))
    for mine, other in (("north", "south"), ("south", "north")):
        writes = {g.topic for g in got[f"ingester-{mine}"] if g.access == "write"}
        assert ingester_topic(mine) in writes and ingester_topic(other) not in writes
