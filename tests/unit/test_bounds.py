"""No impossible value is stored (issue 12): the glossary's physical bounds, a device's
own (rating, ``bounds:``), the collector's decoding and the ingester's check.

Checked against what no one here wrote where there is such a thing: pysunspec2's model
definitions (the St enumeration, the "not implemented" encodings) and the register
captures of real devices in tests/devices, whose every normal value must stay
in bounds.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import pytest
from pymodbus.client.mixin import ModbusClientMixin
from sunspec2 import device as ss_device

from foursave.collector.modbus import (
    ProfileReader,
    ReadResult,
    SunSpecReader,
    nameplate_rating,
)
from foursave.collector.plan import RegisterMap, Span
from foursave.collector.profiles import Profile, load_profile
from foursave.collector.sunspec import END_MODEL_ID, SUNS_MARKER, ModelRef, model_layout
from foursave.core.config import Device, parse_config
from foursave.core.glossary import FIELDS, RATED_POWER_MULTIPLE, Bounds, device_bounds
from foursave.core.reading import PayloadError, Reading, decode_reading, decode_status
from foursave.simulators.registers import ProfileImage, SunSpecImage
from foursave.simulators.site import site_models
from tests.helpers import YONGHUA_CONFIG, device_dumps

F32_MAX = 0x7F7FFFFF  # float32 3.4028235e38, the largest finite float32


def device(kind: str = "inverter", **extra) -> Device:
    raw = {"id": "d1", "site": "s", "kind": kind, "profile": "sunspec", "host": "h"}
    if kind == "meter":
        raw["role"] = "main"
    return Device.model_validate({**raw, **extra})


# ------------------------------------------------------------------ the glossary table


def test_every_field_of_every_kind_has_bounds_with_a_reason():
    for kind, fields in FIELDS.items():
        for name, f in fields.items():
            assert isinstance(f.bounds, Bounds), (kind, name)
            assert len(f.bounds.reason) > 10, (kind, name, "a bound says why")
            if f.type not in ("bool", "str"):
                assert f.bounds.min is not None or f.bounds.max is not None or f.bounds.values, (
                    kind,
                    name,
                    "a number has at least one side bounded",
                )


def test_only_power_fields_are_bounded_by_a_rating():
    rated = {(k, n) for k, fs in FIELDS.items() for n, f in fs.items() if f.rating_multiple}
    assert rated == {
        ("inverter", "ac_power_w"),
        ("inverter", "dc_power_w"),
        ("inverter", "ac_apparent_power_va"),
        ("inverter", "ac_reactive_power_var"),
        ("meter", "active_power_w"),
        ("meter", "apparent_power_va"),
        ("meter", "reactive_power_var"),
        ("inverter_string", "dc_power_w"),
        ("battery", "dc_power_w"),
    }


@pytest.mark.parametrize(
    "kind, name, value",
    [
        ("inverter", "ac_frequency_hz", 3.4028234663852886e38),  # float32 0x7F7FFFFF
        ("inverter", "ac_frequency_hz", 655.35),  # uint16 0xFFFF x 10^-2 from a device
        ("inverter", "ac_frequency_hz", 25.0),
        ("inverter", "power_factor", 327.67),  # int16 0x7FFF x 10^-2
        ("inverter", "power_factor", -1.0001),
        ("inverter", "ac_power_w", 3.3e14),
        ("inverter", "state", 59541),
        ("inverter", "state", 0),  # 701's InvSt is 0-based; St is not
        ("inverter", "events", 2**32),
        ("inverter", "events", -1),
        ("inverter", "dc_voltage_v", 1500.1),
        ("inverter", "ac_voltage_v", -1.0),
        ("inverter", "ac_energy_wh", -0.5),
        ("meter", "frequency_hz", 3.4e38),
        ("meter", "import_energy_wh", 1.8e19),
        ("weather", "poa_irradiance_wm2", 6553.5),
        ("weather", "ambient_temp_c", -3276.8),  # int16 0x8000 x 10^-1
        ("weather", "wind_speed_ms", -0.1),
        ("water", "flow_m3h", -2.0),
        ("water", "volume_m3", 4.3e10),
        ("inverter", "ac_frequency_hz", math.nan),
        ("inverter", "ac_frequency_hz", math.inf),
        ("meter", "active_power_w", -math.inf),
    ],
)
def test_impossible_values_are_out_of_bounds(kind, name, value):
    assert not FIELDS[kind][name].bounds.admits(value)


@pytest.mark.parametrize(
    "kind, name, value",
    [
        ("inverter", "ac_frequency_hz", 50.05),
        ("inverter", "ac_frequency_hz", 59.95),
        ("meter", "frequency_hz", 0.0),  # no voltage to measure (an idle unit)
        ("inverter", "power_factor", -1.0),
        ("inverter", "power_factor", 1.0),
        ("inverter", "state", 4),
        ("inverter", "state", 8),
        ("inverter", "events", 2**32 - 1),
        ("inverter", "dc_voltage_v", 1500.0),
        ("inverter", "dc_power_w", -3000.0),  # a hybrid inverter charging its battery
        ("meter", "active_power_w", -250_000.0),  # exporting
        ("meter", "voltage_v", 13_160.0),  # 22.8 kV primary, phase to neutral
        ("weather", "ghi_wm2", -4.0),  # a thermopile at night
        ("weather", "poa_irradiance_wm2", 1_450.0),  # cloud enhancement
        ("weather", "module_temp_c", 78.0),
        ("weather", "ambient_temp_c", -0.0),
        ("water", "flow_m3h", 0.0),
    ],
)
def test_possible_values_are_in_bounds(kind, name, value):
    assert FIELDS[kind][name].bounds.admits(value)


@pytest.mark.parametrize("mid", [101, 102, 103, 111, 112, 113])
def test_state_enumeration_is_pysunspec2s_st(mid):
    st = next(p for p in ss_device.get_model_def(mid)["group"]["points"] if p["name"] == "St")
    assert FIELDS["inverter"]["state"].bounds.values == {s["value"] for s in st["symbols"]}


def test_events_bound_is_evt1s_width():
    evt1 = next(p for p in ss_device.get_model_def(103)["group"]["points"] if p["name"] == "Evt1")
    bits = 16 * int(evt1["size"])
    assert FIELDS["inverter"]["events"].bounds.max == 2**bits - 1
    assert max(s["value"] for s in evt1["symbols"]) < bits


# ------------------------------------------------------------------ per-device bounds


def test_a_rating_bounds_power_at_a_multiple_either_sign():
    b = device_bounds("inverter", 5000)
    cap = RATED_POWER_MULTIPLE * 5000
    assert (b["ac_power_w"].min, b["ac_power_w"].max) == (-cap, cap)
    assert b["ac_power_w"].admits(cap) and not b["ac_power_w"].admits(cap + 1)
    assert b["dc_power_w"].max == cap
    assert b["ac_frequency_hz"] == FIELDS["inverter"]["ac_frequency_hz"].bounds
    # without a rating: the glossary's sanity cap only
    assert device_bounds("inverter")["ac_power_w"] == FIELDS["inverter"]["ac_power_w"].bounds


def test_configured_bounds_narrow_and_the_tightest_wins():
    d = device(
        "meter",
        rated_power_w=60_000,
        bounds={"active_power_w": {"min": 0, "max": 200_000}, "frequency_hz": {"min": 55}},
    )
    b = d.field_bounds()
    assert (b["active_power_w"].min, b["active_power_w"].max) == (0, 90_000)  # rating wins
    assert (b["frequency_hz"].min, b["frequency_hz"].max) == (55, 70)
    assert b["frequency_hz"].admits(0.0)  # 0 Hz still means no voltage
    assert not b["frequency_hz"].admits(50.0)


def test_the_configured_rating_wins_over_the_devices_own():
    assert device(rated_power_w=3000).field_bounds(50_000)["ac_power_w"].max == 4500
    assert device().field_bounds(50_000)["ac_power_w"].max == 75_000


def test_config_errors_name_the_path_and_the_known_fields():
    text = """
