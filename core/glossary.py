"""The canonical measurements and fields (docs/design.md, "InfluxDB schema").

Every stored field name carries its unit as a suffix.  Vendor and SunSpec names are
translated to these names once, at the edge (``collector/profiles``).  The field type
is fixed here because InfluxDB refuses a field whose type changes within a shard:
``float`` fields are always written as floats, ``int`` fields with the ``i`` suffix.

Every field also has its physical :class:`Bounds`: what a measurement of it can be at
all, on any device, with the reason beside the numbers (docs/domain.md, "Physical
bounds").  A value outside them is left out of a reading (never clamped, never 0) by
the collector and again by the ingester.  A device narrows them in the configuration
(``rated_power_w``, ``bounds:``; :func:`device_bounds`), never widens them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import cache
from typing import Literal

SLUG_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
"""Ids of sites, devices, collectors, meter roles and alert rules: lower-case letters,
digits, ``_`` and ``-``, so that one is a tag value and an MQTT topic level as it is."""
SLUG = re.compile(SLUG_PATTERN)

FieldType = Literal["float", "int", "bool", "str"]
Kind = Literal["inverter", "meter", "weather", "water"]
KINDS: tuple[str, ...] = ("inverter", "meter", "weather", "water")


@dataclass(frozen=True)
class Bounds:
    """The values a field can take: ``min`` .. ``max`` (``None``: that side unbounded),
    or, for an enumerated field, only ``values``; ``also`` lists single values outside
    the range that still mean something (0 Hz: no voltage to measure).  ``reason`` says
    where the numbers come from."""

    min: float | None = None
    max: float | None = None
    reason: str = ""
    values: frozenset[int] | None = None
    also: frozenset[float] = frozenset()

    def __post_init__(self) -> None:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"bounds {self.min} .. {self.max}: min above max")

    def admits(self, value: float) -> bool:
        """Whether ``value`` can be a measurement of the field (NaN and ±Inf never are)."""
        if isinstance(value, bool):
            return self.values is None or int(value) in self.values
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if value in self.also:
            return True
        if self.values is not None and value not in self.values:
            return False
        if self.min is not None and value < self.min:
            return False
        return self.max is None or value <= self.max

    def narrowed(
        self, min: float | None = None, max: float | None = None, reason: str = ""
    ) -> Bounds:
        """These bounds cut down to ``min`` .. ``max`` (the tighter side wins; never wider).
        ``also`` values stay: 0 Hz still means no voltage within a narrower range."""
        lo = self.min if min is None else min if self.min is None else _larger(self.min, min)
        hi = self.max if max is None else max if self.max is None else _smaller(self.max, max)
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(f"{lo:g} .. {hi:g} is empty")
        if (lo, hi) == (self.min, self.max):
            return self
        why = f"{self.reason}; {reason}" if reason else self.reason
        return replace(self, min=lo, max=hi, reason=why)

    def describe(self) -> str:
        """``40 .. 70 (or 0)``, ``one of 1, 2, 3``, ``≥ 0``: the bounds as a reader writes them."""
        if self.values is not None:
            allowed = sorted(
                v
                for v in self.values
                if (self.min is None or v >= self.min) and (self.max is None or v <= self.max)
            )
            text = "one of " + ", ".join(str(v) for v in allowed)
        elif self.min is not None and self.max is not None:
            text = f"{_num(self.min)} .. {_num(self.max)}"
        elif self.min is not None:
            text = f"≥ {_num(self.min)}"
        elif self.max is not None:
            text = f"≤ {_num(self.max)}"
        else:
            text = "any"
        if self.also:
            text += " (or " + ", ".join(_num(a) for a in sorted(self.also)) + ")"
        return text


def _larger(a: float, b: float) -> float:
    return a if a >= b else b


def _smaller(a: float, b: float) -> float:
    return a if a <= b else b


def _num(v: float) -> str:
    """``4,294,967,295``, ``-7,500``, ``0.5``, ``1e15`` (round powers of ten from 1e6)."""
    if float(v).is_integer() and abs(v) < 1e16:
        exponent = math.log10(abs(v)) if v else 0.0
        if abs(v) >= 1e6 and exponent.is_integer():
            return f"{'-' if v < 0 else ''}1e{int(exponent)}"
        return f"{int(v):,}"
    return f"{v:g}".replace("e+", "e")


@dataclass(frozen=True)
class FieldDef:
    name: str
    unit: str
    type: FieldType
    description: str
    bounds: Bounds
    rating_multiple: float | None = None
    """Power fields: a device with a rating in the configuration (or SunSpec WRtg)
    reads at most this multiple of it, either sign (:data:`RATED_POWER_MULTIPLE`)."""


# ----------------------------------------------------------------------- the reasons

RATED_POWER_MULTIPLE = 1.5
"""|P| ≤ 1.5 x the device's rating: an inverter limits its output to its rating (it
leaves the maximum power point to clip), a meter's rating is what its CTs and breaker
carry; the margin takes in a rating given as nominal rather than maximum apparent power
(inverters often allow 1.1 x), short overload and measurement error, and still catches
the garbage a wrong register or scale factor gives (x 10, x 1000, 3.3e14 W)."""

_ENUM_SOURCE = "SunSpec model 103 point St, via pysunspec2"


@cache
def sunspec_states() -> frozenset[int]:
    """SunSpec inverter operating states St (1 OFF .. 8 STANDBY), from pysunspec2's
    model 103 definition, never retyped (docs/domain.md, "SunSpec Modbus")."""
    from sunspec2 import device as ss_device  # the SunSpec Alliance's model JSON

    points = ss_device.get_model_def(103)["group"]["points"]
    st = next(p for p in points if p["name"] == "St")
    return frozenset(int(s["value"]) for s in st["symbols"])


POWER_CAP_W = 1e9
_POWER = Bounds(
    -POWER_CAP_W,
    POWER_CAP_W,
    "sanity cap 1 GW, beyond any building connection or PV plant behind one inverter "
    "or meter; the device's rating narrows it (rated_power_w, SunSpec WRtg)",
)
_ENERGY = Bounds(
    0,
    1e15,
    "a lifetime counter: never negative; 1e15 Wh is 1 GW for 100 years",
)
_CURRENT = Bounds(
    -100_000,
    100_000,
    "±100 kA, the short-circuit rating of the largest low-voltage switchgear "
    "(docs/domain.md); either sign, so a device that signs current with the power "
    "direction keeps it",
)
_FREQUENCY = Bounds(
    40,
    70,
    "grids run at 50 or 60 Hz and trip within a few Hz of it (EN 50549-1 47.5..51.5 Hz, "
    "IEEE 1547 56.5..62 Hz); 40..70 takes in both with room; 0: no voltage to measure, "
    "as idle units read (docs/domain.md, 'Physical bounds')",
    also=frozenset({0.0}),
)
_PF = Bounds(-1, 1, "|PF| = |P| / S ≤ 1 by definition (docs/domain.md, 'Physical bounds')")
_IRRADIANCE = Bounds(
    -30,
    2000,
    "cloud enhancement records ≈ 1,800 W/m² (extraterrestrial 1,361 W/m²); thermopile "
    "pyranometers read a few W/m² negative at night, ISO 9060 zero offset ≤ 30 W/m² "
    "(docs/domain.md, 'Physical bounds')",
)

_ELECTRONICS_TEMP = Bounds(
    -70,
    125,
    "an idle unit sits at ambient (≥ -70 °C, see ambient_temp_c); 125 °C is the top of "
    "the electronics' industrial temperature grade (docs/domain.md, 'Physical bounds')",
)
_PERCENT = Bounds(0, 100, "a share of a whole: 0 .. 100 %")
_TEXT = Bounds(reason="text as the device gives it (at most 64 characters)")

_BOOL = Bounds(reason="true or false")
_COUNT = Bounds(0, None, "a count: never negative")


def _f(
    name: str,
    unit: str,
    description: str,
    bounds: Bounds,
    type: FieldType = "float",
    rating_multiple: float | None = None,
) -> FieldDef:
    return FieldDef(name, unit, type, description, bounds, rating_multiple)


FIELDS: dict[str, dict[str, FieldDef]] = {
    "inverter": {
        f.name: f
        for f in (
            _f("ac_power_w", "W", "AC active power output", _POWER, "float", RATED_POWER_MULTIPLE),
            _f("ac_energy_wh", "Wh", "AC energy delivered, lifetime counter", _ENERGY),
            _f(
                "dc_power_w",
                "W",
                "DC input power (negative: a hybrid inverter charging)",
                _POWER,
                "float",
                RATED_POWER_MULTIPLE,
            ),
            _f(
                "dc_voltage_v",
                "V",
                "DC input voltage",
                Bounds(
                    0,
                    1500,
                    "1,500 V DC: the low-voltage limit PV arrays are built to (IEC 60038, "
                    "Low Voltage Directive 2014/35/EU; docs/domain.md)",
                ),
            ),
            _f("dc_current_a", "A", "DC input current", _CURRENT),
            _f(
                "ac_voltage_v",
                "V",
                "AC phase voltage (phase A to neutral)",
                Bounds(
                    0,
                    1000,
                    "1,000 V AC: the low-voltage limit (IEC 60038); an inverter feeds a "
                    "low-voltage line or the LV side of a transformer (docs/domain.md)",
                ),
            ),
            _f("ac_current_a", "A", "AC current, sum of phases", _CURRENT),
            _f("ac_frequency_hz", "Hz", "AC line frequency", _FREQUENCY),
            _f("power_factor", "1", "power factor, -1..1", _PF),
            _f(
                "cabinet_temp_c",
                "°C",
                "cabinet temperature",
                Bounds(
                    -70,
                    125,
                    "an idle cabinet sits at ambient (≥ -70 °C, see ambient_temp_c); 125 °C "
                    "is the top of the electronics' industrial temperature grade "
                    "(docs/domain.md, 'Physical bounds')",
                ),
            ),
            _f(
                "ac_apparent_power_va",
                "VA",
                "AC apparent power",
                Bounds(0, POWER_CAP_W, "S = |V| x |I| is never negative; the 1 GW sanity cap"),
                "float",
                RATED_POWER_MULTIPLE,
            ),
            _f(
                "ac_reactive_power_var",
                "var",
                "AC reactive power (sign as SunSpec: positive over-excited)",
                _POWER,
                "float",
                RATED_POWER_MULTIPLE,
            ),
            _f("heatsink_temp_c", "°C", "heat-sink temperature", _ELECTRONICS_TEMP),
            _f("transformer_temp_c", "°C", "transformer temperature", _ELECTRONICS_TEMP),
            _f("switch_temp_c", "°C", "power switch (IGBT/MOSFET) temperature", _ELECTRONICS_TEMP),
            _f("other_temp_c", "°C", "the vendor's other temperature", _ELECTRONICS_TEMP),
            _f("ambient_temp_c", "°C", "the inverter's own ambient sensor", _ELECTRONICS_TEMP),
            _f(
                "state",
                "enum",
                "SunSpec operating state St (1 OFF .. 8 STANDBY); model 701's InvSt "
                "(0 OFF .. 7 STANDBY) is stored as the same state, InvSt + 1",
                Bounds(1, 8, _ENUM_SOURCE, values=sunspec_states()),
                "int",
            ),
            _f(
                "events",
                "bitfield",
                "SunSpec Evt1 event bits",
                Bounds(0, 2**32 - 1, "SunSpec Evt1 is a 32-bit bitfield (bitfield32)"),
                "int",
            ),
        )
    },
    "meter": {
        f.name: f
        for f in (
            _f(
                "active_power_w",
                "W",
                "total active power, import positive",
                _POWER,
                "float",
                RATED_POWER_MULTIPLE,
            ),
            _f("import_energy_wh", "Wh", "imported active energy, lifetime counter", _ENERGY),
            _f(
                "apparent_power_va",
                "VA",
                "total apparent power",
                Bounds(0, POWER_CAP_W, "S = |V| x |I| is never negative; the 1 GW sanity cap"),
                "float",
                RATED_POWER_MULTIPLE,
            ),
            _f(
                "reactive_power_var",
                "var",
                "total reactive power",
                _POWER,
                "float",
                RATED_POWER_MULTIPLE,
            ),
            _f("export_energy_wh", "Wh", "exported active energy, lifetime counter", _ENERGY),
            _f(
                "voltage_v",
                "V",
                "phase-to-neutral voltage (average or phase A)",
                Bounds(
                    0,
                    100_000,
                    "a meter behind voltage transformers may give primary volts: Taipower's "
                    "highest supply, 161 kV, is 93 kV phase to neutral (docs/domain.md, "
                    "'Physical bounds'); a low-voltage sub-meter narrows it in its bounds",
                ),
            ),
            _f("current_a", "A", "current, sum of phases", _CURRENT),
            _f("power_factor", "1", "power factor, -1..1", _PF),
            _f("frequency_hz", "Hz", "line frequency", _FREQUENCY),
        )
    },
    "weather": {
        f.name: f
        for f in (
            _f("poa_irradiance_wm2", "W/m²", "plane-of-array irradiance", _IRRADIANCE),
            _f("ghi_wm2", "W/m²", "global horizontal irradiance", _IRRADIANCE),
            _f(
                "module_temp_c",
                "°C",
                "back-of-module temperature",
                Bounds(
                    -70,
                    125,
                    "a module at night sits at or below ambient (≥ -70 °C); backs reach "
                    "80-90 °C in deserts; 125 °C: the sensor electronics' grade "
                    "(docs/domain.md, 'Physical bounds')",
                ),
            ),
            _f(
                "ambient_temp_c",
                "°C",
                "ambient air temperature",
                Bounds(
                    -70,
                    60,
                    "air temperature records where people live: -67.8 °C (Verkhoyansk, "
                    "Oymyakon), 56.7 °C (Death Valley) (docs/domain.md, 'Physical bounds')",
                ),
            ),
            _f(
                "wind_speed_ms",
                "m/s",
                "wind speed",
                Bounds(
                    0,
                    120,
                    "a speed is never negative; the highest gust on record is 113 m/s "
                    "(Barrow Island, 1996; WMO) (docs/domain.md, 'Physical bounds')",
                ),
            ),
        )
    },
    "water": {
        f.name: f
        for f in (
            _f(
                "volume_m3",
                "m³",
                "water volume, lifetime counter",
                Bounds(
                    0, 1e9, "a lifetime counter: never negative; 1e9 m³ is 1,000 m³/h for 100 years"
                ),
            ),
            _f(
                "flow_m3h",
                "m³/h",
                "water flow rate",
                Bounds(
                    0,
                    10_000,
                    "a consumption meter's flow is never negative; 10,000 m³/h is a DN1000 "
                    "main at 3.5 m/s, far beyond a building's supply",
                ),
            ),
        )
    },
    "inverter_string": {
        f.name: f
        for f in (
            _f("dc_current_a", "A", "DC current of this input (string, MPPT)", _CURRENT),
            _f(
                "dc_voltage_v",
                "V",
                "DC voltage of this input",
                Bounds(0, 1500, "1,500 V DC: the low-voltage limit PV arrays are built to"),
            ),
            _f(
                "dc_power_w",
                "W",
                "DC power of this input",
                _POWER,
                "float",
                RATED_POWER_MULTIPLE,
            ),
            _f("dc_energy_wh", "Wh", "DC energy of this input, lifetime counter", _ENERGY),
            _f("temp_c", "°C", "this input's temperature (SunSpec 160 Tmp)", _ELECTRONICS_TEMP),
            _f(
                "state",
                "enum",
                "SunSpec 160 DCSt (1 OFF .. 10)",
                Bounds(1, 10, "SunSpec model 160 point DCSt, via pysunspec2"),
                "int",
            ),
            _f(
                "events",
                "bitfield",
                "SunSpec 160 DCEvt event bits",
                Bounds(0, 2**32 - 1, "SunSpec DCEvt is a 32-bit bitfield (bitfield32)"),
                "int",
            ),
        )
    },
    "battery": {
        f.name: f
        for f in (
            _f("soc_pct", "%", "state of charge", _PERCENT),
            _f("soh_pct", "%", "state of health", _PERCENT),
            _f("energy_rating_wh", "Wh", "energy the storage holds when full and new", _ENERGY),
            _f("energy_available_wh", "Wh", "energy available now", _ENERGY),
            _f(
                "dc_power_w",
                "W",
                "DC power, positive when the battery gives power (discharging), negative "
                "when it takes it (charging)",
                _POWER,
                "float",
                RATED_POWER_MULTIPLE,
            ),
            _f("dc_voltage_v", "V", "battery DC voltage", Bounds(0, 1500, "1,500 V DC: LV")),
            _f("dc_current_a", "A", "battery DC current (sign as dc_power_w)", _CURRENT),
            _f(
                "discharged_energy_wh",
                "Wh",
                "energy the battery gave (SunSpec 714 DCWhInj of its port), lifetime counter",
                _ENERGY,
            ),
            _f(
                "charged_energy_wh",
                "Wh",
                "energy the battery took (SunSpec 714 DCWhAbs of its port), lifetime counter",
                _ENERGY,
            ),
            _f("temp_c", "°C", "battery temperature", _ELECTRONICS_TEMP),
        )
    },
    "device_info": {
        f.name: f
        for f in (
            _f("manufacturer", "text", "manufacturer (SunSpec model 1 Mn)", _TEXT, "str"),
            _f("model", "text", "model (SunSpec model 1 Md)", _TEXT, "str"),
            _f("options", "text", "options (SunSpec model 1 Opt)", _TEXT, "str"),
            _f("version", "text", "firmware version (SunSpec model 1 Vr)", _TEXT, "str"),
            _f("serial", "text", "serial number (SunSpec model 1 SN)", _TEXT, "str"),
            _f(
                "rated_power_w",
                "W",
                "continuous AC power rating (SunSpec 120 WRtg, or 702 WMaxRtg)",
                Bounds(0, POWER_CAP_W, "a rating: positive, within the 1 GW sanity cap"),
            ),
            _f(
                "rated_apparent_power_va",
                "VA",
                "apparent power rating (SunSpec 120 VARtg, or 702 VAMaxRtg)",
                Bounds(0, POWER_CAP_W, "a rating: positive, within the 1 GW sanity cap"),
            ),
            _f(
                "rated_current_a",
                "A",
                "AC current rating (SunSpec 120 ARtg, or 702 AMaxRtg)",
                Bounds(0, 100_000, "a rating: positive, within ±100 kA"),
            ),
            _f(
                "rated_energy_wh",
                "Wh",
                "storage energy rating (SunSpec 120 WHRtg, or 713 WHRtg)",
                _ENERGY,
            ),
        )
    },
    "device_status": {
        f.name: f
        for f in (
            _f("online", "bool", "device answered its last poll", _BOOL, "bool"),
            _f(
                "poll_ms",
                "ms",
                "duration of the last complete poll",
                Bounds(0, None, "a duration: never negative"),
            ),
            _f("errors", "count", "failed polls since the collector started", _COUNT, "int"),
            _f(
                "out_of_bounds",
                "count",
                "values left out of this device's readings for being out of bounds, since "
                "the collector started (per field in the status message)",
                _COUNT,
                "int",
            ),
        )
    },
    "collector_status": {
        f.name: f
        for f in (
            _f(
                "online",
                "bool",
                "the collector is connected (false: its last will)",
                _BOOL,
                "bool",
            ),
            _f(
                "spool_depth",
                "count",
                "readings in the spool, waiting to be stored",
                _COUNT,
                "int",
            ),
            _f(
                "spool_dropped",
                "count",
                "readings dropped beyond the spool's bound",
                _COUNT,
                "int",
            ),
            _f(
                "spool_released",
                "count",
                "readings the broker had taken, left unconfirmed beyond the spool's bound",
                _COUNT,
                "int",
            ),
            _f(
                "spool_unconfirmed",
                "count",
                "readings handed to the broker that no ingester has confirmed yet",
                _COUNT,
                "int",
            ),
            _f("readings", "count", "readings taken since the collector started", _COUNT, "int"),
            _f(
                "devices_online",
                "count",
                "devices that answered their last poll",
                _COUNT,
                "int",
            ),
        )
    },
}


PARTS: dict[str, dict[str, tuple[str, ...]]] = {
    "inverter": {"inverter_string": ("string",), "battery": ()},
    "meter": {},
    "weather": {},
    "water": {},
}
"""The measurements one reading of a kind may carry beside its own (``parts``), with
the tags that tell the parts apart: an inverter's strings (MPPT inputs, SunSpec model
160 or a vendor profile's PV inputs) and its battery (SunSpec 713, 714, 802)."""

