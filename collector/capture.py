"""``foursave capture``: a device's registers written as a register dump, read with read
requests only.

A user sends the dump with a bug report; ``simulate: {image: dump.json}`` serves it
back as a device (``simulators/image.py``), so the device can be tested at once.  The
format is that of ``../shared/devices/README.md`` (id, title, unit_id, source, blocks),
with one compatible addition: a block read with function 4 (input registers) says
``"function": 4``; without it a block is holding registers (function 3).

- SunSpec (the default): the "SunS" marker is looked for at 40000, 0 and 50000 (or the
  base given), the model chain is walked by each model's ID and L, and every model is
  read whole, in requests of at most 125 registers, up to and with the end marker.
- A register-map profile (``collector/profiles/<name>.yaml``): every point's registers,
  with the function its point is declared with, in the requests the collector makes
  (points joined across at most the profile's ``max_gap`` unused registers).

A request answered with exception 02 (illegal data address; 03 too, which some devices
give for a request size they do not like) is split in halves down to single registers,
and a register refused on its own is written ``null``.  Every request goes through
``ModbusLink`` and its read-only guard: nothing here can send a write.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from foursave.collector.modbus import (
    FC_HOLDING,
    FC_INPUT,
    DeviceException,
    ModbusLink,
    TransportError,
)
from foursave.collector.plan import Span, plan_requests
from foursave.collector.profiles import ProfileError, load_profile
from foursave.collector.sunspec import (
    BASE_ADDRESSES,
    END_MODEL_ID,
    SUNS_MARKER,
    ModelRef,
    SunSpecError,
    decode_points,
    model_layout,
)
from foursave.core.config import Device, SerialLine

REFUSED = {2, 3}  # illegal data address; illegal data value (a count the device refuses)
# how gateways and devices answer for a unit id nobody has (besides not at all)
NO_SUCH_UNIT = {4, 10, 11}
MAX_MODELS = 256  # a chain longer than this is a broken device
COMMON_MODEL = 1
IDENTITY = ("Mn", "Md", "Opt", "Vr", "SN")  # model 1: manufacturer, model, options, ...
EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "device failure",
    5: "acknowledge",
    6: "device busy",
    10: "gateway path unavailable",
    11: "gateway target failed to respond",
}


class CaptureError(Exception):
    """A capture that cannot be made, in words (the CLI prints it, no traceback)."""


@dataclass
class Captured:
    """What a capture read: function -> address -> value (``None``: refused)."""

    registers: dict[int, dict[int, int | None]] = field(default_factory=dict)
    requests: int = 0
    refused: int = 0  # registers refused on their own (null in the dump)
    base: int | None = None  # SunSpec base address
    models: list[ModelRef] = field(default_factory=list)
    identity: dict[str, str] = field(default_factory=dict)  # SunSpec model 1
    warnings: list[str] = field(default_factory=list)

    def put(self, span: Span, values: Sequence[int | None]) -> None:
        regs = self.registers.setdefault(span.function, {})
        for i, v in enumerate(values):
            regs[span.address + i] = v

    def blocks(self) -> list[dict[str, Any]]:
        """The dump's blocks: runs of consecutive addresses per function (a ``null``
        register stays inside its block)."""
        out: list[dict[str, Any]] = []
        for function in sorted(self.registers):
            regs = self.registers[function]
            run: list[int | None] = []
            start = 0
            for address in sorted(regs):
                if run and address != start + len(run):
                    out.append(_block(function, start, run))
                    run = []
                if not run:
                    start = address
                run.append(regs[address])
            if run:
                out.append(_block(function, start, run))
        return out


def _block(function: int, address: int, registers: list[int | None]) -> dict[str, Any]:
    block: dict[str, Any] = {"address": address, "registers": registers}
    if function != FC_HOLDING:
        block["function"] = function
    return block


def _exception(code: int) -> str:
    name = EXCEPTION_NAMES.get(code)
    return f"exception {code:02d}" + (f" ({name})" if name else "")


def describe(device: Device) -> str:
    """Where a device is: ``host:port``, or the serial line and its settings."""
    if device.transport == "rtu" and device.serial is not None:
        s = device.serial
        return f"{s.port} {s.baudrate} {s.bytesize}{s.parity}{s.stopbits}"
    return f"{device.host}:{device.port}"


def target(
    *,
    host: str | None,
    port: int,
    unit_id: int,
    profile: str = "sunspec",
    serial: SerialLine | None = None,
    rtu_over_tcp: bool = False,
    timeout_s: float = 2.0,
) -> Device:
    """The device to capture as a ``Device`` (what ``ModbusLink`` connects to);
    ``CaptureError`` names a value that cannot be."""
    transport = "rtu" if serial is not None else "rtu-over-tcp" if rtu_over_tcp else "tcp"
    if transport != "rtu" and not host:
        raise CaptureError("give --host (Modbus TCP) or --serial (Modbus RTU)")
    try:
        return Device(
            id="capture",
            site="capture",
            kind="inverter",  # the link does not care; the profile says what it is
            profile=profile,
            transport=transport,
            host=host,
            port=port,
            serial=serial,
            unit_id=unit_id,
            timeout_s=timeout_s,
        )
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(x) for x in e['loc']) or 'device'}: {e['msg']}" for e in exc.errors()
        ]
        raise CaptureError("; ".join(problems)) from None


class _Reader:
    """Reads spans for a capture: retries a lost answer, splits a refused request."""

    def __init__(self, link: ModbusLink, device: Device, captured: Captured, retries: int):
        self.link = link
        self.device = device
        self.captured = captured
        self.retries = retries

    def _where(self, span: Span) -> str:
        return (
            f"{describe(self.device)} unit {self.device.unit_id}, function {span.function} "
            f"registers {span.address}..{span.end - 1}"
        )

    async def once(self, span: Span) -> list[int]:
        """One request, tried again on no answer (``retries`` times)."""
        for attempt in range(self.retries + 1):
            self.captured.requests += 1
            try:
                return await self.link.read(span, self.device.unit_id, self.device.timeout_s)
            except TransportError as exc:
                if attempt == self.retries:
                    raise CaptureError(
                        f"{self._where(span)}: {exc} (after {attempt + 1} tries); nothing written"
                    ) from None
        raise AssertionError("unreachable")

    async def read(self, span: Span) -> list[int | None]:
        """The span's registers, ``None`` for each one the device refuses."""
        try:
            return list(await self.once(span))
        except DeviceException as exc:
            if exc.code not in REFUSED:
                raise CaptureError(
                    f"{self._where(span)}: {_exception(exc.code)}; nothing written"
                ) from None
        if span.count == 1:
            self.captured.refused += 1
            return [None]
        half = span.count // 2
        first = await self.read(Span(span.function, span.address, half))
        rest = await self.read(Span(span.function, span.address + half, span.count - half))
        return first + rest


