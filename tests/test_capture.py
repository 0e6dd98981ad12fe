"""Capture and replay over real Modbus TCP (issue 13): every shared register dump is
served by the replay server, captured by ``foursave capture`` and comes back register
for register; pysunspec2 reads the replay as the device; capture sends reads only; a
profile device (input registers) goes through capture, ``simulate: {image: ...}``
and capture again unchanged."""

from __future__ import annotations

import asyncio
import json
import struct
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest
from pymodbus.client import ModbusTcpClient
from sunspec2.modbus.client import SunSpecModbusClientDeviceTCP

from foursave.app import load_config
from foursave.cli import main
from foursave.collector.modbus import ModbusLink, reader_for
from foursave.core.clock import ManualClock
from foursave.localstack import free_port
from foursave.simulators.image import ImageServerThread, load_image, parse_image
from foursave.simulators.server import SimulatorThread
from tests.helpers import ROOT, device_dumps, wait_for

pytestmark = pytest.mark.integration

DUMPS = device_dumps()


def capture(port: int, unit: int, out, *extra: str) -> int:
    where = ["--host", "127.0.0.1", "--port", str(port), "--unit", str(unit)]
    return main(["capture", *where, "--timeout-s", "2", "--out", str(out), *extra])


def chain(registers: dict[int, int | None], base: int) -> list[tuple[int, int]]:
    """(address, model id) of each model in a dump's SunSpec chain."""
    out, address = [], base + 2
    while registers[address] != 0xFFFF:
        out.append((address, registers[address]))
        address += 2 + registers[address + 1]
    return out


@pytest.mark.parametrize("path", DUMPS, ids=lambda p: p.name.removesuffix(".regs.json"))
def test_capture_of_a_replayed_dump_gives_the_dump_back(tmp_path, capsys, path):
    """Served as a device and captured with the real CLI, each dump comes back register
    for register, at its own addresses and unit id, read with function 3 alone."""
    image = load_image(path)
    port = free_port()
    with ImageServerThread(image, port) as server:
        assert capture(port, image.unit_id, tmp_path / "dump.json") == 0
    got = load_image(tmp_path / "dump.json")
    assert got.registers(3) == image.registers(3)
    assert got.registers(4) == {}
    assert got.unit_id == image.unit_id
    # read requests only, and only holding registers: the SunSpec chain is FC 3
    assert set(server.requests.function_codes) == {3}
    doc = json.loads((tmp_path / "dump.json").read_text())
    assert doc["source"]["captured"] == f"127.0.0.1:{port}"
    assert datetime.fromisoformat(doc["source"]["at"]).tzinfo is not None
    models = [m for _, m in chain(image.registers(3), image.blocks[0].address)]
    assert f"models {models} at base {image.blocks[0].address}" in capsys.readouterr().out


@pytest.mark.parametrize("path", DUMPS, ids=lambda p: p.name.removesuffix(".regs.json"))
def test_pysunspec2_reads_the_replay_as_the_dump(path):
    """The SunSpec Alliance's client scans the replayed device: the same model chain at
    the same addresses, and each model it knows re-encodes to the dump's registers."""
    image = load_image(path)
    regs = image.registers(3)
    port = free_port()
    with ImageServerThread(image, port):
        client = SunSpecModbusClientDeviceTCP(
            slave_id=image.unit_id, ipaddr="127.0.0.1", ipport=port, timeout=5
        )
        try:
            client.scan()
        finally:
            client.close()
    models = sorted(
        (m.model_addr, m.model_id)
        for key, found in client.models.items()
        if isinstance(key, int)
        for m in found
    )
    assert client.base_addr == image.blocks[0].address
    assert models == chain(regs, client.base_addr)
    for key, found in client.models.items():
        for m in found if isinstance(key, int) else []:
            if m.model_def:  # pysunspec2 knows the model: its points were read
                mb = m.get_mb()
                assert list(struct.unpack(f">{len(mb) // 2}H", mb)) == [
                    regs[m.model_addr + i] for i in range(m.model_len + 2)
                ], m.model_id