INFO_FIELDS = frozenset(FIELDS["device_info"])


def field_def(measurement: str, field: str) -> FieldDef | None:
    return FIELDS.get(measurement, {}).get(field)


def device_bounds(
    kind: str,
    rated_power_w: float | None = None,
    narrow: Mapping[str, tuple[float | None, float | None]] | None = None,
) -> dict[str, Bounds]:
    """The bounds of each field of a device of ``kind``: the glossary's, narrowed by its
    rating (power fields: ±``rating_multiple`` x ``rated_power_w``) and by the
    configuration's ``bounds:`` (``narrow``: field -> (min, max)).  Every source narrows;
    the tightest wins, so nothing here widens what physics allows."""
    out: dict[str, Bounds] = {}
    for name, fdef in FIELDS[kind].items():
        b = fdef.bounds
        if rated_power_w is not None and fdef.rating_multiple is not None:
            cap = fdef.rating_multiple * rated_power_w
            b = b.narrowed(-cap, cap, f"rating {rated_power_w:g} W x {fdef.rating_multiple:g}")
        if narrow and name in narrow:
            lo, hi = narrow[name]
            b = b.narrowed(lo, hi, "the device's configured bounds")
        out[name] = b
    return out


def bounds_table() -> str:
    """The physical bounds of every field as a Markdown table (docs/bounds.md is this,
    checked by tests/unit/test_bounds.py)."""
    rows = [
        "<!-- Generated from core/glossary.py (bounds_table); do not edit by hand. -->",
        "# Physical bounds of the stored fields",
        "",
        "A value outside its field's bounds is left out of the reading (never clamped, never",
        "0) by the collector and again by the ingester, and counted: `out_of_bounds` per",
        "field in the device status, in total in `device_status` and `ingest_stats`.  A",
        "device narrows them with `rated_power_w` (power fields: within "
        f"±{RATED_POWER_MULTIPLE:g} x the",
        "rating; SunSpec inverters give theirs as WRtg, model 120) and `bounds:`; it never",
        "widens them.",
        "",
        "| measurement | field | unit | bounds | why |",
        "| --- | --- | --- | --- | --- |",
    ]
    for kind, fields in FIELDS.items():
        for name, f in fields.items():
            bounds = f.bounds.describe()
            if f.rating_multiple:
                bounds += f"; ±{f.rating_multiple:g} x rating"
            why = f.bounds.reason.replace("|", "\\|")
            rows.append(f"| `{kind}` | `{name}` | {f.unit} | {bounds} | {why} |")
    return "\n".join(rows) + "\n"
