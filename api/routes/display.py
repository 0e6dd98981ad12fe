"""The public lobby display: ``/display`` (no login).

The page polls ``/display/data``, which hands out the snapshot the server refreshed
last (api/snapshot.py): no request parameter reaches InfluxDB, and each client address
is rate-limited."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.responses import FileResponse

from foursave.api.deps import State

STATIC = Path(__file__).resolve().parent.parent / "display" / "static"

# the page loads only its own script and style and talks only to this server
CSP = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"

router = APIRouter(tags=["public display"])


@router.get("/display", response_class=FileResponse, include_in_schema=True)
def display_page() -> FileResponse:
    """The full-screen page for lobby screens (1920×1080)."""
    return FileResponse(
        STATIC / "index.html",
        media_type="text/html; charset=utf-8",
        headers={"Content-Security-Policy": CSP, "Cache-Control": "no-cache"},
    )


@router.get(
    "/display/data",
    responses={
        200: {"content": {"application/json": {}}},
        404: {"description": "unknown site"},
        429: {"description": "too many requests from this address"},
    },
)
async def display_data(  # in-memory only: no thread hop per request
    request: Request,
    state: State,
    site: Annotated[str | None, Query(max_length=63)] = None,
) -> Response:
    """The display snapshot of a site (default: services.api.display_site or the first)."""
    ip = request.client.host if request.client else "?"
    allowed, wait_s = state.limiter.allow(ip, state.monotonic())
    if not allowed:
        raise HTTPException(
            429, "too many requests", headers={"Retry-After": str(max(1, round(wait_s)))}
        )
    sid = site or state.config.services.api.display_site or state.config.sites[0].id
    snap = state.snapshots.served.get(sid)
    if snap is None:
        raise HTTPException(404, f"no site {sid!r}")
    body, etag = snap
    headers = {"Cache-Control": "no-store", "ETag": etag}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)
