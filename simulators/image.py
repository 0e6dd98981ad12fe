"""Register dumps ("images") of devices: loaded, validated, and served over Modbus.

A dump is the JSON of ``../shared/devices/README.md``, written by ``foursave capture``
(``collector/capture.py``) and replayed by the simulators (``simulate: {image: ...}``)::

    {"id": "...", "title": "...", "unit_id": 126,
     "source": {...},                 # where the registers came from (free-form)
     "synthetic": true,               # optional: the values are not a device reading
     "blocks": [{"address": 40000, "registers": [21365, 28243, 1, 66, null, ...],
                 "function": 3}]}     # optional: 3 holding (default), 4 input registers

``address`` is the 0-based protocol address of the block's first register.  A register
is 0..65535, or ``null`` where the device refused it.  Served, an image answers exactly
its registers, for the function each block was read with, and never changes (a
snapshot: no physics).  A ``null`` register or an address outside every block is
answered with exception 02 (illegal data address), and so is any request that touches
one, the way a real device refuses the whole request.  Function codes 1 and 2 (coils,
discrete inputs) get exception 02 too; a write gets exception 01.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pymodbus.constants import ExcCodes
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimAction, SimData, SimDevice

ADDRESS_SPACE = 65536  # protocol addresses 0..65535
FUNCTIONS = {3: "holding", 4: "input"}


class ImageError(ValueError):
    """A dump that cannot be served: names the file and every problem found in it."""

    def __init__(self, path: str, problems: list[str]):
        self.path = path
        self.problems = problems
        super().__init__("\n".join(f"{path}: {p}" for p in problems))


@dataclass(frozen=True)
class ImageBlock:
    function: int  # 3 holding registers, 4 input registers
    address: int
    registers: tuple[int | None, ...]

    @property
    def end(self) -> int:
        return self.address + len(self.registers)


@dataclass(frozen=True)
class Image:
    path: str
    id: str
    title: str
    unit_id: int
    blocks: tuple[ImageBlock, ...]
    source: Mapping[str, Any] = field(default_factory=dict)
    synthetic: bool = False

    def registers(self, function: int = 3) -> dict[int, int | None]:
        """Address -> value (``None``: refused) of every register the dump holds for
        ``function``."""
        return {
            b.address + i: v
            for b in self.blocks
            if b.function == function
            for i, v in enumerate(b.registers)
        }

    def simdevice(self, action: SimAction | None = None) -> SimDevice:
        """A pymodbus simulator device serving this image (unit ``unit_id``): holding and
        input registers apart, every address the dump does not give marked invalid."""

        def simdata(function: int) -> list[SimData]:
            out = [
                SimData(start, values=values, datatype=DataType.REGISTERS)
                for start, values in _runs(self.registers(function))
            ]
            return out or [SimData(0, datatype=DataType.INVALID)]

        # pymodbus needs one bit block each for coils and discrete inputs; the action
        # refuses every read of them (a register dump says nothing about bits)
        bits = [SimData(0, values=False, datatype=DataType.BITS)]
        return SimDevice(
            id=self.unit_id,
            simdata=(bits, list(bits), simdata(3), simdata(4)),
            action=action or ImageAction().action,
        )


def _runs(regs: Mapping[int, int | None]) -> Iterable[tuple[int, list[int]]]:
    """(first address, values) of each run of consecutive non-null registers."""
    start: int | None = None
    values: list[int] = []
    for address in sorted(regs):
        value = regs[address]
        if value is None or (start is not None and address != start + len(values)):
            if start is not None:
                yield start, values
            start, values = None, []
        if value is not None:
            if start is None:
                start = address
            values.append(value)
    if start is not None:
        yield start, values


class ImageAction:
    """``action`` is the pymodbus ``SimDevice.action`` of a served image: it counts the requests that
    reach the registers by function code, refuses writes (exception 01) and bit reads
    (exception 02); the registers themselves never change."""

    def __init__(self) -> None:
        self.function_codes: Counter[int] = Counter()

    async def action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        self.function_codes[function_code] += 1
        if set_values is not None:
            return ExcCodes.ILLEGAL_FUNCTION
        if function_code in (1, 2):
            return ExcCodes.ILLEGAL_ADDRESS
        return None


# ------------------------------------------------------------------ loading


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


Register = int | None


class _BlockDoc(_Strict):
    address: int = Field(ge=0, le=ADDRESS_SPACE - 1)
    registers: list[Register] = Field(min_length=1)
    function: int = Field(3, description="3 holding registers (default), 4 input registers")


class _ImageDoc(_Strict):
    id: str = Field(min_length=1)
    title: str
    unit_id: int = Field(ge=0, le=255)
    source: dict[str, Any] = Field(default_factory=dict)
    synthetic: bool = False
    blocks: list[_BlockDoc] = Field(min_length=1)


_KEYS = "id, title, unit_id, blocks (source, synthetic optional)"


def _where(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out or "(top level)"


def _problems(doc: _ImageDoc) -> list[str]:
    """What the schema cannot say: register values, the address space, overlaps."""
    problems: list[str] = []
    for i, b in enumerate(doc.blocks):
        if b.function not in FUNCTIONS:
            problems.append(
                f"blocks[{i}].function: {b.function} is not a register read; "
                "expected 3 (holding registers) or 4 (input registers)"
            )
        bad = [(j, v) for j, v in enumerate(b.registers) if v is not None and not 0 <= v <= 0xFFFF]
        for j, v in bad[:5]:
            problems.append(f"blocks[{i}].registers[{j}]: {v} is not a 16-bit register (0..65535)")
        if len(bad) > 5:
            problems.append(f"blocks[{i}].registers: {len(bad) - 5} more out of 0..65535")
        end = b.address + len(b.registers)
        if end > ADDRESS_SPACE:
            problems.append(
                f"blocks[{i}]: address {b.address} + {len(b.registers)} registers runs past "
                f"address 65535 (ends at {end - 1})"
            )
    spans = sorted(
        (b.function, b.address, b.address + len(b.registers), i) for i, b in enumerate(doc.blocks)
    )
    reach: tuple[int, int, int] | None = None  # (function, end, block) reaching furthest
    for function, address, end, i in spans:
        if reach is not None and reach[0] == function and address < reach[1]:
            other = doc.blocks[reach[2]]
            problems.append(
                f"blocks[{i}] (function {function}, from {address}) overlaps blocks[{reach[2]}] "
                f"(function {function}, {other.address}..{reach[1] - 1})"
            )
        if reach is None or reach[0] != function or end > reach[1]:
            reach = (function, end, i)
    return problems


def parse_image(data: object, path: str = "<image>") -> Image:
    """The image in the decoded JSON ``data`` (``ImageError`` names each problem)."""
    if not isinstance(data, dict):
        raise ImageError(path, [f"expected a JSON object with {_KEYS}, got {type(data).__name__}"])
    try:
        doc = _ImageDoc.model_validate(data)
    except ValidationError as exc:
        problems = []
        for e in exc.errors():
            loc = tuple(e["loc"])
            msg = e["msg"]
            if len(loc) >= 4 and loc[2] == "registers":
                # pydantic answers once per member of int | None: say it once, in words
                loc = loc[:4]
                msg = "expected a register value 0..65535, or null where refused"
            elif e["type"] == "extra_forbidden":
                msg = f"unknown key (a dump has {_KEYS}; a block has address, registers, function)"
            elif e["type"] == "missing":
                msg = "required key is missing"
            elif e["type"] == "model_type":
                msg = "expected an object with address and registers"
            if "input" in e and not isinstance(e["input"], dict | list):
                msg += f" (got {e['input']!r})"
            problem = f"{_where(loc)}: {msg}"
            if problem not in problems:
                problems.append(problem)
        raise ImageError(path, problems) from None
    problems = _problems(doc)
    if problems:
        raise ImageError(path, problems)
    return Image(
        path=path,
        id=doc.id,
        title=doc.title,
        unit_id=doc.unit_id,
        blocks=tuple(ImageBlock(b.function, b.address, tuple(b.registers)) for b in doc.blocks),
        source=doc.source,
        synthetic=doc.synthetic,
    )


def load_image(path: str | Path) -> Image:
    """The register dump in the file ``path``, validated: ``ImageError`` names the file
    and what is wrong (not found, not JSON, a register out of range, blocks that
    overlap or run past address 65535, ...)."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ImageError(name, ["file not found"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ImageError(name, [f"cannot read: {exc}"]) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ImageError(
            name, [f"line {exc.lineno} column {exc.colno}: not JSON: {exc.msg}"]
        ) from None
    return parse_image(data, name)


