"""Dependencies shared by the routes: the app's state and who is calling.

Every ``/api/v1`` route takes one of the ``Annotated`` principals below, so its
permission is visible in its signature: a missing or unknown key is 401, a key whose
role lacks the permission is 403 (api/keys.py, ``PERMISSIONS``).  A request that
carries a body had its key checked before the body was read (api/guard.py).
The expensive routes also take :data:`Throttled` (after the principal, so a refused
role spends no tokens): a token bucket per key, 429 past it.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Protocol, cast

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from foursave.api.health import PingCache
from foursave.api.keys import MISSING_KEY, PERMISSIONS, REFUSED_KEY, KeyStore, Principal
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
    limiter: RateLimiter  # the display, per client address
    heavy: RateLimiter  # reports, series, imports: per API key
    influx_health: PingCache
    monotonic: Callable[[], float] = time.monotonic  # rate limiting, /health
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
        raise HTTPException(401, MISSING_KEY, headers={"WWW-Authenticate": "Bearer"})
    who = state.keys.authenticate(presented)
    if who is None:
        raise HTTPException(401, REFUSED_KEY, headers={"WWW-Authenticate": "Bearer"})
    return who


def throttle(state: State, who: Annotated[Principal, Depends(principal)]) -> None:
    """Spend one of the key's tokens for an expensive request, or refuse with 429."""
    allowed, wait_s = state.heavy.allow(who.key_id, state.monotonic())
    if not allowed:
        retry_s = max(1, math.ceil(wait_s))
        raise HTTPException(
            429,
            f"too many report, series or import requests with this key: retry in "
            f"{retry_s} s (services.api.heavy_rate_per_s, heavy_burst)",
            headers={"Retry-After": str(retry_s)},
        )


Throttled = Annotated[None, Depends(throttle)]
TOO_MANY: dict[int | str, dict[str, Any]] = {
    429: {"description": "too many expensive requests with this key (Retry-After)"}
}


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
