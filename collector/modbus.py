"""Modbus I/O for the collector: links (TCP, RTU, RTU over TCP) and device readers.

Read-only by construction: a link exposes only read requests, and every PDU is checked
on its way out — a function code other than 1-4 raises before it reaches the wire.

Readers keep only possible values: a value outside the device's bounds (the glossary's
physical bounds narrowed by its configuration and rating, ``Device.field_bounds``), a
non-finite one, or one that fails to decode is absent from the reading — never clamped,
never 0 — and reported in ``ReadResult.out_of_bounds`` or ``errors``.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypedDict

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient, ModbusBaseClient
from pymodbus.client.mixin import ModbusClientMixin
from pymodbus.exceptions import ModbusException, ModbusIOException
from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU

from foursave.collector.plan import RegisterMap, Span, plan_requests
from foursave.collector.profiles import Profile, load_profile, load_sunspec_map
from foursave.collector.sunspec import (
    BASE_ADDRESSES,
    END_MODEL_ID,
    SUNS_MARKER,
    ModelRef,
    decode_points,
    model_layout,
)
from foursave.core.config import Device
from foursave.core.glossary import Bounds, device_bounds

log = logging.getLogger("foursave.collector")

READ_FUNCTION_CODES = frozenset({1, 2, 3, 4})
FC_HOLDING, FC_INPUT = 3, 4


class WriteRefused(RuntimeError):
    """Raised if anything tries to send a non-read function code."""


class TransportError(Exception):
    """No answer: connection refused, timeout, broken frame."""


class DeviceException(Exception):
    """The device answered with a Modbus exception response."""

    def __init__(self, code: int, span: Span):
        super().__init__(f"exception {code:02d} for fc{span.function} {span.address}+{span.count}")
        self.code = code
        self.span = span


def read_only_guard(sending: bool, pdu: ModbusPDU) -> ModbusPDU:
    """pymodbus ``trace_pdu`` hook: refuse to send anything but a read."""
    if sending and pdu.function_code not in READ_FUNCTION_CODES:
        raise WriteRefused(
            f"function code {pdu.function_code} is not a read; foursave is read-only"
        )
    return pdu


def link_key(d: Device) -> tuple:
    if d.transport == "rtu":
        return ("rtu", d.serial.port if d.serial else "")
    return (d.transport, d.host, d.port)


class _ClientOptions(TypedDict):
    """Keyword arguments every link's pymodbus client gets, whatever the transport."""

    timeout: float
    retries: int
    trace_pdu: Callable[[bool, ModbusPDU], ModbusPDU]


