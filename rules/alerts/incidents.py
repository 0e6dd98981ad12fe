"""Incidents: their SQLite store (they survive a restart), the acknowledgement use
case (the CLI's ``alerts ack`` and the API's ``POST /alerts/{id}/ack``) and its point
in alert history."""

from __future__ import annotations

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
    detail TEXT
);
CREATE INDEX IF NOT EXISTS open_incidents ON incidents (rule_id, device, state);
"""


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


class IncidentStore:
    def __init__(self, path: str | Path):
        self.db = open_db(path, SCHEMA)
        columns = {r[1] for r in self.db.execute("PRAGMA table_info(incidents)")}
        if "detail" not in columns:  # a store from before incidents carried text
            self.db.execute("ALTER TABLE incidents ADD COLUMN detail TEXT")

    def close(self) -> None:
        self.db.close()

    def open_for(self, rule_id: str, device: str) -> Incident | None:
        row = self.db.execute(
            "SELECT * FROM incidents WHERE rule_id=? AND device=? AND state IN ('pending','firing') "
            "ORDER BY id DESC LIMIT 1",
            (rule_id, device),
        ).fetchone()
        return Incident(*row) if row else None

    def last_for(self, rule_id: str, device: str) -> Incident | None:
        """The newest incident of the rule and device, whatever its state."""
        row = self.db.execute(
            "SELECT * FROM incidents WHERE rule_id=? AND device=? ORDER BY id DESC LIMIT 1",
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
        row = self.db.execute("SELECT * FROM incidents WHERE id=?", (incident_id,)).fetchone()
        return Incident(*row) if row else None

    def update(self, inc: Incident) -> None:
        self.db.execute(
            "UPDATE incidents SET state=?, value=?, fired_at=?, resolved_at=?, acked_by=?, acked_at=?, "
            "ack_comment=?, last_notified_at=?, notifications=?, detail=? WHERE id=?",
            (
                inc.state,
                inc.value,
                inc.fired_at,
                inc.resolved_at,
                inc.acked_by,
                inc.acked_at,
                inc.ack_comment,
                inc.last_notified_at,
                inc.notifications,
                inc.detail,
                inc.id,
            ),
        )

    def all(self, state: str | None = None) -> list[Incident]:
        q = "SELECT * FROM incidents" + (" WHERE state=?" if state else "") + " ORDER BY id"
        return [Incident(*r) for r in self.db.execute(q, (state,) if state else ())]

    def acknowledge(self, incident_id: int, by: str, comment: str, now: float) -> Incident:
        inc = self.get(incident_id)
        if inc is None:
            raise LookupError(f"no incident {incident_id}")
        if inc.state not in ("pending", "firing", "resolved"):
            raise ValueError(f"incident {incident_id} is {inc.state}; nothing to acknowledge")
        inc.acked_by, inc.acked_at, inc.ack_comment = by, now, comment
        self.update(inc)
        return inc


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
    history_error: str | None  # why alert history did not get the event (None: it did)


def acknowledge_incident(
    store: IncidentStore,
    influx: InfluxClient,
    incident_id: int,
    by: str,
    comment: str,
    at: float,
    lock: AbstractContextManager[object] | None = None,
) -> Acknowledged:
    """Acknowledge an incident (the CLI's ``alerts ack`` and the API's
    ``POST /alerts/{id}/ack``): stored first, under ``lock`` when the store is shared,
    then written to alert history (dashboards show who and why).  The store's
    ``LookupError`` (no such incident) and ``ValueError`` (not acknowledgeable) pass
    through; a history write that fails leaves the stored acknowledgement in place."""
    with lock if lock is not None else nullcontext():
        inc = store.acknowledge(incident_id, by, comment, at)
    try:
        influx.write([ack_line(inc)])
    except (InfluxUnavailable, InfluxRejected) as exc:
        return Acknowledged(inc, str(exc))
    return Acknowledged(inc, None)
