"""The vendor register-map profiles (collector/profiles/*.yaml, docs/profiles.md),
checked against what someone else published: each source project's own captured or test
registers, decoded by the real ``ProfileReader.decode``, must give the values that
project says they mean.  Where no such example exists (Sungrow), the test says so and
checks the source's decoding rules instead.

Also: parts (a point feeding ``inverter_string``) are bounded by the part's own bounds,
``no_value`` contents are absent, and the simulator's register image serves what it has
no value for as the device would (sentinel, NaN or exception 02), never as a 0."""

from __future__ import annotations

import math
import re
import struct

import pytest

from foursave.collector.modbus import ProfileReader, ReadResult
from foursave.collector.plan import RegisterMap, Span
from foursave.collector.profiles import Profile, available_profiles, load_profile
from foursave.core.config import Device
from foursave.simulators.registers import ProfileImage
from foursave.simulators.site import even_strings

FC3, FC4 = 3, 4
VENDOR = ("huawei_sun2000_2pv", "huawei_sun2000_4pv", "sungrow_sg_rt")
METERS = ("schneider_pm5100", "chint_dtsu666")


def device(profile: str, **kw) -> Device:
    kind = load_profile(profile).measurement
    raw = {"id": "dev", "site": "s", "kind": kind, "profile": profile, "host": "h", "port": 1}
    if kind == "meter":
        raw["role"] = "main"
    return Device.model_validate(raw | kw)


def decode(profile: str, regs: RegisterMap, **kw) -> ReadResult:
    result = ReadResult({})
    ProfileReader(device(profile, **kw)).decode(regs, result)
    return result


def registers(function: int, values: dict[int, int]) -> RegisterMap:
    regs = RegisterMap()
    for address, value in values.items():
        regs.put(Span(function, address, 1), [value])
    return regs


