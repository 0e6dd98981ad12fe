"""The collector's disk spool: every reading waits here until the broker acknowledged it.

SQLite, in the order readings were taken.  Bounded: past ``max_rows`` the oldest
readings not yet handed to the broker are dropped, counted and reported.  The spool
and the per-device sequence counters survive a restart of the collector.
"""

from __future__ import annotations

from pathlib import Path

from foursave.core.store import open_db

SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS device_seq (device TEXT PRIMARY KEY, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class Spool:
    def __init__(self, path: str | Path, max_rows: int):
        self.path = Path(path)
        self.max_rows = max_rows
        # FULL: a committed reading survives a power cut (one fsync per flush, ~50 ms)
        self.db = open_db(self.path, SCHEMA, synchronous="FULL")
        self._depth = self.db.execute("SELECT COUNT(*) FROM spool").fetchone()[0]
        self.dropped = self._counter("dropped")

    def _counter(self, name: str) -> int:
        row = self.db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return row[0] if row else 0

    def last_seqs(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT device, seq FROM device_seq").fetchall())

    def append(
        self, rows: list[tuple[str, bytes]], seqs: dict[str, int], protect_upto: int = 0
    ) -> int:
        """Store readings and the devices' last seq in one transaction.

        Returns how many old readings were dropped to stay within the bound; rows with
        id <= ``protect_upto`` (handed to the broker, waiting for its ack) are kept.
        """
        dropped = 0
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany("INSERT INTO spool (topic, payload) VALUES (?, ?)", rows)
            self.db.executemany(
                "INSERT INTO device_seq (device, seq) VALUES (?, ?) "
                "ON CONFLICT(device) DO UPDATE SET seq = excluded.seq",
                list(seqs.items()),
            )
            self._depth += len(rows)
            excess = self._depth - self.max_rows
            if excess > 0:
                cur = self.db.execute(
                    "DELETE FROM spool WHERE id IN "
                    "(SELECT id FROM spool WHERE id > ? ORDER BY id LIMIT ?)",
                    (protect_upto, excess),
                )
                dropped = cur.rowcount
                self._depth -= dropped
                self.dropped += dropped
                self.db.execute(
                    "INSERT INTO counters (name, value) VALUES ('dropped', ?) "
                    "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                    (self.dropped,),
                )
        return dropped

    def after(self, cursor: int, limit: int) -> list[tuple[int, str, bytes]]:
        return self.db.execute(
            "SELECT id, topic, payload FROM spool WHERE id > ? ORDER BY id LIMIT ?",
            (cursor, limit),
        ).fetchall()

    def delete(self, ids: list[int]) -> None:
        if not ids:
            return
        with self.db:
            self.db.execute("BEGIN")
            cur = self.db.executemany("DELETE FROM spool WHERE id = ?", [(i,) for i in ids])
            self._depth -= cur.rowcount

    @property
    def depth(self) -> int:
        return self._depth

    def close(self) -> None:
        self.db.close()
