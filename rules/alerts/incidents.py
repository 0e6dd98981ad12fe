"""Incidents: their SQLite store (they survive a restart), the acknowledgement use
case (the CLI's ``alerts ack`` and the API's ``POST /alerts/{id}/ack``) and its point
in alert history.

An acknowledgement is stored first and marked for alert history (``ack_pending``);
the point is written by whoever may write to InfluxDB: at once when the caller's
client is a writer, else by the rules engine on its next pass
(:meth:`~foursave.rules.alerts.AlertEngine.evaluate`, :func:`write_pending_acks`).  The
API and the CLI log in as the reader or not at all, so they never write; a failed
write stays pending and is tried again on the next pass."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from foursave.core.influx import InfluxClient, InfluxRejected, InfluxUnavailable
from foursave.core.reading import to_line
from foursave.core.store import open_db

SCHEMA = """
CREATE TABLE IF NOT EXISTS incidents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    rule_id TEXT NOT NULL, site TEXT NOT NULL, device TEXT NOT NULL,
    state TEXT NOT NULL, value REAL,
    pending_since REAL NOT NULL, fired_at REAL, resolved_at REAL,
    acked_by TEXT, acked_at REAL, ack_comment TEXT,
    last_notified_at REAL, notifications INTEGER NOT NULL DEFAULT 0,
    detail TEXT,
    ack_pending INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS open_incidents ON incidents (rule_id, device, state);
