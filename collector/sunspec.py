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
from dataclasses import dataclass, field
from functools import cache

from sunspec2 import device as ss_device
from sunspec2 import mb as ss_mb

SUNS_MARKER = (0x5375, 0x6E53)  # "SunS"
BASE_ADDRESSES = (40000, 0, 50000)  # discovery order (SunSpec Modbus spec, pysunspec2)
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
    # every instance of each top-level group (name -> instances, each point name -> layout)
    groups: Mapping[str, tuple[Mapping[str, PointLayout], ...]] = field(default_factory=dict)
    # what did not fit: a group whose count the model's length cannot hold, a group of
    # unknown size (the points after it are absent); for the log, never a failure
    notes: tuple[str, ...] = ()

    @property
    def total(self) -> int:
        return self.length + 2


class SunSpecError(Exception):
    pass


def _fixed_len(gdef: dict) -> int | None:
    """Registers of one instance of ``gdef``, or ``None`` when a nested group's count is
    a point (its size is known only from the registers)."""
    n = sum(int(p.get("size", 1)) for p in gdef.get("points", []))
    for sub in gdef.get("groups", []):
        count = sub.get("count", 1)
        if not isinstance(count, int):
            return None
        sub_len = _fixed_len(sub)
        if sub_len is None:
            return None
        n += count * sub_len
    return n


@cache
def count_points(model_id: int) -> tuple[str, ...]:
    """Top-level points of ``model_id`` that give the count of one of its groups
    (model 714's ``NPrt``), read before the layout (``model_layout(..., counts=)``)."""
    try:
        top = ss_device.get_model_def(model_id)["group"]
    except Exception:
        return ()
    return tuple(g["count"] for g in top.get("groups", []) if isinstance(g.get("count"), str))