class ModbusLink:
    """One connection shared by the devices behind it (a serial line, a gateway)."""

    def __init__(self, device: Device):
        self.key = link_key(device)
        self.lock = asyncio.Lock()
        common: _ClientOptions = {
            "timeout": device.timeout_s,
            "retries": 0,
            "trace_pdu": read_only_guard,
        }
        # the async clients' common base: connect(), connected, close() and the reads
        self.client: ModbusBaseClient
        if device.transport == "rtu":
            line = device.serial
            assert line is not None
            self.client = AsyncModbusSerialClient(
                line.port,
                framer=FramerType.RTU,
                baudrate=line.baudrate,
                parity=line.parity,
                stopbits=line.stopbits,
                bytesize=line.bytesize,
                reconnect_delay=0,
                **common,
            )
        else:
            framer = FramerType.RTU if device.transport == "rtu-over-tcp" else FramerType.SOCKET
            self.client = AsyncModbusTcpClient(
                device.host or "127.0.0.1",
                port=device.port,
                framer=framer,
                reconnect_delay=0,
                **common,
            )

    async def _connect(self, timeout_s: float) -> None:
        if self.client.connected:
            return
        try:
            ok = await asyncio.wait_for(self.client.connect(), timeout_s)
        except (TimeoutError, OSError) as exc:
            raise TransportError(f"connect {self.key}: {exc!r}") from None
        if not ok:
            raise TransportError(f"connect {self.key}: refused or unreachable")

    async def read(self, span: Span, unit_id: int, timeout_s: float) -> list[int]:
        async with self.lock:
            await self._connect(timeout_s)
            if span.function == FC_HOLDING:
                call = self.client.read_holding_registers
            elif span.function == FC_INPUT:
                call = self.client.read_input_registers
            else:
                raise ValueError(f"function {span.function} is not a register read")
            try:
                resp = await asyncio.wait_for(
                    call(span.address, count=span.count, device_id=unit_id), timeout_s * 1.5
                )
            except (TimeoutError, ModbusIOException) as exc:
                self.client.close()  # a late answer must not be taken for the next one
                if isinstance(exc, ModbusIOException) and "No response" not in str(exc):
                    raise TransportError(f"{self.key} unit {unit_id}: {exc}") from None
                raise TransportError(
                    f"{self.key} unit {unit_id}: timeout, no answer within {timeout_s:g} s"
                ) from None
            except (ModbusException, OSError) as exc:
                self.client.close()
                raise TransportError(f"{self.key} unit {unit_id}: {exc!r}") from None
            if not resp.isError() and resp.function_code != span.function:
                # pymodbus pairs an answer with its request by transaction id only: an
                # answer of another function (input registers for holding ones, a
                # read/write-multiple answer) is not these registers
                self.client.close()
                raise TransportError(
                    f"{self.key} unit {unit_id}: answer of function {resp.function_code} "
                    f"to a function {span.function} request"
                )
        if resp.isError():
            code = getattr(resp, "exception_code", 0)
            raise DeviceException(int(code), span)
        regs = list(resp.registers)
        if len(regs) < span.count:
            raise TransportError(f"{self.key}: short answer {len(regs)} < {span.count}")
        return regs[: span.count]

    async def close(self) -> None:
        """Close the connection and let the event loop finish closing its socket.

        asyncio closes a transport's socket in a callback on the next loop iteration:
        without the yield, a loop that ends right after would leave the socket open.
        """
        self.client.close()
        await asyncio.sleep(0)

    async def __aenter__(self) -> ModbusLink:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()


@dataclass(frozen=True)
class OutOfBounds:
    """A value left out of a reading: what it decoded to, the registers it came from."""

    value: float
    registers: tuple[int, ...]
    bounds: Bounds

    def describe(self) -> str:
        return f"{self.value!r} (registers {_hex(self.registers)}) outside {self.bounds.describe()}"


PartKey = tuple[str, tuple[tuple[str, str], ...]]
"""A part of a reading (``core.glossary.PARTS``): its measurement and its tags, e.g.
``("inverter_string", (("string", "1"),))`` or ``("battery", ())``."""


def part_label(key: PartKey, name: str) -> str:
    """``inverter_string[1].dc_voltage_v``, ``battery.soc_pct``: a part's field as the
    status and the log name it."""
    measurement, tags = key
    where = f"[{','.join(v for _, v in tags)}]" if tags else ""
    return f"{measurement}{where}.{name}"


@dataclass
class ReadResult:
    fields: dict[str, float | int]
    errors: list[str] = field(default_factory=list)
    requests: int = 0
    out_of_bounds: dict[str, OutOfBounds] = field(default_factory=dict)
    parts: dict[PartKey, dict[str, float | int]] = field(default_factory=dict)
    # nameplate and identity (device_info fields), when the reader learnt them
    info: dict[str, float | str] = field(default_factory=dict)

    def keep(
        self,
        name: str,
        value: float,
        registers: Sequence[int],
        bounds: Mapping[str, Bounds],
    ) -> None:
        """Put ``value`` in the reading if it can be a measurement of ``name``: NaN is no
        value (SunSpec: not implemented) and stays absent; ±Inf, an overflow of the
        scaling, or a value outside ``bounds`` is absent and noted in ``out_of_bounds``."""
        if isinstance(value, float) and math.isnan(value):
            return
        b = bounds.get(name)
        finite = not isinstance(value, float) or math.isfinite(value)
        if not finite or (b is not None and not b.admits(value)):
            self.out_of_bounds[name] = OutOfBounds(value, tuple(registers), b or _FINITE)
            return
        self.fields[name] = value

    def keep_part(
        self,
        key: PartKey,
        name: str,
        value: float,
        registers: Sequence[int],
        bounds: Mapping[str, Bounds],
    ) -> None:
        """``keep`` for a field of the part ``key`` (its measurement's ``bounds``): a
        value out of bounds is noted as ``part_label(key, name)``."""
        if isinstance(value, float) and math.isnan(value):
            return
        b = bounds.get(name)
        finite = not isinstance(value, float) or math.isfinite(value)
        if not finite or (b is not None and not b.admits(value)):
            oob = OutOfBounds(value, tuple(registers), b or _FINITE)
            self.out_of_bounds[part_label(key, name)] = oob
            return
        self.parts.setdefault(key, {})[name] = value