"""
# Incident's fields in order, named: a store upgraded by ALTER TABLE may hold its
# columns in another order than SCHEMA
COLUMNS = (
    "id, rule_id, site, device, state, value, pending_since, fired_at, resolved_at, "
    "acked_by, acked_at, ack_comment, last_notified_at, notifications, detail, ack_pending"
)


@dataclass
class Incident:
    id: int
    rule_id: str
    site: str
    device: str
    state: str  # pending | firing | resolved | cancelled
    value: float | None
    pending_since: float
    fired_at: float | None
    resolved_at: float | None
    acked_by: str | None
    acked_at: float | None
    ack_comment: str | None
    last_notified_at: float | None
    notifications: int
    detail: str | None = None  # what happened in words (an identity change: old -> new)
    ack_pending: int = 0  # 1: the acknowledgement is not in alert history yet


class IncidentStore:
    def __init__(self, path: str | Path):
        self.db = open_db(path, SCHEMA)
        columns = {r[1] for r in self.db.execute("PRAGMA table_info(incidents)")}
        if "detail" not in columns:  # a store from before incidents carried text
            self.db.execute("ALTER TABLE incidents ADD COLUMN detail TEXT")
        if "ack_pending" not in columns:  # from before: its acknowledgements were written
            self.db.execute(
                "ALTER TABLE incidents ADD COLUMN ack_pending INTEGER NOT NULL DEFAULT 0"
            )

    def close(self) -> None:
        self.db.close()

    def open_for(self, rule_id: str, device: str) -> Incident | None:
        row = self.db.execute(
            f"SELECT {COLUMNS} FROM incidents WHERE rule_id=? AND device=? "
            "AND state IN ('pending','firing') "
            "ORDER BY id DESC LIMIT 1",
            (rule_id, device),
        ).fetchone()
        return Incident(*row) if row else None

    def last_for(self, rule_id: str, device: str) -> Incident | None:
        """The newest incident of the rule and device, whatever its state."""
        row = self.db.execute(
            f"SELECT {COLUMNS} FROM incidents WHERE rule_id=? AND device=? ORDER BY id DESC LIMIT 1",
            (rule_id, device),
        ).fetchone()
        return Incident(*row) if row else None

    def create(
        self,
        rule_id: str,
        site: str,
        device: str,
        now: float,
        value: float | None,
        detail: str | None = None,
    ) -> Incident:
        cur = self.db.execute(
            "INSERT INTO incidents (rule_id, site, device, state, value, pending_since, detail) "
            "VALUES (?,?,?,?,?,?,?)",
            (rule_id, site, device, "pending", value, now, detail),
        )
        created = self.get(cur.lastrowid or 0)
        if created is None:  # the row just inserted: only a broken database loses it
            raise RuntimeError(f"incident for {rule_id}/{device} not stored")
        return created

    def get(self, incident_id: int) -> Incident | None:
        row = self.db.execute(
            f"SELECT {COLUMNS} FROM incidents WHERE id=?", (incident_id,)
        ).fetchone()
        return Incident(*row) if row else None

    def update(self, inc: Incident) -> None:
        """Store the engine's changes to ``inc``.  The acknowledgement's columns are
        :meth:`acknowledge`'s alone: an engine pass holding ``inc`` from before an
        acknowledgement made meanwhile (by the API, another process) keeps it."""
        self.db.execute(
            "UPDATE incidents SET state=?, value=?, fired_at=?, resolved_at=?, "
            "last_notified_at=?, notifications=?, detail=? WHERE id=?",
            (
                inc.state,
                inc.value,
                inc.fired_at,
                inc.resolved_at,
                inc.last_notified_at,
                inc.notifications,
                inc.detail,
                inc.id,
            ),
        )

    def all(self, state: str | None = None) -> list[Incident]:
        q = (
            f"SELECT {COLUMNS} FROM incidents"
            + (" WHERE state=?" if state else "")
            + " ORDER BY id"
        )
        return [Incident(*r) for r in self.db.execute(q, (state,) if state else ())]

    def acknowledge(self, incident_id: int, by: str, comment: str, now: float) -> Incident:
        inc = self.get(incident_id)
        if inc is None:
            raise LookupError(f"no incident {incident_id}")
        if inc.state not in ("pending", "firing", "resolved"):
            raise ValueError(f"incident {incident_id} is {inc.state}; nothing to acknowledge")
        inc.acked_by, inc.acked_at, inc.ack_comment, inc.ack_pending = by, now, comment, 1
        self.db.execute(
            "UPDATE incidents SET acked_by=?, acked_at=?, ack_comment=?, ack_pending=1 WHERE id=?",
            (by, now, comment, inc.id),
        )
        return inc

    def pending_acks(self, owns: Callable[[str], bool] | None = None) -> list[Incident]:
        """Acknowledged incidents whose acknowledgement is not in alert history yet (of
        the sites ``owns`` says yes to: a rules partition's, ``rules/partition.py``)."""
        return [
            inc
            for inc in (
                Incident(*r)
                for r in self.db.execute(
                    f"SELECT {COLUMNS} FROM incidents "
                    "WHERE ack_pending=1 AND acked_at IS NOT NULL ORDER BY id"
                )
            )
            if owns is None or owns(inc.site)
        ]

    def ack_written(self, inc: Incident) -> None:
        """``inc``'s acknowledgement is in alert history (unless it was acknowledged
        again since: that one is still to write)."""
        self.db.execute(
            "UPDATE incidents SET ack_pending=0 WHERE id=? AND acked_at IS ?",
            (inc.id, inc.acked_at),
        )


def with_text(line: str, text: dict[str, str]) -> str:
    """An ``alert_events`` line (made by ``to_line``, ``incident`` its first field) with
    string fields added: the glossary has no ``alert_events``, so ``to_line`` would
    write every field as a number."""
    if not text:
        return line
    quoted = ",".join(f'{k}="{_escape(v)}"' for k, v in text.items())
    return line.replace(" incident=", f" {quoted},incident=", 1)


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"')


def ack_line(inc: Incident) -> str:
    """An acknowledgement as an ``alert_events`` point (who, when, why)."""
    line = to_line(
        "alert_events",
        {"site": inc.site, "device": inc.device, "rule": inc.rule_id, "event": "acknowledged"},
        {"incident": inc.id},
        int((inc.acked_at or 0) * 1000),
    )
    return with_text(line, {"by": inc.acked_by or "", "comment": inc.ack_comment or ""})


@dataclass(frozen=True)
class Acknowledged:
    incident: Incident
    in_history: bool  # written to alert history now (else the rules engine's next pass)
    history_error: str | None = None  # why a write now failed (it stays pending)


def acknowledge_incident(
    store: IncidentStore,
    influx: InfluxClient | None,
    incident_id: int,
    by: str,
    comment: str,
    at: float,
    lock: AbstractContextManager[object] | None = None,
) -> Acknowledged:
    """Acknowledge an incident (the CLI's ``alerts ack`` and the API's
    ``POST /alerts/{id}/ack``): stored first, under ``lock`` when the store is shared,
    and marked for alert history (dashboards show who and why).  A writer's ``influx``
    writes it at once; with none or a read-only one (the API's reader) the rules engine
    writes it on its next pass.  The store's ``LookupError`` (no such incident) and
    ``ValueError`` (not acknowledgeable) pass through; a history write that fails
    leaves the acknowledgement stored and pending."""
    with lock if lock is not None else nullcontext():
        inc = store.acknowledge(incident_id, by, comment, at)
    if influx is None or influx.read_only:
        return Acknowledged(inc, False)
    try:
        influx.write([ack_line(inc)])
    except (InfluxUnavailable, InfluxRejected) as exc:
        return Acknowledged(inc, False, str(exc))
    with lock if lock is not None else nullcontext():
        store.ack_written(inc)
    inc.ack_pending = 0
    return Acknowledged(inc, True)


def write_pending_acks(
    store: IncidentStore, influx: InfluxClient, owns: Callable[[str], bool] | None = None
) -> int:
    """Write the acknowledgements not yet in alert history (the rules engine, each
    pass; a partition those of the sites it ``owns``); returns how many.  A failed
    write raises and leaves them pending."""
    pending = store.pending_acks(owns)
    if pending:
        influx.write([ack_line(inc) for inc in pending])
        for inc in pending:
            store.ack_written(inc)
    return len(pending)
