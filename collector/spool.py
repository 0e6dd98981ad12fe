"""The collector's disk spool: every reading waits here until an ingester confirmed
it stored it (``collector/ack.py``).

SQLite, in the order readings were taken.  Each row remembers its device and ``seq``
(what an acknowledgement names) and whether the broker accepted it (PUBACK).  Bounded:
past ``max_rows`` the oldest rows go first, counted as ``released`` when the broker
had accepted them (it still holds them for the ingesters, but nobody will publish them
again) and as ``dropped`` when it had not (lost).  The spool, its counters and the
per-device sequence counters survive a restart of the collector.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

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
# added when acknowledgements came; a spool from before has rows with device NULL,
# which leave on the broker's PUBACK as they did then
_COLUMNS = {
    "device": "ALTER TABLE spool ADD COLUMN device TEXT",
    "seq": "ALTER TABLE spool ADD COLUMN seq INTEGER",
    "accepted": "ALTER TABLE spool ADD COLUMN accepted INTEGER NOT NULL DEFAULT 0",
}


def readings_per_s(intervals_s: list[float]) -> float:
    """Readings a collector takes per second when every device answers."""
    return sum(1 / i for i in intervals_s)


def lasts_s(max_rows: int, intervals_s: list[float]) -> float | None:
    """How long a spool of ``max_rows`` holds everything while nothing is confirmed (the
    broker, every ingester or InfluxDB away) before the oldest readings go; None for
    a collector without devices."""
    rate = readings_per_s(intervals_s)
    return max_rows / rate if rate else None


class Spooled(NamedTuple):
    topic: str
    payload: bytes
    device: str | None
    seq: int | None


class Row(NamedTuple):
    id: int
    topic: str
    payload: bytes
    device: str | None


class Committed(NamedTuple):
    dropped: int  # readings dropped (never accepted by the broker) to stay in the bound
    confirmed: list[int]  # spool ids deleted as confirmed by an ingester


class Spool:
    def __init__(self, path: str | Path, max_rows: int):
        self.path = Path(path)
        self.max_rows = max_rows
        # FULL: a committed reading survives a power cut (one fsync per forwarder round,
        # ``Spool.commit``: at most every ROUND_S, in a thread of its own)
        self.db = open_db(self.path, SCHEMA, synchronous="FULL")
        have = {r[1] for r in self.db.execute("PRAGMA table_info(spool)")}
        for name, ddl in _COLUMNS.items():
            if name not in have:
                self.db.execute(ddl)
        self.db.execute("CREATE INDEX IF NOT EXISTS spool_device_seq ON spool (device, seq)")
        self._depth = self.db.execute("SELECT COUNT(*) FROM spool").fetchone()[0]
        self.dropped = self._counter("dropped")
        self.released = self._counter("released")

    def _counter(self, name: str) -> int:
        row = self.db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return row[0] if row else 0

    def _save_counter(self, name: str, value: int) -> None:
        self.db.execute(
            "INSERT INTO counters (name, value) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
            (name, value),
        )

    def last_seqs(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT device, seq FROM device_seq").fetchall())

    def append(self, rows: list[Spooled], seqs: dict[str, int]) -> int:
        """Store readings and the devices' last seq in one transaction.

        Returns how many readings were dropped (never accepted by the broker) to stay
        within the bound; the oldest rows go first (``released`` counts those the
        broker had).  A failure (``sqlite3.Error``: the disk full, ...) stores nothing
        and changes nothing: the caller keeps the rows and tries again."""
        return self.commit(rows, seqs).dropped

    def commit(
        self,
        rows: Sequence[Spooled] = (),
        seqs: Mapping[str, int] | None = None,
        accepted: Sequence[int] = (),
        legacy: Sequence[int] = (),
        acks: Mapping[str, Sequence[tuple[int, int]]] | None = None,
        unspooled_dropped: int = 0,
    ) -> Committed:
        """What a forwarder's round writes, in one transaction (one fsync): the
        confirmations first (``confirm``: the rows they delete make room), the rows the
        broker took (``accept``) and the rows from before acknowledgements it took
        (``delete``), then the new readings and the devices' last seq (``append``) within
        the bound, and ``unspooled_dropped`` readings lost without reaching the spool
        (``drop_unspooled``).  All or nothing: a failure (``sqlite3.Error``) changes
        nothing, in the file or in the counters."""
        confirmed: list[int] = []
        deleted = 0
        with self.db:
            self.db.execute("BEGIN")
            for device, rs in (acks or {}).items():
                for lo, hi in rs:
                    confirmed.extend(
                        r[0]
                        for r in self.db.execute(
                            "DELETE FROM spool WHERE device = ? AND seq BETWEEN ? AND ? "
                            "RETURNING id",
                            (device, lo, hi),
                        )
                    )
            if legacy:
                cur = self.db.executemany("DELETE FROM spool WHERE id = ?", [(i,) for i in legacy])
                deleted = cur.rowcount
            if accepted:
                self.db.executemany(
                    "UPDATE spool SET accepted = 1 WHERE id = ?", [(i,) for i in accepted]
                )
            if rows:
                self.db.executemany(
                    "INSERT INTO spool (topic, payload, device, seq) VALUES (?, ?, ?, ?)", rows
                )
            if seqs:
                self.db.executemany(
                    "INSERT INTO device_seq (device, seq) VALUES (?, ?) "
                    "ON CONFLICT(device) DO UPDATE SET seq = excluded.seq",
                    list(seqs.items()),
                )
            depth = self._depth - len(confirmed) - deleted + len(rows)
            excess = depth - self.max_rows
            gone = []
            if rows and excess > 0:
                gone = self.db.execute(
                    "DELETE FROM spool WHERE id IN (SELECT id FROM spool ORDER BY id LIMIT ?) "
                    "RETURNING accepted",
                    (excess,),
                ).fetchall()
            released = sum(1 for (a,) in gone if a)
            dropped = len(gone) - released
            if gone or unspooled_dropped:
                self._save_counter("dropped", self.dropped + dropped + unspooled_dropped)
                self._save_counter("released", self.released + released)
        # committed: only now do the counters in memory move
        self._depth = depth - len(gone)
        self.dropped += dropped + unspooled_dropped
        self.released += released
        return Committed(dropped, confirmed)

    def drop_unspooled(self, n: int) -> None:
        """Readings that never reached the spool (it could not be written) and were
        dropped from memory: counted with the others once the spool takes writes."""
        self.dropped += n
        self._save_counter("dropped", self.dropped)

    def after(self, cursor: int, limit: int) -> list[Row]:
        """The next rows after spool id ``cursor``, oldest first."""
        return [
            Row(*r)
            for r in self.db.execute(
                "SELECT id, topic, payload, device FROM spool WHERE id > ? ORDER BY id LIMIT ?",
                (cursor, limit),
            )
        ]

    def rows(self, ids: list[int]) -> list[Row]:
        """The rows among ``ids`` still in the spool, oldest first."""
        out: list[Row] = []
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            out.extend(
                Row(*r)
                for r in self.db.execute(
                    f"SELECT id, topic, payload, device FROM spool WHERE id IN ({marks})", chunk
                )
            )
        return sorted(out)

    def accept(self, ids: list[int]) -> None:
        """The broker took these (PUBACK): still waiting for an ingester."""
        if ids:
            self.commit(accepted=ids)

    def confirm(self, acks: Mapping[str, Sequence[tuple[int, int]]]) -> list[int]:
        """Delete what an ingester confirmed stored: ranges of seq per device.  Returns
        the spool ids deleted (a range may name rows already gone: confirmed twice,
        or by two ingesters).  All or nothing: on failure the rows stay, and are sent
        again."""
        return self.commit(acks=acks).confirmed

    def delete(self, ids: list[int]) -> None:
        """Rows from a spool older than acknowledgements leave on the broker's PUBACK."""
        if ids:
            self.commit(legacy=ids)

    @property
    def depth(self) -> int:
        return self._depth

    def close(self) -> None:
        self.db.close()
