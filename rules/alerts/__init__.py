"""Alert rules (YAML), their lifecycle and their notifications.

Rules are data (``config/alerts.yaml``).  Each pass evaluates every rule for every
device it matches against InfluxDB, at the engine's clock (real or simulated):

- ``threshold``: a field above/below a value for ``for_s``; it clears only past
  ``clear_value`` (hysteresis);
- ``state``: SunSpec ``St`` in given states or ``Evt1`` bits set (inverter faults);
- ``stale``: no reading for ``stale_s`` (a dead device), with its real age however long
  ago it was last heard from; a device never heard from at all is stale only once the
  engine has run ``stale_s`` (no alert storm at start-up);
- ``rate_of_change`` and ``peer_deviation`` (an inverter below its site's peers);
- ``bill_difference``: the rebuilt Taipower bill off the recorded one (``bill_check``,
  ``rules/realbill.py``), an event per bill month naming the likely cause;
- ``identity_change``: a device's firmware or serial (``device_info``) changed, an
  *event*: dated by the change, notified once, resolved when acknowledged or when the
  change leaves ``window_s``, never reported twice;
- any rule may be ``daylight_only`` (no "zero output" at night: the sun is computed for
  the site with pvlib) or limited to ``hours`` (night water flow = leak);
- maintenance windows silence chosen rules and devices.

Lifecycle per rule and device: pending -> firing -> resolved, one incident and one
notification per incident (repeats only if asked for, never once acknowledged),
acknowledgement with who, when and a comment; incidents live in SQLite and survive a
restart, and may say in words what happened (``detail``: an identity change's old and
new values).  Notifications: an MQTT event on ``foursave/v1/{site}/alert/{rule_id}``, a
webhook (HTTP POST, JSON) and e-mail over SMTP.  Every transition is also written to
InfluxDB (``alert_events``, with ``detail`` as a string field).

The package by concern: ``spec`` (the rules file's schema and loader), ``observers``
(what each kind of rule reads and decides, one function per kind), ``incidents`` (the
SQLite store and the acknowledgement use case), ``notify`` (MQTT, webhook, e-mail) and
``lifecycle`` (the engine moving incidents through their states).
"""

from foursave.rules.alerts.incidents import (
    Acknowledged,
    Incident,
    IncidentStore,
    ack_line,
    acknowledge_incident,
    write_pending_acks,
)
from foursave.rules.alerts.lifecycle import AlertEngine, Event
from foursave.rules.alerts.notify import Notifier
from foursave.rules.alerts.observers import OBSERVERS, Observation
from foursave.rules.alerts.spec import AlertSettings, RuleSpec, load_alert_settings

__all__ = [
    "OBSERVERS",
    "Acknowledged",
    "AlertEngine",
    "AlertSettings",
    "Event",
    "Incident",
    "IncidentStore",
    "Notifier",
    "Observation",
    "RuleSpec",
    "ack_line",
    "acknowledge_incident",
    "load_alert_settings",
    "write_pending_acks",
]
