"""The composition root: how each foursave service is put together, in one file.

Read this to see what ``foursave collect``, ``ingest``, ``rules`` and ``api`` are made
of: which clock each runs on, which clients and stores it opens, and who closes them.
The CLI (``foursave/cli.py``) parses arguments and calls these functions; nothing else
chooses a clock or opens a client from the configuration.

=========  ======================================================================
service    parts
=========  ======================================================================
collect    ``collector.service.Collector`` (pollers per device, spool, publisher)
           on the collector's clock: one collector's share of the configuration
ingest     ``collector.ingest.Ingester`` with an InfluxDB client
rules      a partition's claim on its sites (``rules.claim``), alert engine
           (rules, incident store, notifier with its MQTT client), derived results
           (``rules.engine``) and the manual-record store, for the partition's sites
           (``rules.partition``), on the rules clock
api        ``api.main.create_app`` on the clock readings are stamped with
sim        ``simulators.server.Simulator`` on the simulated clock
=========  ======================================================================
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from foursave.collector.profiles import check_profile
from foursave.core.clock import Clock, SystemClock, simulated_clock
from foursave.core.config import Config, InfluxRole
from foursave.core.config import load_config as _load_config
from foursave.core.influx import InfluxClient
from foursave.core.mqtt import connect, mqtt_client

if TYPE_CHECKING:  # the services are imported when assembled: `foursave sim` needs no FastAPI
    import paho.mqtt.client as mqtt
    from fastapi import FastAPI

    from foursave.collector.ingest import Ingester
    from foursave.collector.service import Collector
    from foursave.core.config import Device
    from foursave.reports.store import ReportStore
    from foursave.rules.alerts import AlertEngine
    from foursave.rules.partition import Partition
    from foursave.rules.records import RecordStore
    from foursave.simulators.server import Simulator

log = logging.getLogger("foursave")

Service = Literal["collector", "ingester", "rules", "api"]
NOTIFIER_CONNECT_S = 10.0  # the rules engine waits this long for its notifier's broker


def load_config(
    path: str | os.PathLike[str], env: Mapping[str, str] | None = None, *, images: bool = False
) -> Config:
    """The configuration with every check, the collector's register-map profiles
    included (``ConfigError`` names each problem).  With ``images`` the register dumps
    replayed by the simulators (``simulate.image``) are read and checked too: what
    ``check-config`` and ``sim`` need, and no other service (a collector's machine may
    not have the dumps)."""
    from foursave.rules.tariff import check_site_tariff

    return _load_config(
        path,
        env,
        check_profile=check_profile,
        check_image=_check_image if images else None,
        check_tariff=check_site_tariff,
    )


def _check_image(path: str, unit_id: int) -> str | None:
    from foursave.simulators.image import check_image

    return check_image(path, unit_id)


def clock(config: Config, service: Service) -> Clock:
    """The clock a service runs on.

    ``services.collector.clock`` stamps readings; the ingester (which refuses readings
    dated too far ahead) and the API (whose "today" must match the readings) read "now"
    on the same clock.  ``services.rules.clock`` drives the rules
    engine.  ``simulated`` means the simulators' clock (``services.simulator``).
    """
    choice = config.services.rules.clock if service == "rules" else config.services.collector.clock
    if choice != "simulated":
        return SystemClock()
    if service == "collector" and config.services.simulator.anchor is None:
        log.warning(
            "collector clock 'simulated' without services.simulator.anchor: it "
            "starts now and may be offset from the simulators' clock"
        )
    return simulated_clock(config.services.simulator)


def influx(config: Config, role: InfluxRole, timeout_s: float = 10.0) -> InfluxClient:
    """An InfluxDB client for the configured database, logged in as ``role``'s user
    (password from the environment or the secrets file): ``writer`` for ``ingest``,
    ``rules`` and ``backfill``, ``reader`` for ``api`` and ``report`` (read-only)."""
    return InfluxClient.for_role(config.services, role, timeout_s=timeout_s)


def simulator(config: Config, only: set[str] | None = None) -> Simulator:
    from foursave.simulators.server import Simulator

    return Simulator(config, simulated_clock(config.services.simulator), only=only)


def collector(
    config: Config, devices: list[Device] | None = None, collector_id: str | None = None
) -> Collector:
    """Collector ``collector_id`` of ``config`` (``UnknownCollector`` for one it does not
    have; none: its only collector, refused where it has several): its settings, MQTT
    account and spool, and its devices unless ``devices`` names some."""
    from foursave.collector.service import Collector

    mine = config.for_collector(config.pick_collector(collector_id))
    return Collector(mine, clock(mine, "collector"), devices=devices)


def ingester(config: Config, instance: str | None = None) -> Ingester:
    """Ingester ``instance`` of the configuration (``--ingester ID``; None: the one
    ``services.ingester.id`` names): its own client id, session and files
    (``collector.ingest.instance_settings``)."""
    from foursave.collector.ingest import Ingester

    db = influx(config, "writer")
    try:
        return Ingester(config, db, clock(config, "ingester"), instance=instance)
    except BaseException:
        db.close()
        raise


@dataclass
class Alerts:
    """The alert engine and the MQTT client its notifier publishes with."""

    engine: AlertEngine
    client: mqtt.Client | None

    def close(self) -> None:
        self.engine.store.close()
        if self.client is not None:
            self.client.loop_stop()
            self.client.disconnect()


def alerts(
    config: Config, db: InfluxClient, clk: Clock, partition: Partition | None = None
) -> Alerts:
    """Rules from ``services.rules.alerts_path``, the incident store, and a notifier
    (MQTT when the rules file asks for it, webhook, e-mail), for the devices of
    ``partition``'s sites (default: every site).  The incident store
    (``services.rules.state_path``) is one per machine, shared with the API, the CLI
    and the other partitions there: each engine moves only its own sites' incidents."""
    from foursave.rules.alerts import AlertEngine, IncidentStore, Notifier, load_alert_settings
    from foursave.rules.partition import whole

    part = partition or whole(config)
    settings = load_alert_settings(config.services.rules.alerts_path)
    client = None
    if settings.mqtt:
        # unique on the broker: partitions on other machines may have the same pid
        cid = f"foursave-rules-{part.id}-{os.getpid()}-{os.urandom(3).hex()}"
        client = mqtt_client(config.services, "rules", cid)
        connected = threading.Event()

        def on_connect(c: object, u: object, flags: object, rc: object, props: object) -> None:
            if rc == 0:
                connected.set()

        client.on_connect = on_connect
        connect(client, config.services)
        client.loop_start()
        # the first pass's events go out on MQTT too (not "not connected" at start);
        # with no broker the engine starts anyway and logs each failed notification
        connected.wait(NOTIFIER_CONNECT_S)
    pw_env = config.services.rules.smtp_password_env
    notifier = Notifier(settings, client, os.environ.get(pw_env) if pw_env else None)
    store = IncidentStore(config.services.rules.state_path)
    engine = AlertEngine(part.restrict(config), settings, db, store, notifier, clk, owns=part.owns)
    return Alerts(engine, client)


