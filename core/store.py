"""SQLite files of the services (spool, dead letters, records, incidents): one way to
open them, and one way for several instances of a service to keep apart."""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path


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


class InstanceBusy(Exception):
    """A service instance's file is held by another live process."""


def instance_path(template: str, instance_id: str) -> str:
    """A path setting with ``{id}`` replaced by the instance's id (collector id,
    ingester id, rules partition name), so that several instances from one
    configuration on one machine get files of their own; without ``{id}`` it is the
    path as written (a running single-instance deployment keeps its files)."""
    return template.replace("{id}", instance_id)


def hold(path: str | Path, setting: str) -> contextlib.AbstractContextManager[None]:
    """While the context lasts, this process alone holds ``path`` (an exclusive
    ``flock`` on ``<path>.lock``, released when the process dies, however it dies).
    Another live holder: ``InstanceBusy`` naming the file, the holder's pid and the
    ``setting`` the path comes from."""
    return _held(Path(path), setting)


@contextlib.contextmanager
def _held(path: Path, setting: str) -> Iterator[None]:
    lock = path.with_name(path.name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise InstanceBusy(
                f"{path} is in use by another running process (pid {holder}); {setting} "
                "must name a file of its own for each instance (e.g. with {id} in it)"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
