"""Hostile Modbus TCP devices: an asyncio server on raw sockets (not pymodbus's, so it
can send what no correct server sends) that answers each request in a randomly chosen
hostile way, and counts every exchange and every function code it received.

Answers: correct frames with random, NaN, +-Inf or +-3.4e38 float32 registers and
not-implemented markers; exception responses with codes 0-255; byte counts that do not
match; short answers; MBAP length fields that lie; wrong transaction id, unit id,
protocol id or function code; truncated frames; trailing bytes; answers after the
client's timeout; the same answer twice; random bytes; silence; a closed connection.
SunSpec devices serve a model chain that is well formed, loops (models without end),
claims absurd lengths, runs past 65535, offers the wrong kind, or has no marker.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import struct
import threading
from collections import Counter
from dataclasses import dataclass, field

SPECIAL_FLOATS = [
    (0x7FC0, 0x0000),  # NaN
    (0x7F80, 0x0000),  # +Inf
    (0xFF80, 0x0000),  # -Inf
    (0x7F7F, 0xFFFF),  # +3.4e38
    (0xFF7F, 0xFFFF),  # -3.4e38
    (0xFFFF, 0xFFFF),  # NaN (all ones)
    (0x0000, 0x0001),  # denormal
    (0x8000, 0x0000),  # -0.0
]
SPECIAL_WORDS = [0x0000, 0x7FFF, 0x8000, 0xFFFF, 0x8001, 0x7FFE]

# (answer, weight): the ones that cost the client a timeout are rarer, so the run
# reaches its exchange count in minutes
ANSWERS = [
    ("image", 12),
    ("random_regs", 8),
    ("special_floats", 8),
    ("exception", 10),
    ("bad_bytecount", 5),
    ("short", 4),
    ("long", 3),
    ("mbap_len_short", 3),
    ("mbap_len_long", 1),
    ("wrong_tid", 3),
    ("wrong_unit", 3),
    ("wrong_pid", 2),
    ("wrong_fc", 3),
    ("truncated", 1),
    ("extra_bytes", 4),
    ("late", 1),
    ("double", 4),
    ("garbage", 3),
    ("silent", 1),
    ("close", 3),
]
CHAINS = ["normal", "loop", "absurd_length", "past_end", "wrong_kind", "no_marker", "zero_id"]


@dataclass
class Exchanges:
    """What every hostile server of a run received and answered."""

    total: int = 0
    function_codes: Counter = field(default_factory=Counter)
    answers: Counter = field(default_factory=Counter)
    connections: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, fc: int, answer: str) -> None:
        with self.lock:
            self.total += 1
            self.function_codes[fc] += 1
            self.answers[answer] += 1


class HostileDevice:
    def __init__(self, profile: str, kind: str, seed: int, stats: Exchanges, late_s: float):
        self.profile = profile  # "sunspec", "eastron_sdm630", "generic_water_meter"
        self.kind = kind
        self.rng = random.Random(seed)
        self.stats = stats
        self.late_s = late_s
        self.chain = "normal"
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._answers = [a for a, _ in ANSWERS]
        self._weights = [w for _, w in ANSWERS]

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    # ------------------------------------------------------------- registers

    def _word(self) -> int:
        r = self.rng.random()
        if r < 0.2:
            return self.rng.choice(SPECIAL_WORDS)
        if r < 0.3:
            return self.rng.randrange(-10, 11) & 0xFFFF  # a plausible scale factor
        return self.rng.randrange(0x10000)

    def _chain_words(self, address: int) -> int | None:
        """SunSpec chain headers for the current chain variant (None: body register)."""
        base = 40000
        if address in (base, base + 1):
            if self.chain == "no_marker":
                return self.rng.randrange(0x10000)
            return (0x5375, 0x6E53)[address - base]
        kind_model = {"inverter": 103, "meter": 203, "weather": 307, "water": 203}[self.kind]
        if self.chain == "wrong_kind":
            kind_model = 203 if kind_model == 103 else 103
        if self.chain == "loop":
            # models of length 0 forever: never an end marker
            return 1 if (address - base) % 2 == 0 else 0
        if self.chain == "zero_id":
            return 0  # model id 0, length 0, forever
        headers = {base + 2: 1, base + 3: 66, base + 70: kind_model, base + 71: 50}
        if self.chain == "absurd_length":
            headers[base + 71] = 65000
        if self.chain == "past_end":
            headers[base + 71] = 25530
        headers[base + 122] = 0xFFFF
        headers[base + 123] = 0
        return headers.get(address)

    def _image(self, fc: int, address: int, count: int) -> list[int]:
        regs = []
        floats = self.rng.random() < 0.3
        for a in range(address, address + count):
            w = self._chain_words(a) if self.profile == "sunspec" else None
            if w is None:
                if floats and (a - address) % 2 == 0:
                    hi, _lo = self.rng.choice(SPECIAL_FLOATS)
                    w = hi
                else:
                    w = self._word()
            regs.append(w & 0xFFFF)
        return regs

    def _special(self, count: int) -> list[int]:
        regs: list[int] = []
        while len(regs) < count:
            regs.extend(self.rng.choice(SPECIAL_FLOATS))
        return regs[:count]

    # ------------------------------------------------------------- the wire

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self.stats.lock:
            self.stats.connections += 1
        try:
            while True:
                head = await reader.readexactly(7)
                tid, _pid, length, unit = struct.unpack(">HHHB", head)
                if length < 2 or length > 254:
                    return
                pdu = await reader.readexactly(length - 1)
                fc = pdu[0]
                address, count = struct.unpack(">HH", pdu[1:5]) if len(pdu) >= 5 else (0, 1)
                if self.profile == "sunspec" and address == 40000 and count == 2:
                    self.chain = self.rng.choice(CHAINS)  # a new discovery, a new chain
                answer = self.rng.choices(self._answers, self._weights)[0]
                self.stats.add(fc, answer)
                if not await self._answer(writer, answer, tid, unit, fc, address, count):
                    return
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _frame(self, tid: int, unit: int, pdu: bytes, pid: int = 0, length: int | None = None):
        n = len(pdu) + 1 if length is None else length
        return struct.pack(">HHHB", tid & 0xFFFF, pid, n & 0xFFFF, unit & 0xFF) + pdu

    async def _answer(self, w, answer: str, tid: int, unit: int, fc: int, addr: int, count: int):
        rng = self.rng
        count = max(1, min(count, 125))

        def regs_pdu(regs: list[int], byte_count: int | None = None, code: int = fc) -> bytes:
            body = struct.pack(f">{len(regs)}H", *regs)
            bc = len(body) if byte_count is None else byte_count
            return bytes([code & 0xFF, bc & 0xFF]) + body

        good = regs_pdu(self._image(fc, addr, count))
        if answer == "image":
            w.write(self._frame(tid, unit, good))
        elif answer == "random_regs":
            w.write(
                self._frame(tid, unit, regs_pdu([rng.randrange(0x10000) for _ in range(count)]))
            )
        elif answer == "special_floats":
            w.write(self._frame(tid, unit, regs_pdu(self._special(count))))
        elif answer == "exception":
            w.write(self._frame(tid, unit, bytes([(fc | 0x80) & 0xFF, rng.randrange(256)])))
        elif answer == "bad_bytecount":
            regs = self._image(fc, addr, count)
            w.write(self._frame(tid, unit, regs_pdu(regs, byte_count=rng.randrange(256))))
        elif answer == "short":
            w.write(self._frame(tid, unit, regs_pdu(self._image(fc, addr, rng.randrange(count)))))
        elif answer == "long":
            w.write(self._frame(tid, unit, regs_pdu(self._image(fc, addr, min(125, count + 5)))))
        elif answer == "mbap_len_short":
            w.write(self._frame(tid, unit, good, length=max(0, len(good) + 1 - rng.randint(1, 4))))
        elif answer == "mbap_len_long":
            w.write(self._frame(tid, unit, good, length=len(good) + 1 + rng.randint(1, 40)))
        elif answer == "wrong_tid":
            w.write(self._frame(tid + rng.randint(1, 100), unit, good))
        elif answer == "wrong_unit":
            w.write(self._frame(tid, unit + rng.randint(1, 254), good))
        elif answer == "wrong_pid":
            w.write(self._frame(tid, unit, good, pid=rng.randint(1, 0xFFFF)))
        elif answer == "wrong_fc":
            code = rng.choice([1, 2, 5, 6, 15, 16, 23, 43, 0, 0x7F, 3 if fc == 4 else 4])
            w.write(self._frame(tid, unit, bytes([code]) + good[1:]))
        elif answer == "truncated":
            frame = self._frame(tid, unit, good)
            w.write(frame[: rng.randrange(1, len(frame))])
        elif answer == "extra_bytes":
            w.write(self._frame(tid, unit, good) + rng.randbytes(rng.randint(1, 20)))
        elif answer == "late":
            await asyncio.sleep(self.late_s)
            w.write(self._frame(tid, unit, good))
        elif answer == "double":
            w.write(self._frame(tid, unit, good) * 2)
        elif answer == "garbage":
            w.write(rng.randbytes(rng.randint(1, 300)))
        elif answer == "silent":
            return True
        elif answer == "close":
            return False
        await w.drain()
        return True


class HostileFleet:
    """Hostile devices on their own event loop thread."""

    def __init__(self, specs: list[tuple[str, str]], seed: int, late_s: float):
        self.stats = Exchanges()
        self.devices = [
            HostileDevice(profile, kind, seed + i, self.stats, late_s)
            for i, (profile, kind) in enumerate(specs)
        ]
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="hostile", daemon=True)

    def __enter__(self) -> HostileFleet:
        self.thread.start()

        async def start() -> None:
            for d in self.devices:
                await d.start()

        asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            for d in self.devices:
                await d.stop()
            pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
