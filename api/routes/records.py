"""Manual records (fuel, paper, document counts, bills) and adjustments.

Auditors create and correct records; a correction is a new record that supersedes
the old one, so the trail stays.  Adjustments change what the ledger counts and need
the admin role.  Who entered a record is the name of the API key used."""

from __future__ import annotations

import csv
import io
import tempfile
from dataclasses import asdict
from datetime import date
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Request
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from foursave.api.deps import TOO_MANY, Adjuster, Reader, RecordWriter, State, Throttled
from foursave.api.guard import too_large
from foursave.api.routes.sites import _site
from foursave.rules.items import ItemName
from foursave.rules.records import RecordError, RecordIn, import_csv_text

RowId = Annotated[int, PathParam(ge=1, le=2**63 - 1, description="row id")]

router = APIRouter(prefix="/api/v1", tags=["records"])

QuantityKind = Literal[
    "gasoline_l",
    "diesel_l",
    "paper_reams",
    "docs_online_signed",
    "docs_electronic_received",
    "docs_paper_to_online",
    "docs_self_created",
    "water_bill_m3",
    "electricity_bill_kwh",
    "electricity_bill_ntd",
    "electricity_bill_pf_pct",
    "electricity_bill_read_on",
]
SPOOL_IN_MEMORY_BYTES = 1_048_576  # an import's body past this waits in a temporary file


class RecordOut(BaseModel):
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
    superseded_by: int | None = None


class RecordCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    site: str
    period: str = Field(description="month YYYY-MM", examples=["2026-10"])
    kind: QuantityKind
    value: float = Field(ge=0, allow_inf_nan=False)
    evidence: str | None = Field(None, max_length=200)


class RecordCorrection(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: float = Field(allow_inf_nan=False)
    evidence: str | None = Field(None, max_length=200)
    period: str | None = Field(None, description="a corrected month, if the month was wrong")


class AdjustmentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    site: str
    period: str = Field(examples=["2026-10"])
    item: ItemName
    value: float = Field(allow_inf_nan=False, description="amount in the item's unit (+ or −)")
    reason: str = Field(min_length=3, max_length=500)
    approved_by: str = Field(min_length=1, max_length=100)
    approved_on: date
    evidence: str | None = Field(None, max_length=200)


class ImportOut(BaseModel):
    added: list[int]


def _out(r, superseded_by: dict[int, int]) -> RecordOut:
    return RecordOut(**asdict(r), superseded_by=superseded_by.get(r.id))


def _store(state, r: RecordIn) -> RecordOut:
    with state.write_lock:
        try:
            rid = state.records.add(r)
        except RecordError as exc:
            raise HTTPException(422, str(exc)) from None
    return _out(state.records.get(rid), {})


def _validated(**data) -> RecordIn:
    try:
        return RecordIn(**data)
    except ValidationError as exc:
        raise HTTPException(
            422,
            "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'record'}: {e['msg']}" for e in exc.errors()
            ),
        ) from None


@router.get("/records")
def list_records(
    who: Reader,
    state: State,
    site: str | None = None,
    period: str | None = None,
    kind: str | None = None,
    include_superseded: bool = False,
) -> list[RecordOut]:
    """Records, oldest first; by default only those in force."""
    if site is not None:
        _site(state, site)
    history = state.records.history(site)
    superseded_by = {r.supersedes: r.id for r in history if r.supersedes is not None}
    return [
        _out(r, superseded_by)
        for r in history
        if (include_superseded or r.id not in superseded_by)
        and (period is None or r.period == period)
        and (kind is None or r.kind == kind)
    ]


@router.get("/records/{record_id}")
def get_record(record_id: RowId, who: Reader, state: State) -> list[RecordOut]:
    """A record with its whole correction trail, oldest first."""
    r = state.records.get(record_id)
    if r is None:
        raise HTTPException(404, f"no record {record_id}")
    history = state.records.history(r.site)
    superseded_by = {x.supersedes: x.id for x in history if x.supersedes is not None}
    back = {x.id: x for x in history}
    chain = [r]
    while chain[0].supersedes is not None:
        chain.insert(0, back[chain[0].supersedes])
    while chain[-1].id in superseded_by:
        chain.append(back[superseded_by[chain[-1].id]])
    return [_out(x, superseded_by) for x in chain]