_FINITE = Bounds(reason="a finite number")


async def read_spans(
    link: ModbusLink, unit_id: int, timeout_s: float, spans: Sequence[Span], result: ReadResult
) -> tuple[RegisterMap, list[Span]]:
    """Read each span; exception 02 on a span splits it (the caller re-plans it)."""
    regs = RegisterMap()
    illegal: list[Span] = []
    for span in spans:
        result.requests += 1
        try:
            regs.put(span, await link.read(span, unit_id, timeout_s))
        except DeviceException as exc:
            result.errors.append(str(exc))
            if exc.code == 2:
                illegal.append(span)
    return regs, illegal


class ProfileReader:
    """Reads a vendor device through its register-map profile.

    A point with a ``part`` (an inverter's PV input, its battery) feeds that part of the
    reading, bounded by the part's own glossary bounds narrowed by the device's rating;
    a raw value the profile lists in the point's ``no_value`` is absent, like NaN.
    Nothing is computed that the device did not give (no DC power from volts x amps)."""

    def __init__(self, device: Device, profile: Profile | None = None):
        self.device = device
        self.profile = profile or load_profile(device.profile)
        self.bounds = device.field_bounds()
        self.measurement = self.profile.measurement
        # the parts' bounds: the glossary's, narrowed by the configured rating like the
        # main fields' (Device.field_bounds); the configuration's bounds: name main fields
        self.part_bounds: dict[str, dict[str, Bounds]] = {
            p.part: device_bounds(p.part, device.rated_power_w)
            for p in self.profile.points
            if p.part is not None
        }
        self._point_spans = [
            (p, Span(FC_HOLDING if p.function == "holding" else FC_INPUT, p.address, p.count))
            for p in self.profile.points
        ]
        self.plan = self._full_plan()

    def _full_plan(self) -> list[Span]:
        return plan_requests(
            (s for _, s in self._point_spans),
            max_gap=self.profile.max_gap,
            max_count=self.profile.max_registers,
        )

    def reset(self) -> None:
        self.plan = self._full_plan()

    async def read(self, link: ModbusLink) -> ReadResult:
        d = self.device
        result = ReadResult({})
        regs, illegal = await read_spans(link, d.unit_id, d.timeout_s, self.plan, result)
        if illegal:
            # the device refuses a merged block: read its points one by one from now on
            singles = [
                s
                for _, s in self._point_spans
                if any(i.function == s.function and i.address <= s.address < i.end for i in illegal)
            ]
            if len(singles) > len(illegal):
                self.plan = plan_requests(
                    [s for s in self.plan if s not in illegal] + singles,
                    max_gap=-1,
                    max_count=self.profile.max_registers,
                )
                log.info("%s: block refused (exception 02); reading points singly", d.id)
                result.errors.clear()
                return await self.read(link)
        self.decode(regs, result)
        return result

    def decode(self, regs: RegisterMap, result: ReadResult) -> None:
        """Pure: the profile's points from ``regs`` into ``result``, each checked."""
        for p, span in self._point_spans:
            block = regs.get_block(span.function, span.address, span.count)
            if block is None:
                continue
            try:
                if p.no_value and _unsigned(block, p.word_order) in p.no_value:
                    continue  # the device says it has no value: absent, never a number
                value = ModbusClientMixin.convert_from_registers(
                    block, _DT[p.type], word_order=p.word_order
                )
                if not isinstance(value, int | float):
                    # a profile point is one scalar of a numeric type (REGISTER_COUNT)
                    raise TypeError(f"decoded to {type(value).__name__}")
                scaled = value * p.scale if p.scale != 1 else value
            except (ArithmeticError, TypeError, ValueError) as exc:
                result.errors.append(f"{p.label}: cannot decode {_hex(block)}: {exc}")
                continue  # this field is absent; the others and the polling go on
            key = p.part_key
            if key is None:
                result.keep(p.field, scaled, block, self.bounds)
            else:
                result.keep_part(key, p.field, scaled, block, self.part_bounds[key[0]])


