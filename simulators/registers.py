"""Register images of simulated devices.

SunSpec devices are laid out by pysunspec2 itself: each model is a
``sunspec2.device.Model`` built from the SunSpec Alliance's JSON definition, its
points set from canonical values and encoded with ``Model.get_mb()`` — the "SunS"
marker, the Common model, the device models and the end marker.  Vendor devices are
encoded from the same register-map profile the collector reads.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pymodbus.client.mixin import ModbusClientMixin
from sunspec2 import device as ss_device

from foursave.collector.profiles import PartKey, PointDef, Profile, load_sunspec_map
from foursave.collector.sunspec import END_MODEL_ID, SUNS_MARKER, model_layout

STRINGS_MODEL = 160  # multiple MPPT inverter extension: one group instance per PV input
MPPT_INPUTS = 2  # a simulated inverter's PV inputs (the site model's array split evenly)

DEFAULT_MODELS = {
    "inverter": (1, 103),
    "meter": (1, 203),
    "weather": (1, 307, 302, 303),
}

# Scale factors the simulated devices publish (raw = value / 10^SF).  Power-like scale
# factors grow with the device rating so int16 registers do not overflow.
_FIXED_SF = {
    "A_SF": -2,
    "V_SF": -1,
    "Hz_SF": -2,
    "PF_SF": -1,
    "DCA_SF": -2,
    "DCV_SF": -1,
    "Tmp_SF": -1,
}
_ENERGY_SF = {"WH_SF", "TotWh_SF", "TotVAh_SF", "TotVArh_SF"}
_POWER_SF = {"W_SF", "VA_SF", "VAr_SF", "VAR_SF", "DCW_SF", "WRtg_SF"}


def _power_sf(rated_w: float) -> int:
    return max(0, math.ceil(math.log10(rated_w * 1.25 / 32767))) if rated_w > 0 else 0


def _energy_sf(rated_w: float) -> int:
    """acc32 counters: 20 years at the rating fit before the first rollover."""
    wh_20y = rated_w * 24 * 365 * 20
    return max(0, math.ceil(math.log10(wh_20y / 4_294_967_295))) if rated_w > 0 else 0


def _units(model_id: int, point: str) -> str | None:
    top = ss_device.get_model_def(model_id)["group"]
    return next((p.get("units") for p in top["points"] if p["name"] == point), None)


def _regs(data: bytes) -> list[int]:
    return list(struct.unpack(f">{len(data) // 2}H", data))


@dataclass(frozen=True)
class Block:
    """Registers of one function's address space: first address and values."""

    start: int
    registers: list[int]