def _holes(path, tmp_path):
    """The Veris dump with registers the device refuses: three inside model 203 and the
    end marker's L; and blocks away from the chain, of both functions."""
    doc = json.loads(path.read_text())
    regs = doc["blocks"][0]["registers"]
    for i in (100, 101, 140):
        regs[i] = None
    regs[-1] = None  # a device that gives no L for the end marker (pysunspec2 knows some)
    doc["blocks"] += [
        {"address": 100, "registers": [1, 2, 3]},
        {"address": 200, "registers": [7, None, 9], "function": 4},
    ]
    (tmp_path / "holes.json").write_text(json.dumps(doc))
    return parse_image(doc, "holes.json")


def test_a_null_or_a_gap_is_refused_like_a_device_refuses_it(tmp_path):
    """Exception 02 for a null register, an address outside every block, and any
    request that touches one; each function has its own registers."""
    path = next(p for p in DUMPS if p.name == "veris-e51c2.regs.json")
    image = _holes(path, tmp_path)
    port = free_port()
    with ImageServerThread(image, port):
        c = ModbusTcpClient("127.0.0.1", port=port, timeout=5)
        assert c.connect()
        try:

            def hr(address, count):
                r = c.read_holding_registers(address, count=count, device_id=1)
                return r.exception_code if r.isError() else r.registers

            def ir(address, count):
                r = c.read_input_registers(address, count=count, device_id=1)
                return r.exception_code if r.isError() else r.registers

            assert hr(40099, 1) == [image.registers(3)[40099]]
            assert hr(40100, 1) == 2  # null
            assert hr(40090, 20) == 2  # spans a null
            assert hr(40102, 38) == list(image.blocks[0].registers[102:140])
            assert hr(100, 3) == [1, 2, 3]
            assert hr(99, 2) == 2  # starts in the gap before the block
            assert hr(102, 2) == 2  # runs past the block's end
            assert hr(200, 1) == 2  # input registers are not holding registers
            assert ir(200, 1) == [7]
            assert ir(200, 3) == 2
            assert ir(40000, 2) == 2  # the chain was read with FC 3 only
            assert hr(40000 + 177, 1) == 2  # the end marker's L
            w = c.write_register(100, 5, device_id=1)
            assert w.isError() and w.exception_code == 1
            assert hr(100, 1) == [1]  # a snapshot: the write changed nothing
        finally:
            c.close()


def test_capture_writes_null_where_the_device_refuses(tmp_path, capsys):
    """A refused request is split down to single registers; those refused alone are
    null in the dump, and nothing else is."""
    path = next(p for p in DUMPS if p.name == "veris-e51c2.regs.json")
    image = _holes(path, tmp_path)
    port = free_port()
    with ImageServerThread(image, port) as server:
        assert capture(port, 1, tmp_path / "out.json") == 0
    got = load_image(tmp_path / "out.json")
    chain_block = {a: v for a, v in image.registers(3).items() if a >= 40000}
    assert got.registers(3) == chain_block
    assert [a for a, v in got.registers(3).items() if v is None] == [40100, 40101, 40140, 40177]
    assert "4 refused (null)" in capsys.readouterr().out
    assert set(server.requests.function_codes) == {3}
    # halving, not one request per register: 178 registers, 4 refused
    assert server.requests.function_codes[3] < 60


@pytest.mark.parametrize("base", [0, 50000, 4096])
def test_the_marker_is_found_where_the_device_puts_it(tmp_path, base):
    """Discovery at 40000, 0, 50000 in that order; elsewhere with --base."""
    path = next(p for p in DUMPS if p.name == "veris-e51c2.regs.json")
    doc = json.loads(path.read_text())
    doc["blocks"][0]["address"] = base
    image = parse_image(doc)
    port = free_port()
    extra = ["--base", str(base)] if base not in (0, 50000) else []
    with ImageServerThread(image, port) as server:
        assert capture(port, 1, tmp_path / "out.json", *extra) == 0
    assert load_image(tmp_path / "out.json").registers(3) == image.registers(3)
    # probes: 40000 refused first, then the base (or only the base given)
    assert server.requests.function_codes[3] == 6 + (0 if extra else 1 if base == 0 else 2)


