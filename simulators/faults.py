"""Faults a simulated device shows, on demand, exactly as a real device shows them.

Wire faults (offline, silent, slow answers, Modbus exception codes) act on requests; value
faults (inverter trip, string under-performance, counter reset and rollover, stuck
value, water leak, demand spike) act on the values before they are encoded, keeping
counters physically consistent: a tripped inverter's energy counter stops, a leak's
extra flow is counted in the volume, a spike's extra power in the import energy.
``values`` serves given canonical values instead, impossible ones included (600 Hz,
St 59541, 3.4e38 as a float32): what a buggy or hostile device sends.  A value its
register cannot hold is served as SunSpec "not implemented".
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field
from sunspec2 import device as ss_device

EXCEPTION_CODES = (1, 2, 3, 4, 6, 11)
COUNTER_FIELDS = ("ac_energy_wh", "import_energy_wh", "export_energy_wh", "volume_m3")


def evt1_bits(names: list[str]) -> int:
    """Evt1 bit mask from SunSpec event names (model 103's JSON, via pysunspec2)."""
    evt1 = next(p for p in ss_device.get_model_def(103)["group"]["points"] if p["name"] == "Evt1")
    symbols = {s["name"]: s["value"] for s in evt1["symbols"]}
    unknown = [n for n in names if n not in symbols]
    if unknown:
        raise ValueError(f"unknown Evt1 event(s) {unknown}; known: {sorted(symbols)}")
    mask = 0
    for n in names:
        mask |= 1 << symbols[n]
    return mask


class FaultUpdate(BaseModel):
    """What the control interface accepts (every key optional; null clears)."""

    model_config = ConfigDict(extra="forbid")

    offline: bool | None = Field(None, description="no TCP answer at all (listener closed)")
    silent: bool | None = Field(
        None,
        description="every request reaches the endpoint and is never answered (a unit cut "
        "off behind a gateway: its neighbours on the same endpoint still answer)",
    )
    delay_s: float | None = Field(None, ge=0, le=60, description="answer this much later")
    exception: int | None = Field(None, description="answer every request with this code")
    exception_at: dict[int, int] | None = Field(None, description="address -> exception code")
    trip: list[str] | None = Field(None, description="inverter trips with these Evt1 events")
    derate_pct: float | None = Field(None, ge=0, le=100, description="string under-performance")
    counter_reset: bool | None = Field(None, description="event: counters restart from 0")
    counter_rollover: bool | None = Field(None, description="event: counters jump near rollover")
    stuck: bool | None = Field(None, description="all values freeze")
    leak_m3h: float | None = Field(None, ge=0, description="extra water flow")
    spike_w: float | None = Field(None, ge=0, description="extra active power (demand spike)")
    values: dict[str, float] | None = Field(
        None,
        description="field -> canonical value served instead of the physics' (impossible "
        "values too: a buggy or hostile device)",
    )


@dataclass
class Faults:
    offline: bool = False
    silent: bool = False
    delay_s: float = 0.0
    exception: int | None = None
    exceptions: dict[int, int] = field(default_factory=dict)
    trip_events: int | None = None  # Evt1 mask while tripped
    derate_pct: float = 0.0
    stuck: bool = False
    leak_m3h: float = 0.0
    spike_w: float = 0.0
    values: dict[str, float] = field(default_factory=dict)

    def describe(self) -> dict:
        return {
            "offline": self.offline,
            "silent": self.silent,
            "delay_s": self.delay_s,
            "exception": self.exception,
            "exception_at": self.exceptions,
            "trip_events": self.trip_events,
            "derate_pct": self.derate_pct,
            "stuck": self.stuck,
            "leak_m3h": self.leak_m3h,
            "spike_w": self.spike_w,
            "values": self.values,
        }


class ValueFaults:
    """Applies value faults tick by tick, integrating their effect into the counters."""

    def __init__(self) -> None:
        self.faults = Faults()
        self._raw_prev: dict[str, float] = {}
        self._eff: dict[str, float] = {}
        self._t_prev: float | None = None
        self._stuck_values: dict[str, float | int] | None = None
        self._pending_reset = False
        self._pending_rollover: dict[str, float] | None = None
        self._rollover_margin_s = 0.0  # set with _pending_rollover
        self._last: dict[str, float | int] | None = None  # the values served last

    def reset_counters(self) -> None:
        self._pending_reset = True

    def rollover(self, limits: dict[str, float], margin_s: float) -> None:
        self._pending_rollover = {k: v for k, v in limits.items()}
        self._rollover_margin_s = margin_s

    def apply(self, t: float, raw: dict[str, float | int]) -> dict[str, float | int]:
        f = self.faults
        if f.stuck:
            if self._stuck_values is None:
                self._stuck_values = dict(self._last) if self._last is not None else dict(raw)
            return dict(self._stuck_values)
        self._stuck_values = None
        dt_h = 0.0 if self._t_prev is None else max(0.0, t - self._t_prev) / 3600
        v = dict(raw)
        factor = 1.0
        if f.trip_events is not None and "state" in v:
            factor = 0.0
            for k in ("ac_power_w", "dc_power_w", "ac_current_a", "dc_current_a", "power_factor"):
                if k in v:
                    v[k] = 0.0
            v["state"] = 7  # SunSpec St FAULT
            v["events"] = f.trip_events
        elif f.derate_pct and "ac_power_w" in v:
            factor = 1 - f.derate_pct / 100
            for k in ("ac_power_w", "dc_power_w", "ac_current_a", "dc_current_a"):
                v[k] = v[k] * factor
        extra: dict[str, float] = {}
        if f.spike_w and "active_power_w" in v:
            v["active_power_w"] += f.spike_w
            extra["import_energy_wh"] = f.spike_w * dt_h
        if f.leak_m3h and "flow_m3h" in v:
            v["flow_m3h"] += f.leak_m3h
            extra["volume_m3"] = f.leak_m3h * dt_h
        for name in COUNTER_FIELDS:
            if name not in v:
                continue
            r = float(v[name])
            if name not in self._eff:
                self._eff[name] = r
            else:
                self._eff[name] += (r - self._raw_prev[name]) * factor + extra.get(name, 0.0)
            self._raw_prev[name] = r
        if self._pending_reset:
            for name in self._eff:
                self._eff[name] = 0.0
            self._pending_reset = False
        if self._pending_rollover is not None:
            for name, limit in self._pending_rollover.items():
                if name in self._eff:
                    power = abs(float(v.get("ac_power_w", v.get("active_power_w", 0.0))))
                    rate = power if name.endswith("_wh") else float(v.get("flow_m3h", 0.0))
                    self._eff[name] = max(0.0, limit - rate * self._rollover_margin_s / 3600 - 1)
            self._pending_rollover = None
        for name, value in self._eff.items():
            v[name] = value
        v.update(f.values)  # served as given, after the physics: nothing keeps them sane
        self._t_prev = t
        self._last = v
        return v
