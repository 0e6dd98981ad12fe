"""The FastAPI app: REST ``/api/v1``, reports, ``/display``, ``/health``, ``/metrics``.

``create_app(config)`` builds the app; its lifespan opens the InfluxDB client, the
SQLite stores (records, incidents, keys, reports) and the MQTT status subscriber, starts
the display refresher, and closes all of them on shutdown.  ``foursave api`` serves it
with uvicorn.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from foursave.api.deps import AppState
from foursave.api.guard import BodyGuard
from foursave.api.health import PingCache
from foursave.api.keys import KeyStore, check_bootstrap
from foursave.api.live import LiveStatus, LiveSubscriber
from foursave.api.ratelimit import RateLimiter
from foursave.api.routes import admin, alerts, display, records, reports, results, sites, system
from foursave.api.snapshot import Refresher, SnapshotBuilder
from foursave.core.clock import Clock, SystemClock
from foursave.core.config import ApiService, Config
from foursave.core.influx import InfluxClient, InfluxRejected, InfluxUnavailable
from foursave.reports.store import ReportStore
from foursave.rules.alerts import IncidentStore
from foursave.rules.records import RecordStore

log = logging.getLogger("foursave.api")

DESCRIPTION = """\
Building-energy and solar monitoring for the Tainan four-saving programme (四省).

Every `/api/v1` route needs an API key (`X-API-Key: fsk_...` or
`Authorization: Bearer fsk_...`).  Roles: **viewer** reads; **engineer** also
acknowledges alerts; **auditor** also enters manual records and issues reports;
**admin** also manages keys and adjustments.  Missing, unknown, revoked or expired
key: 401; wrong role: 403.  A body larger than `services.api.max_body_bytes`
(the CSV import: `max_import_bytes`) is refused with 413; reports, series and imports
are limited per key (429 with `Retry-After`).
`/display`, `/display/data` and `/health` are public.
"""

IMPORT_PATHS = ("/api/v1/records/import",)


def body_limit(api: ApiService, path: str) -> tuple[int, str]:
    """The largest body a route takes [bytes], and the setting that says so."""
    if path in IMPORT_PATHS:
        return api.max_import_bytes, "max_import_bytes"
    return api.max_body_bytes, "max_body_bytes"


def proxy_options(api: ApiService) -> tuple[bool, list[str]]:
    """uvicorn's ``proxy_headers`` and ``forwarded_allow_ips``: ``X-Forwarded-For`` /
    ``-Proto`` believed only from ``services.api.trusted_proxies`` (uvicorn's own
    default trusts loopback, so a client on the same host could choose its address)."""
    return bool(api.trusted_proxies), list(api.trusted_proxies)


def create_app(
    config: Config,
    clock: Clock,
    monotonic: Callable[[], float] = time.monotonic,
    refresh: bool = True,
    wall_clock: Clock | None = None,
) -> FastAPI:
    """The app; ``refresh=False`` leaves the display refresher off (tests drive it).

    ``clock`` is the readings' clock (a report's "today"); ``wall_clock`` dates API
    keys and decides their expiry (the system clock unless a test passes one);
    ``monotonic`` drives the rate limits and the ``/health`` cache."""
    svc = config.services

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # the reader: the API never writes to InfluxDB (acknowledgements go to alert
        # history through the rules engine, the rollup cache is the engine's to fill)
        influx = InfluxClient.for_role(svc, "reader", timeout_s=10)
        clk = clock  # foursave.app.clock(config, "api"): the readings' clock
        live = LiveStatus()
        subscriber = LiveSubscriber(svc, live).start()
        snapshots = SnapshotBuilder(config, influx, clk, svc.api.display_stale_after_s)
        state = AppState(
            config=config,
            clock=clk,
            influx=influx,
            records=RecordStore(svc.rules.records_path),
            incidents=IncidentStore(svc.rules.state_path),
            keys=KeyStore(
                svc.api.keys_path,
                os.environ.get(svc.api.bootstrap_key_env),
                clock=wall_clock or SystemClock(),
            ),
            reports=ReportStore(svc.api.reports_path),
            live=live,
            snapshots=snapshots,
            limiter=RateLimiter(svc.api.display_rate_per_s, svc.api.display_burst),
            heavy=RateLimiter(svc.api.heavy_rate_per_s, svc.api.heavy_burst),
            influx_health=PingCache(influx.ping, svc.api.health_max_age_s, monotonic),
            monotonic=monotonic,
            mqtt_connected=subscriber.connected,
        )
        app.state.foursave = state
        snapshots.refresh()  # screens get data (or the empty document) from the start
        refresher = Refresher(snapshots.refresh, svc.api.display_refresh_s)
        if refresh:
            refresher.start()
        try:
            yield
        finally:
            if refresh:
                refresher.stop()
            subscriber.stop()
            for store in (state.records, state.incidents, state.keys, state.reports):
                store.close()
            influx.close()

    app = FastAPI(
        title="foursave",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs",
    )

    # what failed, never how: the URL, the credentials and the query stay in the log
    # (core/influx.py writes the URL redacted)
    @app.exception_handler(InfluxUnavailable)
    async def _unavailable(request: Request, exc: InfluxUnavailable) -> JSONResponse:
        log.warning("%s %s: InfluxDB unavailable: %s", request.method, request.url.path, exc)
        return JSONResponse({"detail": "InfluxDB unavailable"}, status_code=503)

    @app.exception_handler(InfluxRejected)
    async def _rejected(request: Request, exc: InfluxRejected) -> JSONResponse:
        log.error("%s %s: InfluxDB refused a query: %s", request.method, request.url.path, exc)
        return JSONResponse({"detail": "InfluxDB refused a query"}, status_code=502)

    def keys() -> KeyStore | None:
        state = getattr(app.state, "foursave", None)
        return state.keys if state is not None else None

    app.add_middleware(
        BodyGuard,
        limit_for=lambda path: body_limit(svc.api, path),
        keys=keys,
    )

    for module in (sites, results, alerts, records, reports, admin, system, display):
        app.include_router(module.router)
    static = Path(display.STATIC)
    app.mount("/display/static", StaticFiles(directory=static), name="display-static")
    return app


def serve(config: Config, app: FastAPI, host: str, port: int) -> None:
    """Run the app until SIGTERM/SIGINT (uvicorn stops accepting, finishes requests,
    then the lifespan closes the clients)."""
    import signal

    import uvicorn

    # uvicorn shuts down gracefully on a signal, then re-raises it to whatever handler
    # was there before: make that a no-op, so a clean stop exits 0 like every subcommand
    bootstrap = os.environ.get(config.services.api.bootstrap_key_env)
    if bootstrap:
        check_bootstrap(bootstrap)  # refused before anything listens
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    proxy_headers, trusted = proxy_options(config.services.api)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="info",
        access_log=False,
        proxy_headers=proxy_headers,
        forwarded_allow_ips=trusted,
    )