sites: [{id: s, name: S, lat: 23, lon: 120}]
devices:
  - id: m1
    site: s
    kind: meter
    role: main
    profile: sunspec
    host: h
    bounds: {ac_frequency_hz: {max: 65}, power_factor: {min: -2}}
"""
    from foursave.core.config import ConfigError

    with pytest.raises(ConfigError) as exc:
        parse_config(text, "site.yaml", env={})
    lines = str(exc.value).splitlines()
    assert lines[0].startswith("site.yaml:10: devices[0].bounds.ac_frequency_hz: unknown field")
    assert "'frequency_hz'" in lines[0] and "'active_power_w'" in lines[0]
    assert lines[1] == (
        "site.yaml:10: devices[0].bounds.power_factor.min: -2 is below the physical bounds "
        "of power_factor, -1 .. 1 (core/glossary.py); bounds only narrow"
    )


# ------------------------------------------------------------------ collector decoding


def sunspec_103(values: dict[str, int | None]) -> tuple[SunSpecReader, ModelRef, list[int]]:
    """A SunSpec reader and model 103's registers as pysunspec2 encodes them."""
    m = ss_device.Model(103)
    m.points["ID"].set_value(103)
    m.points["L"].set_value(model_layout(103).length)
    for name, v in values.items():
        m.points[name].set_value(v)
    data = m.get_mb()
    regs = list(struct.unpack(f">{len(data) // 2}H", data))
    return SunSpecReader(device()), ModelRef(103, 40002, model_layout(103).length), regs


