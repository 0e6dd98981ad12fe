"""Alerts end to end through the real pipeline: faults injected into the simulators
(HTTP control) -> Modbus -> collector -> MQTT -> ingester -> InfluxDB -> rules engine
-> MQTT, webhook and SMTP.  Simulated time runs at 60x and every part shares it."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from foursave.core.clock import simulated_clock
from foursave.localstack import free_port
from foursave.rules.alerts import AlertEngine, AlertSettings, IncidentStore, Notifier
from tests.helpers import Mailbox, Pipeline, Watcher, Webhook, mqtt_as, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RULES = [
    {
        "id": "inverter-fault",
        "kind": "state",
        "title": "Inverter fault",
        "match": {"kind": "inverter"},
        "states": [7],
        "severity": "critical",
    },
    {
        "id": "inverter-zero-output",
        "kind": "threshold",
        "title": "No output in daylight",
        "match": {"kind": "inverter"},
        "field": "ac_power_w",
        "op": "<",
        "value": 1,
        "clear_value": 50,
        "for_s": 600,
        "daylight_only": True,
    },
    {"id": "device-silent", "kind": "stale", "title": "Device not reporting", "stale_s": 180},
    {
        "id": "water-night-flow",
        "kind": "threshold",
        "title": "Night flow",
        "match": {"kind": "water"},
        "field": "flow_m3h",
        "op": ">",
        "value": 0.3,
        "clear_value": 0.1,
        "for_s": 300,
        "hours": [0, 5],
    },
    {
        "id": "demand-near-contract",
        "kind": "threshold",
        "title": "Demand near contract",
        "match": {"kind": "meter", "role": "main"},
        "field": "active_power_w",
        "op": ">",
        "value": 0.9,
        "clear_value": 0.85,
        "relative_to": "contract_capacity_w",
        "for_s": 60,
    },
]


class Alerts:
    """The rules engine on the pipeline's simulated clock, with all three channels."""

    def __init__(self, tmp_path, pipe: Pipeline, broker):
        self.hook, self.mail, self.watch = Webhook(), Mailbox(), Watcher(broker)
        settings = AlertSettings.model_validate(
            {
                "rules": RULES,
                "webhook_url": self.hook.url,
                "smtp": {"host": "127.0.0.1", "port": self.mail.port, "to": ["ops@example.org"]},
            }
        )
        self.client = mqtt_as(pipe.config, "rules", f"rules-{free_port()}")
        self.clock = simulated_clock(pipe.config.services.simulator)
        self.engine = AlertEngine(
            pipe.config,
            settings,
            pipe.influx,
            IncidentStore(tmp_path / "inc.sqlite"),
            Notifier(settings, self.client),
            self.clock,
        )
        self.events: list[dict] = []

    def next_pass(self, sim_s: float = 15.0) -> None:
        """Wait (with a deadline) until simulated time moved on by one evaluation step."""
        t = self.clock.time()
        wait_for(
            lambda: self.clock.time() >= t + sim_s, 10, "simulated time to pass", interval_s=0.02
        )

    def run_until(self, predicate, sim_minutes: float, what: str):
        """Evaluate until ``predicate(events)``; bounded in simulated time."""
        deadline = self.clock.time() + sim_minutes * 60
        while self.clock.time() < deadline:
            self.events += self.engine.evaluate()
            if predicate(self.events):
                return
            self.next_pass()
        raise AssertionError(
            f"{what}: not within {sim_minutes} simulated minutes; events {self.events}"
        )

    def of(self, rule: str, device: str | None = None) -> list[str]:
        return [
            e["event"]
            for e in self.events
            if e["rule"] == rule and (device is None or e["device"] == device)
        ]

    def close(self):
        self.engine.store.close()
        self.client.loop_stop()
        self.client.disconnect()
        self.hook.close()
        self.mail.close()
        self.watch.close()


