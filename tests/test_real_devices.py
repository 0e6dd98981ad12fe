"""Every real device's register dump (tests/devices/, ../shared/devices/,
``FOURSAVE_DEVICE_DUMPS``) served over Modbus TCP as the device (``simulate: {image}``),
read by the real collector, carried by a real mosquitto, stored by the real ingester in
a real InfluxDB — and what InfluxDB holds equals what pysunspec2 computes from the same
registers (``point.cvalue``), field by field, power factor as a ratio.

Prints (and writes to test-artifacts/real-devices/<dump>.md) a table: device, fields matched,
fields absent because the device does not implement them, values left out as impossible.
"""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from foursave.collector.modbus import DiscoveryError, ModbusLink, SunSpecReader
from foursave.core.influx import InfluxClient
from foursave.core.influxql import ALL, eq, select
from foursave.core.reading import INFO_FIELDS, SEQ_FIELD
from foursave.localstack import free_port
from foursave.simulators.image import ImageServerThread, parse_image
from tests.helpers import (
    ARTIFACTS,
    CollectorThread,
    IngesterThread,
    Pipeline,
    device_dumps,
    expected_readings,
    make_config,
    wait_for,
)

pytestmark = pytest.mark.integration

KINDS = ("inverter", "meter", "weather")


def devices_for(path, dump) -> tuple[list[dict], dict[str, str]]:
    """One device entry per kind the dump's chain offers, all on the dump's one unit."""
    stem = path.name.removesuffix(".regs.json")
    slug = "".join(c if c.isalnum() else "-" for c in stem.lower())[:40].strip("-")
    entries, kinds = [], {}
    for kind in KINDS:
        if expected_readings(dump, kind) is None:
            continue
        dev_id = f"{slug}-{kind}"
        entry = {
            "id": dev_id,
            "site": "demo",
            "kind": kind,
            "profile": "sunspec",
            "host": "127.0.0.1",
            "unit_id": dump.get("unit_id", 1),
        }
        if kind == "meter":
            entry["role"] = "main"
        if not entries:
            entry["simulate"] = {"image": str(path)}
        else:
            entry["same_port_as"] = entries[0]["id"]
        entries.append(entry)
        kinds[dev_id] = kind
    return entries, kinds


def stored(influx: InfluxClient, measurement: str, device: str) -> list[dict]:
    return influx.rows(select(ALL, measurement, where=[eq("device", device)]))


