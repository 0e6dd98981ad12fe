"""SQLite files of the services (spool, dead letters, records, incidents): one way to
open them."""

from __future__ import annotations

import sqlite3
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
