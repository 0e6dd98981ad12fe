"""Configuration and register-map profile validation, one case folder per behaviour
(the layout of Telegraf's ``plugins/inputs/modbus/testcases``; see tests/cases/README.md):

    tests/cases/config/<case>/config.yaml    + expected.err | expected.ok
    tests/cases/profiles/<case>/profile.yaml + expected.err | expected.ok

Each folder runs through the real loader (``foursave.app.load_config`` with no
environment, profiles checked; ``load_profile_file`` for a register map).
``expected.err`` holds the exact error lines, the file named by its bare name;
``expected.ok`` what the loader made of a valid file.  ``FOURSAVE_UPDATE_CASES=1``
rewrites the expected file from the actual output and still fails that case, so a
rewrite is always looked at (``git diff``) and never passes unseen."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from foursave.app import load_config
from foursave.collector.profiles import REGISTER_COUNT, Profile, ProfileError, load_profile_file
from foursave.core.config import Config, ConfigError
from foursave.core.glossary import FIELDS

CASES = Path(__file__).resolve().parent.parent / "cases"
UPDATE = os.environ.get("FOURSAVE_UPDATE_CASES") == "1"
INPUT = {"config": "config.yaml", "profiles": "profile.yaml"}
EXPECTED = ("expected.err", "expected.ok")


def cases(kind: str) -> list:
    return [pytest.param(d, id=d.name) for d in sorted((CASES / kind).iterdir()) if d.is_dir()]


def config_summary(cfg: Config) -> str:
    """A valid configuration as the services will see it, defaults filled in."""
    out = []
    for s in cfg.sites:
        out.append(f"site {s.id}: {s.name} ({s.lat}, {s.lon}), {s.timezone}")
    for d in cfg.devices:
        kind = f"{d.kind} {d.role}" if d.role else d.kind
        if d.transport == "rtu":
            line = d.serial
            link = (
                f"rtu {line.port} {line.baudrate} {line.bytesize}{line.parity}{line.stopbits}"
                if line
                else "rtu (no serial line)"
            )
        else:
            link = f"{d.transport} {d.host}:{d.port}"
        out.append(
            f"device {d.id}: site {d.site}, {kind}, profile {d.profile}, {link} unit "
            f"{d.unit_id}, every {d.interval_s} s, timeout {d.timeout_s} s, retries {d.retries}"
        )
        if d.rated_power_w is not None or d.bounds:
            rating = f"rated {d.rated_power_w:g} W, " if d.rated_power_w is not None else ""
            narrowed = [
                f"{name} {b.describe()}"
                for name, b in d.field_bounds().items()
                if b != FIELDS[d.kind][name].bounds
            ]
            out.append(f"  {rating}bounds: {'; '.join(narrowed)}")
    for g in cfg.gateways:
        out.append(
            f"gateway {g.address()}: {g.max_connections} connection(s), "
            f"{g.request_gap_s} s between requests, {g.connect_pause_s} s after connecting, "
            f"failing units {'isolated' if g.isolate_failing_units else 'not isolated'}"
        )
    keyed = any(x.collector for x in (*cfg.sites, *cfg.devices))
    if cfg.collectors or cfg.collector_rule or keyed:  # several collectors: who polls what
        for cid in cfg.collector_ids():
            col = cfg.collector_settings(cid)
            polled = ", ".join(
                f"{d.id} ({cfg.collector_reason(d.id)})" for d in cfg.collector_devices(cid)
            )
            out.append(
                f"collector {cid}: spool {col.spool_path}, max_inflight {col.max_inflight}: "
                f"{polled}"
            )
    out.append(f"mqtt {cfg.services.mqtt.url}")
    out.append(f"influxdb {cfg.services.influxdb.url} {cfg.services.influxdb.database}")
    return "\n".join(out) + "\n"


def profile_summary(p: Profile) -> str:
    """A valid register map: each point with the registers it takes."""
    head = f"{p.profile}: {p.measurement}, {p.manufacturer} {p.model}, max_gap {p.max_gap}"
    if p.max_registers != 125:
        head += f", max_registers {p.max_registers}"
    out = [head]
    for pt in p.points:
        last = pt.address + REGISTER_COUNT[pt.type] - 1
        line = (
            f"{pt.label}: {pt.function} {pt.address}..{last} {pt.type} {pt.word_order}, "
            f"{pt.unit} x {pt.scale}"
        )
        if pt.no_value:
            line += ", no value " + " ".join(f"0x{v:X}" for v in pt.no_value)
        out.append(line)
    return "\n".join(out) + "\n"


def run_config(path: Path) -> tuple[str, str]:
    try:
        cfg = load_config(path, env={})
    except ConfigError as exc:
        return "expected.err", "".join(f"{i}\n" for i in exc.issues)
    return "expected.ok", config_summary(cfg)


def run_profile(path: Path) -> tuple[str, str]:
    try:
        prof = load_profile_file(path)
    except ProfileError as exc:
        return "expected.err", f"{exc}\n"
    return "expected.ok", profile_summary(prof)


def check_case(case: Path, kind: str, run: Callable[[Path], tuple[str, str]]) -> None:
    source = case / INPUT[kind]
    files = sorted(p.name for p in case.iterdir())
    given = [f for f in files if f in EXPECTED]
    assert source.name in files and len(given) == 1 and len(files) == 2, (
        f"{case.name}: a case is {source.name} and one of {' or '.join(EXPECTED)}; "
        f"the folder holds {files}"
    )
    outcome, text = run(source)
    text = text.replace(str(source), source.name)  # the same lines wherever the tree lies
    assert str(CASES) not in text, text
    expected_file = case / given[0]
    assert outcome == given[0], (
        f"{case.name}: expected {'an error' if given[0] == 'expected.err' else 'a valid file'}, "
        f"got:\n{text}"
    )
    expected = expected_file.read_text(encoding="utf-8")
    if UPDATE and text != expected:
        expected_file.write_text(text, encoding="utf-8")
        pytest.fail(
            f"{case.name}: {given[0]} rewritten; review it (git diff), rerun without "
            "FOURSAVE_UPDATE_CASES"
        )
    assert text == expected


@pytest.mark.parametrize("case", cases("config"))
def test_config_case(case):
    check_case(case, "config", run_config)


@pytest.mark.parametrize("case", cases("profiles"))
def test_profile_case(case):
    check_case(case, "profiles", run_profile)


def test_the_cases_cover_what_the_issue_names():
    """The cases each behaviour is pinned by are there (a folder renamed or deleted by
    mistake would otherwise just run one test fewer)."""
    config = {d.name for d in (CASES / "config").iterdir() if d.is_dir()}
    profiles = {d.name for d in (CASES / "profiles").iterdir() if d.is_dir()}
    assert {
        "valid-minimal",
        "unknown-profile",
        "profile-for-wrong-kind",
        "duplicate-device-id",
        "duplicate-key",
        "bad-mqtt-url",
        "unknown-key-typo",
        "unknown-site",
        "empty-file",
        "yaml-syntax-error",
        "field-errors-name-line-and-path",
        "cross-reference-errors-after-fields-fixed",
        "device-bounds-and-rating",
        "bounds-unknown-field",
        "bounds-only-narrow",
        "gateway-field-errors",
        "gateway-cross-errors",
        "gateway-valid",
        "collectors-valid",
        "collectors-by-rule",
        "collectors-cross-errors",
        "collectors-unowned-device",
        "collectors-split-gateway",
        "collector-field-errors",
        "collector-rule-bad-id",
    } <= config
    assert {
        "valid-meter",
        "address-out-of-range",
        "unknown-data-type",
        "unknown-canonical-field",
        "duplicate-field",
        "missing-manufacturer",
        "valid-inverter-strings",
        "string-point-without-string",
        "string-on-a-main-point",
        "part-unknown-field",
        "part-not-allowed-for-measurement",
        "no-value-on-a-float",
    } <= profiles
