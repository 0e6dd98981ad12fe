"""Modbus servers (pymodbus) for every simulated device in a configuration.

Each device's registers are refreshed from its value source at most once per
simulated tick, when a request arrives (pymodbus ``SimDevice.action``).  Devices that
share an endpoint (a serial line or an RTU gateway) share one server, as on site.
Faults are injected per device and show on the wire as a real device shows them.
A device with ``simulate: {image: dump.json}`` is a register dump replayed as it was
captured (``ReplayedDevice``, ``simulators/image.py``): no physics, wire faults only.
Each endpoint counts what it sees (``EndpointStats``): requests with their unit id and
time of arrival, connections.  A silent device's requests are dropped as they arrive.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusBaseServer, ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from foursave.collector.profiles import load_profile
from foursave.core.clock import Clock, simulated_clock
from foursave.core.config import Config, Device
from foursave.core.glossary import FIELDS
from foursave.simulators.faults import Faults, FaultUpdate, ValueFaults, evt1_bits
from foursave.simulators.image import Image, ImageAction, ImageError, load_image, unit_problem
from foursave.simulators.registers import Block, ProfileImage, SunSpecImage
from foursave.simulators.site import SiteModel, ValueSource, even_strings, site_models

if TYPE_CHECKING:
    import uvicorn

log = logging.getLogger("foursave.sim")


def register_image(device: Device) -> SunSpecImage | ProfileImage:
    """The register image a simulated device serves (SunSpec models or its profile)."""
    assert device.simulate is not None
    if device.profile == "sunspec":
        return SunSpecImage(
            device.kind,
            device.simulate.sunspec_models,
            base=device.sunspec_base if device.sunspec_base is not None else 40000,
            rated_power_w=device.simulate.rated_power_w,
            model_name=f"foursave-sim-{device.simulate.model}",
            serial=device.id,
            unit_id=device.unit_id,
        )
    return ProfileImage(load_profile(device.profile))


class SimulatedDevice:
    def __init__(
        self,
        device: Device,
        clock: Clock,
        source: ValueSource,
        tick_s: float = 1.0,
        history: int = 4096,
    ):
        if device.simulate is None:
            raise ValueError(f"device {device.id} has no 'simulate' section")
        self.device = device
        self.clock = clock
        self.tick_s = tick_s
        self.source = source
        self.image = register_image(device)
        self.value_faults = ValueFaults()
        self.writes_refused = 0
        self.requests = 0
        # (simulated time of the tick, canonical values served during it)
        self.served: deque[tuple[float, dict[str, float | int]]] = deque(maxlen=history)
        self._tick: int | None = None
        self._blocks: dict[str, Block] = self._refresh()

    @property
    def faults(self) -> Faults:
        return self.value_faults.faults

    def _refresh(self, force: bool = False) -> dict[str, Block]:
        tick = math.floor(self.clock.time() / self.tick_s)
        if tick == self._tick and not force:
            return self._blocks
        t = tick * self.tick_s
        values = self.value_faults.apply(t, self.source.values(t))
        parts = even_strings(values, self.image.strings())
        if isinstance(self.image, SunSpecImage):
            blocks = {"holding": self.image.update(values, parts)}
        else:
            blocks = dict(self.image.update(values, parts))
        self._tick = tick
        self._blocks = blocks
        self.served.append((t, values))
        return blocks

    def counter_limits(self) -> dict[str, float]:
        return self.image.counter_limits()

    def simdevice(self) -> SimDevice:
        blocks = self._blocks
        holding = [
            SimData(b.start, values=list(b.registers), datatype=DataType.REGISTERS)
            for k, b in blocks.items()
            if k == "holding"
        ] or [SimData(0, datatype=DataType.INVALID)]
        inputs = [
            SimData(b.start, values=list(b.registers), datatype=DataType.REGISTERS)
            for k, b in blocks.items()
            if k == "input"
        ] or [SimData(0, datatype=DataType.INVALID)]
        bits = [SimData(0, values=False, datatype=DataType.BITS)]
        return SimDevice(
            id=self.device.unit_id,
            simdata=(bits, list(bits), holding, inputs),
            action=self.action,
        )

    async def action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        self.requests += 1
        if set_values is not None:
            self.writes_refused += 1
            return ExcCodes.ILLEGAL_FUNCTION
        refused = await wire_faults(self.faults, address, count)
        if refused is not None:
            return refused
        blocks = self._refresh()
        table = "input" if function_code == 4 else "holding"
        if isinstance(self.image, ProfileImage) and not self.image.serves(table, address, count):
            return ExcCodes.ILLEGAL_ADDRESS  # a point with no value: not implemented
        block = blocks.get(table)
        if block is not None and block.start == start_address:
            registers[: len(block.registers)] = block.registers
        return None


async def wire_faults(faults: Faults, address: int, count: int) -> ExcCodes | None:
    """The faults a request meets on the wire: a delay, an exception for every request
    or for those touching an address."""
    if faults.delay_s:
        await asyncio.sleep(faults.delay_s)  # a slow device, as seen on the wire
    if faults.exception:
        return ExcCodes(faults.exception)
    for fault_address, code in faults.exceptions.items():
        if address <= fault_address < address + count:
            return ExcCodes(code)
    return None


# the faults a replayed image takes: those of the wire (its values are a snapshot)
WIRE_FAULTS = {"offline", "delay_s", "exception", "exception_at"}


class ReplayedDevice:
    """A device served from a register dump (``simulate: {image: ...}``): its registers
    as captured, never changing (no physics), at the dump's unit id.  Refused registers
    and addresses outside the dump answer exception 02 (``simulators/image.py``); the
    wire faults apply (offline, delay, exceptions), value faults do not."""

    def __init__(self, device: Device, image: Image | None = None):
        if device.simulate is None or device.simulate.image is None:
            raise ValueError(f"device {device.id} has no 'simulate.image'")
        self.device = device
        self.image = image or load_image(device.simulate.image)
        problem = unit_problem(self.image, device.unit_id)
        if problem:
            raise ImageError(self.image.path, [f"device {device.id}: {problem}"])
        self.value_faults = ValueFaults()
        self.writes_refused = 0
        self.requests = 0
        self.served: deque[tuple[float, dict[str, float | int]]] = deque(maxlen=1)
        self.reads = ImageAction()  # what reached the registers, by function code

    @property
    def faults(self) -> Faults:
        return self.value_faults.faults

    def _refresh(self, force: bool = False) -> dict[str, Block]:
        return {}  # a snapshot: nothing to refresh

    def counter_limits(self) -> dict[str, float]:
        return {}

    def simdevice(self) -> SimDevice:
        return self.image.simdevice(self.action)

    async def action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        self.requests += 1
        if set_values is not None:
            self.writes_refused += 1
        else:
            refused = await wire_faults(self.faults, address, count)
            if refused is not None:
                return refused
        return await self.reads.action(
            function_code, start_address, address, count, registers, set_values
        )


def served_device(
    device: Device, clock: Clock, sites: dict[str, SiteModel]
) -> SimulatedDevice | ReplayedDevice:
    """The device the simulator serves for ``device``: its dump replayed, or its model
    with physics."""
    assert device.simulate is not None
    if device.simulate.image is not None:
        return ReplayedDevice(device)
    return SimulatedDevice(device, clock, sites[device.site].source(device))


@dataclass
class EndpointStats:
    """What one endpoint (a gateway, a serial line) sees, from the server's side: each
    request as (monotonic time of arrival, unit id), connections open now and at most.
    Written on the simulator's loop, read from any thread."""

    requests: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=100_000))
    connections: int = 0
    peak_connections: int = 0
    connects: list[float] = field(default_factory=list)  # monotonic time of each
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record_pdu(self, sending: bool, pdu: ModbusPDU) -> None:
        if not sending:
            with self.lock:
                self.requests.append((time.monotonic(), pdu.dev_id))

    def trace_connect(self, connected: bool) -> None:
        with self.lock:
            self.connections += 1 if connected else -1
            self.peak_connections = max(self.peak_connections, self.connections)
            if connected:
                self.connects.append(time.monotonic())

    def snapshot(self) -> tuple[list[tuple[float, int]], int, list[float]]:
        """(requests, peak connections, connect times), copied."""
        with self.lock:
            return list(self.requests), self.peak_connections, list(self.connects)


