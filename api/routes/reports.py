"""The audit committee's four-saving reports (PDF, XLSX, CSV; zh-TW or English)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Response
from pydantic import BaseModel, Field

from foursave.api.deps import TOO_MANY, ReportMaker, State, Throttled
from foursave.reports import render
from foursave.reports.build import ReportUnchanged, report_for

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


def _file(data, fmt: str, lang: str, status_code: int = 200) -> Response:
    body, media_type, filename = render(data, fmt, lang)
    return Response(
        body,
        status_code=status_code,
        media_type=media_type,
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "X-Report-Revision": str(data.revision),
            "X-Report-Fingerprint": data.fingerprint,
        },
    )


def _report(state, year: int, month: int | None, **kw):
    """The report as ``report_for`` decides it; one at a time (it may store a revision)."""
    now = datetime.fromtimestamp(state.clock.time()).astimezone()
    with state.write_lock:
        return report_for(
            state.config, state.influx, state.records, state.reports, year, month, now, **kw
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
    data = _report(state, year, month)  # the first request of a closed period issues rev 1
    return _file(data, format, lang)


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
        data = _report(state, year, month, recompute_reason=body.reason, by=who.name)
    except ReportUnchanged as exc:
        raise HTTPException(409, str(exc)) from None
    return _file(data, format, lang, status_code=201)
