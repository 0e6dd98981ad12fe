"""``foursave rules``: alerts and derived results.

Alerts are evaluated every ``alert_interval_s`` (``rules/alerts.py``).  Every
``interval_s`` the derived results are recomputed from live and backfilled data and
the manual records, and written to InfluxDB so Grafana and the API read them without
recomputing: the four-saving ledger (``ledger``), 15-minute and monthly demand
(``demand``, ``demand_month``) and daily PV performance (``pv_daily``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import paho.mqtt.client as mqtt
from foursave.core.clock import Clock, SystemClock, simulated_clock
from foursave.core.config import Config
from foursave.core.influx import InfluxClient
from foursave.rules.alerts import AlertEngine, IncidentStore, Notifier, load_alert_settings
from foursave.rules.demand import demand_lines, forecast_lines, month_demand, months_of
from foursave.rules.ledger import (
    Ledger,
    LedgerRow,
    data_span,
    ledger_lines,
    months_between,
    year,
)
from foursave.rules.pv import pv_days, pv_lines
from foursave.rules.records import RecordStore

log = logging.getLogger("foursave.rules")


def run_once(
    config: Config,
    influx: InfluxClient,
    records: RecordStore,
    start: date | None = None,
    end: date | None = None,
) -> list[LedgerRow]:
    """One evaluation pass over [start, end) (default: all data present)."""
    if start is None or end is None:
        span = data_span(influx)
        if span is None:
            log.info("no meter data yet: nothing to compute")
            return []
        start, end = start or span[0], end or span[1]
    ledger = Ledger(config, influx, records)
    # load one extra year before: previous-year baselines come from the same data
    base_years = [st.ledger.base_year for st in config.sites]
    ledger.load(date(min([start.year - 1, *base_years]), 1, 1), end)
    periods = months_between(start, end) + [year(y) for y in range(start.year, end.year + 1)]
    rows = ledger.rows(periods)
    lines = ledger_lines(rows) + ledger.daily_lines(start, end)
    for site in config.sites:
        for y, m in months_of(start, end):
            lines.extend(demand_lines(month_demand(config, influx, site, y, m), site.timezone))
    lines.extend(pv_lines(pv_days(config, influx, start, end)))
    for i in range(0, len(lines), 5000):
        influx.write(lines[i : i + 5000])
    log.info("ledger: %d rows for %s .. %s written", len(rows), start, end)
    return rows


def engine_clock(config: Config) -> Clock:
    if config.services.rules.clock == "simulated":
        return simulated_clock(config.services.simulator)
    return SystemClock()


def build_alerts(config: Config, influx: InfluxClient, clock: Clock) -> tuple[AlertEngine, object]:
    """The alert engine with its MQTT client (returned so the caller can close it)."""
    settings = load_alert_settings(config.services.rules.alerts_path)
    client = None
    if settings.mqtt:
        svc = config.services.mqtt
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"foursave-rules-{os.getpid()}"
        )
        if svc.username:
            client.username_pw_set(svc.username, svc.password)
        client.connect_async(svc.host, svc.port, svc.keepalive_s)
        client.loop_start()
    pw_env = config.services.rules.smtp_password_env
    notifier = Notifier(settings, client, os.environ.get(pw_env) if pw_env else None)
    store = IncidentStore(config.services.rules.state_path)
    return AlertEngine(config, settings, influx, store, notifier, clock), client


def run_forever(config: Config, stop: threading.Event) -> None:
    """Alerts (and the running block's demand forecast) every alert_interval_s; the
    current and previous month's derived results every interval_s."""
    influx = InfluxClient.from_config(config.services.influxdb)
    records = RecordStore(config.services.rules.records_path)
    clock = engine_clock(config)
    alerts, client = build_alerts(config, influx, clock)
    next_derived = 0.0
    try:
        while not stop.is_set():
            try:
                alerts.evaluate()
                lines = forecast_lines(config, influx, clock.time())
                if lines:
                    influx.write(lines)
            except Exception:  # one bad pass must not end the engine
                log.exception("alert pass failed; retrying next interval")
            if time.monotonic() >= next_derived:
                tz = ZoneInfo(config.sites[0].timezone) if config.sites else UTC
                today = datetime.fromtimestamp(clock.time(), tz).date()  # the local day
                first = date(today.year, today.month, 1) - timedelta(days=1)
                try:
                    run_once(
                        config,
                        influx,
                        records,
                        date(first.year, first.month, 1),
                        today + timedelta(days=1),
                    )
                except Exception:
                    log.exception("derived-results pass failed; retrying next interval")
                next_derived = time.monotonic() + config.services.rules.interval_s
            stop.wait(config.services.rules.alert_interval_s)
    finally:
        alerts.store.close()
        if client is not None:
            client.loop_stop()
            client.disconnect()
        records.close()
        influx.close()
