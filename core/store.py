"""SQLite files of the services (spool, dead letters, records, incidents): one way to
open them, and the files of several instances of a service run from one configuration.

A service's path settings may contain ``{id}``, replaced by the instance's id (the
collector id, the ingester id, the rules partition): ``instance_path``.  A process
holds its files with an exclusive lock on ``<path>.lock`` for as long as it uses them
(``hold``), so a second process given the same file refuses to start, naming the file
and the setting, instead of both writing it."""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path


class InstanceBusy(Exception):
    """Another live process holds the file (its message names the file and the setting)."""


def open_db(path: str | Path, schema: str, synchronous: str | None = None) -> sqlite3.Connection:
    """Open (creating folder and tables as needed) in autocommit, WAL mode; callers
    group writes with an explicit BEGIN where several rows must land together."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    if synchronous:
        db.execute(f"PRAGMA synchronous={synchronous}")
    db.executescript(schema)
    return db


def instance_path(template: str, instance_id: str) -> str:
    """``template`` with ``{id}`` replaced by ``instance_id`` (only that: a path may hold
    other braces); a template without ``{id}`` is every instance's one file."""
    return template.replace("{id}", instance_id)


@contextlib.contextmanager
def hold(path: str | Path, setting: str) -> Iterator[None]:
    """Hold ``path`` for this process: an exclusive ``flock`` on ``<path>.lock``, let go
    on leaving (and by the kernel when the process dies, however it dies).  Raises
    ``InstanceBusy`` when another process (or another holder in this one) has it."""
    lock = Path(f"{path}.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            by = f"process {holder}" if holder.isdigit() else "another process"
            raise InstanceBusy(
                f"{path} ({setting}) is in use by {by} (lock {lock}): give each instance "
                f"its own file, e.g. with {{id}} in {setting}"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor lets the lock go
