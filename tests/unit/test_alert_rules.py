"""The alert rules' schema against the observers: every kind has one, and a rule
missing what its kind reads is refused when the file is loaded, naming it."""

from __future__ import annotations

import sqlite3
from typing import get_args

import pytest

from foursave.rules.alerts import OBSERVERS, IncidentStore, load_alert_settings
from foursave.rules.alerts.incidents import SCHEMA
from foursave.rules.alerts.observers import EVENTS, NEEDS, Kind


def test_every_kind_has_an_observer_and_its_needs():
    assert set(get_args(Kind)) == set(OBSERVERS) == set(NEEDS)
    assert set(EVENTS) <= set(OBSERVERS)


def test_an_incident_store_from_before_incidents_carried_text_is_upgraded(tmp_path):
    path = tmp_path / "incidents.sqlite"
    old_schema = SCHEMA.replace(",\n    detail TEXT", "").replace(
        ",\n    ack_pending INTEGER NOT NULL DEFAULT 0", ""
    )
    assert "detail" not in old_schema and "ack_pending" not in old_schema
    old = sqlite3.connect(path)
    old.executescript(old_schema)
    old.execute(
        "INSERT INTO incidents (rule_id, site, device, state, pending_since) "
        "VALUES ('r', 's', 'd', 'firing', 1.0)"
    )
    old.commit()
    old.close()
    store = IncidentStore(path)
    assert store.get(1).detail is None and store.get(1).state == "firing"
    assert store.get(1).ack_pending == 0  # acknowledgements of before were written then
    inc = store.create("r", "s", "d", 2.0, None, "inv-01: firmware A -> B")
    assert store.get(inc.id).detail == "inv-01: firmware A -> B"
    store.close()


@pytest.mark.parametrize(
    ("rule", "error"),
    [
        ({"kind": "threshold", "value": 5}, "a threshold rule needs field"),
        ({"kind": "threshold", "field": "flow_m3h"}, "a threshold rule needs value"),
        ({"kind": "rate_of_change"}, "a rate_of_change rule needs field and value"),
        ({"kind": "peer_deviation"}, "a peer_deviation rule needs value"),
        ({"kind": "demand_forecast"}, "a demand_forecast rule needs value"),
        ({"kind": "wobble"}, "rules.0.kind"),
    ],
)
def test_a_rule_missing_what_its_kind_reads_is_refused_on_load(tmp_path, rule, error):
    path = tmp_path / "alerts.yaml"
    path.write_text(
        "rules:\n  - "
        + "\n    ".join(f"{k}: {v}" for k, v in {"id": "r1", "title": "t", **rule}.items())
    )
    with pytest.raises(ValueError) as exc:
        load_alert_settings(path)
    assert str(path) in str(exc.value) and error in str(exc.value)


def test_stale_and_state_rules_need_nothing_more(tmp_path):
    path = tmp_path / "alerts.yaml"
    path.write_text(
        "rules:\n  - {id: s1, title: t, kind: stale}\n  - {id: s2, title: t, kind: state}\n"
    )
    assert [r.kind for r in load_alert_settings(path).rules] == ["stale", "state"]
