"""Each simulated site's daily counter totals, kept in a file so a start integrates no
past day.

A simulated counter at local midnight is the sum of its device's daily totals from its
commissioning date (``SiteModel.counters_at``), and each day's totals are an exact
function of the physics' inputs: the seed, the climate, the site (id, latitude,
longitude, zone), every simulated device of the site with its ``simulate`` settings (a
main meter sums the site's loads and the PV behind it), the physics' code and the
libraries it runs on.  A file holds the totals of the days from the site's first
commissioning date on, as the floats they were computed as (JSON writes a float's
shortest repr, which reads back bit for bit), so counters built from it equal those
integrated afresh to the last bit, not just the last Wh.

Keying: the file is named and stamped with ``site_key``, the SHA-256 of all those
inputs, the code being the SHA-256 of ``physics.py``, ``climate.py`` and ``site.py``
with the versions of numpy, pandas, pvlib and holidays (its calendar decides the
office days) and ``PHYSICS_VERSION`` (bump it for a change these do not show).  Any
change gives another key, hence another file: a stale one is never read, and is removed
when the new one is written.  The payload carries its own SHA-256: a file that does not
parse, fails its checksum, was written for other inputs or has the wrong shape is
reported, removed and rebuilt, never served.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import tempfile
from collections.abc import Sequence
from datetime import date
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from foursave.core.config import Device, Site

log = logging.getLogger("foursave.sim")

FORMAT = 1
PHYSICS_VERSION = 1  # bump when the totals change in a way the hashed code does not show
SOURCES = ("physics.py", "climate.py", "site.py")  # the modules the physics is written in
LIBRARIES = ("numpy", "pandas", "pvlib", "holidays")
# a device's simulate settings that do not change its physics (where and how it is served)
NOT_PHYSICS = frozenset({"listen_host", "listen_port", "serial_port", "sunspec_models", "image"})
KEY_CHARS = 20  # of the key's hex digest, in the file's name

# one day: device -> counter field -> the day's increment
DayTotals = dict[str, dict[str, float]]


@cache
def code_fingerprint() -> str:
    """SHA-256 of the physics' source files, the libraries' versions and
    ``PHYSICS_VERSION``."""
    h = hashlib.sha256(f"physics {PHYSICS_VERSION}\n".encode())
    here = Path(__file__).resolve().parent
    for name in SOURCES:
        try:
            source = (here / name).read_bytes()
        except OSError:  # installed without sources: the package's version stands for them
            source = b"no source; foursave " + _version("foursave").encode()
        h.update(name.encode() + b"\0" + source + b"\0")
    for lib in LIBRARIES:
        h.update(f"{lib}=={_version(lib)}\n".encode())
    return h.hexdigest()


def _version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "absent"


def site_inputs(seed: int, climate: str, site: Site, devices: Sequence[Device]) -> dict[str, Any]:
    """Everything a site's daily totals depend on (``devices`` in the configuration's
    order: the main meter adds the loads in it)."""
    return {
        "physics": code_fingerprint(),
        "seed": seed,
        "climate": climate,
        "site": {"id": site.id, "lat": site.lat, "lon": site.lon, "timezone": site.timezone},
        "devices": [
            {
                "id": d.id,
                "kind": d.kind,
                "simulate": (
                    d.simulate.model_dump(mode="json", exclude=set(NOT_PHYSICS))
                    if d.simulate
                    else None
                ),
            }
            for d in devices
        ],
    }


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def site_key(inputs: Any) -> str:
    return hashlib.sha256(_canonical(inputs)).hexdigest()


class CacheProblem(Exception):
    """Why a cache file is not served."""


class DayTotalsFile:
    """One site's daily totals from its first commissioning date on, in
    ``<directory>/<site>-<key>.json``."""

    def __init__(self, directory: str | os.PathLike[str], site_id: str, inputs: dict[str, Any]):
        self.directory = Path(directory)
        self.site_id = site_id
        self.inputs = inputs
        self.key = site_key(inputs)
        self.path = self.directory / f"{site_id}-{self.key[:KEY_CHARS]}.json"
        self.problems: list[str] = []  # each file discarded, and why
        self.writes = 0
        self._write_failed = False

    # ------------------------------------------------------------------ reading
    def load(self, first: date, device_ids: Sequence[str]) -> list[DayTotals]:
        """The stored days from ``first`` on (``[]`` without a file).  A file that is not
        exactly what this key wrote is reported, removed and not served."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            log.warning("simulator cache %s unreadable (%s): integrating instead", self.path, exc)
            return []
        try:
            return self._parse(raw, first, device_ids)
        except CacheProblem as exc:
            self.problems.append(str(exc))
            log.warning("simulator cache %s discarded: %s; rebuilding it", self.path, exc)
            self._remove(self.path)
            return []

    def _parse(self, raw: bytes, first: date, device_ids: Sequence[str]) -> list[DayTotals]:
        try:
            doc = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CacheProblem(f"not JSON ({exc})") from None
        if not isinstance(doc, dict):
            raise CacheProblem("not a cache document")
        if doc.get("format") != FORMAT:
            raise CacheProblem(f"format {doc.get('format')!r}, expected {FORMAT}")
        stamp = doc.pop("sha256", None)
        try:
            body = _canonical(doc)
        except ValueError as exc:  # NaN or infinity somewhere
            raise CacheProblem(f"not a number ({exc})") from None
        if stamp != hashlib.sha256(body).hexdigest():
            raise CacheProblem("checksum mismatch (the file was changed or cut short)")
        if doc.get("key") != self.key or site_key(doc.get("inputs")) != self.key:
            raise CacheProblem("written for other inputs (seed, site, devices or physics)")
        if doc.get("first_day") != first.isoformat():
            raise CacheProblem(f"starts {doc.get('first_day')}, expected {first}")
        n = doc.get("days")
        totals = doc.get("totals")
        if not isinstance(n, int) or n < 0 or not isinstance(totals, dict):
            raise CacheProblem("no day count or totals")
        if sorted(totals) != sorted(device_ids):
            raise CacheProblem(f"devices {sorted(totals)}, expected {sorted(device_ids)}")
        days: list[DayTotals] = [{dev: {} for dev in device_ids} for _ in range(n)]
        for dev, fields in totals.items():
            if not isinstance(fields, dict):
                raise CacheProblem(f"{dev}: no fields")
            for name, values in fields.items():
                if not isinstance(values, list) or len(values) != n:
                    raise CacheProblem(f"{dev}.{name}: not {n} days")
                for k, v in enumerate(values):
                    if type(v) is not float or not math.isfinite(v):
                        raise CacheProblem(f"{dev}.{name}: day {k} is {v!r}")
                    days[k][dev][name] = v
        return days

    # ------------------------------------------------------------------ writing
    def save(self, first: date, days: Sequence[DayTotals]) -> None:
        """Write the days from ``first`` on (atomically: a reader sees the old file or
        the new one), and remove this site's files of other keys.  A directory that
        cannot be written is logged once; the simulator runs on without the cache."""
        device_ids = sorted(days[0]) if days else []
        doc: dict[str, Any] = {
            "format": FORMAT,
            "key": self.key,
            "inputs": self.inputs,
            "first_day": first.isoformat(),
            "days": len(days),
            "totals": {
                dev: {name: [day[dev][name] for day in days] for name in days[0][dev]}
                for dev in device_ids
            },
        }
        body = _canonical(doc)
        doc["sha256"] = hashlib.sha256(body).hexdigest()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(
                dir=self.directory, prefix=f".{self.site_id}-", suffix=".tmp"
            )
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(_canonical(doc))
                os.replace(tmp, self.path)
            except BaseException:
                self._remove(Path(tmp))
                raise
        except OSError as exc:
            if not self._write_failed:
                log.warning("simulator cache %s not written (%s)", self.path, exc)
                self._write_failed = True
            return
        self.writes += 1
        mine = re.compile(re.escape(self.site_id) + rf"-[0-9a-f]{{{KEY_CHARS}}}\.json")
        for other in self.directory.iterdir():
            if other != self.path and mine.fullmatch(other.name):
                self._remove(other)  # another key's: stale

    @staticmethod
    def _remove(path: Path) -> None:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("simulator cache %s not removed (%s)", path, exc)
