"""Alert rules and their lifecycle on a real influxd, delivered over a real mosquitto,
to a real HTTP webhook receiver and a real SMTP server (aiosmtpd)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import yaml

from foursave.core.clock import ManualClock
from foursave.core.config import parse_config
from foursave.core.influxql import column, eq, select
from foursave.core.reading import to_line
from foursave.localstack import free_port
from foursave.rules.alerts import AlertEngine, AlertSettings, IncidentStore, Notifier
from tests.helpers import Mailbox, Watcher, Webhook, mqtt_as, on_broker, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.clock]
TAIPEI = timezone(timedelta(hours=8))
CFG = """
sites: [{id: demo, name: Demo, lat: 22.992, lon: 120.185, contract_capacity_kw: 300}]
devices:
  - {id: inv-01, site: demo, kind: inverter, profile: sunspec, host: h, port: 1}
  - {id: water-01, site: demo, kind: water, profile: generic_water_meter, host: h, port: 2}
  - {id: meter-main, site: demo, kind: meter, role: main, profile: sunspec, host: h, port: 3}
"""


@pytest.fixture
def channels(broker):
    hook, mail, watcher = Webhook(), Mailbox(), Watcher(broker)
    yield hook, mail, watcher
    hook.close()
    mail.close()
    watcher.close()


def make_engine(tmp_path, influx, broker, hook, mail, rules: list[dict], clock) -> AlertEngine:
    cfg = on_broker(broker, CFG)
    settings = AlertSettings.model_validate(
        {
            "rules": rules,
            "webhook_url": hook.url,
            "smtp": {"host": "127.0.0.1", "port": mail.port, "to": ["facilities@example.org"]},
        }
    )
    client = mqtt_as(cfg, "rules", f"rules-{free_port()}")
    store = IncidentStore(tmp_path / "incidents.sqlite")
    return AlertEngine(cfg, settings, influx, store, Notifier(settings, client), clock)


def write(influx, measurement, device, fields, t, role=None):
    tags = {"site": "demo", "device": device}
    if role:
        tags["role"] = role
    influx.write([to_line(measurement, tags, fields, int(t * 1000))])


def at(hour: int, minute: int = 0) -> float:
    return datetime(2026, 10, 13, hour, minute, tzinfo=TAIPEI).timestamp()


FAULT = {
    "id": "inverter-fault",
    "kind": "state",
    "title": "Inverter fault",
    "severity": "critical",
    "match": {"kind": "inverter"},
    "states": [7],
}


def test_fault_fires_once_on_every_channel_is_acknowledged_and_resolves(
    tmp_path, influx, broker, channels
):
    hook, mail, watcher = channels
    clock = ManualClock(at(11))
    engine = make_engine(tmp_path, influx, broker, hook, mail, [FAULT], clock)
    write(influx, "inverter", "inv-01", {"state": 4, "ac_power_w": 4000.0}, clock.time())
    assert engine.evaluate() == []
    clock.advance(10)
    write(influx, "inverter", "inv-01", {"state": 7, "events": 1, "ac_power_w": 0.0}, clock.time())
    events = engine.evaluate()
    assert [e["event"] for e in events] == ["firing"]
    for _ in range(3):  # still faulted: one incident, one notification
        clock.advance(10)
        write(
            influx, "inverter", "inv-01", {"state": 7, "events": 1, "ac_power_w": 0.0}, clock.time()
        )
        assert engine.evaluate() == []
    topic = "foursave/v1/demo/alert/inverter-fault"
    wait_for(lambda: watcher.last(topic), 10, "the MQTT alert event")
    assert len(hook.bodies) == 1 and hook.bodies[0]["device"] == "inv-01"
    wait_for(lambda: len(mail.messages) == 1, 10, "one e-mail")
    assert "Inverter fault" in mail.messages[0] and "FIRING" in mail.messages[0]

    incident = engine.store.all("firing")[0]
    engine.store.acknowledge(incident.id, "engineer Lee", "crew on the way", clock.time())
    assert engine.store.get(incident.id).acked_by == "engineer Lee"

    clock.advance(10)
    write(
        influx, "inverter", "inv-01", {"state": 4, "events": 0, "ac_power_w": 3900.0}, clock.time()
    )
    assert [e["event"] for e in engine.evaluate()] == ["resolved"]
    wait_for(
        lambda: len(hook.bodies) == 2 and len(mail.messages) == 2, 10, "resolved notifications"
    )
    wait_for(lambda: len(watcher.messages.get(topic, [])) == 2, 10, "resolved over MQTT")
    assert [m["event"] for m in watcher.messages[topic]] == ["firing", "resolved"]
    history = influx.rows("SELECT * FROM alert_events")
    # the acknowledgement went into alert history with the next pass
    assert [r["event"] for r in history] == ["firing", "acknowledged", "resolved"]
    assert history[1]["by"] == "engineer Lee" and history[1]["comment"] == "crew on the way"


def test_for_duration_and_hysteresis_of_a_night_leak(tmp_path, influx, broker, channels):
    hook, mail, _ = channels
    rule = {
        "id": "water-night-flow",
        "kind": "threshold",
        "title": "Night flow",
        "match": {"kind": "water"},
        "field": "flow_m3h",
        "op": ">",
        "value": 0.3,
        "clear_value": 0.1,
        "for_s": 1800,
        "hours": [0, 5],
    }
    clock = ManualClock(at(1))
    engine = make_engine(tmp_path, influx, broker, hook, mail, [rule], clock)
    for _ in range(20):  # 0.8 m³/h for 19 minutes: pending, not yet firing
        write(influx, "water", "water-01", {"flow_m3h": 0.8}, clock.time())
        assert engine.evaluate() == []
        clock.advance(60)
    assert engine.store.open_for("water-night-flow", "water-01").state == "pending"
    fired = []
    for _ in range(15):
        write(influx, "water", "water-01", {"flow_m3h": 0.8}, clock.time())
        fired += engine.evaluate()
        clock.advance(60)
    assert [e["event"] for e in fired] == ["firing"]
    # between the clear value and the threshold: still firing (hysteresis)
    write(influx, "water", "water-01", {"flow_m3h": 0.2}, clock.time())
    assert engine.evaluate() == []
    clock.advance(60)
    write(influx, "water", "water-01", {"flow_m3h": 0.05}, clock.time())
    assert [e["event"] for e in engine.evaluate()] == ["resolved"]
    # the same flow in office hours is not a leak
    clock.t = at(10)
    for _ in range(40):
        write(influx, "water", "water-01", {"flow_m3h": 2.0}, clock.time())
        assert engine.evaluate() == []
        clock.advance(60)


def test_zero_output_is_daylight_only_and_state_survives_a_restart(
    tmp_path, influx, broker, channels
):
    hook, mail, _ = channels
    rule = {
        "id": "inverter-zero-output",
        "kind": "threshold",
        "title": "No output",
        "match": {"kind": "inverter"},
        "field": "ac_power_w",
        "op": "<",
        "value": 1,
        "clear_value": 50,
        "for_s": 600,
        "daylight_only": True,
    }
    clock = ManualClock(at(21))  # night: zero output is normal
    engine = make_engine(tmp_path, influx, broker, hook, mail, [rule], clock)
    for _ in range(30):
        write(influx, "inverter", "inv-01", {"ac_power_w": 0.0, "state": 2}, clock.time())
        assert engine.evaluate() == []
        clock.advance(60)
    clock.t = at(12)
    events = []
    for _ in range(15):
        write(influx, "inverter", "inv-01", {"ac_power_w": 0.0, "state": 4}, clock.time())
        events += engine.evaluate()
        clock.advance(60)
    assert [e["event"] for e in events] == ["firing"]
    # a restarted engine finds the incident and does not notify it again
    again = make_engine(tmp_path, influx, broker, hook, mail, [rule], clock)
    write(influx, "inverter", "inv-01", {"ac_power_w": 0.0, "state": 4}, clock.time())
    assert again.evaluate() == []
    assert len(again.store.all("firing")) == 1


def test_silent_device_and_maintenance_window(tmp_path, influx, broker, channels):
    hook, mail, _ = channels
    stale = {
        "id": "device-silent",
        "kind": "stale",
        "title": "Silent",
        "match": {"device": "meter-main"},
        "stale_s": 300,
    }
    clock = ManualClock(at(9))
    engine = make_engine(tmp_path, influx, broker, hook, mail, [stale], clock)
    write(influx, "meter", "meter-main", {"active_power_w": 1e5}, clock.time(), role="main")
    assert engine.evaluate() == []
    clock.advance(400)
    assert [e["event"] for e in engine.evaluate()] == ["firing"]
    write(influx, "meter", "meter-main", {"active_power_w": 1e5}, clock.time(), role="main")
    assert [e["event"] for e in engine.evaluate()] == ["resolved"]
    # during maintenance the same silence raises nothing
    window = {
        "start": datetime.fromtimestamp(clock.time(), TAIPEI),
        "end": datetime.fromtimestamp(clock.time() + 3600, TAIPEI),
        "rules": ["device-silent"],
        "reason": "meter replacement",
    }
    engine.s = AlertSettings.model_validate({**engine.s.model_dump(), "maintenance": [window]})
    clock.advance(1200)
    assert engine.evaluate() == []


def test_silent_for_days_is_stale_at_once_never_heard_gets_its_grace(
    tmp_path, influx, broker, channels
):
    hook, mail, _ = channels
    stale = {
        "id": "device-silent",
        "kind": "stale",
        "title": "Silent",
        "match": {"kind": "meter"},
        "stale_s": 300,
    }
    clock = ManualClock(at(9))
    # last heard from three days ago: beyond the engine's one-day look-back window
    write(influx, "meter", "meter-main", {"active_power_w": 1e5}, clock.time() - 3 * 86400)
    engine = make_engine(tmp_path, influx, broker, hook, mail, [stale], clock)
    events = engine.evaluate()  # the engine has only just started
    assert [(e["device"], e["event"]) for e in events] == [("meter-main", "firing")]
    assert events[0]["value"] == pytest.approx(3 * 86400)  # its real age, not the grace
    # a device never heard from at all waits stale_s past the engine's start
    engine.config = parse_config(
        CFG + "  - {id: meter-new, site: demo, kind: meter, role: main, profile: sunspec, "
        "host: h, port: 4}\n",
        env={},
    )
    assert engine.evaluate() == []
    clock.advance(301)
    events = engine.evaluate()
    assert [(e["device"], e["event"]) for e in events] == [("meter-new", "firing")]
    assert events[0]["value"] == pytest.approx(301)
    # the long-silent device comes back: resolved, and its age is today's again
    write(influx, "meter", "meter-main", {"active_power_w": 1e5}, clock.time())
    assert [(e["device"], e["event"]) for e in engine.evaluate()] == [("meter-main", "resolved")]


def test_alert_rules_file_is_valid():
    from foursave.rules.alerts import load_alert_settings

    s = load_alert_settings("config/alerts.yaml")
    assert {r.id for r in s.rules} >= {
        "inverter-fault",
        "inverter-zero-output",
        "device-silent",
        "water-night-flow",
        "demand-near-contract",
    }
    bad = yaml.safe_dump({"rules": [{"id": "x", "kind": "threshold", "title": "t", "op": ">>"}]})
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as fh:
        fh.write(bad)
    with pytest.raises(ValueError, match=r"rules\.0\.op"):
        load_alert_settings(fh.name)


def test_peer_deviation_and_rate_of_change(tmp_path, influx, broker, channels):
    hook, mail, _ = channels
    cfg_text = CFG.replace(
        "  - {id: inv-01, site: demo, kind: inverter, profile: sunspec, host: h, port: 1}",
        "  - {id: inv-01, site: demo, kind: inverter, profile: sunspec, host: h, port: 1, array: {dc_kwp: 10}}\n"
        "  - {id: inv-02, site: demo, kind: inverter, profile: sunspec, host: h, port: 4, array: {dc_kwp: 10}}\n"
        "  - {id: inv-03, site: demo, kind: inverter, profile: sunspec, host: h, port: 5, array: {dc_kwp: 20}}",
    )
    rules = [
        {
            "id": "below-peers",
            "kind": "peer_deviation",
            "title": "Below peers",
            "match": {"kind": "inverter"},
            "value": 0.8,
            "clear_value": 0.9,
            "window_s": 600,
            "daylight_only": True,
        },
        {
            "id": "water-jump",
            "kind": "rate_of_change",
            "title": "Jump",
            "match": {"kind": "water"},
            "field": "volume_m3",
            "value": 20,
            "clear_value": 10,
            "window_s": 900,
        },
    ]
    clock = ManualClock(at(12))
    engine = make_engine(tmp_path, influx, broker, hook, mail, rules, clock)
    engine.config = parse_config(cfg_text, env={})
    for k in range(10):
        t = clock.time() + 60 * k
        # per kWp: inv-01 600 W/kWp, inv-02 390 (65 %), inv-03 600 (twice the size, twice the power)
        write(influx, "inverter", "inv-01", {"ac_power_w": 6000.0}, t)
        write(influx, "inverter", "inv-02", {"ac_power_w": 3900.0}, t)
        write(influx, "inverter", "inv-03", {"ac_power_w": 12000.0}, t)
        write(influx, "water", "water-01", {"volume_m3": 100.0 + 0.8 * k}, t)  # 48 m³/h
    clock.advance(600)
    events = engine.evaluate()
    assert sorted((e["rule"], e["device"]) for e in events) == [
        ("below-peers", "inv-02"),
        ("water-jump", "water-01"),
    ]
    assert [e["value"] for e in events if e["rule"] == "below-peers"] == [pytest.approx(0.65)]


def test_repeat_until_acknowledged(tmp_path, influx, broker, channels):
    hook, mail, _ = channels
    rule = {**FAULT, "repeat_s": 600}
    clock = ManualClock(at(11))
    engine = make_engine(tmp_path, influx, broker, hook, mail, [rule], clock)
    kinds = []
    for _ in range(25):  # 25 minutes faulted: firing, then a reminder every 10 minutes
        write(influx, "inverter", "inv-01", {"state": 7, "events": 1}, clock.time())
        kinds += [e["event"] for e in engine.evaluate()]
        clock.advance(60)
    assert kinds == ["firing", "repeat", "repeat"]
    inc = engine.store.all("firing")[0]
    engine.store.acknowledge(inc.id, "lee", "on it", clock.time())
    for _ in range(25):  # acknowledged: no more reminders
        write(influx, "inverter", "inv-01", {"state": 7, "events": 1}, clock.time())
        assert engine.evaluate() == []
        clock.advance(60)


def test_threshold_without_for_s_and_naive_maintenance_in_site_time(
    tmp_path, influx, broker, channels
):
    hook, mail, _ = channels
    rule = {
        "id": "hot",
        "kind": "threshold",
        "title": "Hot",
        "match": {"kind": "meter"},
        "field": "active_power_w",
        "op": ">",
        "value": 1000,
    }
    clock = ManualClock(at(9))
    engine = make_engine(tmp_path, influx, broker, hook, mail, [rule], clock)
    write(influx, "meter", "meter-main", {"active_power_w": 5000.0}, clock.time() - 30, role="main")
    assert [e["event"] for e in engine.evaluate()] == ["firing"]  # a reading 30 s old counts
    clock.advance(60)
    write(influx, "meter", "meter-main", {"active_power_w": 10.0}, clock.time() - 20, role="main")
    assert [e["event"] for e in engine.evaluate()] == ["resolved"]
    # "09:00 to 10:00" without an offset is Taipei time: at 09:30 Taipei it silences
    engine.s = AlertSettings.model_validate(
        {
            **engine.s.model_dump(),
            "maintenance": [
                {"start": "2026-10-13T09:00:00", "end": "2026-10-13T10:00:00", "reason": "works"}
            ],
        }
    )
    clock.t = at(9, 30)
    write(influx, "meter", "meter-main", {"active_power_w": 5000.0}, clock.time() - 10, role="main")
    assert engine.evaluate() == []


IDENTITY = {
    "id": "identity",
    "kind": "identity_change",
    "title": "Firmware or serial changed",
    "title_zh": "設備韌體或序號變更",
    "severity": "info",
    "window_s": 86400,
}


def info(influx, device, t, **fields):
    """A device_info point as the ingester writes it (string fields)."""
    write(influx, "device_info", device, {"manufacturer": "SunSpecSim", **fields}, t)


def test_identity_change_fires_once_naming_old_and_new_and_clears_on_ack(
    tmp_path, influx, broker, channels
):
    hook, mail, _ = channels
    clock = ManualClock(at(10))
    engine = make_engine(tmp_path, influx, broker, hook, mail, [IDENTITY], clock)
    info(influx, "inv-01", at(8), version="3.11.02.R", serial="SN-1")
    info(influx, "inv-01", at(9), version="3.11.02.R", serial="SN-1")  # an ingester restart
    info(influx, "meter-main", at(9), version="1.0", serial="M-1")  # a single point
    assert engine.evaluate() == []  # equal consecutive points, or one point: no change

    info(influx, "inv-01", at(10, 5), version="3.12.01.R", serial="SN-1")
    clock.t = at(10, 6)
    events = engine.evaluate()
    assert [(e["event"], e["device"]) for e in events] == [("firing", "inv-01")]
    detail = (
        "inv-01: firmware 3.11.02.R -> 3.12.01.R at 2026-10-13T10:05:00+08:00, serial unchanged"
    )
    assert events[0]["detail"] == detail and events[0]["severity"] == "info"
    inc = engine.store.all("firing")[0]
    assert inc.detail == detail and inc.pending_since == at(10, 5)  # dated by the change
    assert len(hook.bodies) == 1 and hook.bodies[0]["detail"] == detail
    wait_for(lambda: len(mail.messages) == 1, 10, "one e-mail")
    assert detail in mail.messages[0]
    for _ in range(3):  # shown once: no more events while it is news
        clock.advance(60)
        assert engine.evaluate() == []

    engine.store.acknowledge(inc.id, "engineer Lee", "planned update", clock.time())
    clock.advance(60)
    assert [e["event"] for e in engine.evaluate()] == ["resolved"]  # cleared by the ack
    clock.advance(60)
    assert engine.evaluate() == []  # the acknowledged change is not reported again
    assert len(hook.bodies) == 1  # the resolution is history, not another notification
    history = influx.rows(
        select([column("event"), column("detail")], "alert_events", where=[eq("rule", "identity")])
    )
    assert [(r["event"], r["detail"]) for r in history] == [
        ("firing", detail),
        ("resolved", detail),
    ]

    info(influx, "inv-01", clock.time() - 10, version="3.12.02.R", serial="SN-1")  # a newer one
    events = engine.evaluate()
    assert [e["event"] for e in events] == ["firing"]
    assert "firmware 3.12.01.R -> 3.12.02.R" in events[0]["detail"]


def test_identity_change_of_serial_and_expiry(tmp_path, influx, broker, channels):
    hook, mail, _ = channels
    clock = ManualClock(at(12))
    rule = {**IDENTITY, "window_s": 3600}
    engine = make_engine(tmp_path, influx, broker, hook, mail, [rule], clock)
    info(influx, "inv-01", at(11), version="3.11.02.R", serial="SN-1")
    info(influx, "inv-01", at(11, 30), serial="SN-1")  # the version not read: still known
    assert engine.evaluate() == []
    info(influx, "inv-01", at(11, 59), version="3.11.02.R", serial="SN-2")  # a swapped unit
    events = engine.evaluate()
    assert [e["event"] for e in events] == ["firing"]
    assert events[0]["detail"] == (
        "inv-01: serial SN-1 -> SN-2 at 2026-10-13T11:59:00+08:00, firmware unchanged"
    )
    # not acknowledged: news for window_s after the change, then resolved without a word
    clock.t = at(12, 58)
    assert engine.evaluate() == []
    clock.t = at(13, 0)
    assert [e["event"] for e in engine.evaluate()] == ["resolved"]
    assert len(hook.bodies) == 1
    clock.advance(60)
    assert engine.evaluate() == []


def test_identity_change_fields_are_device_info_fields():
    with pytest.raises(ValueError, match="not device_info fields: firmware"):
        AlertSettings.model_validate({"rules": [{**IDENTITY, "fields": ["firmware"]}]})
    rule = AlertSettings.model_validate({"rules": [IDENTITY]}).rules[0]
    assert rule.fields == ("version", "serial")