def pipeline(tmp_path, broker, influx_url, database, start: str) -> Pipeline:
    return Pipeline(
        tmp_path,
        broker,
        influx_url,
        database,
        extra_services={
            "simulator": {"speed": 60, "start": start, "anchor": datetime.now(UTC).isoformat()},
            "collector": {"clock": "simulated"},
        },
        commissioned=date(2026, 10, 10),
    )


def test_trip_spike_and_dead_meter_in_the_day(tmp_path, broker, influx_url, database):
    with pipeline(tmp_path, broker, influx_url, database, "2026-10-13T10:30:00+08:00") as p:
        a = Alerts(tmp_path, p, broker)
        try:
            wait_for(lambda: p.latest("inverter", "inv-01"), 30, "data flowing")
            a.run_until(lambda ev: True, 2, "a first pass")
            # a healthy plant in the morning raises nothing
            assert a.events == [], [(e["rule"], e["device"], e["value"]) for e in a.events]

            p.fault("inv-01", trip=["GROUND_FAULT"])
            a.run_until(lambda ev: "firing" in a.of("inverter-fault"), 10, "trip alert")
            p.fault("meter-main", spike_w=250_000)  # the demo site's contract is 300 kW
            a.run_until(lambda ev: "firing" in a.of("demand-near-contract"), 10, "demand alert")
            p.fault("meter-hvac", offline=True)
            a.run_until(
                lambda ev: "firing" in a.of("device-silent", "meter-hvac"), 15, "dead meter"
            )

            inc = next(i for i in a.engine.store.all("firing") if i.rule_id == "inverter-fault")
            a.engine.store.acknowledge(
                inc.id, "engineer Lee", "string fuse replaced", a.clock.time()
            )

            for dev in ("inv-01", "meter-main", "meter-hvac"):
                p.clear(dev)
            a.run_until(
                lambda ev: all(
                    "resolved" in a.of(r)
                    for r in ("inverter-fault", "demand-near-contract", "device-silent")
                ),
                20,
                "everything resolved",
            )
            for rule in ("inverter-fault", "demand-near-contract"):
                assert a.of(rule) == ["firing", "resolved"], (rule, a.events)
            assert a.of("device-silent", "meter-hvac") == ["firing", "resolved"]
            assert "inv-02" not in {e["device"] for e in a.events}  # the healthy peer stayed quiet
            fired = len([e for e in a.events if e["event"] == "firing"])
            # exactly once per event on every channel
            wait_for(lambda: len(a.hook.bodies) == len(a.events), 10, "webhook deliveries")
            wait_for(lambda: len(a.mail.messages) == len(a.events), 10, "e-mails")
            topic = "foursave/v1/demo/alert/inverter-fault"
            wait_for(lambda: len(a.watch.messages.get(topic, [])) == 2, 10, "MQTT events")
            assert fired >= 3
            assert a.engine.store.get(inc.id).acked_by == "engineer Lee"
        finally:
            a.close()


def test_a_night_leak_fires_and_a_night_without_sun_raises_nothing_else(
    tmp_path, broker, influx_url, database
):
    with pipeline(tmp_path, broker, influx_url, database, "2026-10-14T01:00:00+08:00") as p:
        a = Alerts(tmp_path, p, broker)
        try:
            wait_for(lambda: p.latest("inverter", "inv-01"), 30, "data flowing")
            # fifteen simulated minutes of a normal night: zero PV is no alert
            end = a.clock.time() + 15 * 60
            while a.clock.time() < end:
                a.events += a.engine.evaluate()
                a.next_pass()
            assert a.events == [], [(e["rule"], e["device"], e["value"]) for e in a.events]
            assert p.latest("inverter", "inv-01")[0]["ac_power_w"] == 0
            p.fault("water-01", leak_m3h=1.0)
            a.run_until(lambda ev: "firing" in a.of("water-night-flow"), 15, "leak alert")
            p.clear("water-01")
            a.run_until(lambda ev: "resolved" in a.of("water-night-flow"), 10, "leak resolved")
            assert a.of("water-night-flow") == ["firing", "resolved"]
            assert {e["rule"] for e in a.events} == {"water-night-flow"}
        finally:
            a.close()
