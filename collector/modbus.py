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
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
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
    SunSpecError,
    decode_points,
    layout_of,
    model_layout,
    point_value,
    symbol_name,
)
from foursave.core.config import Device
from foursave.core.glossary import PARTS, Bounds, device_bounds
from foursave.core.reading import MAX_TEXT

log = logging.getLogger("foursave.collector")

READ_FUNCTION_CODES = frozenset({1, 2, 3, 4})
FC_HOLDING, FC_INPUT = 3, 4


class WriteRefused(RuntimeError):
    """Raised if anything tries to send a non-read function code."""


class TransportError(Exception):
    """No answer: connection refused, timeout, broken frame."""


class AnswerTimeout(TransportError):
    """The unit did not answer within its timeout: the line was held that long for nothing."""


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


@dataclass
class _Hold:
    """One caller's hold on a link (``ModbusLink.hold``)."""

    task: asyncio.Task | None
    stop_after_no_answer: bool
    no_answer: bool = False  # a request of this hold went unanswered
    reconnect: bool = False  # ... and closed a connection that was working


class ModbusLink:
    """One connection shared by the devices behind it (a serial line, a gateway).

    ``request_gap_s`` and ``connect_pause_s`` pace it: no request goes out sooner than
    that after the previous answer (or timeout), or after connecting."""

    def __init__(self, device: Device, request_gap_s: float = 0.0, connect_pause_s: float = 0.0):
        self.key = link_key(device)
        self.lock = asyncio.Lock()
        self.request_gap_s = request_gap_s
        self.connect_pause_s = connect_pause_s
        self._quiet_until = 0.0  # monotonic: no request before this (the gap, the pause)
        self._hold: _Hold | None = None
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
        if self.connect_pause_s:
            self._quiet_until = max(self._quiet_until, time.monotonic() + self.connect_pause_s)

    async def _quiet(self) -> None:
        """Wait out the pause after connecting and the gap after the last answer."""
        delay = self._quiet_until - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    @contextlib.asynccontextmanager
    async def _exclusive(self) -> AsyncIterator[_Hold | None]:
        """The link for one request: the caller's own hold, or the lock for this request."""
        hold = self._hold
        if hold is not None and hold.task is asyncio.current_task():
            yield hold
            return
        async with self.lock:
            yield None

    @contextlib.asynccontextmanager
    async def hold(self, *, stop_after_no_answer: bool = False) -> AsyncIterator[ModbusLink]:
        """The link for one caller's run of requests (a device's poll): no other request
        goes between them.  With ``stop_after_no_answer`` (a shared line), once a request
        of the hold goes unanswered, its further requests fail at once without being
        sent, and a connection the timeout closed is reopened (its pause waited out)
        before the link is let go: a unit that does not answer costs the line one
        timeout per poll, and its cost falls on it, not on the next unit."""
        async with self.lock:
            hold = self._hold = _Hold(asyncio.current_task(), stop_after_no_answer)
            try:
                yield self
            finally:
                self._hold = None
                if hold.stop_after_no_answer and hold.reconnect and not self.client.connected:
                    with contextlib.suppress(TransportError):
                        await self._connect(self.client.comm_params.timeout_connect or 1.0)
                        await self._quiet()

    async def connect(self, timeout_s: float) -> None:
        """Connect now (``TransportError`` when refused or unreachable); ``read`` connects
        by itself, this tells a dead address from a device that does not answer."""
        async with self.lock:
            await self._connect(timeout_s)

    async def read(self, span: Span, unit_id: int, timeout_s: float) -> list[int]:
        async with self._exclusive() as hold:
            if hold is not None and hold.stop_after_no_answer and hold.no_answer:
                raise AnswerTimeout(
                    f"{self.key} unit {unit_id}: not asked, no answer earlier in this poll"
                )
            try:
                await self._connect(timeout_s)
            except TransportError:
                if hold is not None:
                    hold.no_answer = True
                raise
            await self._quiet()
            if span.function == FC_HOLDING:
                call = self.client.read_holding_registers
            elif span.function == FC_INPUT:
                call = self.client.read_input_registers
            else:
                raise ValueError(f"function {span.function} is not a register read")
            try:
                # a timer on this task, not a task of its own per request (wait_for)
                async with asyncio.timeout(timeout_s * 1.5):
                    resp = await call(span.address, count=span.count, device_id=unit_id)
            except (TimeoutError, ModbusIOException) as exc:
                self.client.close()  # a late answer must not be taken for the next one
                if hold is not None:
                    hold.no_answer = True
                if isinstance(exc, ModbusIOException) and "No response" not in str(exc):
                    raise TransportError(f"{self.key} unit {unit_id}: {exc}") from None
                if hold is not None:
                    hold.reconnect = True  # the connection worked; the unit did not answer
                raise AnswerTimeout(
                    f"{self.key} unit {unit_id}: timeout, no answer within {timeout_s:g} s"
                ) from None
            except (ModbusException, OSError) as exc:
                self.client.close()
                if hold is not None:
                    hold.no_answer = True
                raise TransportError(f"{self.key} unit {unit_id}: {exc!r}") from None
            finally:  # the gap runs from the answer, or from giving up on one
                self._quiet_until = max(self._quiet_until, time.monotonic() + self.request_gap_s)
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
    return _positive(w)