def test_sunspec_impossible_values_are_absent_and_counted():
    reader, ref, regs = sunspec_103(
        {
            "Hz": 60000,
            "Hz_SF": -2,  # 600 Hz
            "PF": 32767,
            "PF_SF": -2,  # 327.67 % -> 3.2767
            "St": 59541,
            "A": 614,
            "A_SF": -2,
            "WH": 88_440_199,
            "WH_SF": 0,
        }
    )
    result = ReadResult({})
    reader.decode_model(ref, regs, result)
    assert result.fields == {"ac_current_a": 6.14, "ac_energy_wh": 88_440_199}
    assert sorted(result.out_of_bounds) == ["ac_frequency_hz", "power_factor", "state"]
    st = result.out_of_bounds["state"]
    assert st.value == 59541 and st.registers == (0xE895,)
    assert "0xE895" in st.describe() and "one of 1, 2" in st.describe()


def test_sunspec_not_implemented_values_are_absent_not_counted():
    """pysunspec2 encodes an unset point as its type's "not implemented" value (0x8000,
    0xFFFF, 0x80000000, acc 0, ...): absent, and not out of bounds either."""
    reader, ref, regs = sunspec_103({})
    result = ReadResult({})
    reader.decode_model(ref, regs, result)
    assert result.fields == {}
    assert result.out_of_bounds == {}
    assert result.errors == []


def test_sunspec_float_model_nan_is_absent_max_float_is_counted():
    m = ss_device.Model(113)
    m.points["ID"].set_value(113)
    m.points["L"].set_value(model_layout(113).length)
    m.points["W"].set_value(4237.5)
    m.points["St"].set_value(4)
    data = m.get_mb()
    regs = list(struct.unpack(f">{len(data) // 2}H", data))  # unset floats: NaN
    hz = model_layout(113).points[(None, "Hz")].offset
    regs[hz : hz + 2] = [F32_MAX >> 16, F32_MAX & 0xFFFF]
    result = ReadResult({})
    SunSpecReader(device()).decode_model(
        ModelRef(113, 40002, model_layout(113).length), regs, result
    )
    assert result.fields == {"ac_power_w": 4237.5, "state": 4}
    assert list(result.out_of_bounds) == ["ac_frequency_hz"]
    assert result.out_of_bounds["ac_frequency_hz"].registers == (0x7F7F, 0xFFFF)


def profile_reader(profile: Profile, dev: Device | None = None) -> ProfileReader:
    return ProfileReader(dev or device("meter", profile=profile.profile), profile)


def profile_regs(profile: Profile, raw: dict[str, list[int]]) -> RegisterMap:
    """Registers of every point of ``profile``: 0s, or the given ones per field."""
    regs = RegisterMap()
    for p in profile.points:
        fc = 3 if p.function == "holding" else 4
        regs.put(Span(fc, p.address, p.count), raw.get(p.field, [0] * p.count))
    return regs


def f32(value: float) -> list[int]:
    return ModbusClientMixin.convert_to_registers(value, ModbusClientMixin.DATATYPE.FLOAT32)


