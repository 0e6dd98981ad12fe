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
-- the inputs' fingerprint (reports/inputs.py) a revision was last checked against, and
-- the later-data note it gave then (NULL: none): unchanged inputs, unchanged answer
CREATE TABLE IF NOT EXISTS report_checks (
    period TEXT NOT NULL, revision INTEGER NOT NULL, inputs TEXT NOT NULL, note TEXT,
    PRIMARY KEY (period, revision)
);
-- a revision's rendered files: per note (variant), format, language and renderer code
CREATE TABLE IF NOT EXISTS report_files (
    period TEXT NOT NULL, revision INTEGER NOT NULL, variant TEXT NOT NULL,
    format TEXT NOT NULL, lang TEXT NOT NULL, renderer TEXT NOT NULL,
    media_type TEXT NOT NULL, filename TEXT NOT NULL, body BLOB NOT NULL,
    PRIMARY KEY (period, revision, variant, format, lang, renderer)
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

    def head(self, period: str) -> tuple[int, str] | None:
        """The latest revision of ``period`` and its fingerprint, without its data."""
        row = self.db.execute(
            "SELECT revision, fingerprint FROM reports WHERE period=? "
            "ORDER BY revision DESC LIMIT 1",
            (period,),
        ).fetchone()
        return (int(row[0]), str(row[1])) if row else None

    def check(self, period: str, revision: int) -> tuple[str, str | None] | None:
        """(inputs fingerprint, later-data note) the revision was last checked with."""
        row = self.db.execute(
            "SELECT inputs, note FROM report_checks WHERE period=? AND revision=?",
            (period, revision),
        ).fetchone()
        return (row[0], row[1]) if row else None

    def save_check(self, period: str, revision: int, inputs: str, note: str | None) -> None:
        with self.db:
            self.db.execute(
                "INSERT OR REPLACE INTO report_checks VALUES (?,?,?,?)",
                (period, revision, inputs, note),
            )

    def file(
        self, period: str, revision: int, variant: str, fmt: str, lang: str, renderer: str
    ) -> tuple[bytes, str, str] | None:
        """A rendered file of the revision: (bytes, media type, file name)."""
        row = self.db.execute(
            "SELECT body, media_type, filename FROM report_files WHERE period=? AND "
            "revision=? AND variant=? AND format=? AND lang=? AND renderer=?",
            (period, revision, variant, fmt, lang, renderer),
        ).fetchone()
        return (bytes(row[0]), row[1], row[2]) if row else None

    def save_file(
        self,
        period: str,
        revision: int,
        variant: str,
        fmt: str,
        lang: str,
        renderer: str,
        rendered: tuple[bytes, str, str],
    ) -> None:
        body, media_type, filename = rendered
        with self.db:
            self.db.execute(
                "INSERT OR REPLACE INTO report_files VALUES (?,?,?,?,?,?,?,?,?)",
                (period, revision, variant, fmt, lang, renderer, media_type, filename, body),
            )

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
