"""Register-map profiles: data files, one per device model, validated when loaded.

A vendor profile (``<name>.yaml``) lists each point's address, function code, data
type, word order, scale and the canonical field it feeds.  ``sunspec.yaml`` maps SunSpec
model points (layouts from pysunspec2, never retyped) to canonical fields.

A point may feed a part of the reading instead of its own fields (``part``: an
inverter's PV input, ``inverter_string`` with its ``string`` slug, or its ``battery``;
``core.glossary.PARTS`` says which parts a measurement may carry).  A point's
``no_value`` lists the raw register contents its source documents as "no value"
(Huawei's 0x7FFF for a signed 16-bit register, ...): such a read is absent, never a
number.  The profiles shipped here and their sources are tabled in docs/profiles.md.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from foursave.core.glossary import FIELDS, PARTS, SLUG_PATTERN

PROFILE_DIR = Path(__file__).parent
RESERVED = {"sunspec"}

DataType = Literal["int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64"]
REGISTER_COUNT: dict[str, int] = {
    "int16": 1,
    "uint16": 1,
    "int32": 2,
    "uint32": 2,
    "int64": 4,
    "uint64": 4,
    "float32": 2,
    "float64": 4,
}


class ProfileError(Exception):
    """A register-map file that does not meet the schema; names the file and point."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


PartName = Literal["inverter_string", "battery"]
PartKey = tuple[str, tuple[tuple[str, str], ...]]
"""A part of a reading: its measurement and its tags (``collector.modbus.PartKey``)."""

INTEGER_TYPES = frozenset(t for t in REGISTER_COUNT if "int" in t)


class PointDef(_Strict):
    field: str = Field(description="canonical field name (core/glossary.py)")
    address: int = Field(ge=0, le=65535, description="0-based protocol address")
    function: Literal["holding", "input"] = "holding"
    type: DataType = "uint16"
    word_order: Literal["big", "little"] = "big"
    unit: str = Field(description="unit as the device reports it")
    scale: float = Field(1.0, description="canonical value = raw x scale")
    name: str | None = Field(None, description="the vendor's name for the point")
    part: PartName | None = Field(
        None, description="the part of the reading this point feeds (core/glossary.py PARTS)"
    )
    string: str | None = Field(
        None,
        pattern=SLUG_PATTERN,
        description="which PV input (tag 'string'): required for an inverter_string point",
    )
    no_value: tuple[int, ...] = Field(
        (),
        description="raw register contents (unsigned, words in the point's word order) that "
        "the source documents as 'no value': such a read is absent",
    )

    @property
    def count(self) -> int:
        return REGISTER_COUNT[self.type]

    @property
    def part_key(self) -> PartKey | None:
        """``("inverter_string", (("string", "1"),))``, ``("battery", ())`` or ``None``
        for a point of the reading's own fields."""
        if self.part is None:
            return None
        return (self.part, (("string", self.string),) if self.string is not None else ())

    @property
    def label(self) -> str:
        """``dc_voltage_v``, ``inverter_string[1].dc_voltage_v``: the point as messages
        name it (``collector.modbus.part_label``)."""
        key = self.part_key
        if key is None:
            return self.field
        where = f"[{','.join(v for _, v in key[1])}]" if key[1] else ""
        return f"{key[0]}{where}.{self.field}"

    @model_validator(mode="after")
    def _check_point(self) -> PointDef:
        if self.part == "inverter_string" and self.string is None:
            raise ValueError(
                f"point {self.field!r}: an inverter_string point needs 'string' (which PV "
                'input, e.g. "1")'
            )
        if self.part != "inverter_string" and self.string is not None:
            raise ValueError(
                f"point {self.field!r}: 'string' is for inverter_string points only"
                + (f", not {self.part}" if self.part else "; set part: inverter_string")
            )
        if self.no_value:
            if self.type not in INTEGER_TYPES:
                raise ValueError(
                    f"point {self.field!r}: no_value is for integer registers; a {self.type} "
                    "without a value reads NaN"
                )
            top = (1 << (16 * self.count)) - 1
            bad = [v for v in self.no_value if not 0 <= v <= top]
            if bad:
                raise ValueError(
                    f"point {self.field!r}: no_value {bad} does not fit {self.count} "
                    f"register(s) (0 .. 0x{top:X})"
                )
        return self


