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


class RegisterMap(dict[tuple[int, int], int]):
    """(function, address) -> register value, filled from planned reads."""

    def put(self, span: Span, registers: list[int]) -> None:
        for i, r in enumerate(registers):
            self[(span.function, span.address + i)] = r

    def get_block(self, function: int, address: int, count: int) -> list[int] | None:
        try:
            return [self[(function, a)] for a in range(address, address + count)]
        except KeyError:
            return None
