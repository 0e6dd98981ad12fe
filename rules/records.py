"""Manual records: fuel, paper, document counts, water and electricity bills, and
non-routine adjustments — what no meter measures.

Stored in SQLite with who entered each record, when, and an optional evidence
reference.  A correction never overwrites: it is a new record that supersedes the old
one, so the trail stays (the API issue adds HTTP endpoints on top of this store).
"""

from __future__ import annotations

import calendar
import csv
import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from foursave.core.glossary import SLUG_PATTERN
from foursave.core.store import open_db
from foursave.rules.items import ItemName

RecordKind = Literal[
    "gasoline_l",  # litres of gasoline bought for official vehicles
    "diesel_l",
    "paper_reams",  # reams of copy paper purchased
    "docs_online_signed",  # 線上簽核件數
    "docs_electronic_received",  # 電子公文收文總數
    "docs_paper_to_online",  # 紙本來文轉線上簽核數
    "docs_self_created",  # 自創簽稿數
    "water_bill_m3",  # from the water bill, where no meter is polled
    "electricity_bill_kwh",  # Taipower bill (e.g. base years before metering)
    "electricity_bill_ntd",  # Taipower bill's total, NT$ (compared with the rebuilt bill)
    "electricity_bill_pf_pct",  # the power factor printed on the bill, % (the bill uses it)
    # the day of the month the bill's meter was read (本期抄表日): the bill of month M
    # covers the day after the previous reading to this one (rules/bill.billing_periods)
    "electricity_bill_read_on",
    "adjustment",  # non-routine adjustment of an item (amount in its unit)
]


class RecordIn(BaseModel):
    """One manual record as entered (CLI, CSV or, later, the API)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    site: str = Field(pattern=SLUG_PATTERN)
    period: str = Field(description="month YYYY-MM the quantity belongs to")
    kind: RecordKind
    value: float
    entered_by: str = Field(min_length=1)
    evidence: str | None = Field(None, description="invoice number, document id, file")
    item: ItemName | None = Field(None, description="adjustments: the item adjusted")
    reason: str | None = Field(None, description="adjustments: why")
    approved_by: str | None = None
    approved_on: date | None = None
    supersedes: int | None = Field(None, description="id of the record this corrects")

    @field_validator("period")
    @classmethod
    def _period(cls, v: str) -> str:
        try:  # strptime alone takes "2025-7", which no ledger lookup would ever find
            if len(v) != 7:
                raise ValueError
            datetime.strptime(v, "%Y-%m")
        except ValueError:
            raise ValueError("expected a month like 2025-07") from None
        return v

    @model_validator(mode="after")
    def _complete(self) -> RecordIn:
        if self.kind == "adjustment":
            missing = [
                k for k in ("item", "reason", "approved_by", "approved_on") if not getattr(self, k)
            ]
            if missing:
                raise ValueError(f"an adjustment needs {missing}")
        elif self.value < 0:
            raise ValueError("a quantity cannot be negative (use an adjustment)")
        if self.kind == "electricity_bill_read_on":
            y, m = int(self.period[:4]), int(self.period[5:])
            last = calendar.monthrange(y, m)[1]
            if self.value != int(self.value) or not 1 <= self.value <= last:
                raise ValueError(
                    f"electricity_bill_read_on is the day of {self.period} the meter was read "
                    f"(a whole number 1..{last}), not {self.value:g}"
                )
        return self


@dataclass(frozen=True)
class Record:
    id: int
    site: str
    period: str
    kind: str
    value: float
    entered_by: str
    entered_at: str
    evidence: str | None
    item: str | None
    reason: str | None
    approved_by: str | None
    approved_on: str | None
    supersedes: int | None


SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    site TEXT NOT NULL, period TEXT NOT NULL, kind TEXT NOT NULL, value REAL NOT NULL,
    entered_by TEXT NOT NULL, entered_at TEXT NOT NULL, evidence TEXT,
    item TEXT, reason TEXT, approved_by TEXT, approved_on TEXT,
    supersedes INTEGER REFERENCES records(id)
);
CREATE INDEX IF NOT EXISTS records_site_period ON records (site, period);
"""


class RecordError(ValueError):
    pass