class SunSpecImage:
    """A SunSpec register map at ``base`` built from pysunspec2 models."""

    def __init__(
        self,
        kind: str,
        models: tuple[int, ...] | None,
        *,
        base: int = 40000,
        rated_power_w: float = 5000.0,
        manufacturer: str = "foursave",
        model_name: str = "simulator",
        serial: str = "SIM-0001",
        unit_id: int = 1,
    ):
        self.base = base
        self.model_ids = tuple(models or DEFAULT_MODELS[kind])
        if self.model_ids[0] != 1:
            raise ValueError("a SunSpec device starts with the Common model (1)")
        smap = load_sunspec_map()
        self.models: list[ss_device.Model] = []
        self._strings: ss_device.Model | None = None  # model 160, when served
        # canonical field -> (model, group, point, scale)
        self._targets: dict[str, tuple[ss_device.Model, str | None, str, float]] = {}
        for mid in self.model_ids:
            groups = ss_device.get_model_def(mid)["group"].get("groups")
            # one instance of each repeating group (302 irradiance, 303 module temps);
            # model 160 has one per PV input (MPPT_INPUTS)
            n = MPPT_INPUTS if mid == STRINGS_MODEL else 1
            length = _one_instance_length(mid, n) if groups else model_layout(mid).length
            m = ss_device.Model(mid, model_len=length)
            m.points["ID"].set_value(mid)
            m.points["L"].set_value(length)
            if mid == STRINGS_MODEL:
                m.points["N"].set_value(n)
                for i, module in enumerate(m.groups["module"]):
                    module.points["ID"].set_value(i + 1)
                    module.points["IDStr"].set_value(f"MPPT {i + 1}")
                self._strings = m
            self.models.append(m)
            for name, p in m.points.items():
                if p.pdef.get("type") == "sunssf":
                    if name in _POWER_SF:
                        sf = _power_sf(rated_power_w)
                    elif name in _ENERGY_SF:
                        sf = _energy_sf(rated_power_w)
                    else:
                        sf = _FIXED_SF.get(name, 0)
                    p.set_value(sf)
            if "WRtg" in m.points:  # Nameplate (120): the rating the collector bounds power by
                m.points["WRtg"].set_value(round(rated_power_w / 10 ** _power_sf(rated_power_w)))
                if "DERTyp" in m.points:
                    m.points["DERTyp"].set_value(4)  # PV
            if mid in smap.models:
                for sp in smap.models[mid].points:
                    scale = sp.scale
                    if sp.field == "power_factor" and _units(mid, sp.point) == "Pct":
                        scale = 0.01  # a simulated device follows the model: percent
                    # the first point of a field is the one the collector reads first
                    self._targets.setdefault(sp.field, (m, sp.group, sp.point, scale))
        common = self.models[0]
        for point, value in (
            ("Mn", manufacturer),
            ("Md", model_name),
            ("Vr", "0.1.0"),
            ("SN", serial),
            ("DA", unit_id),
            ("Opt", "foursave-sim"),
        ):
            if point in common.points:
                common.points[point].set_value(value)

    def counter_limits(self) -> dict[str, float]:
        """Largest value of each accumulator field before its register rolls over."""
        out = {}
        for name, (model, group, point, scale) in self._targets.items():
            grp = model.groups[group][0] if group else model
            p = grp.points[point]
            if p.pdef["type"].startswith("acc"):
                sf = (
                    (p.sf_value if p.sf is None else _sf_of(model, grp, p.sf))
                    if p.sf_required
                    else 0
                )
                out[name] = ((1 << (16 * int(p.len))) - 1) * 10.0 ** (sf or 0) * scale
        return out

    def resolution(self, field_name: str, value: float) -> float:
        """Smallest step of ``field_name`` on the wire (10^SF times the map's scale)."""
        model, group, point, scale = self._targets[field_name]
        grp = model.groups[group][0] if group else model
        p = grp.points[point]
        sf = (p.sf_value if p.sf is None else _sf_of(model, grp, p.sf)) if p.sf_required else 0
        return 10.0 ** (sf or 0) * scale

    def quantize(self, field_name: str, values: np.ndarray) -> np.ndarray:
        """``values`` as this image's registers carry them (rounded to 10^SF times the
        map's scale): what a collector would read back, so history written straight to
        InfluxDB meets live readings without a counter stepping back by a fraction."""
        if field_name not in self._targets:
            return values
        res = self.resolution(field_name, 0.0)
        return np.round(np.asarray(values, dtype=float) / res) * res

    def strings(self) -> tuple[str, ...]:
        """The PV inputs this image serves (model 160's modules), as string tags."""
        if self._strings is None:
            return ()
        return tuple(str(i + 1) for i in range(len(self._strings.groups["module"])))

    def _update_strings(self, parts: Mapping[PartKey, Mapping[str, float | int]]) -> None:
        m = self._strings
        if m is None:
            return
        points = {"dc_current_a": "DCA", "dc_voltage_v": "DCV", "dc_power_w": "DCW"}
        for i, module in enumerate(m.groups["module"]):
            values = parts.get(("inverter_string", (("string", str(i + 1)),)), {})
            for field_name, point in points.items():
                p = module.points[point]
                value = values.get(field_name)
                if value is None:
                    p.set_value(None)
                    continue
                raw = round(value / 10.0 ** _sf_of(m, module, p.sf))
                p.set_value(raw if 0 <= raw < 0xFFFF else None)  # uint16; 0xFFFF: none

    def update(
        self,
        values: Mapping[str, float | int | None],
        parts: Mapping[PartKey, Mapping[str, float | int]] | None = None,
    ) -> Block:
        self._update_strings(parts or {})
        for field_name, value in values.items():
            target = self._targets.get(field_name)
            if target is None:
                continue
            model, group, point, scale = target
            grp = model.groups[group][0] if group else model
            if isinstance(grp, list):
                grp = grp[0]
            p = grp.points[point]
            if value is None:
                p.set_value(None)
                continue
            raw_value = value / scale
            ptype = p.pdef["type"]
            raw: int | None
            if p.sf_required:
                sf = p.sf_value if p.sf is None else _sf_of(model, grp, p.sf)
                raw = round(raw_value / 10.0**sf)
            else:
                raw = round(raw_value)
            if ptype.startswith("acc"):
                raw %= 1 << (16 * int(p.len))  # accumulators roll over like the real thing
            try:
                p.info.to_data(raw, int(p.len) * 2)
            except (struct.error, OverflowError, ValueError):
                raw = None  # out of the register's range: served as not implemented
            p.set_value(raw)
        regs = [*SUNS_MARKER]
        for m in self.models:
            regs.extend(_regs(m.get_mb()))
        regs.extend([END_MODEL_ID, 0])
        return Block(self.base, regs)


def _sf_of(model, grp, name: str) -> int:
    p = grp.points.get(name) or model.points.get(name)
    return int(p.value)


def _one_instance_length(mid: int, n: int = 1) -> int:
    mdef = ss_device.get_model_def(mid)["group"]
    fixed = sum(int(p.get("size", 1)) for p in mdef["points"]) - 2
    for g in mdef.get("groups", []):
        fixed += n * sum(int(p.get("size", 1)) for p in g["points"])
    return fixed