def test_replay_and_capture_on_a_serial_line(tmp_path, capsys):
    """Two dumps replayed behind one RTU line (socat pty pair), each at its unit id,
    captured over Modbus RTU."""
    dev_end, sim_end = tmp_path / "ttyCapture", tmp_path / "ttySim"
    socat = subprocess.Popen(
        ["socat", f"pty,raw,echo=0,link={dev_end}", f"pty,raw,echo=0,link={sim_end}"],
        stderr=subprocess.DEVNULL,
    )

    def device(dev_id: str, kind: str, unit: int, dump) -> str:
        return (
            f"  - {{id: {dev_id}, site: s, {kind}, profile: sunspec, transport: rtu, "
            f"serial: {{port: {dev_end}, baudrate: 38400}}, unit_id: {unit}, "
            f"simulate: {{image: {dump}, serial_port: {sim_end}}}}}\n"
        )

    try:
        wait_for(lambda: dev_end.exists() and sim_end.exists(), 10, "socat pty pair")
        sma, veris = (
            next(p for p in DUMPS if p.name == name)
            for name in ("sma-stp-9338.regs.json", "veris-e51c2.regs.json")
        )
        (tmp_path / "rtu.yaml").write_text(
            "sites: [{id: s, name: S, lat: 22.99, lon: 120.19}]\n"
            "services: {simulator: {control_port: null, cache_dir: null}}\ndevices:\n"
            + device("sma", "kind: inverter", 126, sma)
            + device("veris", "kind: meter, role: main", 1, veris)
        )
        cfg = load_config(tmp_path / "rtu.yaml", env={}, images=True)
        with SimulatorThread(cfg) as sim:
            for name, unit in (("sma", 126), ("veris", 1)):
                out = tmp_path / f"{name}.json"
                rtu = ["--serial", str(dev_end), "--baudrate", "38400", "--unit", str(unit)]
                rc = main(["capture", *rtu, "--timeout-s", "2", "--out", str(out)])
                assert rc == 0, capsys.readouterr().err
                assert load_image(out).registers(3) == sim.devices[name].image.registers(3)
                assert load_image(out).unit_id == unit
                assert json.loads(out.read_text())["source"]["captured"] == f"{dev_end} 38400 8N1"
    finally:
        socat.terminate()
        socat.wait(5)


