"""SunSpec decoding from pysunspec2's model definitions, checked against pysunspec2."""

from __future__ import annotations

import struct

import pytest
from sunspec2 import device as ss_device

from foursave.collector.sunspec import decode_points, model_layout


def regs_of(model: ss_device.Model) -> list[int]:
    data = model.get_mb()
    return list(struct.unpack(f">{len(data) // 2}H", data))


def model_with(
    mid: int, values: dict[str, int | None], length: int | None = None
) -> ss_device.Model:
    m = ss_device.Model(mid, model_len=length or 0) if length else ss_device.Model(mid)
    m.points["ID"].set_value(mid)
    m.points["L"].set_value(length if length else model_layout(mid).length)
    for name, v in values.items():
        m.points[name].set_value(v)
    return m


@pytest.mark.parametrize("mid", [101, 102, 103, 201, 203, 307])
def test_layout_agrees_with_pysunspec2_for_every_point(mid):
    """Fill every point with a distinct raw value; our offsets must find each one."""
    m = ss_device.Model(mid)
    raw = {}
    for i, (name, p) in enumerate(m.points.items()):
        t = p.pdef["type"]
        if t in ("string", "pad", "ipaddr", "ipv6addr", "eui48", "float32", "float64"):
            continue
        v = 3 + i if t != "sunssf" else -1
        p.set_value(v)
        raw[name] = v
    m.points["ID"].set_value(mid)
    m.points["L"].set_value(model_layout(mid).length)
    regs = regs_of(m)
    layout = model_layout(mid)
    assert layout.total == len(regs)
    # read back through pysunspec2 itself and through our decoder
    back = ss_device.Model(mid, data=bytes(m.get_mb()))
    wanted = [(None, n) for n in raw if n not in ("ID", "L")]
    ours = decode_points(layout, regs, wanted)
    for (_, name), value in ours.items():
        expected = back.points[name].cvalue
        assert value == pytest.approx(expected), name


def test_inverter_103_scale_factors():
    m = model_with(
        103,
        {
            "W": 4237,
            "W_SF": 0,
            "A": 614,
            "A_SF": -2,
            "WH": 88_440_199,
            "WH_SF": 1,
            "Hz": 6001,
            "Hz_SF": -2,
            "St": 4,
            "Evt1": 1 << 7,
        },
    )
    out = decode_points(
        model_layout(103),
        regs_of(m),
        [(None, "W"), (None, "A"), (None, "WH"), (None, "Hz"), (None, "St"), (None, "Evt1")],
    )
    assert out == {
        (None, "W"): 4237,
        (None, "A"): 6.14,
        (None, "WH"): 884_401_990,
        (None, "Hz"): 60.01,
        (None, "St"): 4,
        (None, "Evt1"): 128,
    }


def test_not_implemented_values_are_absent_never_zero():
    # W raw 0x8000 (int16 not implemented), A's scale factor 0x8000, WH acc32 = 0, St 0xFFFF
    m = model_with(103, {"W_SF": 0, "A": 614, "WH_SF": 0, "Hz": 6000, "Hz_SF": -2})
    regs = regs_of(m)
    layout = model_layout(103)
    regs[layout.points[(None, "W")].offset] = 0x8000
    regs[layout.points[(None, "A_SF")].offset] = 0x8000
    out = decode_points(
        layout, regs, [(None, "W"), (None, "A"), (None, "WH"), (None, "St"), (None, "Hz")]
    )
    assert out[(None, "W")] is None
    assert out[(None, "A")] is None
    assert out[(None, "WH")] is None
    assert out[(None, "St")] is None
    assert out[(None, "Hz")] == 60.0


def test_repeating_group_of_302_irradiance():
    layout = model_layout(302, 5)
    assert layout.points[("repeating", "POAI")].offset == 3
    m = ss_device.Model(302, model_len=5)
    m.points["ID"].set_value(302)
    m.points["L"].set_value(5)
    m.groups["repeating"][0].points["POAI"].set_value(943)
    out = decode_points(layout, regs_of(m), [("repeating", "POAI"), ("repeating", "GHI")])
    assert out == {("repeating", "POAI"): 943, ("repeating", "GHI"): None}


def test_the_map_stores_power_factor_unscaled_and_lets_the_rule_decide():
    """Models say percent (103, 203: units Pct) or ratio (213: PF; 701: none), and
    devices do not follow them (SMA, Veris): no PF point carries a fixed scale."""
    from foursave.collector.profiles import load_sunspec_map

    smap = load_sunspec_map()
    pf_points = [
        (mid, p) for mid, mm in smap.models.items() for p in mm.points if p.field == "power_factor"
    ]
    assert {mid for mid, _ in pf_points} >= {101, 103, 113, 203, 213, 701}
    assert all(p.scale == 1 and p.offset == 0 for _, p in pf_points)


def test_float_model_113_and_non_finite_values():
    m = ss_device.Model(113)
    m.points["ID"].set_value(113)
    m.points["L"].set_value(model_layout(113).length)
    m.points["W"].set_value(4237.5)
    m.points["Hz"].set_value(float("inf"))
    regs = regs_of(m)
    out = decode_points(model_layout(113), regs, [(None, "W"), (None, "Hz"), (None, "A")])
    assert out[(None, "W")] == pytest.approx(4237.5)
    assert out[(None, "Hz")] is None  # +Inf is not a measurement
    assert out[(None, "A")] is None  # NaN: not implemented


def test_a_model_shorter_than_its_definition_gives_absent_points():
    m = model_with(103, {"W": 100, "W_SF": 0, "St": 4})
    regs = regs_of(m)[:20]  # L claims 18: the device stops early
    out = decode_points(model_layout(103, 18), regs, [(None, "A"), (None, "W"), (None, "St")])
    assert out[(None, "W")] == 100  # inside the 20 registers given
    assert out[(None, "St")] is None  # beyond them: absent, not garbage
