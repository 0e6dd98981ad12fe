"""Which sites a rules partition owns (rules/partition.py), without any server: the
shard assignment is stable, disjoint and covering, moves as little as it can, and bad
``--shard`` / ``--sites`` are refused in words."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from foursave.core.config import parse_config
from foursave.rules.partition import (
    PartitionError,
    assignment,
    listing,
    parse_shard,
    shard,
    shard_of,
    sites_partition,
    whole,
)
from tests.helpers import ROOT

SITES = [f"school-{k:03d}" for k in range(300)] + ["yonghua", "minzhi", "landmark"]


def _cfg(site_ids: list[str]):
    sites = ", ".join(f"{{id: {s}, name: {s}, lat: 23, lon: 120}}" for s in site_ids)
    devices = "\n".join(
        f"  - {{id: m-{s}, site: {s}, kind: meter, role: main, profile: sunspec, "
        f"host: h, port: {k + 1}}}"
        for k, s in enumerate(site_ids)
    )
    return parse_config(f"sites: [{sites}]\ndevices:\n{devices}\n", env={})


def test_every_site_has_exactly_one_shard_of_n():
    for n in (1, 2, 3, 5, 8):
        shards = assignment(SITES, n)
        assert sorted(shards) == list(range(1, n + 1))
        owned = [s for sites in shards.values() for s in sites]
        assert sorted(owned) == sorted(SITES)  # covering, and disjoint (no site twice)
        assert all(shard_of(s, n) == i for i, sites in shards.items() for s in sites)
    # 303 sites spread over 4 shards: none empty, none with most of them
    sizes = [len(v) for v in assignment(SITES, 4).values()]
    assert min(sizes) > 303 / 4 / 2 and max(sizes) < 303 / 4 * 2, sizes


def test_the_assignment_is_the_same_in_another_process_whatever_its_hash_seed():
    # not Python's hash() (salted per process): sha256 of the site id
    code = (
        "import json, sys; from foursave.rules.partition import assignment; "
        "print(json.dumps(assignment(json.loads(sys.argv[1]), 5)))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(SITES)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    there = {int(k): v for k, v in json.loads(out.stdout).items()}
    assert there == assignment(SITES, 5)


def test_a_site_added_or_removed_moves_no_other_site():
    before = {s: shard_of(s, 4) for s in SITES}
    after = {s: shard_of(s, 4) for s in [*SITES, "new-library"]}
    assert {s: after[s] for s in SITES} == before
    fewer = SITES[:-1]
    assert {s: shard_of(s, 4) for s in fewer} == {s: before[s] for s in fewer}
    # a config's order does not matter either
    assert assignment(list(reversed(SITES)), 4) == {
        i: list(reversed(v)) for i, v in assignment(SITES, 4).items()
    }


def test_one_more_shard_moves_only_the_sites_it_takes():
    for n in (1, 2, 4, 7):
        moved = {s for s in SITES if shard_of(s, n) != shard_of(s, n + 1)}
        assert all(shard_of(s, n + 1) == n + 1 for s in moved)  # only to the new shard
        # about one in n + 1 (303 sites: a generous band around the expectation)
        assert 0.5 / (n + 1) < len(moved) / len(SITES) < 1.6 / (n + 1), (n, len(moved))


def test_shard_text_is_checked_in_words():
    assert parse_shard("2/3") == (2, 3)
    assert parse_shard(" 1 / 1 ") == (1, 1)
    for bad, says in (
        ("x", "give i/n"),
        ("1", "give i/n"),
        ("1/2/3", "give i/n"),
        ("-1/2", "give i/n"),
        ("0/2", "must be 1 to 2"),
        ("3/2", "must be 1 to 2"),
        ("1/0", "at least 1"),
    ):
        with pytest.raises(PartitionError, match=says):
            parse_shard(bad)


def test_partitions_restrict_the_configuration_to_their_sites_and_devices():
    cfg = _cfg(["a", "b", "c", "d", "e"])
    shards = assignment([s.id for s in cfg.sites], 2)
    for i in (1, 2):
        part = shard(cfg, i, 2)
        assert part.id == f"shard-{i}-of-2" and list(part.sites) == shards[i]
        own = part.restrict(cfg)
        assert [s.id for s in own.sites] == shards[i]
        assert [d.id for d in own.devices] == [f"m-{s}" for s in shards[i]]
        assert cfg.sites == _cfg(["a", "b", "c", "d", "e"]).sites  # the config untouched
    # what belongs to no site is one partition's: the one owning the lowest site id
    assert [shard(cfg, i, 2).site_less for i in (1, 2)].count(True) == 1
    assert shard(cfg, shard_of("a", 2), 2).site_less
    owner = shard(cfg, shard_of("a", 2), 2)
    assert owner.owns("removed-site") and owner.owns("a")
    other = shard(cfg, 3 - shard_of("a", 2), 2)
    assert not other.owns("removed-site") and not other.owns("a")
    assert all(other.owns(s) for s in other.sites)
    everything = whole(cfg)
    assert everything.id == "all" and everything.restrict(cfg) is cfg and everything.site_less


def test_sites_are_named_and_unknown_ones_refused_with_the_known_ones():
    cfg = _cfg(["yonghua", "minzhi", "landmark"])
    part = sites_partition(cfg, ["landmark", "yonghua"], "city.yaml")
    assert part.id == "sites-landmark-yonghua"
    assert part.sites == ("yonghua", "landmark")  # the configuration's order
    with pytest.raises(PartitionError) as err:
        sites_partition(cfg, ["yonghua", "zhongshan"], "city.yaml")
    text = str(err.value)
    assert "'zhongshan'" in text and "city.yaml" in text
    assert "yonghua, minzhi, landmark" in text
    with pytest.raises(PartitionError, match="give one or more"):
        sites_partition(cfg, [" ", ""], "city.yaml")
    many = sites_partition(_cfg(SITES), SITES[:50], "city.yaml")
    assert many.id.startswith("sites-50-") and len(many.id) <= 48  # a name, not a list


def test_an_empty_shard_is_refused_and_the_listing_shows_every_shard():
    cfg = _cfg(["only"])
    empty = next(i for i in (1, 2, 3) if shard_of("only", 3) != i)
    with pytest.raises(PartitionError, match="owns none"):
        shard(cfg, empty, 3)
    lines = listing(cfg, 3, empty)
    assert len(lines) == 4
    assert any(ln.startswith("*") and f"shard-{empty}-of-3" in ln for ln in lines)
    owner = next(ln for ln in lines if "only" in ln.split(":")[-1])
    assert f"shard-{shard_of('only', 3)}-of-3" in owner and "no site" in owner