class Profile(_Strict):
    profile: str
    manufacturer: str
    model: str
    source: str = Field(description="document the register map was taken from")
    measurement: Literal["inverter", "meter", "weather", "water"]
    max_gap: int = Field(
        0, ge=0, le=124, description="unused registers one request may span to join points"
    )
    max_registers: int = Field(
        125, ge=1, le=125, description="registers one request may read at most (device limit)"
    )
    points: tuple[PointDef, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> Profile:
        allowed = PARTS[self.measurement]
        taken: dict[tuple[str, int], str] = {}
        for p in self.points:
            if p.part is not None and p.part not in allowed:
                raise ValueError(
                    f"point {p.label!r}: a {self.measurement} reading carries no {p.part} part; "
                    + (
                        f"its parts are {sorted(allowed)}"
                        if allowed
                        else f"a {self.measurement} has no parts"
                    )
                )
            measurement = p.part or self.measurement
            known = FIELDS[measurement]
            if p.field not in known:
                raise ValueError(
                    f"point {p.label!r}: not a canonical {measurement} field; "
                    f"expected one of {sorted(known)}"
                )
            for a in range(p.address, p.address + p.count):
                if (p.function, a) in taken:
                    raise ValueError(
                        f"point {p.label!r} overlaps {taken[(p.function, a)]!r} at {p.function} "
                        f"register {a}"
                    )
                taken[(p.function, a)] = p.label
        labels = [p.label for p in self.points]
        dup = {f for f in labels if labels.count(f) > 1}
        if dup:
            raise ValueError(f"fields fed twice: {sorted(dup)}")
        return self

    def strings(self) -> tuple[str, ...]:
        """The PV inputs (``string`` slugs) the profile reads, in the order it lists them."""
        return tuple(dict.fromkeys(p.string for p in self.points if p.string is not None).keys())


def available_profiles() -> set[str]:
    return {p.stem for p in PROFILE_DIR.glob("*.yaml")} - RESERVED


def check_profile(name: str, kind: str) -> str | None:
    """What is wrong with using profile ``name`` for a device of ``kind``, or ``None``;
    the configuration loader's profile check (``foursave.core.config.ProfileCheck``)."""
    if name == "sunspec":
        return None
    names = available_profiles()
    if name not in names:
        return f"unknown profile {name!r}; expected 'sunspec' or one of {sorted(names)}"
    try:
        prof = load_profile(name)
    except ProfileError as exc:
        return f"profile file is invalid: {exc}"
    if prof.measurement != kind:
        return f"profile {name!r} is for a {prof.measurement}, not a {kind}"
    return None


@cache
def load_profile(name: str) -> Profile:
    path = PROFILE_DIR / f"{name}.yaml"
    if name in RESERVED or not path.exists():
        raise ProfileError(f"unknown profile {name!r}; available: {sorted(available_profiles())}")
    return load_profile_file(path)


def load_profile_file(path: str | os.PathLike[str]) -> Profile:
    """The register-map profile in the file ``path``, validated (``ProfileError`` names the
    file and each problem); ``load_profile`` reads the profiles shipped here with it."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        return Profile.model_validate(raw)
    except yaml.YAMLError as exc:
        raise ProfileError(f"{path}: not valid YAML: {exc}") from None
    except ValidationError as exc:
        msgs = [
            f"{path}: {'.'.join(str(x) for x in e['loc']) or '(top level)'}: {e['msg']}"
            for e in exc.errors()
        ]
        raise ProfileError("\n".join(msgs)) from None


class SunSpecPoint(_Strict):
    point: str
    field: str
    scale: float = 1.0
    offset: int = Field(0, description="added after scaling: model 701's InvSt + 1 = St")
    group: str | None = Field(None, description="repeating group name, first instance is read")


class SunSpecGroupMap(_Strict):
    """Each instance of a model's top-level ``group`` feeds a part of its own."""

    group: str
    part: str
    id: str | None = Field(None, description="the point naming the instance (tag value)")
    when: dict[str, str] = Field(
        default_factory=dict, description="enumerated point -> symbol the instance must have"
    )
    points: tuple[SunSpecPoint, ...]


class SunSpecModelMap(_Strict):
    measurement: Literal["inverter", "meter", "weather", "water"]
    part: str | None = Field(None, description="the points feed this part of the reading")
    points: tuple[SunSpecPoint, ...] = ()
    groups: tuple[SunSpecGroupMap, ...] = ()


class SunSpecMap(_Strict):
    source: str
    info: dict[int, tuple[SunSpecPoint, ...]] = Field(default_factory=dict)
    models: dict[int, SunSpecModelMap]


def _model_points(model_id: int) -> tuple[dict[str, dict], dict[str, dict[str, dict]]]:
    """pysunspec2's definition of ``model_id``: its top-level points, and each top-level
    group's points, by name (what the map may name)."""
    from sunspec2 import device as ss_device

    top = ss_device.get_model_def(model_id)["group"]
    groups = {g["name"]: {p["name"]: p for p in g.get("points", [])} for g in top.get("groups", [])}
    return {p["name"]: p for p in top.get("points", [])}, groups


def _map_problems(m: SunSpecMap) -> list[str]:
    """Every point the map names must exist in pysunspec2's model definition, every field
    in the glossary, every part be one its measurement may carry."""
    problems: list[str] = []

    def check(where: str, target: str, points: Mapping[str, dict], sp: SunSpecPoint) -> None:
        if sp.field not in FIELDS[target]:
            problems.append(f"{where}: {sp.field!r} is not a canonical {target} field")
        if sp.point not in points:
            problems.append(f"{where}: model has no point {sp.point!r}")

    for mid, mm in m.models.items():
        try:
            top, groups = _model_points(mid)
        except Exception:
            problems.append(f"models.{mid}: pysunspec2 has no definition of model {mid}")
            continue
        target = mm.part or mm.measurement
        if mm.part is not None and mm.part not in PARTS[mm.measurement]:
            problems.append(f"models.{mid}: a {mm.measurement} reading carries no {mm.part!r}")
            continue
        for i, sp in enumerate(mm.points):
            scope = groups.get(sp.group, {}) if sp.group else top
            check(f"models.{mid}.points[{i}]", target, scope, sp)
        for j, gm in enumerate(mm.groups):
            where = f"models.{mid}.groups[{j}]"
            if gm.part not in PARTS[mm.measurement]:
                problems.append(f"{where}: a {mm.measurement} reading carries no {gm.part!r}")
                continue
            gpoints = groups.get(gm.group)
            if gpoints is None:
                problems.append(f"{where}: model has no group {gm.group!r}")
                continue
            for name, symbol in gm.when.items():
                symbols = {s["name"] for s in gpoints.get(name, {}).get("symbols", [])}
                if symbol not in symbols:
                    problems.append(f"{where}.when: {name} has no symbol {symbol!r}")
            for i, sp in enumerate(gm.points):
                check(f"{where}.points[{i}]", gm.part, gpoints, sp)
    for mid, points in m.info.items():
        top, _ = _model_points(mid)
        for i, sp in enumerate(points):
            check(f"info.{mid}[{i}]", "device_info", top, sp)
    return problems


@cache
def load_sunspec_map() -> SunSpecMap:
    path = PROFILE_DIR / "sunspec.yaml"
    try:
        m = SunSpecMap.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except ValidationError as exc:
        raise ProfileError(f"{path}: {exc}") from None
    problems = _map_problems(m)
    if problems:
        raise ProfileError("\n".join(f"{path}: {p}" for p in problems))
    return m