_PYMODBUS_TYPE = {
    "int16": ModbusClientMixin.DATATYPE.INT16,
    "uint16": ModbusClientMixin.DATATYPE.UINT16,
    "int32": ModbusClientMixin.DATATYPE.INT32,
    "uint32": ModbusClientMixin.DATATYPE.UINT32,
    "int64": ModbusClientMixin.DATATYPE.INT64,
    "uint64": ModbusClientMixin.DATATYPE.UINT64,
    "float32": ModbusClientMixin.DATATYPE.FLOAT32,
    "float64": ModbusClientMixin.DATATYPE.FLOAT64,
}


class ProfileImage:
    """Holding and input registers laid out from a vendor register-map profile.

    A point whose value the source does not give is served as the device would: the
    first of its ``no_value`` contents where the profile names one, NaN for a float, and
    otherwise not at all (a read that touches it is refused with exception 02, as a
    device refuses a register it does not implement; ``serves``).  Never a 0 that a
    collector would take for a measurement."""

    def __init__(self, profile: Profile):
        self.profile = profile
        self.blocks: dict[str, Block] = {}
        for function in ("holding", "input"):
            pts = [p for p in profile.points if p.function == function]
            if not pts:
                continue
            start = min(p.address for p in pts)
            end = max(p.address + p.count for p in pts)
            self.blocks[function] = Block(start, [0] * (end - start))
        # (function, address) of each register of a point served as not implemented
        self.unserved: set[tuple[str, int]] = {
            (p.function, a) for p in profile.points for a in range(p.address, p.address + p.count)
        }

    def strings(self) -> tuple[str, ...]:
        """The PV inputs the profile reads (``Profile.strings``)."""
        return self.profile.strings()

    def _main_point(self, field_name: str) -> PointDef | None:
        return next(
            (p for p in self.profile.points if p.part is None and p.field == field_name), None
        )

    def counter_limits(self) -> dict[str, float]:
        """Largest value of each unsigned integer field before its register rolls over."""
        return {
            p.field: ((1 << (16 * p.count)) - 1) * p.scale
            for p in self.profile.points
            if p.part is None and p.type.startswith("uint") and p.count >= 2
        }

    def resolution(self, field_name: str, value: float) -> float:
        p = self._main_point(field_name)
        assert p is not None, field_name
        if p.type == "float32":
            return max(abs(value), 1e-30) * 2.0**-23
        if p.type == "float64":
            return max(abs(value), 1e-300) * 2.0**-52
        return abs(p.scale)

    def quantize(self, field_name: str, values: np.ndarray) -> np.ndarray:
        """``values`` as the profile's registers carry them (see SunSpecImage.quantize)."""
        p = self._main_point(field_name)
        if p is None:
            return values
        raw = np.asarray(values, dtype=float) / p.scale
        if p.type == "float32":
            return raw.astype(np.float32).astype(float) * p.scale
        if p.type.startswith("float"):
            return raw * p.scale
        return np.round(raw) * p.scale

    def serves(self, function: str, address: int, count: int) -> bool:
        """Whether a read of ``count`` registers from ``address`` touches no point that is
        served as not implemented."""
        return not any((function, a) in self.unserved for a in range(address, address + count))

    def update(
        self,
        values: Mapping[str, float | int | None],
        parts: Mapping[PartKey, Mapping[str, float | int | None]] | None = None,
    ) -> dict[str, Block]:
        """Encode the canonical ``values`` (and each part's values, ``parts``) into the
        registers of the points that carry them."""
        for p in self.profile.points:
            key = p.part_key
            source = values if key is None else (parts or {}).get(key, {})
            value = source.get(p.field)
            addresses = [(p.function, a) for a in range(p.address, p.address + p.count)]
            regs: list[int] | None
            if value is None:
                if p.no_value:
                    regs = _words(p.no_value[0], p.count, p.word_order)
                elif p.type.startswith("float"):
                    regs = ModbusClientMixin.convert_to_registers(
                        math.nan, _PYMODBUS_TYPE[p.type], word_order=p.word_order
                    )
                else:
                    regs = None
            else:
                raw = value / p.scale
                if not p.type.startswith("float"):
                    raw = round(raw)
                    if p.type.startswith("uint"):
                        raw %= 1 << (16 * p.count)  # counters roll over
                regs = ModbusClientMixin.convert_to_registers(
                    raw, _PYMODBUS_TYPE[p.type], word_order=p.word_order
                )
            if regs is None:
                self.unserved.update(addresses)
                continue
            self.unserved.difference_update(addresses)
            block = self.blocks[p.function]
            o = p.address - block.start
            block.registers[o : o + p.count] = regs
        return self.blocks


def _words(raw: int, count: int, word_order: Literal["big", "little"]) -> list[int]:
    """``raw`` as ``count`` registers, unsigned, in the point's word order."""
    dt = {1: "uint16", 2: "uint32", 4: "uint64"}[count]
    return ModbusClientMixin.convert_to_registers(raw, _PYMODBUS_TYPE[dt], word_order=word_order)
