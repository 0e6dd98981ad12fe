"""SunSpec layouts and decoding, from pysunspec2's model definitions (never retyped).

Pure: ``model_layout`` turns a model definition (JSON shipped by the SunSpec Alliance in
pysunspec2) into point offsets; ``decode_points`` turns registers into computed values
(raw x 10^SF).  A not-implemented raw value or scale factor gives ``None``: the field is
absent, never 0 (docs/domain.md, "SunSpec Modbus").
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache

from sunspec2 import device as ss_device
from sunspec2 import mb as ss_mb

SUNS_MARKER = (0x5375, 0x6E53)  # "SunS"
BASE_ADDRESSES = (40000, 0, 50000)  # discovery order (SunSpec Modbus spec)
END_MODEL_ID = 0xFFFF


@dataclass(frozen=True)
class PointLayout:
    name: str
    group: str | None  # None for top-level points; first instance of a repeating group
    offset: int  # registers from the model's ID register
    size: int
    type: str
    sf: str | int | None


@dataclass(frozen=True)
class ModelLayout:
    model_id: int
    length: int  # L: registers after ID and L
    points: Mapping[tuple[str | None, str], PointLayout]

    @property
    def total(self) -> int:
        return self.length + 2


class SunSpecError(Exception):
    pass


def _fixed_len(gdef: dict) -> int:
    n = sum(int(p.get("size", 1)) for p in gdef.get("points", []))
    for sub in gdef.get("groups", []):
        count = sub.get("count", 1)
        if isinstance(count, int) and count > 0:
            n += count * _fixed_len(sub)
    return n


@cache
def model_layout(model_id: int, length: int | None = None) -> ModelLayout:
    """Offsets of every point of ``model_id`` with body length ``length`` (L)."""
    try:
        mdef = ss_device.get_model_def(model_id)
    except Exception as exc:  # pysunspec2 raises plain Exception for unknown ids
        raise SunSpecError(f"no SunSpec model definition for model {model_id}: {exc}") from None
    top = mdef["group"]
    points: dict[tuple[str | None, str], PointLayout] = {}
    offset = 0
    for p in top.get("points", []):
        size = int(p.get("size", 1))
        points[(None, p["name"])] = PointLayout(
            p["name"], None, offset, size, p["type"], p.get("sf")
        )
        offset += size
    fixed = _fixed_len(top)
    if length is None:
        length = fixed - 2
    for sub in top.get("groups", []):
        glen = _fixed_len(sub)
        count = sub.get("count", 1)
        if not isinstance(count, int) or count == 0:  # repeating: count follows from L
            count = max(0, (length + 2 - fixed) // glen) if glen else 0
        if count >= 1:
            o = offset
            for p in sub.get("points", []):
                size = int(p.get("size", 1))
                points[(sub["name"], p["name"])] = PointLayout(
                    p["name"], sub["name"], o, size, p["type"], p.get("sf")
                )
                o += size
        offset += count * glen
    return ModelLayout(model_id, length, points)


def _raw(regs: Sequence[int], pl: PointLayout) -> int | float | str | None:
    info = ss_mb.point_type_info.get(pl.type)
    if info is None or pl.offset + pl.size > len(regs):
        return None  # unknown type, or a model shorter than its definition: absent
    data = struct.pack(f">{pl.size}H", *regs[pl.offset : pl.offset + pl.size])
    value = info.data_to(data)
    if not info.is_impl(value):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def decode_points(
    layout: ModelLayout, regs: Sequence[int], wanted: Sequence[tuple[str | None, str]]
) -> dict[tuple[str | None, str], float | int | str | None]:
    """Computed values of ``wanted`` points from the model's registers (ID first)."""
    out: dict[tuple[str | None, str], float | int | str | None] = {}
    for key in wanted:
        pl = layout.points.get(key)
        if pl is None:
            out[key] = None
            continue
        raw = _raw(regs, pl)
        if raw is None or pl.sf is None or isinstance(raw, str):
            out[key] = raw
            continue
        if isinstance(pl.sf, int):
            sf: int | None = pl.sf
        else:
            sf_pl = layout.points.get((pl.group, pl.sf)) or layout.points.get((None, pl.sf))
            sf_raw = _raw(regs, sf_pl) if sf_pl else None
            sf = sf_raw if isinstance(sf_raw, int) else None
        if sf is None or not -10 <= sf <= 10:
            out[key] = None  # scale factor not implemented: the value has no meaning
            continue
        out[key] = raw * 10**sf if sf >= 0 else raw / 10 ** (-sf)
    return out


@dataclass(frozen=True)
class ModelRef:
    model_id: int
    address: int  # address of the model's ID register
    length: int