@router.post("/records", status_code=201)
def create_record(body: RecordCreate, who: RecordWriter, state: State) -> RecordOut:
    """Enter a quantity (fuel, paper, document counts, a bill)."""
    _site(state, body.site)
    return _store(state, _validated(**body.model_dump(), entered_by=who.name))


@router.post("/records/{record_id}/correct", status_code=201)
def correct_record(
    record_id: RowId, body: RecordCorrection, who: RecordWriter, state: State
) -> RecordOut:
    """Correct a record: a new record supersedes it (the old one stays in the trail)."""
    old = state.records.get(record_id)
    if old is None:
        raise HTTPException(404, f"no record {record_id}")
    if old.kind == "adjustment" and not who.can("adjustments:write"):
        raise HTTPException(403, "correcting an adjustment needs the admin role")
    superseded = {r.supersedes for r in state.records.history(old.site)}
    if record_id in superseded:
        raise HTTPException(
            409, f"record {record_id} was already corrected; correct the latest one"
        )
    fields = {
        k: getattr(old, k)
        for k in ("site", "period", "kind", "item", "reason", "approved_by", "approved_on")
    }
    fields.update(value=body.value, evidence=body.evidence or old.evidence, supersedes=record_id)
    if body.period is not None:
        fields["period"] = body.period
    return _store(state, _validated(**fields, entered_by=who.name))


async def _csv_body(request: Request, limit_bytes: int) -> bytes:
    """The request body, read as it streams in and refused with 413 the moment it
    passes ``limit_bytes`` (the guard in front counts too): a refused import never
    sat in memory, and a large accepted one waits in a temporary file until whole."""
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY_BYTES) as spool:
        n = 0
        async for chunk in request.stream():
            n += len(chunk)
            if n > limit_bytes:
                raise HTTPException(413, too_large(limit_bytes, "max_import_bytes"))
            spool.write(chunk)
        spool.seek(0)
        return spool.read()


@router.post(
    "/records/import",
    status_code=201,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"text/csv": {"schema": {"type": "string"}}},
        }
    },
    responses={413: {"description": "larger than services.api.max_import_bytes"}, **TOO_MANY},
)
async def import_records(
    request: Request, who: RecordWriter, state: State, _: Throttled
) -> ImportOut:
    """Import records from CSV (header: site,period,kind,value[,evidence]); all rows or
    none, and every problem names its line and field."""
    raw = await _csv_body(request, state.config.services.api.max_import_bytes)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise HTTPException(422, f"the CSV is not UTF-8 (byte {exc.start})") from None
    rows = list(csv.DictReader(io.StringIO(text)))
    sites = {s.id for s in state.config.sites}
    problems = [
        f"line {n}: site {r.get('site')!r} is not configured"
        for n, r in enumerate(rows, start=2)
        if r.get("site") not in sites
    ]
    if not who.can("adjustments:write"):
        problems += [
            f"line {n}: adjustments need the admin role"
            for n, r in enumerate(rows, start=2)
            if (r.get("kind") or "").strip() == "adjustment"
        ]
    if problems:
        raise HTTPException(422, {"message": "nothing imported", "errors": problems})
    with state.write_lock:
        result = import_csv_text(state.records, text, who.name)
    if result.errors:
        raise HTTPException(422, {"message": "nothing imported", "errors": result.errors})
    return ImportOut(added=result.added)


@router.post("/adjustments", status_code=201)
def create_adjustment(body: AdjustmentCreate, who: Adjuster, state: State) -> RecordOut:
    """Record an approved non-routine adjustment of an item (shown on every report)."""
    _site(state, body.site)
    return _store(state, _validated(**body.model_dump(), kind="adjustment", entered_by=who.name))