async def capture(
    device: Device,
    *,
    profile: str = "sunspec",
    base: int | None = None,
    retries: int = 2,
) -> Captured:
    """Read ``device`` whole (its SunSpec chain, or its profile's registers) with read
    requests only.  ``CaptureError`` says why not: unreachable, no SunSpec marker, an
    unknown profile, a device that stopped answering."""
    captured = Captured()
    points: list[Span] = []
    max_gap = 0
    if profile != "sunspec":
        try:
            prof = load_profile(profile)
        except ProfileError as exc:
            raise CaptureError(str(exc)) from None
        points = [
            Span(FC_HOLDING if p.function == "holding" else FC_INPUT, p.address, p.count)
            for p in prof.points
        ]
        max_gap = prof.max_gap
    async with ModbusLink(device) as link:
        try:
            await link.connect(device.timeout_s)
        except TransportError:
            raise CaptureError(
                f"cannot connect to {describe(device)}: refused or unreachable "
                f"(no answer within {device.timeout_s:g} s)"
            ) from None
        reader = _Reader(link, device, captured, retries)
        if profile == "sunspec":
            await _capture_sunspec(reader, base)
        else:
            # the requests the collector makes: the points, joined across the unused
            # registers the profile allows (max_gap), so the replay answers them alike
            for span in plan_requests(points, max_gap=max_gap):
                captured.put(span, await reader.read(span))
            if captured.registers and captured.refused == sum(
                map(len, captured.registers.values())
            ):
                captured.warnings.append(
                    f"the device refused every register of profile {profile!r}: is it "
                    "the right profile and unit id?"
                )
    return captured


async def _find_base(reader: _Reader, bases: Sequence[int]) -> int:
    d = reader.device
    seen: list[str] = []
    unit_unknown = True  # every answer says nobody is at this unit id
    for candidate in bases:
        span = Span(FC_HOLDING, candidate, 2)
        reader.captured.requests += 1
        try:
            regs = await reader.link.read(span, d.unit_id, d.timeout_s)
        except DeviceException as exc:
            seen.append(f"{candidate}: {_exception(exc.code)}")
            unit_unknown &= exc.code in NO_SUCH_UNIT
            continue
        except TransportError:
            seen.append(f"{candidate}: no answer within {d.timeout_s:g} s")
            continue
        if tuple(regs) == SUNS_MARKER:
            return candidate
        seen.append(f"{candidate}: {regs} is not 'SunS' {list(SUNS_MARKER)}")
        unit_unknown = False
    hint = "is the unit id right? " if unit_unknown else ""
    hint += "not a SunSpec device, or its base is elsewhere (--base N), or a register-map "
    hint += "profile reads it (--profile NAME)"
    raise CaptureError(
        f"no SunSpec marker 'SunS' at {describe(d)} unit {d.unit_id}: "
        + "; ".join(seen)
        + f"; {hint}"
    )


