"""Clocks.  Code that needs "now" takes a clock; tests and the simulators control it."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from foursave.core.config import SimulatorService


class Clock(Protocol):
    def time(self) -> float:
        """Seconds since the Unix epoch (UTC), possibly simulated."""


class SystemClock:
    def time(self) -> float:
        return time.time()


class SimClock:
    """Simulated time: ``start`` at the real instant ``anchor``, running ``speed`` times
    faster than real time.

    All simulated devices share one instance so their counters stay consistent.  With
    an ``anchor`` (epoch seconds) several processes — simulators and a collector that
    stamps readings in simulated time — agree on the clock; without one it starts now
    and runs on the monotonic clock.
    """

    def __init__(
        self,
        start: float | None = None,
        speed: float = 1.0,
        real: Callable[[], float] = time.monotonic,
        anchor: float | None = None,
    ):
        self.speed = speed
        if anchor is not None:
            self._real = time.time
            self._real0 = anchor
        else:
            self._real = real
            self._real0 = real()
        self._start = (
            (self._real0 if anchor is not None else time.time()) if start is None else start
        )

    def time(self) -> float:
        return self._start + (self._real() - self._real0) * self.speed


def simulated_clock(svc: SimulatorService) -> SimClock:
    """The simulated clock a configuration's ``services.simulator`` describes."""
    return SimClock(parse_start(svc.start), svc.speed, anchor=parse_start(svc.anchor))


class ManualClock:
    """A clock that moves only when told to (tests; a report's fixed "now")."""

    def __init__(self, t: float):
        self.t = t

    def time(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def parse_start(value: str | None) -> float | None:
    if not value:
        return None
    dt = datetime.fromisoformat(value)
    if dt.tzinfo is None:
        raise ValueError(f"start time {value!r} needs a UTC offset, e.g. +08:00")
    return dt.timestamp()