def test_profile_float32_nan_absent_infinities_and_max_float_counted():
    prof = load_profile("eastron_sdm630")
    regs = profile_regs(
        prof,
        {
            "frequency_hz": [0x7F7F, 0xFFFF],  # 3.4e38
            "power_factor": [0x7FC0, 0x0000],  # NaN
            "voltage_v": [0x7F80, 0x0000],  # +Inf
            "current_a": [0xFF80, 0x0000],  # -Inf
            "active_power_w": f32(1234.5),  # a possible value, kept
        },
    )
    result = ReadResult({})
    profile_reader(prof).decode(regs, result)
    assert "power_factor" not in result.fields and "power_factor" not in result.out_of_bounds
    assert set(result.out_of_bounds) == {"frequency_hz", "voltage_v", "current_a"}
    assert "active_power_w" in result.fields
    assert result.errors == []


def test_profile_overflow_after_scaling_is_absent_and_counted():
    prof = Profile.model_validate(
        {
            "profile": "overflowing",
            "manufacturer": "test",
            "model": "x",
            "source": "test",
            "measurement": "meter",
            "points": [
                {
                    "field": "import_energy_wh",
                    "address": 0,
                    "type": "float64",
                    "unit": "MWh",
                    "scale": 1e10,
                },
                {"field": "voltage_v", "address": 4, "type": "uint16", "unit": "V"},
            ],
        }
    )
    big = ModbusClientMixin.convert_to_registers(1e300, ModbusClientMixin.DATATYPE.FLOAT64)
    regs = profile_regs(prof, {"import_energy_wh": big, "voltage_v": [231]})
    result = ReadResult({})
    profile_reader(prof).decode(regs, result)
    assert result.fields == {"voltage_v": 231}
    assert math.isinf(result.out_of_bounds["import_energy_wh"].value)


def test_a_rated_meter_drops_power_beyond_its_rating():
    prof = load_profile("eastron_sdm630")
    scale = next(p.scale for p in prof.points if p.field == "active_power_w")
    reader = profile_reader(prof, device("meter", profile="eastron_sdm630", rated_power_w=60_000))
    over = ReadResult({})
    reader.decode(profile_regs(prof, {"active_power_w": f32(140_000 / scale)}), over)
    assert "active_power_w" in over.out_of_bounds
    ok = ReadResult({})
    reader.decode(profile_regs(prof, {"active_power_w": f32(59_000 / scale)}), ok)
    assert ok.fields["active_power_w"] == pytest.approx(59_000)


# ------------------------------------------------------------------ real devices


def captures() -> list:
    return [pytest.param(p, id=p.name.removesuffix(".regs.json")) for p in device_dumps()]


@pytest.mark.parametrize("path", captures())
def test_real_devices_normal_values_stay_in_bounds(path):
    """Every mapped model of each captured device, decoded as the collector does, with
    its own WRtg where it has a nameplate model: nothing out of bounds."""
    cap = json.loads(path.read_text())
    block = cap["blocks"][0]
    regs = [0xFFFF if r is None else r for r in block["registers"]]  # no register: absent
    assert tuple(regs[:2]) == SUNS_MARKER
    chain, offset = [], 2
    while regs[offset] != END_MODEL_ID:
        chain.append(ModelRef(regs[offset], block["address"] + offset, regs[offset + 1]))
        offset += 2 + regs[offset + 1]
    by_id = {m.model_id: m for m in chain}
    rating = None
    if 120 in by_id:
        m = by_id[120]
        o = m.address - block["address"]
        rating = nameplate_rating(regs[o : o + m.length + 2], m.length)
    # the OutBack prototype's battery port (model 714, ESS) gives impossible values: 6.2e17
    # and 1.8e19 Wh lifetime energy (1e15 Wh is 1 GW for 100 years) and 199 °C on an idle
    # unit; they are left out, the rest of the chain is read
    impossible = (
        {"battery.discharged_energy_wh", "battery.charged_energy_wh", "battery.temp_c"}
        if path.name.startswith("outback")
        else set()
    )
    seen_impossible: set[str] = set()
    decoded = 0
    for kind in ("inverter", "meter", "weather"):
        reader = SunSpecReader(device(kind))
        reader.bounds = reader.device.field_bounds(rating if kind == "inverter" else None)
        for m in chain:
            mm = reader.map.models.get(m.model_id)
            if mm is None or mm.measurement != kind:
                continue
            o = m.address - block["address"]
            result = ReadResult({})
            reader.decode_model(m, regs[o : o + m.length + 2], result)
            assert set(result.out_of_bounds) <= impossible, (m.model_id, result.out_of_bounds)
            seen_impossible |= set(result.out_of_bounds)
            assert result.errors == []
            decoded += len(result.fields) + sum(len(f) for f in result.parts.values())
    assert seen_impossible == impossible
    if not cap.get("synthetic") and "pysunspec2" not in path.name:
        assert decoded > 0
    if path.name.startswith(("fronius", "sma")):
        assert rating in (3000.0, 50_000.0)


