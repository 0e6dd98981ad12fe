"""Register dumps: a bad file gets an error naming the file and the problem; the
configuration's ``simulate: {image: ...}`` is taken from the file's folder and checked
(simulators/image.py, core/config.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from foursave.app import load_config
from foursave.core.config import ConfigError
from foursave.simulators.image import ImageError, load_image, parse_image
from tests.helpers import device_dumps

GOOD = {"id": "x", "title": "t", "unit_id": 1, "blocks": [{"address": 0, "registers": [1, 2]}]}


def _with(**changes) -> dict:
    doc = json.loads(json.dumps(GOOD))
    doc.update(changes)
    return doc


def _blocks(*blocks: dict) -> dict:
    return _with(blocks=list(blocks))


BAD = {
    "register-too-big": (
        _blocks({"address": 0, "registers": [1, 70000]}),
        "blocks[0].registers[1]: 70000 is not a 16-bit register (0..65535)",
    ),
    "register-negative": (
        _blocks({"address": 0, "registers": [-1]}),
        "blocks[0].registers[0]: -1 is not a 16-bit register (0..65535)",
    ),
    "register-a-string": (
        _blocks({"address": 0, "registers": [1, "12"]}),
        "blocks[0].registers[1]: expected a register value 0..65535, or null where refused "
        "(got '12')",
    ),
    "register-a-float": (
        _blocks({"address": 0, "registers": [1.5]}),
        "blocks[0].registers[0]: expected a register value 0..65535, or null where refused "
        "(got 1.5)",
    ),
    "register-a-bool": (
        _blocks({"address": 0, "registers": [True]}),
        "blocks[0].registers[0]: expected a register value",
    ),
    "past-the-address-space": (
        _blocks({"address": 65530, "registers": [0] * 7}),
        "blocks[0]: address 65530 + 7 registers runs past address 65535 (ends at 65536)",
    ),
    "address-out-of-range": (
        _blocks({"address": 70000, "registers": [0]}),
        "blocks[0].address: Input should be less than or equal to 65535 (got 70000)",
    ),
    "blocks-overlap": (
        _blocks(
            {"address": 100, "registers": [0] * 50},
            {"address": 10, "registers": [0] * 10},
            {"address": 120, "registers": [0] * 5},
        ),
        "blocks[2] (function 3, from 120) overlaps blocks[0] (function 3, 100..149)",
    ),
    "function-not-a-register-read": (
        _blocks({"address": 0, "registers": [0], "function": 6}),
        "blocks[0].function: 6 is not a register read; expected 3 (holding registers) or 4",
    ),
    "unit-id-out-of-range": (
        _with(unit_id=300),
        "unit_id: Input should be less than or equal to 255 (got 300)",
    ),
    "no-blocks": (
        {k: v for k, v in GOOD.items() if k != "blocks"},
        "blocks: required key is missing",
    ),
    "empty-registers": (
        _blocks({"address": 0, "registers": []}),
        "blocks[0].registers: List should have at least 1 item",
    ),
    "misspelt-key": (
        _blocks({"adress": 0, "registers": [0]}),
        "blocks[0].adress: unknown key",
    ),
    "not-an-object": ([1, 2], "expected a JSON object with id, title, unit_id, blocks"),
    "block-not-an-object": (
        _blocks([0, 1]),  # type: ignore[arg-type]
        "blocks[0]: expected an object with address and registers",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD), ids=str)
def test_a_bad_dump_is_refused_with_the_file_and_the_problem(tmp_path, case):
    doc, expected = BAD[case]
    path = tmp_path / "dump.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ImageError) as err:
        load_image(path)
    lines = str(err.value).splitlines()
    assert all(line.startswith(f"{path}: ") for line in lines), lines
    assert any(expected in line for line in lines), lines


def test_not_json_and_no_file_are_named(tmp_path):
    path = tmp_path / "dump.json"
    path.write_text('{"id": "x",\n "blocks": [}')
    with pytest.raises(ImageError, match=r"dump\.json: line 2 column 13: not JSON"):
        load_image(path)
    with pytest.raises(ImageError, match=r"missing\.json: file not found"):
        load_image(tmp_path / "missing.json")


def test_functions_have_address_spaces_of_their_own():
    image = parse_image(
        _blocks(
            {"address": 0, "registers": [1, None, 3]},
            {"address": 0, "registers": [7, 8], "function": 4},
        )
    )
    assert image.registers(3) == {0: 1, 1: None, 2: 3}
    assert image.registers(4) == {0: 7, 1: 8}


@pytest.mark.parametrize("path", device_dumps(), ids=lambda p: p.name)
def test_every_shared_dump_loads(path):
    raw = json.loads(path.read_text())
    image = load_image(path)
    assert image.unit_id == raw["unit_id"]
    assert image.registers(3) == {
        b["address"] + i: v for b in raw["blocks"] for i, v in enumerate(b["registers"])
    }
    assert image.registers(3)[image.blocks[0].address] == 0x5375  # "Su" of "SunS"


# ---------------------------------------------------------------- configuration

SITE = "sites: [{id: s, name: S, lat: 23, lon: 120}]\n"


def _config(folder: Path, simulate: str, unit_id: int = 1) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.yaml"
    path.write_text(
        SITE + "devices:\n"
        f"  - {{id: inv, site: s, kind: inverter, profile: sunspec, host: 127.0.0.1, "
        f"port: 1502, unit_id: {unit_id}, simulate: {simulate}}}\n"
    )
    return path


def test_a_relative_image_is_the_config_files_neighbour(tmp_path, monkeypatch):
    folder = tmp_path / "site"
    (folder).mkdir()
    (folder / "dump.json").write_text(json.dumps(GOOD))
    path = _config(folder, "{image: dump.json}")
    monkeypatch.chdir(tmp_path)  # the command runs elsewhere
    cfg = load_config(path.relative_to(tmp_path), env={}, images=True)
    sim = cfg.devices[0].simulate
    assert sim is not None and sim.model is None
    assert Path(sim.image or "").resolve() == (folder / "dump.json").resolve()
    absolute = _config(tmp_path / "b", f"{{image: {folder / 'dump.json'}}}")
    assert load_config(absolute, env={}).devices[0].simulate.image == str(folder / "dump.json")


@pytest.mark.parametrize(
    ("simulate", "expected"),
    [
        ("{image: d.json, model: pv}", "give 'model' (a simulated device with physics) or 'image'"),
        ("{}", "give 'model' (a simulated device with physics) or 'image'"),
        (
            "{image: d.json, rated_power_w: 3000}",
            "['rated_power_w'] describe a simulated model; a replayed image takes only",
        ),
        ("{image: ''}", "expected the path of a register dump"),
    ],
)
def test_simulate_takes_a_model_or_an_image(tmp_path, simulate, expected):
    with pytest.raises(ConfigError) as err:
        load_config(_config(tmp_path, simulate), env={})
    assert f"config.yaml:3: devices[0].simulate: {expected}" in str(err.value) or (
        f"devices[0].simulate.image: {expected}" in str(err.value)
    ), str(err.value)


def test_check_config_reads_the_dump_and_its_unit_id(tmp_path):
    sma = next(p for p in device_dumps() if p.name == "sma-stp-9338.regs.json")
    (tmp_path / "sma.json").write_text(sma.read_text())
    (tmp_path / "bad.json").write_text(json.dumps(_blocks({"address": 0, "registers": [-5]})))
    mismatch = _config(tmp_path / "a", f"{{image: {tmp_path / 'sma.json'}}}", unit_id=1)
    # only the services that serve dumps read them: a collector does not need the file
    assert load_config(mismatch, env={}).devices[0].unit_id == 1
    with pytest.raises(ConfigError) as err:
        load_config(mismatch, env={}, images=True)
    assert (
        f"devices[0].simulate.image: {tmp_path / 'sma.json'} is a dump of unit 126, the "
        "device has unit_id 1: set unit_id: 126"
    ) in str(err.value)
    assert load_config(
        _config(tmp_path / "b", f"{{image: {tmp_path / 'sma.json'}}}", unit_id=126),
        env={},
        images=True,
    )
    bad = _config(tmp_path / "c", "{image: ../bad.json}")
    with pytest.raises(ConfigError) as err:
        load_config(bad, env={}, images=True)
    assert (
        f"devices[0].simulate.image: {tmp_path / 'c' / '..' / 'bad.json'}: "
        "blocks[0].registers[0]: -5 is not a 16-bit register"
    ) in str(err.value)
    missing = _config(tmp_path / "d", "{image: nowhere.json}")
    with pytest.raises(ConfigError, match=r"nowhere\.json: file not found"):
        load_config(missing, env={}, images=True)
