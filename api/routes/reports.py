"""The audit committee's four-saving reports (PDF, XLSX, CSV; zh-TW or English)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Response
from pydantic import BaseModel, Field

from foursave.api.deps import TOO_MANY, ReportMaker, State, Throttled
from foursave.reports.build import ReportUnchanged
from foursave.reports.cache import ReportFile, report_file

router = APIRouter(prefix="/api/v1", tags=["reports"])

Year = Annotated[int, Path(ge=2000, le=2100, description="calendar year")]
Month = Annotated[int | None, Query(ge=1, le=12, description="omit for the annual report")]
Format = Literal["pdf", "xlsx", "csv"]
Lang = Literal["zh-TW", "en"]


class RevisionOut(BaseModel):
    period: str
    revision: int
    generated_at: str
    reason: str | None
    fingerprint: str


class Recompute(BaseModel):
    reason: str = Field(min_length=5, max_length=500, description="why the numbers are redone")


def _file(f: ReportFile, status_code: int = 200) -> Response:
    return Response(
        f.body,
        status_code=status_code,
        media_type=f.media_type,
        headers={
            "Content-Disposition": f'attachment; filename="{f.filename}"',
            "X-Report-Revision": str(f.revision),
            "X-Report-Fingerprint": f.fingerprint,
            # "cache": a frozen revision answered from the report store (inputs unchanged)
            "X-Report-Source": f.source,
        },
    )


def _report(state, year: int, month: int | None, fmt: str, lang: str, **kw) -> ReportFile:
    """The report file as ``report_for`` decides it, from the report store while a frozen
    revision's inputs are unchanged (reports/cache.py); one at a time (it may store)."""
    now = datetime.fromtimestamp(state.clock.time()).astimezone()
    with state.write_lock:
        return report_file(
            state.config,
            state.influx,
            state.records,
            state.reports,
            year,
            month,
            now,
            fmt,
            lang,
            **kw,
        )


@router.get("/reports")
def list_reports(who: ReportMaker, state: State) -> list[RevisionOut]:
    """Every issued (frozen) report revision."""
    return [RevisionOut(**r) for r in state.reports.revisions()]


@router.get(
    "/reports/{year}",
    response_class=Response,
    responses={
        200: {
            "content": {
                "application/pdf": {},
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": {},
                "text/csv": {},
            }
        },
        **TOO_MANY,
    },
)
def get_report(
    year: Year,
    who: ReportMaker,
    state: State,
    _: Throttled,
    month: Month = None,
    format: Format = "pdf",
    lang: Lang = "zh-TW",
) -> Response:
    """The monthly or annual report; a closed period's report is frozen (issued once,
    then the same on every request)."""
    # the first request of a closed period issues rev 1
    return _file(_report(state, year, month, format, lang))


@router.post(
    "/reports/{year}/recompute", response_class=Response, status_code=201, responses=TOO_MANY
)
def recompute_report(
    year: Year,
    body: Recompute,
    who: ReportMaker,
    state: State,
    _: Throttled,
    month: Month = None,
    format: Format = "pdf",
    lang: Lang = "zh-TW",
) -> Response:
    """Issue a new revision of a closed period's report from the data as it is now;
    the reason is printed on it.  409 if no number would change."""
    try:
        f = _report(state, year, month, format, lang, recompute_reason=body.reason, by=who.name)
    except ReportUnchanged as exc:
        raise HTTPException(409, str(exc)) from None
    return _file(f, status_code=201)
