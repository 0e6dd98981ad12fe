"""``foursave collect``: one asyncio task per device polls on its own interval.

A device that does not answer is retried a bounded number of times within its poll,
then backs off exponentially (up to ``backoff_max_s``); it never delays the others.
Devices sharing a serial line or gateway take turns on it, a poll at a time
(collector/line.py): there a unit that does not answer is not retried within its poll,
and while it backs off it is polled only when that delays no healthy unit of the line.
A reading is stamped when its poll gets the line.
A failure is logged once while it lasts, not every cycle; device health is published
as a retained status message.  So is a value out of bounds (left out of the reading by
the reader): counted per field in the status (``out_of_bounds``), logged with its raw
registers when the field goes out, and again when it comes back.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import zlib
from dataclasses import dataclass, field

from pymodbus.exceptions import ModbusException

from foursave.collector.line import Line
from foursave.collector.modbus import (
    DeviceException,
    DiscoveryError,
    ReadResult,
    TransportError,
    link_key,
    part_label,
    reader_for,
)
from foursave.collector.publisher import Publisher
from foursave.collector.spool import Spool
from foursave.core.clock import Clock
from foursave.core.config import Config, Device
from foursave.core.reading import Part, Reading
from foursave.core.store import InstanceBusy, hold, instance_path
from foursave.core.topics import reading_topic, status_topic

log = logging.getLogger("foursave.collector")


@dataclass
class DeviceHealth:
    online: bool = False
    errors: int = 0  # failed polls since start
    consecutive_failures: int = 0
    last_error: str | None = None
    last_poll_ms: float | None = None
    last_reading_ms: int | None = None
    field_errors: list[str] = field(default_factory=list)
    polls: int = 0
    # values left out for being out of bounds since start, per field; and the fields
    # out of bounds at the last poll that read them (logged once while it lasts)
    out_of_bounds: dict[str, int] = field(default_factory=dict)
    out_of_bounds_now: set[str] = field(default_factory=set)


class DevicePoller:
    def __init__(self, device: Device, line: Line, collector: Collector):
        self.device = device
        self.line = line
        self.reader = reader_for(device)
        self.c = collector
        self.health = DeviceHealth()
        self.seq = collector.seqs.get(device.id, -1)
        self.topic = reading_topic(device.site, device.id)
        self._last_status_mono = 0.0
        self._status_dirty = True
        self.info: dict[str, float | str] = {}  # nameplate and identity, for the status

    def backoff_s(self) -> float:
        # the exponent is capped: past 1024 failures in a row 2.0**n overflows a float,
        # which would end the poller's task for good (a device away for 17 h at 60 s)
        n = min(self.health.consecutive_failures, 64)
        return min(self.device.backoff_max_s, self.device.interval_s * 2 ** (n - 1))

    async def poll_once(self) -> bool:
        d, h = self.device, self.health
        started = time.monotonic()
        ts_ms = int(self.c.clock.time() * 1000)
        error: str | None = None
        result = None
        for attempt in range(d.retries + 1):
            async with self.line.turn(d, probe=h.consecutive_failures > 0) as link:
                ts_ms = int(self.c.clock.time() * 1000)  # read now, not when it was due
                try:
                    result = await self.reader.read(link)
                    break
                except (TransportError, DiscoveryError, DeviceException) as exc:
                    error = str(exc)
                    if isinstance(exc, TransportError) and self.line.isolating:
                        break  # no answer on a shared line: the others' time, not retried
                except Exception as exc:  # a device answering nonsense must not end its task
                    log.exception("%s: unexpected error while reading", d.id)
                    error = f"unexpected error: {exc!r}"
                    self.reader.reset()
                    break
            if attempt < d.retries:
                await asyncio.sleep(min(0.1 * 2**attempt, d.interval_s / 2))
        h.polls += 1
        h.last_poll_ms = (time.monotonic() - started) * 1000
        if result is None:
            # what answers next may be another device (swapped) or new firmware (a
            # device reboots to update): discover it again, nameplate and identity too
            self.reader.reset()
        if result is not None:
            self._track_bounds(result)
        if result is None or not (result.fields or result.parts):
            if result is not None and result.out_of_bounds and not error:
                error = f"every value out of bounds: {sorted(result.out_of_bounds)}"
            error = error or (result.errors[0] if result and result.errors else "no field read")
            h.errors += 1
            h.consecutive_failures += 1
            if h.online or h.consecutive_failures == 1:
                log.warning("%s: poll failed: %s (logged once while it lasts)", d.id, error)
                self._status_dirty = True
            h.online = False
            h.last_error = error
            self.publish_status()
            return False
        if not h.online:
            log.info("%s: answering", d.id)
            self._status_dirty = True
        if result.errors != h.field_errors:
            if result.errors:
                log.warning("%s: %s", d.id, "; ".join(result.errors))
            self._status_dirty = True
        h.online = True
        h.consecutive_failures = 0
        h.field_errors = list(result.errors)
        h.last_error = result.errors[0] if result.errors else None
        if result.info != self.info:
            self.info = dict(result.info)  # a new device, or new firmware: say so at once
            self._status_dirty = True
        self.seq += 1
        parts = tuple(Part(m, tags, f) for (m, tags), f in result.parts.items() if f)
        reading = Reading(
            ts_ms, self.seq, d.kind, result.fields, d.role, self.c.collector_id, parts=parts
        )
        self.c.publisher.enqueue(self.topic, reading.to_json(), d.id, self.seq)
        h.last_reading_ms = ts_ms
        self.c.readings += 1
        self.publish_status()
        return True

    def _track_bounds(self, result: ReadResult) -> None:
        """Count each value left out for being out of bounds; log a field when it goes
        out (with the raw registers) and when a value of it is kept again."""
        d, h = self.device, self.health
        for name, oob in result.out_of_bounds.items():
            h.out_of_bounds[name] = h.out_of_bounds.get(name, 0) + 1
            if name not in h.out_of_bounds_now:
                h.out_of_bounds_now.add(name)
                log.warning(
                    "%s: %s = %s: left out of the readings (logged once while it lasts)",
                    d.id,
                    name,
                    oob.describe(),
                )
                self._status_dirty = True
        if not h.out_of_bounds_now:
            return  # nothing to come back (the usual case: nothing to gather)
        kept: dict[str, float | int] = dict(result.fields)
        for key, fields in result.parts.items():
            kept.update((part_label(key, n), v) for n, v in fields.items())
        for name in sorted(h.out_of_bounds_now & kept.keys()):
            h.out_of_bounds_now.discard(name)
            log.info("%s: %s back in bounds (%r)", d.id, name, kept[name])
            self._status_dirty = True

    def publish_status(self) -> None:
        now = time.monotonic()
        if not self._status_dirty and now - self._last_status_mono < self.c.status_interval_s:
            return
        h = self.health
        body: dict[str, object] = {
            "ts": int(self.c.clock.time() * 1000),
            "online": h.online,
            "poll_ms": round(h.last_poll_ms or 0.0, 1),
            "errors": h.errors,
            "last_error": h.last_error,
            "field_errors": h.field_errors,
            "out_of_bounds": dict(sorted(h.out_of_bounds.items())),
            "out_of_bounds_now": sorted(h.out_of_bounds_now),
            "last_reading_ts": h.last_reading_ms,
            # while failing: how long it waits before trying again
            "backoff_s": None if h.online or not h.consecutive_failures else self.backoff_s(),
            "collector": self.c.collector_id,
        }
        if self.info:
            body["info"] = self.info
        self.c.publisher.publish_status(
            status_topic(self.device.site, self.device.id), json.dumps(body).encode()
        )
        self._status_dirty = False
        self._last_status_mono = now

    def phase_s(self) -> float:
        """A stable offset within the interval, so devices do not all poll at once; the
        devices of an isolating shared line take the line's, so that their polls come as
        one round and leave the rest of the interval to a unit in backoff."""
        key = repr(self.line.key) if self.line.isolating else self.device.id
        return zlib.crc32(key.encode()) % 1000 / 1000 * self.device.interval_s

    async def run(self, stop: asyncio.Event) -> None:
        interval = self.device.interval_s
        next_due = time.monotonic() + self.phase_s()
        while not stop.is_set():
            self.line.due(self.device.id, next_due, healthy=self.health.consecutive_failures == 0)
            delay = next_due - time.monotonic()
            if delay > 0:
                try:
                    async with asyncio.timeout(delay):
                        await stop.wait()
                    return
                except TimeoutError:
                    pass
            ok = await self.poll_once()
            now = time.monotonic()
            if ok:
                next_due += interval
                if next_due < now:  # missed slots are skipped, not bunched up
                    next_due = now + interval - ((now - next_due) % interval)
            else:
                next_due = now + self.backoff_s()


def _frame_errors_once(loop: asyncio.AbstractEventLoop, context: dict) -> None:
    """The event loop's exception handler while the collector runs.  pymodbus decodes
    answers inside ``data_received``: a frame it cannot decode raises there, asyncio
    logs "Fatal error" with a traceback at ERROR and closes the connection.  The read
    waiting for that answer fails (TransportError) and its poller logs the failure once
    while it lasts, so a device that answers garbage every cycle must not also fill the
    log with a traceback per frame."""
    exc = context.get("exception")
    if isinstance(exc, ModbusException) and "data_received" in str(context.get("message")):
        log.debug("undecodable Modbus frame, connection closed: %s", exc)
        return
    loop.default_exception_handler(context)


class Collector:
    """Collector ``services.collector.id`` of ``config`` (``Config.for_collector``
    makes that any of a sharded configuration's): by default it polls the devices the
    configuration gives it (``Config.collector_devices``)."""

    def __init__(self, config: Config, clock: Clock, devices: list[Device] | None = None):
        self.config = config
        svc = config.services.collector
        self.collector_id = svc.id
        self.status_interval_s = svc.status_interval_s
        self.clock = clock  # chosen by foursave.app.clock
        self.spool_path = instance_path(svc.spool_path, svc.id)
        self.spool = Spool(self.spool_path, svc.spool_max_readings)
        self.seqs = self.spool.last_seqs()
        self.devices = list(config.collector_devices(svc.id) if devices is None else devices)
        self.readings = 0
        self.publisher: Publisher
        self.pollers: list[DevicePoller] = []

    async def _report(self, stop: asyncio.Event) -> None:
        """Publish the collector's own health (spool depth, drops) now and then."""
        while not stop.is_set():
            self.publisher.publish_presence(
                readings=self.readings,
                devices_online=sum(p.health.online for p in self.pollers),
            )
            try:
                await asyncio.wait_for(stop.wait(), self.status_interval_s)
            except TimeoutError:
                pass

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        previous_handler = loop.get_exception_handler()
        loop.set_exception_handler(_frame_errors_once)
        # two collectors on one spool would confirm and delete each other's readings
        setting = self.config.collector_setting_path(self.collector_id, "spool_path")
        try:
            with hold(self.spool_path, setting):
                await self._run(stop)
        except InstanceBusy:
            self.spool.close()  # refused before anything ran
            raise
        finally:
            loop.set_exception_handler(previous_handler)

    async def _run(self, stop: asyncio.Event) -> None:
        self.publisher = Publisher(self.config, self.spool)
        self.publisher.start()
        links: dict[tuple, Line] = {}  # a gateway or serial line per address
        for d in self.devices:
            key = link_key(d)
            if key not in links:
                links[key] = Line(d, self.config.gateway_for(d))
            links[key].join(d.id)
            self.pollers.append(DevicePoller(d, links[key], self))
        for line in links.values():
            if line.shared or line.gateway is not None:
                log.info("line %s", line.describe())
        log.info(
            "collector %s: %d devices, %d lines, spool %s (%d waiting)",
            self.collector_id,
            len(self.pollers),
            len(links),
            self.spool.path,
            self.spool.depth,
        )
        tasks = [asyncio.create_task(p.run(stop), name=p.device.id) for p in self.pollers]
        tasks.append(asyncio.create_task(self._report(stop), name="presence"))
        forwarder = asyncio.create_task(self.publisher.run(stop), name="forwarder")
        try:
            await stop.wait()
        finally:
            for line in links.values():
                line.stopping()
            await asyncio.gather(*tasks, return_exceptions=True)
            forwarder.cancel()
            await asyncio.gather(forwarder, return_exceptions=True)
            await self.publisher.close()
            for link in links.values():
                await link.close()
            log.info(
                "collector stopped: %d readings taken, %d left in the spool",
                self.readings,
                self.spool.depth,
            )