@cache
def model_layout(
    model_id: int, length: int | None = None, counts: tuple[tuple[str, int], ...] = ()
) -> ModelLayout:
    """Offsets of every point of ``model_id`` with body length ``length`` (L, the
    device's own: it wins over the definition's), every instance of its top-level groups
    included.  A group's count is the definition's number; for a repeating group (count
    0) what the length holds; for a count given by a point, that point's value from
    ``counts`` (point name -> value), cut down to what the length holds."""
    try:
        mdef = ss_device.get_model_def(model_id)
    except Exception as exc:  # pysunspec2 raises plain Exception for unknown ids
        raise SunSpecError(f"no SunSpec model definition for model {model_id}: {exc}") from None
    top = mdef["group"]
    points: dict[tuple[str | None, str], PointLayout] = {}
    groups: dict[str, tuple[Mapping[str, PointLayout], ...]] = {}
    notes: list[str] = []
    offset = 0
    for p in top.get("points", []):
        size = int(p.get("size", 1))
        points[(None, p["name"])] = PointLayout(
            p["name"], None, offset, size, p["type"], p.get("sf")
        )
        offset += size
    fixed = _fixed_len(top)
    if length is None:
        length = (fixed if fixed is not None else offset) - 2
    given = dict(counts)
    subs = top.get("groups", [])
    for i, sub in enumerate(subs):
        glen = _fixed_len(sub)
        if glen is None or glen == 0:
            if offset < length + 2:
                notes.append(f"group {sub['name']}: size not known from the definition")
            break
        room = max(0, (length + 2 - offset) // glen)
        count = sub.get("count", 1)
        if isinstance(count, str):
            wanted = given.get(count)
            if wanted is None:
                notes.append(f"group {sub['name']}: count point {count} not read")
                break
            if wanted > room:
                notes.append(
                    f"group {sub['name']}: {count} = {wanted}, the length {length} holds {room}"
                )
            count = min(wanted, room)
        elif count == 0:  # repeating: as many as the rest of the model holds
            after = sum((_fixed_len(g) or 0) * int(g.get("count", 1) or 0) for g in subs[i + 1 :])
            count = max(0, (length + 2 - offset - after) // glen)
        instances: list[Mapping[str, PointLayout]] = []
        for _ in range(count):
            inst: dict[str, PointLayout] = {}
            o = offset
            for p in sub.get("points", []):
                size = int(p.get("size", 1))
                inst[p["name"]] = PointLayout(
                    p["name"], sub["name"], o, size, p["type"], p.get("sf")
                )
                o += size
            instances.append(inst)
            offset += glen
        groups[sub["name"]] = tuple(instances)
        if instances:
            for name, pl in instances[0].items():
                points[(sub["name"], name)] = pl
    return ModelLayout(model_id, length, points, groups, tuple(notes))


def layout_of(model_id: int, length: int, regs: Sequence[int]) -> ModelLayout:
    """``model_layout`` for a model read from a device: the count points its groups need
    are read from ``regs`` (the model's registers, ID first)."""
    names = count_points(model_id)
    if not names:
        return model_layout(model_id, length)
    top = model_layout(model_id, length, tuple((n, 0) for n in names))
    counts = []
    for n in names:
        pl = top.points.get((None, n))
        v = _raw(regs, pl) if pl else None
        counts.append((n, v if isinstance(v, int) and not isinstance(v, bool) else 0))
    return model_layout(model_id, length, tuple(counts))


def _raw(regs: Sequence[int], pl: PointLayout) -> int | float | str | None:
    info = ss_mb.point_type_info.get(pl.type)
    if info is None or pl.offset + pl.size > len(regs):
        return None  # unknown type, or a model shorter than its definition: absent
    # the 16- and 32-bit integers (most points, every scale factor) as pysunspec2
    # decodes them, without packing the registers into bytes first
    to = info.data_to
    r = regs[pl.offset]
    if to in _INT16 and 0 <= r <= 0xFFFF:
        value: int | float | str = r - 0x10000 if to is _S16 and r >= 0x8000 else r
    elif to in _INT32 and pl.size >= 2 and 0 <= r <= 0xFFFF and 0 <= regs[pl.offset + 1] <= 0xFFFF:
        value = r << 16 | regs[pl.offset + 1]
        if to is _S32 and value >= 0x80000000:
            value -= 0x100000000
    else:
        data = struct.pack(f">{pl.size}H", *regs[pl.offset : pl.offset + pl.size])
        value = to(data)
    if not info.is_impl(value):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


_S16, _S32 = ss_mb.data_to_s16, ss_mb.data_to_s32
_INT16 = (ss_mb.data_to_u16, _S16)
_INT32 = (ss_mb.data_to_u32, _S32)


def point_value(
    layout: ModelLayout,
    regs: Sequence[int],
    pl: PointLayout,
    scope: Mapping[str, PointLayout] | None = None,
) -> float | int | str | None:
    """The computed value of the point ``pl`` (raw x 10^SF): its scale factor is looked
    up in ``scope`` (its group instance) first, then at the top level."""
    raw = _raw(regs, pl)
    if raw is None or pl.sf is None or isinstance(raw, str):
        return raw
    if isinstance(pl.sf, int):
        sf: int | None = pl.sf
    else:
        sf_pl = (
            (scope or {}).get(pl.sf)
            or layout.points.get((pl.group, pl.sf))
            or layout.points.get((None, pl.sf))
        )
        sf_raw = _raw(regs, sf_pl) if sf_pl else None
        sf = sf_raw if isinstance(sf_raw, int) else None
    if sf is None or not -10 <= sf <= 10:
        return None  # scale factor not implemented: the value has no meaning
    return raw * 10**sf if sf >= 0 else raw / 10 ** (-sf)


def decode_points(
    layout: ModelLayout, regs: Sequence[int], wanted: Sequence[tuple[str | None, str]]
) -> dict[tuple[str | None, str], float | int | str | None]:
    """Computed values of ``wanted`` points from the model's registers (ID first)."""
    out: dict[tuple[str | None, str], float | int | str | None] = {}
    for key in wanted:
        pl = layout.points.get(key)
        out[key] = None if pl is None else point_value(layout, regs, pl)
    return out


@dataclass(frozen=True)
class ModelRef:
    model_id: int
    address: int  # address of the model's ID register
    length: int


@cache
def _symbols(model_id: int, group: str | None, point: str) -> Mapping[int, str]:
    top = ss_device.get_model_def(model_id)["group"]
    scope = top if group is None else next(g for g in top["groups"] if g["name"] == group)
    pdef = next(p for p in scope["points"] if p["name"] == point)
    return {int(s["value"]): s["name"] for s in pdef.get("symbols", [])}


def symbol_name(model_id: int, group: str | None, point: str, value: object) -> str | None:
    """The name pysunspec2's definition gives the enumerated ``value`` of ``point``
    (model 714's PrtTyp 0 -> ``PV``), or ``None``."""
    if not isinstance(value, int) or isinstance(value, bool):
        return None
    return _symbols(model_id, group, point).get(value)
