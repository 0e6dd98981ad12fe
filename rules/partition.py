"""The rules engine partitioned by site: which sites a ``foursave rules`` process owns.

``foursave rules --shard i/n`` owns the sites that rendezvous (highest random weight)
hashing gives to shard ``i`` of ``n``: each site goes to the shard with the highest
``sha256("<site id>\\n<shard>")`` (the first 8 bytes read as an unsigned big-endian
number; 1 <= shard <= n).  That is a pure function of the site's id and ``n``, the same
on every machine and in every Python process, so every partition started from one
configuration agrees on it without talking to the others, and:

- adding or removing a site moves no other site (a site's shard depends on its id
  alone);
- going from ``n`` to ``n + 1`` shards moves only the sites the new shard wins, about
  one in ``n + 1``;
- a shard may own no site when there are few sites (it is then refused: use fewer).

``foursave rules --sites a,b`` owns the sites named.  ``foursave rules`` alone owns every
site (partition ``all``).  ``foursave rules --shard i/n --list`` prints each shard's sites.

A partition evaluates only its sites: the engine is given the configuration restricted
to them and their devices (:meth:`Partition.restrict`), so every alert rule, ledger row,
rollup row and derived point it computes is of its own sites.  What is not of one site is
owned by one partition only, the one that owns the configuration's first site id in
sorted order (:attr:`Partition.site_less`): today, the acknowledgements of incidents whose
site is no longer in the configuration (no other partition would ever write them to
alert history).  No alert rule kind is site-less at present (a dead collector is seen as
its devices' ``stale`` alerts, which are per site); one that is must be evaluated only
where :attr:`Partition.site_less` holds.

That two partitions never evaluate the same site is guarded at start-up by their claims
on the broker (``rules/claim.py``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from foursave.core.config import Config

ALL = "all"  # the partition of a `foursave rules` that owns every site
SITES_ID_MAX = 48  # a --sites partition longer than this is named by a digest of its sites

_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


class PartitionError(ValueError):
    """A --shard or --sites the configuration cannot serve (the message says why)."""


def weight(site_id: str, shard: int) -> int:
    """The rendezvous weight of ``site_id`` for ``shard``: sha256, first 8 bytes."""
    digest = hashlib.sha256(f"{site_id}\n{shard}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def shard_of(site_id: str, n: int) -> int:
    """The shard (1..n) that owns ``site_id`` among ``n``: the highest weight wins (a
    tie, never seen with 64-bit weights, goes to the lower shard)."""
    if n < 1:
        raise PartitionError(f"the number of shards must be at least 1, not {n}")
    return max(range(1, n + 1), key=lambda i: (weight(site_id, i), -i))


def assignment(site_ids: Iterable[str], n: int) -> dict[int, list[str]]:
    """Shard (1..n, every one present) -> the sites it owns, in the order given."""
    out: dict[int, list[str]] = {i: [] for i in range(1, n + 1)}
    for s in site_ids:
        out[shard_of(s, n)].append(s)
    return out


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> (i, n) with 1 <= i <= n; a clear ``PartitionError`` otherwise."""
    m = _SHARD.match(text)
    if not m:
        raise PartitionError(f"--shard {text!r}: give i/n, the shard and how many, e.g. 1/4")
    i, n = int(m.group(1)), int(m.group(2))
    if n < 1:
        raise PartitionError(f"--shard {text!r}: the number of shards must be at least 1")
    if not 1 <= i <= n:
        raise PartitionError(f"--shard {text!r}: the shard must be 1 to {n}")
    return i, n


@dataclass(frozen=True)
class Partition:
    """The sites one ``foursave rules`` process owns, among all of its configuration's."""

    id: str  # "all", "shard-1-of-4", "sites-a-b": names its claim and its log lines
    sites: tuple[str, ...]  # in the configuration's order
    all_sites: tuple[str, ...]

    @property
    def site_less(self) -> bool:
        """Whether this partition does what belongs to no site (module docstring): the
        one owning the lowest site id."""
        return bool(self.all_sites) and min(self.all_sites) in self.sites

    def owns(self, site_id: str) -> bool:
        """Whether an incident, point or record of ``site_id`` is this partition's: its
        own sites', and those of sites not configured at all when :attr:`site_less`."""
        return site_id in self.sites or (self.site_less and site_id not in self.all_sites)

    def restrict(self, config: Config) -> Config:
        """``config`` with only this partition's sites and their devices (the whole
        ``config`` itself for ``all``): what the partition's engine is given."""
        if set(self.sites) == set(self.all_sites):
            return config
        mine = set(self.sites)
        return config.model_copy(
            update={
                "sites": tuple(s for s in config.sites if s.id in mine),
                "devices": tuple(d for d in config.devices if d.site in mine),
            }
        )

    def describe(self) -> str:
        return f"{self.id} ({len(self.sites)} site(s): {', '.join(self.sites)})"


def whole(config: Config) -> Partition:
    ids = tuple(s.id for s in config.sites)
    return Partition(ALL, ids, ids)


def shard(config: Config, i: int, n: int) -> Partition:
    """Shard ``i`` of ``n`` of ``config``'s sites (``PartitionError`` when it owns none)."""
    ids = tuple(s.id for s in config.sites)
    mine = tuple(assignment(ids, n)[i])
    if not mine:
        raise PartitionError(
            f"--shard {i}/{n}: this shard owns none of the configuration's {len(ids)} "
            f"site(s) (`foursave rules --shard {i}/{n} --list` shows who owns what); "
            "run fewer shards"
        )
    return Partition(f"shard-{i}-of-{n}", mine, ids)


def sites_partition(config: Config, names: Sequence[str], source: str) -> Partition:
    """The partition of the sites named (``--sites a,b``); an unknown name is refused
    with the configuration's sites (``source``: the configuration file)."""
    ids = tuple(s.id for s in config.sites)
    wanted = [n.strip() for n in names if n.strip()]
    if not wanted:
        raise PartitionError("--sites: give one or more site ids, separated by commas")
    unknown = [n for n in wanted if n not in ids]
    if unknown:
        raise PartitionError(
            f"--sites: unknown site(s) {', '.join(repr(u) for u in unknown)} in {source}; "
            f"its sites are: {', '.join(ids)}"
        )
    mine = tuple(s for s in ids if s in set(wanted))
    name = "sites-" + "-".join(sorted(mine))
    if len(name) > SITES_ID_MAX:
        digest = hashlib.sha256(",".join(sorted(mine)).encode()).hexdigest()[:12]
        name = f"sites-{len(mine)}-{digest}"
    return Partition(name, mine, ids)


def listing(config: Config, n: int, current: int | None = None) -> list[str]:
    """What ``foursave rules --shard i/n --list`` prints: each shard's sites and devices
    (``current`` marked), and who does what belongs to no site."""
    ids = [s.id for s in config.sites]
    devices: dict[str, int] = {}
    for d in config.devices:
        devices[d.site] = devices.get(d.site, 0) + 1
    lines = [f"{len(ids)} site(s) in {n} shard(s), by rendezvous hashing of the site ids (sha256):"]
    first = min(ids)
    for i, sites in assignment(ids, n).items():
        mark = "*" if i == current else " "
        n_dev = sum(devices.get(s, 0) for s in sites)
        extra = "  (also what belongs to no site)" if first in sites else ""
        lines.append(
            f"{mark} shard-{i}-of-{n}: {len(sites)} site(s), {n_dev} device(s): "
            f"{', '.join(sites) or '(none)'}{extra}"
        )
    return lines
