"""What the Modbus fuzzer (tests/chaos) found, each from a raw-socket server answering
what no correct device sends: an answer of another function is not the registers asked
for, an undecodable frame is one poll failure, not a traceback per frame, and a device
that fails for ever is polled for ever."""

from __future__ import annotations

import asyncio
import logging
import struct
import threading
from types import SimpleNamespace

import pytest

from foursave.collector.modbus import FC_HOLDING, FC_INPUT, ModbusLink, TransportError
from foursave.collector.plan import Span
from foursave.collector.service import DevicePoller
from foursave.core.config import Device
from foursave.localstack import free_port
from tests.helpers import CollectorThread, make_config, wait_for


class RawServer:
    """Answers every request with ``pdu`` (function code first), on its own loop thread."""

    def __init__(self, pdu: bytes, port: int | None = None):
        self.pdu = pdu
        self.port = port or free_port()
        self.requests = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    async def _serve(self, reader, writer):
        try:
            while True:
                tid, _pid, length, unit = struct.unpack(">HHHB", await reader.readexactly(7))
                await reader.readexactly(length - 1)
                self.requests += 1
                writer.write(struct.pack(">HHHB", tid, 0, len(self.pdu) + 1, unit) + self.pdu)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def __enter__(self) -> RawServer:
        self.thread.start()

        async def start():
            self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

        asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)
        return self

    def __exit__(self, *exc):
        async def stop():
            self.server.close()
            await self.server.wait_closed()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def _device(port: int) -> Device:
    return Device(
        id="odd",
        site="demo",
        kind="water",
        profile="generic_water_meter",
        host="127.0.0.1",
        port=port,
        timeout_s=0.5,
    )


@pytest.mark.parametrize(
    ("asked", "answered"),
    [(FC_HOLDING, FC_INPUT), (FC_INPUT, FC_HOLDING), (FC_HOLDING, 23)],
    ids=["input for holding", "holding for input", "read/write-multiple for holding"],
)
def test_an_answer_of_another_function_is_refused(asked, answered):
    # two registers, 1 and 2, in the answer of the wrong function
    with RawServer(bytes([answered, 4, 0, 1, 0, 2])) as server:

        async def read():
            link = ModbusLink(_device(server.port))
            try:
                return await link.read(Span(asked, 0, 2), 1, 0.5)
            finally:
                await link.close()

        with pytest.raises(TransportError, match=f"answer of function {answered} to a function"):
            asyncio.run(read())


def test_the_right_function_is_still_read():
    with RawServer(bytes([FC_HOLDING, 4, 0, 1, 0, 2])) as server:

        async def read():
            link = ModbusLink(_device(server.port))
            try:
                return await link.read(Span(FC_HOLDING, 0, 2), 1, 0.5)
            finally:
                await link.close()

        assert asyncio.run(read()) == [1, 2]


def test_an_undecodable_answer_is_one_logged_failure_not_a_traceback_per_frame(tmp_path, caplog):
    devices = [
        {
            "id": "junk",
            "site": "demo",
            "kind": "water",
            "profile": "generic_water_meter",
            "host": "127.0.0.1",
            "unit_id": 1,
            "timeout_s": 0.2,
            "retries": 0,
            "backoff_max_s": 0.2,
        }
    ]
    # no broker: the readings would wait in the spool; none is taken anyway
    cfg = make_config(tmp_path, free_port(), "http://127.0.0.1:9", "x", devices=devices)
    caplog.set_level(logging.DEBUG, logger="asyncio")
    caplog.set_level(logging.WARNING, logger="foursave.collector")
    # function code 0x7F: pymodbus has no decoder for it and raises in data_received
    with RawServer(bytes([0x7F, 4, 0, 1, 0, 2]), port=cfg.devices[0].port) as server:
        collector = CollectorThread(cfg).start()
        try:
            poller = collector.collector.pollers[0]
            wait_for(lambda: poller.health.polls >= 5, 20, "five polls")
        finally:
            collector.stop()
    assert server.requests >= 5
    assert poller.health.errors >= 5 and not poller.health.online
    fatal = [r for r in caplog.records if r.name == "asyncio" and r.levelno >= logging.ERROR]
    assert fatal == []
    failures = [r for r in caplog.records if r.getMessage().startswith("junk: poll failed")]
    assert len(failures) == 1  # logged once while it lasts


def test_a_device_failing_for_ever_is_polled_for_ever():
    """The backoff doubles per failure up to backoff_max_s; past 1024 failures in a row
    2**n overflowed a float and the OverflowError ended the poller's task (the fuzzer's
    hostile SunSpec devices stopped being polled after ~1025 failures)."""
    device = _device(502)
    poller = DevicePoller(device, line=None, collector=SimpleNamespace(seqs={}))
    for n, expected in [(1, device.interval_s), (2, 2 * device.interval_s), (1025, 60.0)]:
        poller.health.consecutive_failures = n
        assert poller.backoff_s() == min(expected, device.backoff_max_s)
    poller.health.consecutive_failures = 10**6
    assert poller.backoff_s() == device.backoff_max_s
