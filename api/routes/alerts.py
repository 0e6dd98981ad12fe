"""Alert incidents from the rules engine: list, filter, acknowledge with a comment."""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path, Query
from pydantic import BaseModel, Field

from foursave.api.deps import AlertAcker, Reader, State
from foursave.rules.alerts import acknowledge_incident

RowId = Annotated[int, Path(ge=1, le=2**63 - 1, description="row id")]

router = APIRouter(prefix="/api/v1", tags=["alerts"])
log = logging.getLogger("foursave.api")


class IncidentOut(BaseModel):
    id: int
    rule_id: str
    site: str
    device: str
    state: Literal["pending", "firing", "resolved", "cancelled"]
    value: float | None
    detail: str | None = Field(None, description="what happened in words (old -> new values)")
    pending_since: float  # epoch seconds; an event's (identity change's) own time
    fired_at: float | None
    resolved_at: float | None
    acked_by: str | None
    acked_at: float | None
    ack_comment: str | None
    notifications: int


class Ack(BaseModel):
    comment: str = Field(
        min_length=1,
        max_length=500,
        pattern=r"^[^\x00-\x1f\x7f]+$",
        description="what was done or why (one line)",
    )


def _out(inc) -> IncidentOut:
    return IncidentOut(**{k: v for k, v in asdict(inc).items() if k in IncidentOut.model_fields})


@router.get("/alerts")
def list_alerts(
    who: Reader,
    state: State,
    status: Literal["pending", "firing", "resolved", "cancelled"] | None = None,
    site: str | None = None,
    rule: str | None = None,
    device: str | None = None,
    acknowledged: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[IncidentOut]:
    """Incidents, newest first, filtered by status, site, rule, device, acknowledgement."""
    out = []
    for inc in reversed(state.incidents.all(status)):
        if (
            (site and inc.site != site)
            or (rule and inc.rule_id != rule)
            or (device and inc.device != device)
        ):
            continue
        if acknowledged is not None and (inc.acked_by is not None) != acknowledged:
            continue
        out.append(_out(inc))
        if len(out) >= limit:
            break
    return out


@router.get("/alerts/{incident_id}")
def get_alert(incident_id: RowId, who: Reader, state: State) -> IncidentOut:
    """One incident."""
    inc = state.incidents.get(incident_id)
    if inc is None:
        raise HTTPException(404, f"no incident {incident_id}")
    return _out(inc)


@router.post("/alerts/{incident_id}/ack")
def acknowledge(incident_id: RowId, body: Ack, who: AlertAcker, state: State) -> IncidentOut:
    """Acknowledge an incident: stops its reminders; who and why go into alert history
    (written by the rules engine on its next pass: the API only reads InfluxDB)."""
    try:
        done = acknowledge_incident(
            state.incidents,
            state.influx,
            incident_id,
            who.name,
            body.comment,
            state.clock.time(),
            lock=state.write_lock,
        )
    except LookupError:
        raise HTTPException(404, f"no incident {incident_id}") from None
    except ValueError as exc:
        raise HTTPException(409, str(exc)) from None
    return _out(done.incident)
