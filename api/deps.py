"""Dependencies shared by the routes: the app's state and who is calling.

Every ``/api/v1`` route takes one of the ``Annotated`` principals below, so its
permission is visible in its signature: a missing or unknown key is 401, a key whose
role lacks the permission is 403 (api/keys.py, ``PERMISSIONS``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Protocol, cast

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from foursave.api.keys import PERMISSIONS, KeyStore, Principal
from foursave.api.live import LiveStatus
from foursave.api.ratelimit import RateLimiter
from foursave.api.snapshot import SnapshotBuilder
from foursave.core.clock import Clock
from foursave.core.config import Config
from foursave.core.influx import InfluxClient
from foursave.reports.store import ReportStore
from foursave.rules.alerts import IncidentStore
from foursave.rules.records import RecordStore


@dataclass
class AppState:
    config: Config
    clock: Clock
    influx: InfluxClient
    records: RecordStore
    incidents: IncidentStore
    keys: KeyStore
    reports: ReportStore
    live: LiveStatus
    snapshots: SnapshotBuilder
    limiter: RateLimiter
    monotonic: Callable[[], float] = time.monotonic  # rate limiting
    write_lock: threading.Lock = field(default_factory=threading.Lock)  # SQLite writers
    mqtt_connected: threading.Event = field(default_factory=threading.Event)


async def get_state(request: Request) -> AppState:  # async: no thread hop
    return request.app.state.foursave


State = Annotated[AppState, Depends(get_state)]

_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="an API key: fsk_<id>_<secret>"
)
_bearer = HTTPBearer(auto_error=False, description="the same API key as a bearer token")


def principal(
    state: State,
    key: Annotated[str | None, Security(_key_header)] = None,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None,
) -> Principal:
    presented = key or (bearer.credentials if bearer else None)
    if not presented:
        raise HTTPException(
            401,
            "an API key is required: send it in the X-API-Key header "
            "(or Authorization: Bearer <key>)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    who = state.keys.authenticate(presented)
    if who is None:
        raise HTTPException(
            401, "the API key is unknown or revoked", headers={"WWW-Authenticate": "Bearer"}
        )
    return who


class PermissionCheck(Protocol):
    """The dependency ``require`` makes: lets a caller through if it has ``permission``."""

    permission: str

    def __call__(self, who: Principal) -> Principal: ...


def require(permission: str) -> PermissionCheck:
    roles = [r for r, perms in PERMISSIONS.items() if permission in perms]

    def check(who: Annotated[Principal, Depends(principal)]) -> Principal:
        if not who.can(permission):
            raise HTTPException(
                403,
                f"role {who.role!r} may not do this ({permission}); roles that may: "
                + ", ".join(roles),
            )
        return who

    # a plain function, so FastAPI resolves its annotations from this module; mypy does
    # not model attributes set on a function object, hence the cast to the protocol
    dependency = cast(PermissionCheck, check)
    dependency.permission = permission  # read by the authorisation tests and the docs
    return dependency


Reader = Annotated[Principal, Depends(require("read"))]
AlertAcker = Annotated[Principal, Depends(require("alerts:ack"))]
RecordWriter = Annotated[Principal, Depends(require("records:write"))]
ReportMaker = Annotated[Principal, Depends(require("reports"))]
Adjuster = Annotated[Principal, Depends(require("adjustments:write"))]
KeyAdmin = Annotated[Principal, Depends(require("keys"))]