def run_rules(config: Config, stop: threading.Event, partition: Partition | None = None) -> None:
    """``foursave rules``: alerts and derived results of ``partition``'s sites (default:
    every site) until ``stop`` is set.  First the partition claims its sites on the
    broker (``rules/claim.py``): ``ClaimRefused`` when another running partition holds
    one of them, at start or (after a reconnection) later."""
    from foursave.rules.claim import Claim, ClaimRefused
    from foursave.rules.engine import run_forever
    from foursave.rules.partition import whole
    from foursave.rules.records import RecordStore

    part = partition or whole(config)
    claim = Claim(config.services, part, config.services.influxdb.database, on_lost=stop.set)
    claim.acquire()
    try:
        clk = clock(config, "rules")
        db = influx(config, "writer")
        records = RecordStore(config.services.rules.records_path)
        try:
            watch = alerts(config, db, clk, part)
            try:
                run_forever(part.restrict(config), stop, db, records, clk, watch.engine)
            finally:
                watch.close()
        finally:
            records.close()
            db.close()
    finally:
        claim.release()
    if claim.lost:
        raise ClaimRefused(claim.lost)


def api_app(config: Config, refresh: bool = True) -> FastAPI:
    """The HTTP API, reports and display page on the readings' clock."""
    from foursave.api.main import create_app

    return create_app(config, clock(config, "api"), refresh=refresh)


@contextmanager
def stores(config: Config) -> Iterator[tuple[InfluxClient, RecordStore, ReportStore]]:
    """InfluxDB (as the reader: a report only reads it), the manual-record store and
    the report store, closed on exit (``foursave report``)."""
    from foursave.reports.store import ReportStore
    from foursave.rules.records import RecordStore

    db = influx(config, "reader", timeout_s=60)
    records = RecordStore(config.services.rules.records_path)
    reports = ReportStore(config.services.api.reports_path)
    try:
        yield db, records, reports
    finally:
        reports.close()
        records.close()
        db.close()


def on_stop_signal(stop: Callable[[], None]) -> None:
    """On SIGTERM or SIGINT, call ``stop`` from a thread of its own.  A signal handler
    runs in the main thread between two bytecodes; setting a ``threading.Event`` there
    deadlocks when the main thread holds the event's lock at that moment (inside
    ``Event.wait``), and the service never stops."""

    def handler(*_: object) -> None:
        threading.Thread(target=stop, name="stop-signal", daemon=True).start()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)