async def _capture_sunspec(reader: _Reader, base: int | None) -> None:
    captured = reader.captured
    bases = (base,) if base is not None else BASE_ADDRESSES
    found = await _find_base(reader, bases)
    captured.base = found
    captured.put(Span(FC_HOLDING, found, 2), list(SUNS_MARKER))
    address = found + 2
    for _ in range(MAX_MODELS):
        if address + 2 > 65536:
            captured.warnings.append("the model chain runs past address 65535 (no end marker)")
            return
        header = Span(FC_HOLDING, address, 2)
        mid, length = await reader.read(header)
        captured.put(header, [mid, length])
        if mid == END_MODEL_ID:
            return
        if mid is None or length is None:
            captured.warnings.append(
                f"model header at {address} refused ({'ID' if mid is None else 'L'}); "
                "the chain ends there"
            )
            return
        if address + 2 + length > 65536:
            captured.warnings.append(
                f"model {mid} at {address} (L={length}) runs past address 65535; "
                "the chain ends there"
            )
            return
        model = ModelRef(mid, address, length)
        captured.models.append(model)
        for span in plan_requests([Span(FC_HOLDING, address + 2, length)]):
            captured.put(span, await reader.read(span))
        if mid == COMMON_MODEL and not captured.identity:
            captured.identity = identity(captured, model)
        address += 2 + length
    captured.warnings.append(f"more than {MAX_MODELS} models: no end marker; stopped there")


def identity(captured: Captured, model: ModelRef) -> dict[str, str]:
    """Manufacturer, model, options, version and serial from the Common model (1), each
    only where its registers were all read."""
    regs = captured.registers.get(FC_HOLDING, {})
    block = [regs.get(a) for a in range(model.address, model.address + model.length + 2)]
    try:
        layout = model_layout(COMMON_MODEL, model.length)
    except SunSpecError:
        return {}
    out: dict[str, str] = {}
    for name in IDENTITY:
        pl = layout.points.get((None, name))
        if pl is None:
            continue
        part = block[pl.offset : pl.offset + pl.size]
        if len(part) < pl.size or any(v is None for v in part):
            continue
        filled = [v if v is not None else 0 for v in block]
        value = decode_points(layout, filled, [(None, name)]).get((None, name))
        if isinstance(value, str) and value.strip():
            out[name] = value.strip()
    return out


def dump_document(
    captured: Captured,
    device: Device,
    *,
    profile: str,
    at: datetime,
    version: str,
    dump_id: str | None = None,
    title: str | None = None,
) -> dict[str, Any]:
    """The register dump of a capture (the format of ``../shared/devices/``)."""
    ident = captured.identity
    name = " ".join(ident[k] for k in ("Mn", "Md") if k in ident)
    if profile != "sunspec":
        prof = load_profile(profile)
        name = name or f"{prof.manufacturer} {prof.model}"
    details = ", ".join(
        f"{label} {ident[k]}"
        for k, label in (("SN", "SN"), ("Vr", "fw"), ("Opt", "Opt"))
        if k in ident
    )
    where = describe(device)
    default_title = (name or "device") + (f" ({details})" if details else "")
    default_title += f", captured from {where} unit {device.unit_id}"
    source: dict[str, Any] = {
        "captured": where,
        "transport": device.transport,
        "at": at.isoformat(timespec="seconds"),
        "foursave": version,
    }
    if profile != "sunspec":
        source["profile"] = profile
    return {
        "id": dump_id or _slug(name) or "capture",
        "title": title or default_title,
        "unit_id": device.unit_id,
        "source": source,
        "blocks": captured.blocks(),
    }


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def write_dump(document: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Write the dump as JSON (the layout of ``../shared/devices/``), whole or not at
    all: a capture cut short leaves no half-written file."""
    out = Path(path)
    text = json.dumps(document, indent=1, ensure_ascii=False) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent or ".")
    try:
        os.fchmod(fd, 0o644)  # a file to send, not a secret (mkstemp makes it 0600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
