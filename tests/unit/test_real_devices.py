"""Real devices' register dumps (tests/devices/, ../shared/devices/) decoded as the
collector decodes them, against pysunspec2's own values for the same registers; and the
rules that make them agree: power factor as a ratio, model 701's state, strings' sum.

The end-to-end check (served over Modbus TCP, collected, ingested, read back from
InfluxDB) is tests/test_real_devices.py; this one is the quick, pure half."""

from __future__ import annotations

import json

import pytest
from sunspec2 import device as ss_device

from foursave.collector.modbus import PowerFactorRule, ReadResult, SunSpecReader, part_label
from foursave.collector.sunspec import ModelRef, layout_of, model_layout, point_value
from foursave.core.config import Device
from tests.helpers import device_dumps, expected_readings

KINDS = ("inverter", "meter", "weather")


def device(kind: str, **extra) -> Device:
    raw = {"id": "d1", "site": "s", "kind": kind, "profile": "sunspec", "host": "h"}
    if kind == "meter":
        raw["role"] = "main"
    return Device.model_validate({**raw, **extra})


def decode_dump(dump: dict, kind: str) -> ReadResult | None:
    """The chain of ``dump`` decoded by the collector's reader for a device of ``kind``."""
    block = dump["blocks"][0]
    regs = [0xFFFF if r is None else r for r in block["registers"]]
    reader = SunSpecReader(device(kind))
    chain, i = [], 2
    while regs[i] != 0xFFFF:
        chain.append(ModelRef(regs[i], block["address"] + i, regs[i + 1]))
        i += 2 + regs[i + 1]
    mine = [
        m
        for m in chain
        if m.model_id in reader.map.models and reader.map.models[m.model_id].measurement == kind
    ]
    if not mine:
        return None
    result = ReadResult({})
    for m in mine:
        o = m.address - block["address"]
        reader.decode_model(m, regs[o : o + m.length + 2], result)
    reader._sum_strings(result)
    return result


def dumps():
    return [pytest.param(p, id=p.name.removesuffix(".regs.json")) for p in device_dumps()]


def assert_power_factor(stored: float, exp) -> None:
    """Stored as a ratio: pysunspec2's value or its hundredth, within [-1, 1], and where
    the device gives W and VA, |PF| = |W| / VA (within 0.01)."""
    cvalue, w, va = exp
    assert stored in (pytest.approx(cvalue), pytest.approx(cvalue / 100))
    assert -1 <= stored <= 1
    if w is not None and va:
        assert abs(stored) == pytest.approx(abs(w) / va, abs=0.01)


@pytest.mark.parametrize("path", dumps())
def test_every_dump_decodes_as_pysunspec2_computes(path):
    dump = json.loads(path.read_text())
    any_kind = False
    for kind in KINDS:
        exp = expected_readings(dump, kind)
        got = decode_dump(dump, kind)
        if exp is None:
            assert got is None
            continue
        any_kind = True
        assert got is not None
        oob = set(got.out_of_bounds)
        for name, value in exp.fields.items():
            if name in oob:
                continue  # left out as impossible: checked in tests/unit/test_bounds.py
            if name == "power_factor":
                assert_power_factor(got.fields[name], exp.pf)
            else:
                assert got.fields[name] == pytest.approx(value), (kind, name)
        extra = set(got.fields) - set(exp.fields)
        # the one field the collector adds: DC power as the sum of the strings (SMA)
        assert extra <= {"dc_power_w"}, extra
        if "dc_power_w" in extra:
            strings = [f for (m, _), f in exp.parts.items() if m == "inverter_string"]
            assert got.fields["dc_power_w"] == pytest.approx(sum(f["dc_power_w"] for f in strings))
        for key, fields in exp.parts.items():
            for name, value in fields.items():
                if part_label(key, name) in oob:
                    continue
                assert got.parts[key][name] == pytest.approx(value), (key, name)
        assert set(got.parts) == set(exp.parts)
    assert any_kind, "a dump no device kind maps"


def test_sma_gives_dc_only_per_mppt_and_power_factor_as_a_ratio():
    dump = json.loads(next(p for p in device_dumps() if p.name.startswith("sma")).read_text())
    got = decode_dump(dump, "inverter")
    assert got is not None
    assert got.fields["power_factor"] == pytest.approx(-0.998)  # not -0.00998
    strings = {k[1][0][1]: f for k, f in got.parts.items() if k[0] == "inverter_string"}
    assert sorted(strings) == ["1", "2", "3", "4", "5", "6"]
    assert got.fields["dc_power_w"] == pytest.approx(14_200)  # 1960 + 2460 + ... + 2460
    assert "dc_voltage_v" not in got.fields  # model 103 leaves it not implemented