_DT = {
    "int16": ModbusClientMixin.DATATYPE.INT16,
    "uint16": ModbusClientMixin.DATATYPE.UINT16,
    "int32": ModbusClientMixin.DATATYPE.INT32,
    "uint32": ModbusClientMixin.DATATYPE.UINT32,
    "int64": ModbusClientMixin.DATATYPE.INT64,
    "uint64": ModbusClientMixin.DATATYPE.UINT64,
    "float32": ModbusClientMixin.DATATYPE.FLOAT32,
    "float64": ModbusClientMixin.DATATYPE.FLOAT64,
}


_UNSIGNED = {
    1: ModbusClientMixin.DATATYPE.UINT16,
    2: ModbusClientMixin.DATATYPE.UINT32,
    4: ModbusClientMixin.DATATYPE.UINT64,
}


def _unsigned(block: Sequence[int], word_order: Literal["big", "little"]) -> int:
    """The registers as one unsigned integer in the point's word order (how
    ``no_value`` is written)."""
    value = ModbusClientMixin.convert_from_registers(
        list(block), _UNSIGNED[len(block)], word_order=word_order
    )
    assert isinstance(value, int)
    return value


def _hex(registers: Sequence[int]) -> str:
    return " ".join(f"0x{r:04X}" for r in registers)


class DiscoveryError(Exception):
    pass


RATING_MODEL = 120  # SunSpec Nameplate Ratings: WRtg, the continuous AC power rating


def nameplate_rating(regs: Sequence[int], length: int) -> float | None:
    """Pure: WRtg [W] from model 120's registers (ID first), or ``None`` when it is not
    implemented or no positive power."""
    w = decode_points(model_layout(RATING_MODEL, length), regs, [(None, "WRtg")]).get(
        (None, "WRtg")
    )
    if not isinstance(w, int | float) or isinstance(w, bool) or not 0 < w < math.inf:
        return None
    return float(w)


