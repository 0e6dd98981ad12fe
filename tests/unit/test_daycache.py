"""The simulator's kept daily totals (simulators/daycache.py): counters built from the
cache equal those integrated from commissioning, bit for bit, for every device of the
city hall, in a zone without daylight saving and in one with it; a warm start
integrates no past day; a corrupt or stale file is reported, never served, and rebuilt."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml

from foursave.app import load_config
from foursave.core.clock import ManualClock
from foursave.simulators import daycache
from foursave.simulators.server import Simulator
from foursave.simulators.site import SiteModel, site_models
from tests.helpers import ROOT

pytestmark = pytest.mark.clock  # local days: run again under a second zone in CI

COMMISSIONED = date(2025, 1, 1)  # config/tainan.yaml's devices (the default)


def tainan(tmp_path: Path, zone: str | None = None, seed: int | None = None, **sim):
    """config/tainan.yaml as shipped, its cache in ``tmp_path``; ``zone`` for every
    site."""
    raw = yaml.safe_load((ROOT / "config" / "tainan.yaml").read_text())
    raw["services"]["simulator"]["cache_dir"] = str(tmp_path / "sim-cache")
    if seed is not None:
        raw["services"]["simulator"]["seed"] = seed
    raw["services"]["simulator"].update(sim)
    for s in raw["sites"]:
        if zone:
            s["timezone"] = zone
    path = tmp_path / f"tainan-{(zone or 'taipei').replace('/', '-')}-{seed}.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False))
    return load_config(path, env={})


def at(zone: str, iso: str) -> float:
    return datetime.fromisoformat(iso).replace(tzinfo=ZoneInfo(zone)).timestamp()


def every_value(models: dict[str, SiteModel], t: float) -> dict[str, dict]:
    return {d.id: m.values_at(d.id, t) for m in models.values() for d in m.devices}


def integrated_per_day(model: SiteModel, day: date) -> dict[str, dict[str, float]]:
    """Counters at ``day``'s midnight from each day's own frame, one day at a time, in
    counters_at's order of addition: the integral, with no window to depend on."""
    out: dict[str, dict[str, float]] = {d.id: {} for d in model.devices}
    k = COMMISSIONED
    while k < day:
        frame = model.frame(k, 1)
        for d in model.devices:
            f = frame.devices[d.id]
            for name in ("ac_energy_wh", "import_energy_wh", "export_energy_wh", "volume_m3"):
                if name in f:
                    out[d.id][name] = out[d.id].get(name, 0.0) + float(f[name].sum())
        k += timedelta(days=1)
    return out


# (zone, an earlier instant the cache is first built at, instants read from it later)
CASES = [
    (
        "Asia/Taipei",
        "2025-01-09T15:00:00",
        ["2025-01-20T12:00:00", "2025-01-21T00:00:30", "2025-01-21T00:01:00"],
    ),
    (  # the clocks go forward on 30 March 2025: the cache spans it
        "Europe/Berlin",
        "2025-03-20T12:00:00",
        ["2025-03-30T12:00:00", "2025-03-31T00:00:30", "2025-04-02T13:30:00"],
    ),
]


@pytest.mark.parametrize(("zone", "built", "instants"), CASES, ids=[c[0] for c in CASES])
def test_cached_counters_equal_the_integrated_ones(tmp_path, zone, built, instants):
    cfg = tainan(tmp_path, zone)
    cache_dir = cfg.services.simulator.cache_dir
    # the cache is written by a start at an earlier day, extended by later ones
    first = site_models(cfg, cache_dir)
    every_value(first, at(zone, built))
    assert sum(m.cache.writes for m in first.values() if m.cache) == 3
    for iso in instants:
        t = at(zone, iso)
        cold = site_models(cfg)  # no cache: integrated from commissioning
        warm = site_models(cfg, cache_dir)
        expected, got = every_value(cold, t), every_value(warm, t)
        assert set(got) == {d.id for d in cfg.devices}
        assert got == expected  # every field, counters to the last bit
        day = datetime.fromtimestamp(t, ZoneInfo(zone)).date()
        assert all(m.days_integrated == (day - COMMISSIONED).days for m in cold.values())
        for m in warm.values():
            assert m.cache and not m.cache.problems
        # the counters at that midnight, as the cache's days sum them
        for m in warm.values():
            assert m.counters_at(day) == cold[m.site.id].counters_at(day)


def test_the_integral_does_not_depend_on_the_window_across_a_dst_change(tmp_path):
    """Chunks end where the UTC offset at midnight changes, so each day's totals are its
    own frame's: a cache filled up to any day, then extended, equals one integration."""
    cfg = tainan(tmp_path, "Europe/Berlin")
    day = date(2025, 4, 2)
    model = site_models(cfg)["yonghua"]
    assert model.counters_at(day) == integrated_per_day(model, day)


def test_a_warm_start_integrates_no_past_day(tmp_path):
    cfg = tainan(tmp_path)
    clock = ManualClock(at("Asia/Taipei", "2025-02-03T10:15:00"))
    cold = Simulator(cfg, clock)
    assert {k: m.days_integrated for k, m in cold.sites.items()} == {
        "yonghua": 33,
        "minzhi": 33,
        "landmark": 33,
    }
    files = sorted(p.name for p in Path(cfg.services.simulator.cache_dir).iterdir())
    assert len(files) == 3 and all(f.endswith(".json") for f in files)
    warm = Simulator(cfg, clock)
    assert {m.days_integrated for m in warm.sites.values()} == {0}
    assert all(m.cache and m.cache.writes == 0 for m in warm.sites.values())
    for dev_id, sd in warm.devices.items():
        assert sd.served[-1] == cold.devices[dev_id].served[-1], dev_id
    # the next day: one day more, no more
    clock.t += 86400
    next_day = Simulator(cfg, clock)
    assert {m.days_integrated for m in next_day.sites.values()} == {1}


