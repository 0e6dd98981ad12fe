"""A gateway or serial line: the devices behind one address and the connections they share.

The devices behind one Modbus TCP gateway, RTU-over-TCP server or RS-485 line take turns
on it: a poll holds one connection (``ModbusLink.hold``) for all its requests.  The
configuration's ``gateways:`` entry for the address paces it (``core.config.Gateway``):
up to ``max_connections`` connections polled in parallel, ``request_gap_s`` after each
answer, ``connect_pause_s`` after connecting.  Without an entry: one connection, no
pauses.

On a shared line (two devices or more) with ``isolate_failing_units`` (the default) a
unit that does not answer must not eat the others' time:

- its poll ends at the first request that goes unanswered: no retry, no further
  request; the connection the timeout closed is reopened within its turn;
- while it backs off (``DevicePoller.backoff_s``, doubling per failure in a row), its
  next poll (a *probe*) waits until no healthy unit waits for the line and none is due
  within what an unanswered poll costs (``probe_cost_s``), so a timeout delays nobody;
  after ``probe_wait_s`` without such a window it queues like anyone;
- the healthy units of the line poll at one phase of their interval
  (``DevicePoller.phase_s``): their polls come as one round and leave the rest of the
  interval quiet for the probes.

Healthy units are served first come, first served.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from foursave.collector.modbus import ModbusLink, link_key
from foursave.core.config import Device, Gateway

log = logging.getLogger("foursave.collector")


@dataclass
class _Member:
    due: float = math.inf  # monotonic time of its next poll
    healthy: bool = True
    active: bool = False  # waiting for a turn or holding one


@dataclass(eq=False)
class _Waiter:
    ticket: int
    probe_until: float  # a probe waits for a quiet window until then; others: -inf
    cost_s: float
    wake: asyncio.Future[None] | None = None  # done when it may take a connection now


class Line:
    """The connections to one gateway or serial line, and whose turn it is."""

    def __init__(self, device: Device, gateway: Gateway | None = None):
        self.key = link_key(device)
        self.gateway = gateway
        self.max_connections = gateway.max_connections if gateway else 1
        self.request_gap_s = gateway.request_gap_s if gateway else 0.0
        self.connect_pause_s = gateway.connect_pause_s if gateway else 0.0
        self.isolate = gateway.isolate_failing_units if gateway else True
        self.links = [
            ModbusLink(device, self.request_gap_s, self.connect_pause_s)
            for _ in range(self.max_connections)
        ]
        self._free = list(self.links)
        self._members: dict[str, _Member] = {}
        self._waiters: list[_Waiter] = []
        self._tickets = itertools.count()
        self._stopping = False

    def join(self, device_id: str) -> None:
        self._members.setdefault(device_id, _Member())

    @property
    def shared(self) -> bool:
        return len(self._members) > 1

    @property
    def isolating(self) -> bool:
        """Whether failing units are kept off this line's healthy units' time."""
        return self.isolate and self.shared

    def describe(self) -> str:
        pacing = f"{self.max_connections} connection(s)"
        if self.request_gap_s:
            pacing += f", {self.request_gap_s:g} s between requests"
        if self.connect_pause_s:
            pacing += f", {self.connect_pause_s:g} s after connecting"
        return f"{self.key}: {len(self._members)} device(s), {pacing}"

    def probe_cost_s(self, device: Device) -> float:
        """What a poll of ``device`` costs the line when it goes unanswered: its timeout,
        reconnecting (the pause after it) and the gap, with a margin."""
        margin = max(0.05, 0.1 * device.timeout_s)
        return device.timeout_s + self.connect_pause_s + self.request_gap_s + margin

    def probe_wait_s(self, device: Device) -> float:
        """How long a probe waits for a quiet window before it queues like anyone."""
        return max(device.interval_s, 2 * self.probe_cost_s(device))

    def due(self, device_id: str, when: float, healthy: bool) -> None:
        """``device_id`` polls next at ``when`` (monotonic); ``healthy``: not backing off."""
        m = self._members[device_id]
        m.due, m.healthy = when, healthy
        self._notify()

    @contextlib.asynccontextmanager
    async def turn(self, device: Device, probe: bool = False) -> AsyncIterator[ModbusLink]:
        """A connection of this line, held for one poll of ``device``.  ``probe``: the
        device is backing off; on an isolating line it waits for a quiet window."""
        m = self._members[device.id]
        m.active = True
        now = time.monotonic()
        probe = probe and self.isolating
        cost = self.probe_cost_s(device)
        w = _Waiter(
            next(self._tickets), now + self.probe_wait_s(device) if probe else -math.inf, cost
        )
        self._waiters.append(w)
        try:
            while (link := self._grant(w)) is None:
                # woken by a change of turns or dues that lets it go (``_notify``); a
                # probe also when its wait is over
                w.wake = asyncio.get_running_loop().create_future()
                if not probe:
                    await w.wake
                    continue
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, w.probe_until - time.monotonic())):
                        await w.wake
        except BaseException:
            self._waiters.remove(w)
            m.active = False
            self._notify()
            raise
        self._waiters.remove(w)
        self._free.remove(link)
        self._notify()  # another waiter may take another free connection
        try:
            async with link.hold(stop_after_no_answer=self.isolating):
                yield link
        finally:
            self._free.append(link)
            m.active = False
            self._notify()

    def stopping(self) -> None:
        """The collector stops: probes wait for a quiet window no more (a poll under way
        ends as it would; none waits an interval for its turn)."""
        self._stopping = True
        self._notify()

    def _grant(self, w: _Waiter) -> ModbusLink | None:
        """The connection ``w`` may take now, or ``None``."""
        if not self._free:
            return None
        now = math.inf if self._stopping else time.monotonic()
        queued = [x for x in self._waiters if now >= x.probe_until]
        if now >= w.probe_until:  # first come, first served
            ahead = sum(1 for x in queued if x.ticket < w.ticket)
            return self._pick() if ahead < len(self._free) else None
        if queued:
            return None  # the healthy go first
        return self._pick() if self._due_soon(now, w.cost_s) < len(self._free) else None

    def _due_soon(self, now: float, cost_s: float) -> int:
        """Healthy units, not polling nor waiting, due within ``cost_s`` of ``now``."""
        return sum(
            1 for m in self._members.values() if m.healthy and not m.active and m.due < now + cost_s
        )

    def _pick(self) -> ModbusLink:
        """A free connection, one already open if there is one."""
        return next((k for k in self._free if k.client.connected), self._free[0])

    def _notify(self) -> None:
        """Wake the waiters that ``_grant`` lets go now, and only them: the others would
        look and wait again (a line of many units would wake them all at every turn).
        Time only makes a grant harder (a probe's window closes, its wait ends and it
        joins the queue), but for the probe whose wait ends, and that one wakes itself."""
        if not self._free or not self._waiters:
            return
        now = math.inf if self._stopping else time.monotonic()
        free = len(self._free)
        queued = [x for x in self._waiters if now >= x.probe_until]  # in ticket order
        if queued:  # first come, first served; the probes wait while any is queued
            for x in queued[:free]:
                _wake(x)
            return
        for x in self._waiters:
            if self._due_soon(now, x.cost_s) < free:
                _wake(x)

    async def close(self) -> None:
        for link in self.links:
            await link.close()


def _wake(w: _Waiter) -> None:
    if w.wake is not None and not w.wake.done():
        w.wake.set_result(None)