class SunSpecReader:
    """Discovers a SunSpec device's model chain, then reads the mapped models."""

    def __init__(self, device: Device):
        self.device = device
        self.map = load_sunspec_map()
        self.models: list[ModelRef] | None = None
        self.plan: list[Span] = []
        self.measurement: str | None = None
        self.rated_power_w: float | None = None  # SunSpec WRtg, read once at discovery
        self.bounds = device.field_bounds()

    def reset(self) -> None:
        self.models = None  # rediscover on the next poll

    async def _read_rating(self, link: ModbusLink, m: ModelRef) -> float | None:
        """WRtg of the Nameplate model (120), read once (FC 3, like every read): the
        inverter's AC rating, which bounds its power unless the configuration says one."""
        d = self.device
        try:
            regs = await link.read(
                Span(FC_HOLDING, m.address, m.length + 2), d.unit_id, d.timeout_s
            )
            return nameplate_rating(regs, m.length)
        except (DeviceException, TransportError, ArithmeticError, ValueError) as exc:
            log.info("%s: nameplate model 120 not read (%s); power bounded by physics", d.id, exc)
            return None

    async def discover(self, link: ModbusLink) -> list[ModelRef]:
        d = self.device
        bases = (d.sunspec_base,) if d.sunspec_base is not None else BASE_ADDRESSES
        base = None
        last_error: Exception | None = None
        for candidate in bases:
            try:
                regs = await link.read(Span(FC_HOLDING, candidate, 2), d.unit_id, d.timeout_s)
            except (DeviceException, TransportError) as exc:
                last_error = exc
                continue
            if tuple(regs) == SUNS_MARKER:
                base = candidate
                break
        if base is None:
            if isinstance(last_error, TransportError):
                raise last_error
            raise DiscoveryError(f"{d.id}: no SunSpec marker 'SunS' at {list(bases)}")
        models: list[ModelRef] = []
        address = base + 2
        for _ in range(256):  # a chain longer than this is a broken device
            if address + 2 > 65536:
                raise DiscoveryError(f"{d.id}: SunSpec model chain runs past address 65535")
            mid, length = await link.read(Span(FC_HOLDING, address, 2), d.unit_id, d.timeout_s)
            if mid == END_MODEL_ID:
                break
            if address + 2 + length > 65536:
                raise DiscoveryError(f"{d.id}: model {mid} (L={length}) runs past address 65535")
            models.append(ModelRef(mid, address, length))
            address += 2 + length
        else:
            raise DiscoveryError(f"{d.id}: SunSpec model chain has no end marker")
        mapped = [m for m in models if m.model_id in self.map.models]
        if not mapped:
            raise DiscoveryError(
                f"{d.id}: models {[m.model_id for m in models]} include none foursave maps"
            )
        kinds = {self.map.models[m.model_id].measurement for m in mapped}
        if d.kind not in kinds:
            raise DiscoveryError(f"{d.id}: configured as {d.kind} but the device offers {kinds}")
        self.models = [m for m in mapped if self.map.models[m.model_id].measurement == d.kind]
        self.measurement = d.kind
        self.plan = plan_requests(Span(FC_HOLDING, m.address, m.length + 2) for m in self.models)
        log.info("%s: SunSpec at %d, models %s", d.id, base, [m.model_id for m in models])
        nameplate = next((m for m in models if m.model_id == RATING_MODEL), None)
        if d.kind == "inverter" and nameplate is not None:
            self.rated_power_w = await self._read_rating(link, nameplate)
            if self.rated_power_w is not None and d.rated_power_w is None:
                log.info("%s: rated %g W (SunSpec WRtg) bounds its power", d.id, self.rated_power_w)
            self.bounds = d.field_bounds(self.rated_power_w)
        return models

    async def read(self, link: ModbusLink) -> ReadResult:
        d = self.device
        if self.models is None:
            await self.discover(link)
        assert self.models is not None
        result = ReadResult({})
        regs, illegal = await read_spans(link, d.unit_id, d.timeout_s, self.plan, result)
        for m in self.models:
            block = regs.get_block(FC_HOLDING, m.address, m.length + 2)
            if block is None:
                continue
            if block[0] != m.model_id:
                self.models = None  # the chain changed (firmware update?): rediscover
                result.errors.append(f"model {m.model_id} moved; rediscovering")
                break
            self.decode_model(m, block, result)
        if illegal:
            self.models = None
        return result

    def decode_model(self, m: ModelRef, block: Sequence[int], result: ReadResult) -> None:
        """Pure: the mapped points of model ``m`` (registers from its ID on) into
        ``result``, each checked."""
        mm = self.map.models[m.model_id]
        layout = model_layout(m.model_id, m.length)
        for p in mm.points:
            key = (p.group, p.point)
            pl = layout.points.get(key)
            registers = block[pl.offset : pl.offset + pl.size] if pl else []
            try:
                v = decode_points(layout, block, [key]).get(key)
                if v is None or isinstance(v, str):
                    continue  # not implemented: absent, never 0
                scaled = v * p.scale if p.scale != 1 else v
            except (ArithmeticError, TypeError, ValueError) as exc:
                result.errors.append(f"{p.field}: cannot decode {_hex(registers)}: {exc}")
                continue  # this field is absent; the others and the polling go on
            result.keep(p.field, scaled, registers, self.bounds)


def reader_for(device: Device) -> ProfileReader | SunSpecReader:
    return SunSpecReader(device) if device.profile == "sunspec" else ProfileReader(device)
