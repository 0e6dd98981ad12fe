"""Whose turn it is on a shared line (collector/line.py), without a wire: the turns are
taken and given back in the order a poll would, nothing is sent."""

from __future__ import annotations

import asyncio
import math
import time

from foursave.collector.line import Line
from foursave.core.config import Device, Gateway


def dev(name: str, interval_s: float = 5.0) -> Device:
    return Device(
        id=name,
        site="s",
        kind="inverter",
        profile="sunspec",
        host="127.0.0.1",
        interval_s=interval_s,
        timeout_s=0.05,
    )


def line_of(*devices: Device, gateway: Gateway | None = None) -> Line:
    line = Line(devices[0], gateway)
    for d in devices:
        line.join(d.id)
    return line


async def _yield() -> None:
    for _ in range(5):  # let the other tasks run up to where they wait
        await asyncio.sleep(0)


def test_a_probe_waits_until_no_healthy_unit_is_due_within_its_cost():
    a, b, c = dev("a"), dev("b"), dev("c")

    async def scenario() -> list[str]:
        line = line_of(a, b, c)
        now = time.monotonic()
        line.due("a", now, healthy=True)  # due now: its poll comes first
        line.due("b", now + 100, healthy=True)
        order: list[str] = []

        async def probe():
            async with line.turn(c, probe=True):
                order.append("c")

        task = asyncio.create_task(probe())
        await _yield()
        assert order == []  # the line is free, but a is due: c would delay it
        async with line.turn(a):
            order.append("a")
        line.due("a", time.monotonic() + 100, healthy=True)
        await task
        return order

    assert asyncio.run(scenario()) == ["a", "c"]


def test_a_probe_waits_for_a_quiet_window_only_so_long():
    a, c = dev("a"), dev("c", interval_s=0.2)

    async def scenario() -> tuple[float, float]:
        line = line_of(a, c)
        line.due("a", -math.inf, healthy=True)  # always due, never polls: no window ever
        started = time.monotonic()
        async with line.turn(c, probe=True):
            return time.monotonic() - started, line.probe_wait_s(c)

    waited, most = asyncio.run(scenario())
    assert most == 0.2 and waited >= most


def test_healthy_units_go_before_a_probe_queued_earlier():
    a, b, c = dev("a"), dev("b"), dev("c")

    async def scenario() -> list[str]:
        line = line_of(a, b, c)
        for d in (a, b):
            line.due(d.id, time.monotonic() + 100, healthy=True)
        order: list[str] = []

        async def take(d: Device, probe: bool):
            async with line.turn(d, probe=probe):
                order.append(d.id)

        async with line.turn(a):
            order.append("a")
            probe = asyncio.create_task(take(c, True))
            await _yield()
            healthy = asyncio.create_task(take(b, False))
            await _yield()
        await asyncio.gather(probe, healthy)
        return order

    assert asyncio.run(scenario()) == ["a", "b", "c"]


def test_two_connections_serve_two_units_at_once():
    a, b, c = dev("a"), dev("b"), dev("c")
    gateway = Gateway(host="127.0.0.1", max_connections=2)

    async def scenario() -> tuple[int, int]:
        line = line_of(a, b, c, gateway=gateway)
        third: list[str] = []

        async def take():
            async with line.turn(c):
                third.append("c")

        async with line.turn(a) as first, line.turn(b) as second:
            assert first is not second
            waiter = asyncio.create_task(take())
            await _yield()
            inside = len(third)  # both connections held: c waits
        await waiter
        return inside, len(third)

    assert asyncio.run(scenario()) == (0, 1)


def test_a_stopping_line_lets_a_waiting_probe_go_at_once():
    a, c = dev("a"), dev("c", interval_s=3600)

    async def scenario() -> bool:
        line = line_of(a, c)
        line.due("a", -math.inf, healthy=True)
        done = asyncio.Event()

        async def probe():
            async with line.turn(c, probe=True):
                done.set()

        task = asyncio.create_task(probe())
        await _yield()
        assert not done.is_set()  # would wait an hour for a quiet window
        line.stopping()
        await asyncio.wait_for(task, 10)
        return done.is_set()

    assert asyncio.run(scenario())