def _positive(w: object) -> float | None:
    if not isinstance(w, int | float) or isinstance(w, bool) or not 0 < w < math.inf:
        return None
    return float(w)


def _text(v: str) -> str | None:
    """A SunSpec string as stored: printable, trimmed, at most ``MAX_TEXT`` characters;
    ``None`` when nothing is left."""
    clean = "".join(c if c.isprintable() else " " for c in v).strip()[:MAX_TEXT].strip()
    return clean or None


@dataclass
class PowerFactorRule:
    """How a device's SunSpec PF point becomes a ratio in [-1, 1] (docs/design.md,
    "Power factor").  The models say percent (101-113, 201-204) or ratio (211-214, 701);
    devices differ (SMA, FIMER and Veris put a ratio in the percent point).

    ``auto``: a value beyond ±1 can only be percent; a value within ±1 is a ratio unless
    the device is known to give percent.  The device's convention is learnt once, from
    the first decisive reading: a magnitude beyond 1 (percent), or |PF| within 0.05 of
    |W| / VA at a real load (|W| / VA ≥ 0.2; ratio: the percent reading would be ≤ 0.01).
    ``percent`` and ``ratio`` force the convention."""

    mode: str = "auto"
    learnt: str | None = None

    def convention(self) -> str | None:
        return self.mode if self.mode != "auto" else self.learnt

    def ratio(self, pf: float, w: float | None, va: float | None) -> tuple[float, str | None]:
        """``pf`` as a ratio, and what was learnt now (for the log) or ``None``."""
        news = None
        if self.mode == "auto" and self.learnt is None:
            if abs(pf) > 1:
                self.learnt = "percent"
                news = f"power factor read as percent (PF {pf:g} is beyond ±1)"
            elif w is not None and va is not None and va > 0 and abs(w) / va >= 0.2:
                r = abs(w) / va
                if abs(abs(pf) - r) <= 0.05:
                    self.learnt = "ratio"
                    news = (
                        f"power factor read as a ratio (|PF| {abs(pf):g} agrees with W/VA {r:.3f})"
                    )
        convention = self.convention()
        if convention == "percent" or (convention is None and abs(pf) > 1):
            return pf / 100, news
        return pf, news


Target = tuple[str, tuple[tuple[str, str], ...]] | None  # a part, or None: the reading


