"""Frozen reports: once a period is closed its report is stored (as JSON) and every
later request gets the stored numbers; a deliberate recomputation adds a revision
with its reason, never overwrites one."""

from __future__ import annotations

import json
from pathlib import Path

from foursave.core.store import open_db
from foursave.reports.model import ReportData

SCHEMA = """
CREATE TABLE IF NOT EXISTS reports (
    period TEXT NOT NULL, revision INTEGER NOT NULL, generated_at TEXT NOT NULL,
    reason TEXT, fingerprint TEXT NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (period, revision)
);
"""


class ReportStore:
    def __init__(self, path: str | Path):
        self.db = open_db(path, SCHEMA, synchronous="FULL")

    def close(self) -> None:
        self.db.close()

    def latest(self, period: str) -> ReportData | None:
        row = self.db.execute(
            "SELECT data FROM reports WHERE period=? ORDER BY revision DESC LIMIT 1", (period,)
        ).fetchone()
        return ReportData.from_dict(json.loads(row[0])) if row else None

    def save(self, data: ReportData) -> None:
        self.db.execute(
            "INSERT INTO reports VALUES (?,?,?,?,?,?)",
            (
                data.period,
                data.revision,
                data.generated_at,
                data.recomputed_reason,
                data.fingerprint,
                json.dumps(data.to_dict(), ensure_ascii=False, sort_keys=True),
            ),
        )

    def revisions(self) -> list[dict]:
        rows = self.db.execute(
            "SELECT period, revision, generated_at, reason, fingerprint FROM reports "
            "ORDER BY period, revision"
        ).fetchall()
        keys = ("period", "revision", "generated_at", "reason", "fingerprint")
        return [dict(zip(keys, r, strict=True)) for r in rows]