def _corrupt_float(text: str) -> str:
    doc = json.loads(text)
    dev = next(d for d, f in doc["totals"].items() if f)
    name = next(iter(doc["totals"][dev]))
    doc["totals"][dev][name][3] += 1.0  # one Wh more on one day: a plausible file
    return json.dumps(doc)


def _other_inputs(text: str) -> str:
    """A file that checks out but was written for another seed."""
    doc = json.loads(text)
    doc.pop("sha256")
    doc["inputs"]["seed"] = 1
    body = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    doc["sha256"] = daycache.hashlib.sha256(body).hexdigest()
    return json.dumps(doc)


CORRUPTIONS = {
    "garbage": (lambda text: "\x00\x01 not json", "not JSON"),
    "cut short": (lambda text: text[: len(text) // 2], "not JSON"),
    "one value changed": (_corrupt_float, "checksum mismatch"),
    "other inputs": (_other_inputs, "written for other inputs"),
    "empty": (lambda text: "", "not JSON"),
    "another format": (lambda text: json.dumps({"format": 99}), "format 99"),
}


@pytest.mark.parametrize("how", list(CORRUPTIONS))
def test_a_corrupt_cache_file_is_detected_and_rebuilt_never_served(tmp_path, how):
    cfg = tainan(tmp_path)
    cache_dir = cfg.services.simulator.cache_dir
    day = date(2025, 1, 15)
    good = site_models(cfg, cache_dir)["yonghua"]
    expected = good.counters_at(day)
    assert good.cache is not None
    path = good.cache.path
    damage, problem = CORRUPTIONS[how]
    path.write_text(damage(path.read_text()))

    model = site_models(cfg, cache_dir)["yonghua"]
    assert model.counters_at(day) == expected  # integrated again, not read
    assert model.days_integrated == (day - COMMISSIONED).days
    assert model.cache is not None
    assert len(model.cache.problems) == 1 and problem in model.cache.problems[0]
    # rebuilt: the next start reads it whole
    again = site_models(cfg, cache_dir)["yonghua"]
    assert again.counters_at(day) == expected
    assert again.days_integrated == 0 and again.cache and not again.cache.problems


def test_a_change_of_seed_settings_or_physics_gives_another_key(tmp_path, monkeypatch):
    base = tainan(tmp_path)
    key = site_models(base, "x")["yonghua"].cache.key  # type: ignore[union-attr]

    def key_of(cfg) -> str:
        return site_models(cfg, "x")["yonghua"].cache.key  # type: ignore[union-attr]

    assert key_of(tainan(tmp_path, seed=12)) != key
    assert key_of(tainan(tmp_path, zone="Asia/Tokyo")) != key
    # a device's physics: another rating of the HVAC load changes the main meter too
    raw = yaml.safe_load((ROOT / "config" / "tainan.yaml").read_text())
    hvac = next(d for d in raw["devices"] if d["id"] == "yh-hvac")
    hvac["simulate"]["rated_power_w"] = 950000
    p = tmp_path / "hvac.yaml"
    p.write_text(yaml.safe_dump(raw, allow_unicode=True))
    assert key_of(load_config(p, env={})) != key
    # where a device is served is not physics: the same key
    served = next(d for d in raw["devices"] if d["id"] == "yh-hvac")
    served["simulate"]["rated_power_w"] = 900000
    served["simulate"]["listen_port"] = 16111
    p.write_text(yaml.safe_dump(raw, allow_unicode=True))
    assert key_of(load_config(p, env={})) == key
    # the physics' version, and its code
    monkeypatch.setattr(daycache, "PHYSICS_VERSION", daycache.PHYSICS_VERSION + 1)
    daycache.code_fingerprint.cache_clear()
    try:
        assert key_of(base) != key
    finally:
        monkeypatch.undo()
        daycache.code_fingerprint.cache_clear()
    for sources in ((*daycache.SOURCES, "backfill.py"), ("physics.py", "not-installed.py")):
        monkeypatch.setattr(daycache, "SOURCES", sources)
        daycache.code_fingerprint.cache_clear()
        try:
            assert key_of(base) != key  # a source not installed: a key all the same
        finally:
            monkeypatch.undo()
            daycache.code_fingerprint.cache_clear()
    assert key_of(base) == key


def test_a_stale_file_is_not_read_and_is_removed_when_the_new_one_is_written(tmp_path):
    day = date(2025, 1, 12)
    old = site_models(tainan(tmp_path, seed=1), tainan(tmp_path).services.simulator.cache_dir)
    old["yonghua"].counters_at(day)
    stale = old["yonghua"].cache.path  # type: ignore[union-attr]
    assert stale.exists()
    cfg = tainan(tmp_path)  # another seed, same folder
    model = site_models(cfg, cfg.services.simulator.cache_dir)["yonghua"]
    assert model.counters_at(day) == site_models(cfg)["yonghua"].counters_at(day)
    assert model.days_integrated == (day - COMMISSIONED).days
    assert not stale.exists() and model.cache and model.cache.path.exists()


def test_an_unwritable_cache_folder_only_costs_the_integration(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    cfg = tainan(tmp_path)
    model = site_models(cfg, blocker / "sim-cache")["landmark"]
    day = date(2025, 1, 5)
    assert model.counters_at(day) == site_models(cfg)["landmark"].counters_at(day)
    assert model.cache and model.cache.writes == 0
    assert "not written" in caplog.text