# ------------------------------------------------------------------ the simulators


def test_the_simulated_site_serves_only_possible_values():
    """Every simulated device over two days (summer, winter), through its register image
    and the collector's decoding: nothing out of bounds."""
    from datetime import datetime, timedelta, timezone

    cfg = parse_config(YONGHUA_CONFIG, env={})
    models = site_models(cfg)
    tz = timezone(timedelta(hours=8))
    times = [
        datetime(2025, month, 15, tzinfo=tz).timestamp() + h * 1800
        for month in (1, 7)
        for h in range(48)
    ]
    for d in cfg.devices:
        assert d.simulate is not None
        source = models[d.site].source(d)
        if d.profile == "sunspec":
            image = SunSpecImage(
                d.kind, d.simulate.sunspec_models, rated_power_w=d.simulate.rated_power_w
            )
            reader = SunSpecReader(d)
        else:
            image = ProfileImage(load_profile(d.profile))
            reader = ProfileReader(d)
        for t in times:
            values = source.values(t)
            for name, v in values.items():
                assert FIELDS[d.kind][name].bounds.admits(v), (d.id, name, v)
            result = ReadResult({})
            if isinstance(image, SunSpecImage):
                blk = image.update(values)
                offset = 2
                while blk.registers[offset] != END_MODEL_ID:
                    mid, length = blk.registers[offset], blk.registers[offset + 1]
                    if mid in reader.map.models:
                        ref = ModelRef(mid, blk.start + offset, length)
                        reader.decode_model(
                            ref, blk.registers[offset : offset + length + 2], result
                        )
                    offset += 2 + length
            else:
                regs = RegisterMap()
                for function, b in image.update(values).items():
                    regs.put(
                        Span(3 if function == "holding" else 4, b.start, len(b.registers)),
                        b.registers,
                    )
                reader.decode(regs, result)
            assert result.out_of_bounds == {}, (d.id, t, result.out_of_bounds)
            assert result.fields


# ------------------------------------------------------------------ the ingester's check


def payload(kind: str, fields: dict) -> bytes:
    return json.dumps({"ts": 1_790_000_000_000, "seq": 1, "kind": kind, "fields": fields}).encode()


def test_decode_reading_leaves_out_of_bounds_values_out():
    r = decode_reading(
        payload(
            "inverter",
            {
                "ac_power_w": 4200.0,
                "ac_frequency_hz": 3.4e38,
                "power_factor": 327.67,
                "state": 59541,
                "ac_power_watts": 1.0,
            },
        )
    )
    assert r == Reading(
        1_790_000_000_000,
        1,
        "inverter",
        {"ac_power_w": 4200.0},
        dropped=("ac_power_watts",),
        out_of_bounds=("ac_frequency_hz", "power_factor", "state"),
    )


def test_decode_reading_with_every_value_out_of_bounds_is_refused():
    with pytest.raises(PayloadError, match=r"none within the glossary's bounds.*frequency_hz"):
        decode_reading(payload("meter", {"frequency_hz": 655.35, "power_factor": 2.0}))


def test_device_status_carries_the_out_of_bounds_total():
    body = {
        "ts": 1_790_000_000_000,
        "online": True,
        "errors": 0,
        "out_of_bounds": {"a": 12, "b": 3},
    }
    assert decode_status(json.dumps(body).encode())["out_of_bounds"] == 15
    body["out_of_bounds"] = {"a": -1}
    assert "out_of_bounds" not in decode_status(json.dumps(body).encode())


def test_docs_bounds_table_is_the_glossarys():
    """docs/bounds.md is rendered from the glossary, so the two never disagree.  After a
    deliberate change: .venv/bin/python -c "from foursave.core.glossary import
    bounds_table; print(bounds_table(), end='')" > docs/bounds.md"""
    from foursave.core.glossary import bounds_table

    docs = Path(__file__).resolve().parents[2] / "docs" / "bounds.md"
    assert docs.read_text(encoding="utf-8") == bounds_table()