class RecordStore:
    def __init__(self, path: str | Path):
        self.db = open_db(path, SCHEMA)

    def close(self) -> None:
        self.db.close()

    def add(self, r: RecordIn, now: datetime | None = None) -> int:
        if r.supersedes is not None:
            old = self.get(r.supersedes)
            if old is None:
                raise RecordError(f"record {r.supersedes} to correct does not exist")
            if (old.site, old.kind) != (r.site, r.kind):
                raise RecordError(
                    f"record {r.supersedes} is {old.site}/{old.kind}, not {r.site}/{r.kind}"
                )
        cur = self.db.execute(
            "INSERT INTO records (site, period, kind, value, entered_by, entered_at, evidence, "
            "item, reason, approved_by, approved_on, supersedes) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                r.site,
                r.period,
                r.kind,
                r.value,
                r.entered_by,
                (now or datetime.now(UTC)).isoformat(timespec="seconds"),
                r.evidence,
                r.item,
                r.reason,
                r.approved_by,
                r.approved_on.isoformat() if r.approved_on else None,
                r.supersedes,
            ),
        )
        rid = cur.lastrowid
        assert rid is not None  # an INSERT always sets it
        return rid

    def get(self, record_id: int) -> Record | None:
        row = self.db.execute("SELECT * FROM records WHERE id = ?", (record_id,)).fetchone()
        return Record(*row) if row else None

    def history(self, site: str | None = None) -> list[Record]:
        q = "SELECT * FROM records"
        args: tuple[str, ...] = ()
        if site:
            q, args = q + " WHERE site = ?", (site,)
        return [Record(*row) for row in self.db.execute(q + " ORDER BY id", args)]

    def current(self, site: str, periods: Iterable[str] | None = None) -> list[Record]:
        """Records in force: those no later record supersedes."""
        superseded = {
            r[0]
            for r in self.db.execute("SELECT supersedes FROM records WHERE supersedes IS NOT NULL")
        }
        out = [r for r in self.history(site) if r.id not in superseded]
        if periods is not None:
            wanted = set(periods)
            out = [r for r in out if r.period in wanted]
        return out

    def last_change(self) -> tuple[int, int]:
        """(number of records, highest id): the store is append-only (a correction is a
        new record), so this changes with every record entered (a report's inputs)."""
        n, top = self.db.execute("SELECT count(*), coalesce(max(id), 0) FROM records").fetchone()
        return int(n), int(top)

    def totals(self, site: str, periods: Iterable[str], kind: str) -> float | None:
        """Sum of ``kind`` over ``periods`` from records in force (None: no record)."""
        rs = [r for r in self.current(site, periods) if r.kind == kind]
        return sum(r.value for r in rs) if rs else None


@dataclass(frozen=True)
class ImportResult:
    added: list[int]
    errors: list[str]


def import_csv(store: RecordStore, path: str | Path, entered_by: str) -> ImportResult:
    """Import records from a CSV file (see :func:`import_csv_text`); problems are named
    ``file:line: field: ...``."""
    text = Path(path).read_text(encoding="utf-8-sig")
    return import_csv_text(store, text, entered_by, lambda n: f"{path}:{n}", str(path))


def import_csv_text(
    store: RecordStore,
    text: str,
    entered_by: str,
    where: Callable[[int], str] = lambda n: f"line {n}",
    source: str = "CSV",
) -> ImportResult:
    """Import records from CSV text (header: site,period,kind,value[,evidence,item,reason,
    approved_by,approved_on]).  All or nothing: any bad row names its line (``where``)
    and field, and nothing is stored."""
    rows: list[RecordIn] = []
    errors: list[str] = []
    reader = csv.DictReader(io.StringIO(text.removeprefix("\ufeff")))
    required = {"site", "period", "kind", "value"}
    missing = required - set(reader.fieldnames or [])
    if missing:
        return ImportResult([], [f"{source}: header misses column(s) {sorted(missing)}"])
    for n, raw in enumerate(reader, start=2):
        data = {
            k: (v.strip() if isinstance(v, str) else v)
            for k, v in raw.items()
            if k and v not in ("", None)
        }
        data["entered_by"] = entered_by
        try:
            rows.append(RecordIn.model_validate(data))
        except ValidationError as exc:
            for e in exc.errors():
                field = ".".join(str(x) for x in e["loc"]) or "row"
                errors.append(f"{where(n)}: {field}: {e['msg'].removeprefix('Value error, ')}")
    if errors:
        return ImportResult([], errors)
    with store.db:
        store.db.execute("BEGIN")  # all rows or none
        ids = [store.add(r) for r in rows]
    return ImportResult(ids, [])