def string(n: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return ("inverter_string", (("string", n),))


def assert_parts(actual: dict, expected: dict) -> None:
    """Parts equal, each part's fields to float precision (approx takes no nesting)."""
    assert set(actual) == set(expected)
    for key, fields in expected.items():
        assert actual[key] == pytest.approx(fields), key


# ----------------------------------------------------------------- every profile


@pytest.mark.parametrize("name", VENDOR + METERS)
def test_each_vendor_profile_loads_and_names_its_source_at_a_commit(name):
    prof = load_profile(name)
    assert name in available_profiles()
    assert re.search(r"@ [0-9a-f]{40}", prof.source), prof.source
    assert prof.profile == name


def test_the_four_input_huawei_map_is_the_two_input_map_with_pv3_and_pv4():
    two, four = load_profile("huawei_sun2000_2pv"), load_profile("huawei_sun2000_4pv")
    extra = [p for p in four.points if p not in two.points]
    assert [p for p in four.points if p in two.points] == list(two.points)
    assert sorted((p.string, p.field, p.address) for p in extra) == [
        ("3", "dc_current_a", 32021),
        ("3", "dc_voltage_v", 32020),
        ("4", "dc_current_a", 32023),
        ("4", "dc_voltage_v", 32022),
    ]
    assert (two.source, two.max_gap, two.max_registers) == (
        four.source,
        four.max_gap,
        four.max_registers,
    )
    assert two.strings() == ("1", "2") and four.strings() == ("1", "2", "3", "4")


# ----------------------------------------------------------------- Huawei SUN2000

# wlcrs/huawei-solar-lib tests/mock_huawei_solar.py at commit
# 4288b329397f2248b68dbb758cbe44c048b0eb91 (2021-07-14): the library's captured answers
# of a SUN2000L-3KTL by day (each answer's data bytes as registers), and
# tests/test_huawei_solar.py at the same commit: what the library says they mean.
HUAWEI_MOCK = {
    32016: 0x0780,  # pv_01_voltage == 192
    32017: 0x00B2,  # pv_01_current == 1.78
    32018: 0x04E6,  # pv_02_voltage == 125.4
    32019: 0x00E0,  # pv_02_current == 2.24
    32020: 0x0000,  # pv_03_voltage == 0
    32021: 0x0000,  # pv_03_current == 0
    32022: 0x0000,  # pv_04_voltage == 0
    32023: 0x0000,  # pv_04_current == 0
    32064: 0x0000,  # input_power == 912
    32065: 0x0390,
    32069: 0x092E,  # phase_A_voltage == 235.0
    32080: 0x0000,  # active_power == 711
    32081: 0x02C7,
    32084: 0x03E8,  # power_factor == 1.0
    32085: 0x1387,  # grid_frequency == 49.99
    32087: 0x010D,  # internal_temperature == 26.9
    32106: 0x0000,  # accumulated_yield_energy == 42.51 (kWh)
    32107: 0x109B,
}


@pytest.mark.parametrize("profile", ["huawei_sun2000_2pv", "huawei_sun2000_4pv"])
def test_huawei_decodes_the_librarys_captured_registers_as_the_library_does(profile):
    result = decode(profile, registers(FC3, HUAWEI_MOCK))
    assert result.errors == [] and result.out_of_bounds == {}
    assert result.fields == pytest.approx(
        {
            "dc_power_w": 912,
            "ac_voltage_v": 235.0,
            "ac_power_w": 711,
            "power_factor": 1.0,
            "ac_frequency_hz": 49.99,
            "cabinet_temp_c": 26.9,
            "ac_energy_wh": 42_510,
        }
    )
    assert result.parts[string("1")] == pytest.approx({"dc_voltage_v": 192, "dc_current_a": 1.78})
    assert result.parts[string("2")] == pytest.approx({"dc_voltage_v": 125.4, "dc_current_a": 2.24})
    if profile.endswith("4pv"):  # the 2-input unit answers 0 for inputs 3 and 4
        assert result.parts[string("4")] == {"dc_voltage_v": 0, "dc_current_a": 0}
    else:
        assert set(result.parts) == {string("1"), string("2")}


def test_huawei_no_value_contents_are_absent_not_numbers():
    """huawei-solar-lib reads I16 0x7FFF, U16 0xFFFF, I32 0x7FFFFFFF and U32 0xFFFFFFFF
    as None (src/huawei_solar/registers.py @ 873c1b3b)."""
    raw = HUAWEI_MOCK | {
        32016: 0x7FFF,  # PV1 voltage: I16 no value
        32085: 0xFFFF,  # frequency: U16 no value
        32080: 0x7FFF,  # active power: I32 no value
        32081: 0xFFFF,
        32106: 0xFFFF,  # energy: U32 no value (would be 42.9 GWh as a number)
        32107: 0xFFFF,
    }
    result = decode("huawei_sun2000_2pv", registers(FC3, raw))
    assert "dc_voltage_v" not in result.parts[string("1")]
    assert result.parts[string("1")]["dc_current_a"] == pytest.approx(1.78)
    assert {"ac_frequency_hz", "ac_power_w", "ac_energy_wh"}.isdisjoint(result.fields)
    assert result.out_of_bounds == {} and result.errors == []


def test_a_string_value_out_of_its_parts_bounds_is_left_out_and_named():
    raw = HUAWEI_MOCK | {32018: 0x7FFE}  # 3276.6 V: beyond the 1,500 V DC limit
    result = decode("huawei_sun2000_2pv", registers(FC3, raw))
    assert "dc_voltage_v" not in result.parts[string("2")]
    oob = result.out_of_bounds["inverter_string[2].dc_voltage_v"]
    assert oob.value == pytest.approx(3276.6) and oob.registers == (0x7FFE,)


def test_a_strings_power_is_bounded_by_the_inverters_rating_and_never_computed():
    prof = Profile.model_validate(
        {
            "profile": "acme",
            "manufacturer": "Acme",
            "model": "x",
            "source": "test",
            "measurement": "inverter",
            "points": [
                {"part": "inverter_string", "string": "a", "field": "dc_power_w"}
                | {"address": 0, "type": "int32", "unit": "W"},
                {"part": "inverter_string", "string": "b", "field": "dc_power_w"}
                | {"address": 2, "type": "int32", "unit": "W"},
                {"field": "ac_power_w", "address": 4, "type": "int32", "unit": "W"},
            ],
        }
    )
    reader = ProfileReader(device("huawei_sun2000_2pv", rated_power_w=4000), prof)
    regs = RegisterMap()
    regs.put(Span(FC3, 0, 6), [0, 7000, 0, 5000, 0, 3900])  # 7 kW > 1.5 x 4 kW
    result = ReadResult({})
    reader.decode(regs, result)
    assert result.parts == {("inverter_string", (("string", "b"),)): {"dc_power_w": 5000}}
    assert "inverter_string[a].dc_power_w" in result.out_of_bounds
    assert "dc_power_w" not in result.fields  # the strings' sum is not this reader's to make


# ----------------------------------------------------------------- Sungrow SG..RT


def test_sungrow_follows_its_sources_addressing_and_word_order():
    """No captured SG..RT register dump with its decoded values was found (docs/
    profiles.md).  What is checked instead is the source's own decoding rule
    (bohdan-s/SungrowClient SungrowClient.py @ 6f184cd4): register N of SunGather's list
    is read at address N - 1, and a U32 is ``register + next x 0x10000`` (low word
    first), with SunGather's "accuracy" as the scale."""
    raw = {
        5011 - 1: 6120,  # mppt_1_voltage, accuracy 0.1 -> 612.0 V
        5012 - 1: 85,  # mppt_1_current, accuracy 0.1 -> 8.5 A
        5013 - 1: 5980,
        5014 - 1: 84,
        5017 - 1: 0xA7F8,  # total_dc_power U32 = 0xA7F8 + 0x0001 x 0x10000 = 108,536 W
        5017: 0x0001,
        5031 - 1: 0x86A0,  # total_active_power U32 = 100,000 W
        5031: 0x0001,
        5035 - 1: 0xFC18,  # power_factor S16 -1000 x 0.001 -> -1.0
        5036 - 1: 600,  # grid_frequency, accuracy 0.1 -> 60.0 Hz
        5144 - 1: 0x4240,  # total_power_yields U32 1,000,000 x 0.1 kWh = 100 MWh
        5144: 0x000F,
        5008 - 1: 0xFFFF,  # internal_temperature S16 0xFFFF: the client's "no value"
    }
    result = decode("sungrow_sg_rt", registers(FC4, raw), rated_power_w=100_000)
    assert result.fields == pytest.approx(
        {
            "dc_power_w": 108_536,
            "ac_power_w": 100_000,
            "power_factor": -1.0,
            "ac_frequency_hz": 60.0,
            "ac_energy_wh": 100_000_000,
        }
    )
    assert_parts(
        result.parts,
        {
            string("1"): {"dc_voltage_v": 612.0, "dc_current_a": 8.5},
            string("2"): {"dc_voltage_v": 598.0, "dc_current_a": 8.4},
        },
    )
    assert "cabinet_temp_c" not in result.fields and not result.out_of_bounds


# ----------------------------------------------------------------- Schneider PM5100


def _blocks(function: int, blocks: dict[int, list[int]]) -> RegisterMap:
    regs = RegisterMap()
    for start, values in blocks.items():
        regs.put(Span(function, start, len(values)), values)
    return regs


# SolarNetwork/solarnetwork-node net.solarnetwork.node.hw.schneider.test/.../
# PM5100DataTests.java at commit 5bf6984e37b79e62c8f377615c94a7726df76cc6: registers
# read from a PM5330 (TEST_DATA_REG_3008, _3074, _3202, saved at those addresses)
PM5330 = {
    3008: [
        *(0x0000, 0x42DB, 0x6A20, 0x3FDA, 0x90FE, 0x3EAB, 0x06E0, 0x3FAF, 0xCF0B, 0x3FDA),
        *(0x90FE, 0x43F8, 0x0A73, 0x43F6, 0xC5B1, 0x43F6, 0xEA0F, 0x43F7, 0x3E11, 0x438E),
        *(0x86AF, 0x438E, 0xF30F, 0x438E, 0xCED0, 0x8000, 0x8000, 0x438E, 0xC2DA, 0x3EA5),
        *(0x5473, 0x3E42, 0xBF84, 0x3E07, 0xE961, 0x3EA5, 0x5473, 0x3E28, 0x9567, 0x3E07),
        *(0x1209, 0x3D06, 0x0D76, 0x3E28, 0x9567, 0x41F5, 0x8370, 0x41FB, 0x2E41, 0x41FD),
        *(0xAEF4, 0x42BB, 0x9829, 0xBFDE, 0x601E, 0x4008, 0x8510, 0xBFED, 0x2324, 0xBFBA),
        *(0x7921, 0x0000),
    ],
    3074: [
        *(0x0000, 0x42BB, 0xF20F, 0x3F80, 0x3461, 0x3F7F, 0x6947, 0x3F80, 0x37C8, 0x3F80),
        *(0x3D3A, 0x3F80, 0x0110, 0x3F7F, 0xDEF3, 0x3F80, 0x0165, 0x3F80, 0x0654),
        *([0x8000] * 16),
        *(0x4270, 0x070C, 0x0000),
    ],
    3202: [
        *(0x0000, 0x0000, 0x0000, 0x046E, 0x73EA, 0x0000, 0x0000, 0x0001, 0x6481, 0x0000),
        *(0x0000, 0x046F, 0xD86B, 0x0000, 0x0000, 0x046D, 0x0F69, 0x0000, 0x0000, 0x0027),
        *(0x90C1, 0x0000, 0x0000, 0x000F, 0xF38A, 0x0000, 0x0000, 0x0037, 0x844B, 0x0000),
        *(0x0000, 0x0017, 0x9D37, 0x0000, 0x0000, 0x0481, 0xCE9A, 0x0000, 0x0000, 0x0011),
        *(0xC261, 0x0000),
    ],
}


def f32(value: float) -> float:
    """``value`` as the float32 a register pair holds (Java's ``60.00688f``)."""
    return struct.unpack(">f", struct.pack(">f", value))[0]


def test_schneider_decodes_solarnetworks_pm5330_registers_as_solarnetwork_does():
    result = decode("schneider_pm5100", _blocks(FC3, PM5330))
    assert result.errors == [] and result.out_of_bounds == {}
    # what PM5100DataTests.interpretBasic asserts of these registers
    assert result.fields["frequency_hz"] == f32(60.00688)
    assert result.fields["voltage_v"] == f32(285.52228)
    # the rest of what PM5100Data makes of them (kW x 1000, Wh as they are)
    assert result.fields["active_power_w"] == pytest.approx(93_797.19, abs=0.01)
    assert result.fields["reactive_power_var"] == pytest.approx(-1_456.82, abs=0.01)
    assert result.fields["apparent_power_va"] == pytest.approx(93_972.77, abs=0.01)
    assert result.fields["import_energy_wh"] == 0x046E73EA == 74_347_498
    assert result.fields["export_energy_wh"] == 0x16481 == 91_265
    # S = 3 x V(L-N) x I(avg), with SolarNetwork's current average (3009) = 109.707275 A
    assert result.fields["apparent_power_va"] == pytest.approx(3 * 285.52228 * 109.707275, 1e-3)
    assert "power_factor" not in result.fields  # 4-quadrant encoding: left out


# ----------------------------------------------------------------- Chint DTSU666

# OpenEMS/openems io.openems.edge.meter.chint/test/.../dtsu666/MeterChintDtsu666ImplTest
# .java at commit 5e7f23a0fbfcb02df81ffd1f70e0efbdcc6433c3: the input registers its dummy
# bridge serves, and the channel values it expects (mV, mA, W, mHz, Wh)
DTSU666 = {
    0x2006: [
        *(0x4510, 0x5000, 0x4510, 0x7000, 0x4510, 0x3000, 0x45A4, 0x1000, 0x4592, 0xE000),
        *(0x4580, 0x2000, 0x46DE, 0xA800, 0x4623, 0xC000, 0x462A, 0x2800, 0x45DE, 0xD000),
    ],
    0x202A: [0x4466, 0x0000],
    0x2044: [0x459C, 0x4C00],
    0x4000: [0x45B1, 0x71DF],
}


def test_chint_decodes_openems_test_registers_as_openems_expects():
    result = decode("chint_dtsu666", _blocks(FC4, DTSU666))
    assert result.errors == [] and result.out_of_bounds == {}
    assert result.fields == pytest.approx(
        {
            "voltage_v": 230_900 / 1000,  # VOLTAGE_L1 230900 mV
            "active_power_w": 2_850,  # ACTIVE_POWER 2850 W
            "power_factor": 920 / 1000,  # TOTAL_POWER_FACTOR 920 (1000 = 1.000)
            "frequency_hz": 50_015 / 1000,  # FREQUENCY 50015 mHz
            "import_energy_wh": 5_678_234,  # ACTIVE_CONSUMPTION_ENERGY 5678234 Wh
        },
        rel=1e-6,
    )


# ----------------------------------------------------------------- the simulator


def test_the_image_serves_what_it_has_no_value_for_as_the_device_would():
    prof = load_profile("huawei_sun2000_2pv")
    image = ProfileImage(prof)
    assert not image.serves("holding", 32016, 4)  # nothing given yet: not implemented
    values = {"ac_power_w": 2500.0, "dc_power_w": 2600.0, "ac_voltage_v": 230.0}
    parts = even_strings({"dc_voltage_v": 600.0, "dc_current_a": 4.0}, prof.strings())
    image.update(values, parts)
    assert image.serves("holding", 32016, 4) and image.serves("holding", 32064, 24)
    regs = RegisterMap()
    for function, block in image.blocks.items():
        regs.put(
            Span(FC3 if function == "holding" else FC4, block.start, len(block.registers)),
            block.registers,
        )
    result = ReadResult({})
    ProfileReader(device("huawei_sun2000_2pv"), prof).decode(regs, result)
    # the fields the source did not give went out as Huawei's "no value", read as absent
    assert result.fields == pytest.approx(values)
    assert_parts(
        result.parts,
        {string("1"): {"dc_voltage_v": 600.0, "dc_current_a": 2.0}}
        | {string("2"): {"dc_voltage_v": 600.0, "dc_current_a": 2.0}},
    )


def test_a_float_point_without_a_value_is_nan_and_an_integer_one_without_a_sentinel_unserved():
    prof = Profile.model_validate(
        {
            "profile": "acme",
            "manufacturer": "Acme",
            "model": "x",
            "source": "test",
            "measurement": "meter",
            "points": [
                {"field": "voltage_v", "address": 0, "type": "float32", "unit": "V"},
                {"field": "active_power_w", "address": 2, "type": "int32", "unit": "W"},
            ],
        }
    )
    image = ProfileImage(prof)
    blocks = image.update({"active_power_w": -1500})
    assert math.isnan(struct.unpack(">f", struct.pack(">HH", *blocks["holding"].registers[:2]))[0])
    assert image.serves("holding", 0, 4)
    image.update({"voltage_v": 230.0})  # the power has no value now: refused, not 0
    assert image.serves("holding", 0, 2) and not image.serves("holding", 0, 4)
    assert not image.serves("holding", 3, 1)


def test_even_strings_split_the_array_and_invent_nothing():
    parts = even_strings(
        {"dc_voltage_v": 610.0, "dc_current_a": 9.0, "ac_power_w": 5000}, ("1", "2", "3")
    )
    assert_parts(
        parts, {string(s): {"dc_voltage_v": 610.0, "dc_current_a": 3.0} for s in ("1", "2", "3")}
    )
    assert even_strings({"dc_voltage_v": 610.0}, ()) == {}