def _endpoint(d: Device) -> tuple:
    sim = d.simulate
    assert sim is not None
    if d.transport == "rtu":
        return ("rtu", sim.serial_port or (d.serial.port if d.serial else ""))
    return (d.transport, sim.listen_host, sim.listen_port or d.port)


class Simulator:
    """All simulated devices of a configuration, served over Modbus."""

    def __init__(self, config: Config, clock: Clock | None = None, only: set[str] | None = None):
        svc = config.services.simulator
        self.config = config
        self.clock = clock or simulated_clock(svc)
        # the daily counter totals kept from earlier starts: a start integrates no past day
        self.sites: dict[str, SiteModel] = site_models(config, svc.cache_dir)
        self.devices: dict[str, SimulatedDevice | ReplayedDevice] = {
            d.id: served_device(d, self.clock, self.sites)
            for d in config.devices
            if d.simulate is not None and (only is None or d.id in only)
        }
        self._servers: dict[tuple, ModbusBaseServer] = {}
        self.stats: dict[tuple, EndpointStats] = {}
        self._control: uvicorn.Server | None = None
        self._control_task: asyncio.Task | None = None

    def endpoints(self) -> dict[tuple, list[SimulatedDevice | ReplayedDevice]]:
        groups: dict[tuple, list[SimulatedDevice | ReplayedDevice]] = {}
        for sd in self.devices.values():
            groups.setdefault(_endpoint(sd.device), []).append(sd)
        return groups

    def stats_of(self, device_id: str) -> EndpointStats:
        """What the endpoint serving ``device_id`` has seen."""
        return self.stats.setdefault(_endpoint(self.devices[device_id].device), EndpointStats())

    async def _start_endpoint(
        self, ep: tuple, devices: list[SimulatedDevice | ReplayedDevice]
    ) -> None:
        context = [sd.simdevice() for sd in devices]
        stats = self.stats.setdefault(ep, EndpointStats())
        units = {sd.device.unit_id: sd for sd in devices}

        def trace_pdu(sending: bool, pdu: ModbusPDU) -> ModbusPDU:
            stats.record_pdu(sending, pdu)
            unit = units.get(pdu.dev_id)
            if not sending and unit is not None and unit.faults.silent:
                # pymodbus's server handles a request only if this hook returns it: a
                # silent unit's requests are dropped as they arrive, whatever they ask
                return None  # type: ignore[return-value]
            return pdu

        server: ModbusBaseServer
        if ep[0] == "rtu":
            line = devices[0].device.serial
            server = ModbusSerialServer(
                context,
                framer=FramerType.RTU,
                port=ep[1],
                baudrate=line.baudrate if line else 9600,
                parity=line.parity if line else "N",
                stopbits=line.stopbits if line else 1,
                bytesize=line.bytesize if line else 8,
                trace_pdu=trace_pdu,
                trace_connect=stats.trace_connect,
            )
        else:
            framer = FramerType.RTU if ep[0] == "rtu-over-tcp" else FramerType.SOCKET
            server = ModbusTcpServer(
                context,
                framer=framer,
                address=(ep[1], ep[2]),
                trace_pdu=trace_pdu,
                trace_connect=stats.trace_connect,
            )
        await server.serve_forever(background=True)
        self._servers[ep] = server
        log.info("serving %s on %s", ", ".join(sd.device.id for sd in devices), ep)

    async def _stop_endpoint(self, ep: tuple) -> None:
        server = self._servers.pop(ep, None)
        if server is not None:
            await server.shutdown()  # closes the listener and every open connection

    async def start(self) -> None:
        for ep, devices in self.endpoints().items():
            await self._start_endpoint(ep, devices)
        svc = self.config.services.simulator
        if svc.control_port:
            import uvicorn

            from foursave.simulators.control import control_app

            cfg = uvicorn.Config(
                control_app(self),
                host=svc.control_host,
                port=svc.control_port,
                log_level="warning",
                lifespan="off",
            )
            self._control = uvicorn.Server(cfg)
            self._control_task = asyncio.create_task(self._control.serve())
            log.info("fault control on http://%s:%d", svc.control_host, svc.control_port)

    async def stop(self) -> None:
        for ep in list(self._servers):
            await self._stop_endpoint(ep)
        if self._control is not None:
            self._control.should_exit = True
            if self._control_task is not None:  # started with the server, in start()
                await asyncio.gather(self._control_task, return_exceptions=True)
            self._control = None

    async def apply_faults(self, device_id: str, update: FaultUpdate) -> None:
        """Apply a fault update (control interface); validation errors are ValueError."""
        sd = self.devices[device_id]
        f = sd.faults
        fields = update.model_fields_set
        if isinstance(sd, ReplayedDevice):
            values = sorted(fields - WIRE_FAULTS)
            if values:
                raise ValueError(
                    f"{device_id} replays a register dump: its values do not change "
                    f"({values}); the faults it takes are {sorted(WIRE_FAULTS)}"
                )
        if "trip" in fields:
            if update.trip is not None and sd.device.kind != "inverter":
                raise ValueError(f"{device_id} is a {sd.device.kind}; only inverters trip")
            f.trip_events = evt1_bits(update.trip) if update.trip is not None else None
        if "delay_s" in fields:
            f.delay_s = update.delay_s or 0.0
        if "exception" in fields:
            f.exception = update.exception or None
        if "exception_at" in fields:
            f.exceptions = dict(update.exception_at or {})
        if "derate_pct" in fields:
            f.derate_pct = update.derate_pct or 0.0
        if "stuck" in fields:
            f.stuck = bool(update.stuck)
        if "silent" in fields:
            f.silent = bool(update.silent)
        if "leak_m3h" in fields:
            if update.leak_m3h and sd.device.kind != "water":
                raise ValueError(f"{device_id} is a {sd.device.kind}; only water meters leak")
            f.leak_m3h = update.leak_m3h or 0.0
        if "spike_w" in fields:
            if update.spike_w and sd.device.kind != "meter":
                raise ValueError(f"{device_id} is a {sd.device.kind}; demand spikes are for meters")
            f.spike_w = update.spike_w or 0.0
        if "values" in fields:
            known = FIELDS[sd.device.kind]
            unknown = sorted(set(update.values or {}) - set(known))
            if unknown:
                raise ValueError(
                    f"{device_id} is a {sd.device.kind}; it has no field {unknown}, "
                    f"only {sorted(known)}"
                )
            f.values = dict(update.values or {})
        if update.counter_reset:
            sd.value_faults.reset_counters()
        if update.counter_rollover:
            sd.value_faults.rollover(sd.counter_limits(), margin_s=120)
        if "offline" in fields:
            f.offline = bool(update.offline)
            await self._sync_endpoint(sd)
        sd._refresh(force=True)

    async def clear_faults(self, device_id: str) -> None:
        sd = self.devices[device_id]
        was_offline = sd.faults.offline
        sd.value_faults.faults = Faults()
        if was_offline:
            await self._sync_endpoint(sd)
        sd._refresh(force=True)

    async def _sync_endpoint(self, sd: SimulatedDevice | ReplayedDevice) -> None:
        """An endpoint answers unless one of its devices is offline (a shared gateway or
        serial line goes quiet as a whole)."""
        ep = _endpoint(sd.device)
        devices = self.endpoints()[ep]
        offline = any(d.faults.offline for d in devices)
        if offline and ep in self._servers:
            await self._stop_endpoint(ep)
        elif not offline and ep not in self._servers:
            await self._start_endpoint(ep, devices)

    async def run(self, stop: asyncio.Event) -> None:
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.stop()