def close(a, b) -> bool:
    return a == pytest.approx(b, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("path", [pytest.param(p, id=p.stem) for p in device_dumps()])
def test_what_influxdb_holds_is_what_pysunspec2_computes(
    path, tmp_path, broker, influx_url, database
):
    dump = json.loads(path.read_text())
    devices, kinds = devices_for(path, dump)
    assert devices, f"{path.name}: no kind foursave maps"
    table = []
    with Pipeline(tmp_path, broker, influx_url, database, devices=devices, interval_s=0.5) as p:
        wanted = {d: expected_readings(dump, k) for d, k in kinds.items()}

        def all_stored() -> bool:
            for dev_id, kind in kinds.items():
                exp = wanted[dev_id]
                if exp.fields and not stored(p.influx, kind, dev_id):
                    return False
                parts = {m for m, _ in exp.parts}
                if any(not stored(p.influx, m, dev_id) for m in parts):
                    return False
                if not stored(p.influx, "device_info", dev_id):
                    return False
            return True

        wait_for(all_stored, 60, f"{path.name}: every measurement stored")
        for dev_id, kind in kinds.items():
            exp = wanted[dev_id]
            row = stored(p.influx, kind, dev_id)[-1] if exp.fields else {}
            matched, left_out = [], []
            for name, value in exp.fields.items():
                if name not in row or row[name] is None:
                    left_out.append(name)
                    continue
                if name == "power_factor":
                    cvalue, w, va = exp.pf
                    assert close(row[name], cvalue) or close(row[name], cvalue / 100), row[name]
                    assert -1 <= row[name] <= 1
                    if w is not None and va:
                        assert abs(row[name]) == pytest.approx(abs(w) / va, abs=0.01)
                else:
                    assert close(row[name], value), (dev_id, name, row[name], value)
                matched.append(name)
            extra = {k for k, v in row.items() if v is not None} - set(exp.fields)
            extra -= {"time", "site", "device", "role", SEQ_FIELD}
            assert extra <= {"dc_power_w"}, extra  # the strings' sum (SMA), checked below
            if "dc_power_w" in extra:
                strings = [f for (m, _), f in exp.parts.items() if m == "inverter_string"]
                assert close(row["dc_power_w"], sum(f["dc_power_w"] for f in strings))
                matched.append("dc_power_w (Σ strings)")
            part_matched = 0
            for (measurement, tags), fields in exp.parts.items():
                rows = stored(p.influx, measurement, dev_id)
                mine = [r for r in rows if all(r.get(k) == v for k, v in tags)]
                assert mine, (measurement, tags)
                for name, value in fields.items():
                    if mine[-1].get(name) is None:
                        left_out.append(f"{measurement}{list(dict(tags).values()) or ''}.{name}")
                        continue
                    assert close(mine[-1][name], value), (measurement, tags, name)
                    part_matched += 1
            # whatever is left out must be left out as impossible, in the device's status
            status = p.collector.collector.pollers
            poller = next(x for x in status if x.device.id == dev_id)
            impossible = sorted(poller.health.out_of_bounds)
            for name in left_out:
                assert any(name.endswith(o.split(".")[-1]) for o in impossible), (name, impossible)
            info = stored(p.influx, "device_info", dev_id)[-1]
            common = next(m for m in _models(dump) if m.model_id == 1)
            for field, point in (("manufacturer", "Mn"), ("model", "Md"), ("serial", "SN")):
                want = common.points[point].cvalue
                if want:
                    assert info[field] == want.strip(), (field, info[field], want)
            assert (
                set(k for k, v in info.items() if v is not None) - {"time", "site", "device"}
                <= INFO_FIELDS
            )
            table.append(
                (
                    dev_id,
                    len(matched),
                    part_matched,
                    sorted(exp.absent - extra),  # what the collector derives is not absent
                    impossible,
                )
            )
    lines = [
        f"| {d} | {n} | {pn} | {', '.join(a) or '-'} | {', '.join(i) or '-'} |"
        for d, n, pn, a, i in table
    ]
    header = (
        "| device | fields matched | part fields matched | absent (not implemented) "
        "| left out (impossible) |\n| --- | --- | --- | --- | --- |"
    )
    report = f"{path.name}\n\n{header}\n" + "\n".join(lines) + "\n"
    print("\n" + report)
    out = ARTIFACTS / "real-devices"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{path.stem}.md").write_text(report, encoding="utf-8")


def _models(dump):
    from tests.helpers import pysunspec2_models

    return pysunspec2_models(dump)


def _dump(prefix: str) -> dict:
    return json.loads(next(p for p in device_dumps() if p.name.startswith(prefix)).read_text())


def _write(tmp_path, dump: dict, name: str):
    path = tmp_path / name
    path.write_text(json.dumps(dump))
    return path


def test_a_meter_at_the_base_its_vendor_documents(tmp_path, broker, influx_url, database):
    """The Veris dump moved to 4096: read with ``sunspec_base: 4096``; the same device
    without it is not found at 40000, 0, 50000, and the error says where it looked."""
    veris = _dump("veris")
    veris["blocks"][0]["address"] = 4096
    image = _write(tmp_path, veris, "veris-4096.regs.json")
    devices = [
        {
            "id": "veris",
            "site": "demo",
            "kind": "meter",
            "role": "main",
            "profile": "sunspec",
            "host": "127.0.0.1",
            "sunspec_base": 4096,
            "simulate": {"image": str(image)},
        }
    ]
    with Pipeline(tmp_path, broker, influx_url, database, devices=devices, interval_s=0.5) as p:
        wait_for(lambda: stored(p.influx, "meter", "veris"), 30, "the meter at 4096 stored")
        row = stored(p.influx, "meter", "veris")[-1]
        assert row["active_power_w"] == pytest.approx(6540)
        poller = next(x for x in p.collector.collector.pollers if x.device.id == "veris")
        assert poller.reader.info["manufacturer"] == "Veris Industries"
        undiscovered = p.config.device("veris").model_copy(update={"sunspec_base": None})

        async def discover():
            async with ModbusLink(undiscovered) as link:
                await SunSpecReader(undiscovered).read(link)

        with pytest.raises(
            DiscoveryError, match=r"no SunSpec marker 'SunS' at \[40000, 0, 50000\]"
        ):
            asyncio.run(discover())


def test_a_chain_that_breaks_keeps_the_models_before_the_break(
    tmp_path, broker, influx_url, database
):
    """The SMA dump cut after model 160: no end marker, the rest answers exception 02.
    The collector keeps the models it found and reads them."""
    sma = _dump("sma")
    regs = sma["blocks"][0]["registers"]
    i = 2
    while regs[i] != 160:
        i += 2 + regs[i + 1]
    cut = i + 2 + regs[i + 1]
    sma["blocks"][0]["registers"] = regs[:cut]
    image = _write(tmp_path, sma, "sma-cut.regs.json")
    devices = [
        {
            "id": "sma",
            "site": "demo",
            "kind": "inverter",
            "profile": "sunspec",
            "host": "127.0.0.1",
            "unit_id": sma["unit_id"],
            "simulate": {"image": str(image)},
        }
    ]
    with Pipeline(tmp_path, broker, influx_url, database, devices=devices, interval_s=0.5) as p:
        wait_for(lambda: stored(p.influx, "inverter_string", "sma"), 30, "strings stored")
        assert stored(p.influx, "inverter", "sma")[-1]["power_factor"] == pytest.approx(-0.998)
        strings = {r["string"] for r in stored(p.influx, "inverter_string", "sma")}
        assert strings == {"1", "2", "3", "4", "5", "6"}


def test_a_swapped_device_is_noticed(tmp_path, broker, influx_url, database, caplog):
    """The Fronius goes away and another answers at its address (new firmware, another
    serial): the collector discovers it again, logs the change, and the ingester stores
    a second device_info point (the identity_change alert rule reads these,
    tests/test_alerts.py)."""
    fronius = _dump("fronius")
    models = {m.model_id: m for m in _models(fronius)}
    common = models[1]
    before = {"version": common.points["Vr"].cvalue, "serial": common.points["SN"].cvalue}
    swapped = json.loads(json.dumps(fronius))
    regs = swapped["blocks"][0]["registers"]
    # model 1 from base + 2: Mn (16 regs), Md (16), Opt (8), Vr (8), SN (16) after ID, L
    vr, sn = 2 + 2 + 16 + 16 + 8, 2 + 2 + 16 + 16 + 8 + 8
    regs[vr : vr + 8] = _text_regs("0.3.13.2", 8)
    regs[sn : sn + 16] = _text_regs("29251001159999999", 16)
    port = free_port()
    devices = [
        {
            "id": "fronius",
            "site": "demo",
            "kind": "inverter",
            "profile": "sunspec",
            "host": "127.0.0.1",
            "port_fixed": port,
            "timeout_s": 0.5,
            "retries": 0,
            "backoff_max_s": 0.5,
        }
    ]
    cfg = make_config(tmp_path, broker, influx_url, database, devices=devices, interval_s=0.3)
    influx = InfluxClient(influx_url, database)
    caplog.set_level(logging.WARNING, logger="foursave.collector")
    try:
        with IngesterThread(cfg), CollectorThread(cfg) as collector:
            poller = collector.collector.pollers[0]
            with ImageServerThread(parse_image(fronius, "fronius"), port):
                wait_for(lambda: stored(influx, "device_info", "fronius"), 30, "first info")
            # the swap takes longer than a poll: the collector sees the device gone
            wait_for(lambda: not poller.health.online, 30, "the device gone")
            with ImageServerThread(parse_image(swapped, "swapped"), port):
                wait_for(
                    lambda: len(stored(influx, "device_info", "fronius")) == 2,
                    30,
                    "the new device's info",
                )
        first, second = stored(influx, "device_info", "fronius")
    finally:
        influx.close()
    assert (first["version"], first["serial"]) == (before["version"], before["serial"])
    assert (second["version"], second["serial"]) == ("0.3.13.2", "29251001159999999")
    assert any(
        "is not the one it was" in r.getMessage() and "0.3.13.2" in r.getMessage()
        for r in caplog.records
    )


def _text_regs(text: str, n: int) -> list[int]:
    data = text.encode().ljust(2 * n, b"\0")
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, 2 * n, 2)]