def test_a_profile_device_captured_and_replayed_from_the_configuration(
    tmp_path, monkeypatch, capsys
):
    """The simulated SDM630 (input registers, FC 4) captured through its profile, served
    by `simulate: {image: ...}` (a path relative to the configuration file), read by
    the collector as the simulator was, and captured again unchanged."""
    noon = datetime(2026, 9, 22, 12, 0, tzinfo=timezone(timedelta(hours=8)))
    site = "sites: [{id: s, name: S, lat: 22.99, lon: 120.19}]\nservices: {simulator: {control_port: null, cache_dir: null}}\n"
    live_port, replay_port = free_port(), free_port()
    (tmp_path / "live.yaml").write_text(
        site + "devices:\n"
        f"  - {{id: hvac, site: s, kind: meter, role: hvac, profile: eastron_sdm630, "
        f"host: 127.0.0.1, port: {live_port}, timeout_s: 2, "
        "simulate: {model: hvac, rated_power_w: 60000, commissioned: 2026-09-01}}\n"
    )
    live = load_config(tmp_path / "live.yaml", env={}, images=True)

    def read(cfg):
        async def go():
            d = cfg.devices[0]
            async with ModbusLink(d) as link:
                return (await reader_for(d).read(link)).fields

        return asyncio.run(go())

    with SimulatorThread(live, clock=ManualClock(noon.timestamp())):
        rc = capture(live_port, 1, tmp_path / "site" / "sdm.json", "--profile", "eastron_sdm630")
        assert rc == 1  # the folder is not there yet
        assert capsys.readouterr().err == (
            f"foursave capture: cannot write {tmp_path / 'site' / 'sdm.json'}: "
            "No such file or directory\n"
        )
        (tmp_path / "site").mkdir()
        rc = capture(live_port, 1, tmp_path / "site" / "sdm.json", "--profile", "eastron_sdm630")
        assert rc == 0
        live_fields = read(live)
    doc = json.loads((tmp_path / "site" / "sdm.json").read_text())
    assert doc["blocks"] and all(b["function"] == 4 for b in doc["blocks"])
    assert doc["source"]["profile"] == "eastron_sdm630"
    first = load_image(tmp_path / "site" / "sdm.json")
    assert first.registers(3) == {} and None not in first.registers(4).values()

    (tmp_path / "site" / "replay.yaml").write_text(
        site + "devices:\n"
        f"  - {{id: hvac-replay, site: s, kind: meter, role: hvac, profile: eastron_sdm630, "
        f"host: 127.0.0.1, port: {replay_port}, timeout_s: 2, simulate: {{image: sdm.json}}}}\n"
    )
    monkeypatch.chdir(ROOT)  # the dump is found beside the configuration, not here
    replay = load_config(tmp_path / "site" / "replay.yaml", env={}, images=True)
    with SimulatorThread(replay) as sim:
        assert read(replay) == live_fields and live_fields["active_power_w"] > 0
        assert capture(replay_port, 1, tmp_path / "again.json", "--profile", "eastron_sdm630") == 0
        with pytest.raises(ValueError, match="replays a register dump: its values do not"):
            sim.faults("hvac-replay", derate_pct=50)
        sim.faults("hvac-replay", exception=4)  # the wire's faults still apply
        r = ModbusTcpClient("127.0.0.1", port=replay_port, timeout=5)
        assert r.connect()
        try:
            assert r.read_input_registers(0, count=2, device_id=1).exception_code == 4
        finally:
            r.close()
        assert set(sim.devices["hvac-replay"].reads.function_codes) == {4}  # reads only
    assert load_image(tmp_path / "again.json").registers(4) == first.registers(4)


def test_capture_errors_are_words_not_tracebacks(tmp_path, capsys):
    """Unreachable host, no SunSpec marker, an unknown profile: one line each, exit 1,
    nothing written."""
    dead = free_port()  # nothing listens there
    out = tmp_path / "never.json"
    where = ["--host", "127.0.0.1", "--port", str(dead), "--unit", "1"]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "foursave",
            "capture",
            *where,
            "--timeout-s",
            "1",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip() == (
        f"foursave capture: cannot connect to 127.0.0.1:{dead}: refused or unreachable "
        "(no answer within 1 s)"
    )
    assert capture(dead, 1, out, "--profile", "acme_9000") == 1
    assert "foursave capture: unknown profile 'acme_9000'; available: [" in capsys.readouterr().err

    no_marker = parse_image({"id": "x", "title": "t", "unit_id": 3, "blocks": [
        {"address": 100, "registers": [1, 2]}]})  # fmt: skip
    port = free_port()
    with ImageServerThread(no_marker, port):
        assert capture(port, 3, out) == 1
        err = capsys.readouterr().err
        assert err.startswith(
            f"foursave capture: no SunSpec marker 'SunS' at 127.0.0.1:{port} unit 3: "
            "40000: exception 02 (illegal data address); 0: exception 02 (illegal data "
            "address); 50000: exception 02 (illegal data address); not a SunSpec device"
        ), err
        assert capture(port, 3, out, "--base", "100") == 1
        assert "100: [1, 2] is not 'SunS' [21365, 28243]" in capsys.readouterr().err
    assert not out.exists()