class SimulatorThread:
    """A simulator on its own event loop thread (tests, benchmarks): real Modbus TCP."""

    def __init__(self, config: Config, clock: Clock | None = None, only: set[str] | None = None):
        self.sim = Simulator(config, clock, only)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="simulator", daemon=True)

    def __enter__(self) -> SimulatorThread:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.sim.start(), self.loop).result(30)
        return self

    def __exit__(self, *exc: object) -> None:
        async def shutdown():
            # let connections just accepted become transports first: a task cancelled
            # before it ran would drop its accepted socket without closing it
            for _ in range(3):
                await asyncio.sleep(0)
            await self.sim.stop()
            pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in pending:  # requests still being answered (a slow device's sleep)
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            for _ in range(3):  # closed transports close their sockets in loop callbacks
                await asyncio.sleep(0)

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    def faults(self, device_id: str, **update) -> None:
        """Apply a fault update as the control interface would."""
        coro = self.sim.apply_faults(device_id, FaultUpdate(**update))
        asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def clear(self, device_id: str) -> None:
        asyncio.run_coroutine_threadsafe(self.sim.clear_faults(device_id), self.loop).result(30)

    def call(self, fn, *args):
        """Run ``fn(*args)`` on the simulator's loop (e.g. to change faults) and wait."""

        async def _run():
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(_run(), self.loop).result(10)

    @property
    def devices(self) -> dict[str, SimulatedDevice | ReplayedDevice]:
        return self.sim.devices