def test_outback_is_an_inverter_and_a_meter_on_one_unit():
    dump = json.loads(next(p for p in device_dumps() if p.name.startswith("outback")).read_text())
    inv, meter = decode_dump(dump, "inverter"), decode_dump(dump, "meter")
    assert inv is not None and meter is not None
    assert inv.fields["state"] == 4  # InvSt RUNNING (3) is St MPPT (4)
    assert inv.fields["transformer_temp_c"] == 57
    assert inv.parts[("battery", ())]["soc_pct"] == 100
    assert inv.parts[("battery", ())]["dc_voltage_v"] == pytest.approx(56.09)
    assert "frequency_hz" in meter.fields and "ac_power_w" not in meter.fields


# ------------------------------------------------------------------ the rules


def test_inverter_state_of_701_means_what_st_of_103_means():
    """InvSt + 1 = St for every state: the same names in the same order (pysunspec2's
    definitions; 701 says RUNNING where 103 says MPPT)."""

    def symbols(mid: int, name: str) -> dict[int, str]:
        p = next(p for p in ss_device.get_model_def(mid)["group"]["points"] if p["name"] == name)
        return {s["value"]: s["name"] for s in p["symbols"]}

    st, inv_st = symbols(103, "St"), symbols(701, "InvSt")
    assert len(st) == len(inv_st) == 8
    for value, name in inv_st.items():
        assert st[value + 1] == {"RUNNING": "MPPT"}.get(name, name)


@pytest.mark.parametrize(
    ("mode", "pf", "w", "va", "stored", "learnt"),
    [
        ("auto", -99.8, 14470, 14500, -0.998, "percent"),  # beyond ±1: percent
        ("auto", -0.998, 14470, 14500, -0.998, "ratio"),  # agrees with W/VA: a ratio
        ("auto", 0.0, 0, 0, 0.0, None),  # idle: nothing learnt, 0 either way
        ("auto", 0.5, None, None, 0.5, None),  # PF only, within ±1: a ratio
        ("percent", 50.0, 100, 200, 0.5, None),
        ("ratio", 0.95, 95, 100, 0.95, None),
    ],
)
def test_power_factor_rule(mode, pf, w, va, stored, learnt):
    rule = PowerFactorRule(mode)
    value, _ = rule.ratio(pf, w, va)
    assert value == pytest.approx(stored)
    assert rule.learnt == learnt


def test_a_learnt_convention_holds_when_the_load_is_gone():
    """A percent device seen once at load keeps being read as percent at idle, where its
    value alone (1 %) would pass for a ratio; an SMA read as a ratio stays a ratio when
    its W/VA is noise at night."""
    percent = PowerFactorRule()
    percent.ratio(98.0, 4900, 5000)
    assert percent.ratio(1.0, 1, 100)[0] == pytest.approx(0.01)
    ratio = PowerFactorRule()
    ratio.ratio(-0.998, 14470, 14500)
    assert ratio.ratio(-0.998, 0, 10)[0] == pytest.approx(-0.998)


def test_a_group_counted_by_a_point_is_cut_to_what_the_length_holds():
    """Model 714's ports are counted by NPrt: a device saying 40 ports in a model long
    enough for 1 gets 1, and a note for the log."""
    dump = json.loads(next(p for p in device_dumps() if p.name.startswith("outback")).read_text())
    regs = dump["blocks"][0]["registers"]
    i = 2
    while regs[i] != 714:
        i += 2 + regs[i + 1]
    body = list(regs[i : i + 2 + regs[i + 1]])
    layout = layout_of(714, body[1], body)
    assert len(layout.groups["Prt"]) == 1 and not layout.notes
    nprt = layout.points[(None, "NPrt")].offset
    body[nprt] = 40
    cut = layout_of(714, body[1], body)
    assert len(cut.groups["Prt"]) == 1
    assert cut.notes == ("group Prt: NPrt = 40, the length 43 holds 1",)


def test_a_model_longer_than_its_definition_reads_by_its_own_length():
    """Fronius gives the common model L = 65 (the definition: 66): the device's L wins,
    the points that fit are read."""
    layout = model_layout(1, 65)
    assert layout.length == 65
    regs = [1, 65] + [0x4142] * 65
    assert point_value(layout, regs, layout.points[(None, "Mn")]) == "AB" * 16