class SunSpecReader:
    """Discovers a SunSpec device's model chain, then reads the mapped models.

    A device entry takes the models of its kind (``sunspec.yaml``: an inverter's
    101-113, 160, 701, 713, 714, 802; a meter's 201-214; a weather station's 302, 303,
    307); a unit whose chain holds an inverter and a meter is configured as two device
    entries on one unit.  Identity and ratings (models 1, 120, 702, 713, 802) are read at
    discovery and go with the device's status (``info``)."""

    def __init__(self, device: Device):
        self.device = device
        self.map = load_sunspec_map()
        self.models: list[ModelRef] | None = None
        self.plan: list[Span] = []
        self.measurement: str | None = None
        self.rated_power_w: float | None = None  # SunSpec WRtg, read once at discovery
        self.bounds = device.field_bounds()
        self.part_bounds = self._part_bounds(None)
        self.info: dict[str, float | str] = {}
        self.pf = PowerFactorRule(device.power_factor)
        self._noted: set[tuple[int, str]] = set()  # layout notes already logged

    def _part_bounds(self, rating: float | None) -> dict[str, dict[str, Bounds]]:
        rated = self.device.rated_power_w or rating
        return {m: device_bounds(m, rated) for m in PARTS[self.device.kind]}

    def reset(self) -> None:
        self.models = None  # rediscover on the next poll

    async def _read_model(self, link: ModbusLink, m: ModelRef) -> list[int]:
        d = self.device
        regs = RegisterMap()
        for span in plan_requests([Span(FC_HOLDING, m.address, m.length + 2)]):
            regs.put(span, await link.read(span, d.unit_id, d.timeout_s))
        block = regs.get_block(FC_HOLDING, m.address, m.length + 2)
        assert block is not None
        return list(block)

    async def _read_info(self, link: ModbusLink, chain: Sequence[ModelRef]) -> dict:
        """Identity and ratings from the chain's info models, each read once (FC 3).  A
        model that cannot be read or decoded leaves its fields out, with a log line."""
        d = self.device
        info: dict[str, float | str] = {}
        for m in chain:
            points = self.map.info.get(m.model_id)
            if not points:
                continue
            try:
                regs = await self._read_model(link, m)
                layout = layout_of(m.model_id, m.length, regs)
                for p in points:
                    pl = layout.points.get((None, p.point))
                    v = point_value(layout, regs, pl) if pl else None
                    if isinstance(v, str):
                        text = _text(v)
                        if text is not None:
                            info.setdefault(p.field, text)
                    elif (pos := _positive(v)) is not None:
                        info.setdefault(p.field, pos)
            except (DeviceException, TransportError, ArithmeticError, ValueError) as exc:
                log.info("%s: model %d (nameplate) not read: %s", d.id, m.model_id, exc)
        return info

    async def _chain(self, link: ModbusLink) -> tuple[int, list[ModelRef]]:
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
                log.warning(
                    "%s: SunSpec chain runs past address 65535; kept %d models", d.id, len(models)
                )
                break
            try:
                mid, length = await link.read(Span(FC_HOLDING, address, 2), d.unit_id, d.timeout_s)
            except DeviceException as exc:
                if not models:
                    raise DiscoveryError(
                        f"{d.id}: no model after 'SunS' at {base}: {exc}"
                    ) from None
                log.warning(
                    "%s: SunSpec chain breaks at %d (%s); kept %d models",
                    d.id,
                    address,
                    exc,
                    len(models),
                )
                break
            if mid == END_MODEL_ID:
                break
            if address + 2 + length > 65536:
                log.warning(
                    "%s: model %d (L=%d) runs past address 65535; chain ends there",
                    d.id,
                    mid,
                    length,
                )
                break
            models.append(ModelRef(mid, address, length))
            address += 2 + length
        else:
            raise DiscoveryError(f"{d.id}: SunSpec model chain has no end marker")
        return base, models

    async def discover(self, link: ModbusLink) -> list[ModelRef]:
        d = self.device
        base, models = await self._chain(link)
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
        info = await self._read_info(link, models)
        if self.info and info != self.info:
            changed = sorted(
                k for k in info.keys() | self.info.keys() if info.get(k) != self.info.get(k)
            )
            log.warning(
                "%s: the device is not the one it was: %s",
                d.id,
                "; ".join(f"{k} {self.info.get(k)!r} -> {info.get(k)!r}" for k in changed),
            )
        self.info = info
        if d.kind == "inverter":
            self.rated_power_w = _positive(info.get("rated_power_w"))
            if self.rated_power_w is not None and d.rated_power_w is None:
                log.info("%s: rated %g W (SunSpec) bounds its power", d.id, self.rated_power_w)
            self.bounds = d.field_bounds(self.rated_power_w)
            self.part_bounds = self._part_bounds(self.rated_power_w)
        return models

    async def read(self, link: ModbusLink) -> ReadResult:
        d = self.device
        if self.models is None:
            await self.discover(link)
        assert self.models is not None
        result = ReadResult({}, info=dict(self.info))
        regs, illegal = await read_spans(link, d.unit_id, d.timeout_s, self.plan, result)
        for m in self.models:
            block = regs.get_block(FC_HOLDING, m.address, m.length + 2)
            if block is None:
                continue
            if block[0] != m.model_id:
                self.models = None  # the chain changed (firmware update?): rediscover
                result.errors.append(f"model {m.model_id} moved; rediscovering")
                break
            try:
                self.decode_model(m, block, result)
            except (ArithmeticError, TypeError, ValueError, KeyError, SunSpecError) as exc:
                # a malformed model is skipped; the rest of the chain is still read
                result.errors.append(f"model {m.model_id} skipped: {exc}")
        self._sum_strings(result)
        if illegal:
            self.models = None
        return result

    def _sum_strings(self, result: ReadResult) -> None:
        """An inverter that leaves the DC points of its inverter model not implemented
        (SMA: DC per MPPT in model 160 only) has ``dc_power_w`` = the sum of its strings,
        when every string that reads gives its power."""
        if "dc_power_w" in result.fields or "dc_power_w" in result.out_of_bounds:
            return
        strings = [f for (m, _), f in result.parts.items() if m == "inverter_string" and f]
        if strings and all("dc_power_w" in f for f in strings):
            total = math.fsum(f["dc_power_w"] for f in strings)
            result.keep("dc_power_w", total, (), self.bounds)

    def decode_model(self, m: ModelRef, block: Sequence[int], result: ReadResult) -> None:
        """Pure but for what it learns (the power-factor convention, layout notes): the
        mapped points of model ``m`` (registers from its ID on) into ``result``, each
        checked; a field a model earlier in the chain gave is kept."""
        d = self.device
        mm = self.map.models[m.model_id]
        layout = layout_of(m.model_id, m.length, block)
        for note in layout.notes:
            if (m.model_id, note) not in self._noted:
                self._noted.add((m.model_id, note))
                log.warning("%s: model %d: %s", d.id, m.model_id, note)
        target: Target = (mm.part, ()) if mm.part else None
        values = self._decode(layout, block, mm.points, None, result)
        self._keep(target, values, result)
        for gm in mm.groups:
            for i, inst in enumerate(layout.groups.get(gm.group, ())):
                if not self._matches(layout, block, inst, gm.when):
                    continue
                tag = str(i + 1)
                if gm.id and gm.id in inst:
                    ident = point_value(layout, block, inst[gm.id], inst)
                    if isinstance(ident, int) and not isinstance(ident, bool) and ident >= 0:
                        tag = str(ident)
                tags = (("string", tag),) if PARTS[d.kind][gm.part] else ()
                values = self._decode(layout, block, gm.points, inst, result)
                self._keep((gm.part, tags), values, result)

    @staticmethod
    def _matches(layout, block, inst, when: Mapping[str, str]) -> bool:
        for name, symbol in when.items():
            pl = inst.get(name)
            v = point_value(layout, block, pl, inst) if pl else None
            if (
                v is None
                or symbol_name(layout.model_id, pl.group if pl else None, name, v) != symbol
            ):
                return False
        return True

    def _decode(self, layout, block, points, inst, result) -> dict[str, tuple[float, list[int]]]:
        out: dict[str, tuple[float, list[int]]] = {}
        for p in points:
            if p.field in out:
                continue  # an earlier point of the model gave it (PhV before PhVphA)
            pl = inst.get(p.point) if inst is not None else layout.points.get((p.group, p.point))
            if pl is None:
                continue
            registers = list(block[pl.offset : pl.offset + pl.size])
            try:
                v = point_value(layout, block, pl, inst)
                if v is None or isinstance(v, str):
                    continue  # not implemented: absent, never 0
                scaled = v * p.scale if p.scale != 1 else v
                if p.offset:
                    scaled += p.offset
            except (ArithmeticError, TypeError, ValueError) as exc:
                result.errors.append(f"{p.field}: cannot decode {_hex(registers)}: {exc}")
                continue  # this field is absent; the others and the polling go on
            out[p.field] = (scaled, registers)
        if "power_factor" in out:
            pf, registers = out["power_factor"]
            w = next((out[f][0] for f in ("ac_power_w", "active_power_w") if f in out), None)
            va = next(
                (out[f][0] for f in ("ac_apparent_power_va", "apparent_power_va") if f in out),
                None,
            )
            ratio, news = self.pf.ratio(pf, w, va)
            if news:
                log.info("%s: %s", self.device.id, news)
            out["power_factor"] = (ratio, registers)
        return out

    def _keep(self, target: Target, values, result: ReadResult) -> None:
        if target is None:
            for name, (v, registers) in values.items():
                if name not in result.fields:
                    result.keep(name, v, registers, self.bounds)
            return
        have = result.parts.get(target, {})
        bounds = self.part_bounds.get(target[0], {})
        for name, (v, registers) in values.items():
            if name not in have:
                result.keep_part(target, name, v, registers, bounds)


def reader_for(device: Device) -> ProfileReader | SunSpecReader:
    return SunSpecReader(device) if device.profile == "sunspec" else ProfileReader(device)