def check_image(path: str, unit_id: int) -> str | None:
    """What is wrong with serving the dump ``path`` as a device of unit ``unit_id``, or
    ``None``: the configuration check ``foursave check-config`` and ``foursave sim`` run
    (``foursave.core.config.ImageCheck``)."""
    try:
        image = load_image(path)
    except ImageError as exc:
        return f"{path}: " + "; ".join(exc.problems)
    return unit_problem(image, unit_id)


def unit_problem(image: Image, unit_id: int) -> str | None:
    """The device must be configured with the unit id the dump was read from: a replay
    answers only there, like the device."""
    if image.unit_id == unit_id:
        return None
    return (
        f"{image.path} is a dump of unit {image.unit_id}, the device has unit_id {unit_id}: "
        f"set unit_id: {image.unit_id}"
    )


# ------------------------------------------------------------------ serving


class RequestLog:
    """A server's ``trace_pdu`` hook: the function code of every request it receives,
    those it refuses included."""

    def __init__(self) -> None:
        self.function_codes: Counter[int] = Counter()

    def __call__(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if not sending:
            self.function_codes[pdu.function_code] += 1
        return pdu


def image_server(
    images: Image | list[Image], host: str, port: int, log: RequestLog | None = None
) -> ModbusTcpServer:
    """A Modbus TCP server for one or more images (distinct unit ids, as behind a
    gateway); build it inside the event loop that will run it."""
    devices = [i.simdevice() for i in (images if isinstance(images, list) else [images])]
    return ModbusTcpServer(devices, address=(host, port), trace_pdu=log)


class ImageServerThread:
    """Images served over real Modbus TCP from a thread of their own (tests, tools);
    ``requests.function_codes`` counts what clients sent."""

    def __init__(self, images: Image | list[Image], port: int, host: str = "127.0.0.1"):
        self.images = images
        self.host, self.port = host, port
        self.requests = RequestLog()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="image", daemon=True)
        self._server: ModbusTcpServer | None = None

    def __enter__(self) -> ImageServerThread:
        async def start() -> None:
            self._server = image_server(self.images, self.host, self.port, self.requests)
            await self._server.serve_forever(background=True)

        self._thread.start()
        asyncio.run_coroutine_threadsafe(start(), self.loop).result(30)
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            for _ in range(3):  # connections just accepted become transports first
                await asyncio.sleep(0)
            if self._server is not None:
                await self._server.shutdown()
            for _ in range(3):  # closed transports close their sockets in loop callbacks
                await asyncio.sleep(0)

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()
