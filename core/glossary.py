"""The canonical measurements and fields (docs/design.md, "InfluxDB schema").

Every stored field name carries its unit as a suffix.  Vendor and SunSpec names are
translated to these names once, at the edge (``collector/profiles``).  The field type
is fixed here because InfluxDB refuses a field whose type changes within a shard:
``float`` fields are always written as floats, ``int`` fields with the ``i`` suffix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

SLUG_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
"""Ids of sites, devices, collectors, meter roles and alert rules: lower-case letters,
digits, ``_`` and ``-``, so that one is a tag value and an MQTT topic level as it is."""
SLUG = re.compile(SLUG_PATTERN)

FieldType = Literal["float", "int", "bool"]
Kind = Literal["inverter", "meter", "weather", "water"]
KINDS: tuple[str, ...] = ("inverter", "meter", "weather", "water")


@dataclass(frozen=True)
class FieldDef:
    name: str
    unit: str
    type: FieldType
    description: str


def _f(name: str, unit: str, description: str, type: FieldType = "float") -> FieldDef:
    return FieldDef(name, unit, type, description)


FIELDS: dict[str, dict[str, FieldDef]] = {
    "inverter": {
        f.name: f
        for f in (
            _f("ac_power_w", "W", "AC active power output"),
            _f("ac_energy_wh", "Wh", "AC energy delivered, lifetime counter"),
            _f("dc_power_w", "W", "DC input power"),
            _f("dc_voltage_v", "V", "DC input voltage"),
            _f("dc_current_a", "A", "DC input current"),
            _f("ac_voltage_v", "V", "AC phase voltage (phase A to neutral)"),
            _f("ac_current_a", "A", "AC current, sum of phases"),
            _f("ac_frequency_hz", "Hz", "AC line frequency"),
            _f("power_factor", "1", "power factor, -1..1"),
            _f("cabinet_temp_c", "°C", "cabinet temperature"),
            _f("state", "enum", "SunSpec operating state St (1 OFF .. 8 STANDBY)", "int"),
            _f("events", "bitfield", "SunSpec Evt1 event bits", "int"),
        )
    },
    "meter": {
        f.name: f
        for f in (
            _f("active_power_w", "W", "total active power, import positive"),
            _f("import_energy_wh", "Wh", "imported active energy, lifetime counter"),
            _f("export_energy_wh", "Wh", "exported active energy, lifetime counter"),
            _f("voltage_v", "V", "phase-to-neutral voltage (average or phase A)"),
            _f("current_a", "A", "current, sum of phases"),
            _f("power_factor", "1", "power factor, -1..1"),
            _f("frequency_hz", "Hz", "line frequency"),
        )
    },
    "weather": {
        f.name: f
        for f in (
            _f("poa_irradiance_wm2", "W/m²", "plane-of-array irradiance"),
            _f("ghi_wm2", "W/m²", "global horizontal irradiance"),
            _f("module_temp_c", "°C", "back-of-module temperature"),
            _f("ambient_temp_c", "°C", "ambient air temperature"),
            _f("wind_speed_ms", "m/s", "wind speed"),
        )
    },
    "water": {
        f.name: f
        for f in (
            _f("volume_m3", "m³", "water volume, lifetime counter"),
            _f("flow_m3h", "m³/h", "water flow rate"),
        )
    },
    "device_status": {
        f.name: f
        for f in (
            _f("online", "bool", "device answered its last poll", "bool"),
            _f("poll_ms", "ms", "duration of the last complete poll"),
            _f("errors", "count", "failed polls since the collector started", "int"),
        )
    },
    "collector_status": {
        f.name: f
        for f in (
            _f("online", "bool", "the collector is connected (false: its last will)", "bool"),
            _f("spool_depth", "count", "readings in the spool, waiting to be stored", "int"),
            _f("spool_dropped", "count", "readings dropped beyond the spool's bound", "int"),
            _f(
                "spool_released",
                "count",
                "readings the broker had taken, left unconfirmed beyond the spool's bound",
                "int",
            ),
            _f(
                "spool_unconfirmed",
                "count",
                "readings handed to the broker that no ingester has confirmed yet",
                "int",
            ),
            _f("readings", "count", "readings taken since the collector started", "int"),
            _f("devices_online", "count", "devices that answered their last poll", "int"),
        )
    },
}


def field_def(measurement: str, field: str) -> FieldDef | None:
    return FIELDS.get(measurement, {}).get(field)
