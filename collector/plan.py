"""Request planning: group register spans into as few Modbus reads as possible.

Pure (Telegraf's ``request.go`` is the model): spans are merged when they touch or the
gap between them is at most ``max_gap`` registers, and no request exceeds
``max_count`` registers (125 is the Modbus limit for function codes 3 and 4).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

MAX_REGISTERS = 125


@dataclass(frozen=True, order=True)
class Span:
    function: int  # 3 holding, 4 input
    address: int
    count: int

    @property
    def end(self) -> int:
        return self.address + self.count


def plan_requests(
    spans: Iterable[Span], max_gap: int = 0, max_count: int = MAX_REGISTERS
) -> list[Span]:
    if max_count < 1 or max_count > MAX_REGISTERS:
        raise ValueError(f"max_count must be 1..{MAX_REGISTERS}, got {max_count}")
    out: list[Span] = []
    for s in sorted(spans):
        if out:
            last = out[-1]
            gap = s.address - last.end
            merged_end = max(last.end, s.end)
            if (
                last.function == s.function
                and gap <= max_gap
                and merged_end - last.address <= max_count
            ):
                out[-1] = Span(last.function, last.address, merged_end - last.address)
                continue
        # a span longer than one request is split into consecutive chunks
        addr, remaining = s.address, s.count
        while remaining > 0:
            n = min(remaining, max_count)
            out.append(Span(s.function, addr, n))
            addr += n
            remaining -= n
    return out


class RegisterMap:
    """(function, address) -> register value, filled from planned reads: the blocks as
    read, a point's registers sliced from the block that holds them (a point across two
    blocks is put together register by register)."""

    def __init__(self) -> None:
        self._blocks: list[tuple[int, int, int, list[int]]] = []  # function, start, end

    def put(self, span: Span, registers: list[int]) -> None:
        self._blocks.append((span.function, span.address, span.address + len(registers), registers))

    def get_block(self, function: int, address: int, count: int) -> list[int] | None:
        end = address + count
        for fc, start, stop, regs in reversed(self._blocks):  # the latest read wins
            if fc == function and start < end and address < stop:  # the latest to overlap
                if start <= address and end <= stop:
                    return regs[address - start : end - start]
                break
        out = []
        for a in range(address, end):
            v = self._one(function, a)
            if v is None:
                return None
            out.append(v)
        return out

    def _one(self, function: int, address: int) -> int | None:
        for fc, start, stop, regs in reversed(self._blocks):
            if fc == function and start <= address < stop:
                return regs[address - start]
        return None
