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
from foursave.api.keys import KeyStore, check_bootstrap
from foursave.api.live import LiveStatus, LiveSubscriber
from foursave.api.ratelimit import RateLimiter
from foursave.api.routes import admin, alerts, display, records, reports, results, sites, system
from foursave.api.snapshot import Refresher, SnapshotBuilder
from foursave.core.clock import Clock
from foursave.core.config import Config
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
**admin** also manages keys and adjustments.  Missing key: 401; wrong role: 403.
`/display`, `/display/data` and `/health` are public.
"""


def create_app(
    config: Config,
    clock: Clock,
    monotonic: Callable[[], float] = time.monotonic,
    refresh: bool = True,
) -> FastAPI:
    """The app; ``refresh=False`` leaves the display refresher off (tests drive it)."""
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
            keys=KeyStore(svc.api.keys_path, os.environ.get(svc.api.bootstrap_key_env)),
            reports=ReportStore(svc.api.reports_path),
            live=live,
            snapshots=snapshots,
            limiter=RateLimiter(svc.api.display_rate_per_s, svc.api.display_burst),
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

    @app.exception_handler(InfluxUnavailable)
    async def _unavailable(request: Request, exc: InfluxUnavailable) -> JSONResponse:
        return JSONResponse({"detail": f"InfluxDB is not reachable: {exc}"}, status_code=503)

    @app.exception_handler(InfluxRejected)
    async def _rejected(request: Request, exc: InfluxRejected) -> JSONResponse:
        log.error("InfluxDB refused a query: %s", exc)
        return JSONResponse({"detail": f"InfluxDB refused the query: {exc}"}, status_code=502)

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
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=False)
