"""``foursave rules``: alerts and derived results.

Alerts are evaluated every ``alert_interval_s`` (``rules/alerts/``).  Every
``interval_s`` the derived results are recomputed from live and backfilled data and
the manual records, and written to InfluxDB so Grafana and the API read them without
recomputing: the four-saving ledger (``ledger``), 15-minute and monthly demand
(``demand``, ``demand_month``), daily PV performance (``pv_daily``) and the monthly
Taipower bill rebuilt from the main meters (``bill_month``, ``rules/bill.py``), what
the PV is worth on it (``pv_value_month``, ``rules/pvvalue.py``) and, where the real bill
is recorded, the two compared (``bill_check``, ``rules/realbill.py``).  With
``services.influxdb.retention`` on, each pass also brings the hourly and daily rollups
of the readings up to date (``rules/downsample.py``).
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import date, timedelta

from foursave.core.clock import Clock, SystemClock
from foursave.core.config import Config
from foursave.core.influx import InfluxClient
from foursave.core.periods import add_months, month, months_between, today, year
from foursave.rules import downsample, pvvalue
from foursave.rules.alerts import AlertEngine
from foursave.rules.bill import (
    BillingPeriodError,
    NoMeterData,
    bill_lines,
    billing_periods,
    site_bill,
)
from foursave.rules.demand import demand_lines, forecast_lines, month_demand, months_of
from foursave.rules.ledger import Ledger, ledger_lines
from foursave.rules.pv import pv_days, pv_lines
from foursave.rules.realbill import bill_checks, check_lines
from foursave.rules.records import RecordStore
from foursave.rules.rollup import data_span
from foursave.rules.rows import LedgerRow
from foursave.rules.tariff import NoTariff

log = logging.getLogger("foursave.rules")


def run_once(
    config: Config,
    influx: InfluxClient,
    records: RecordStore,
    start: date | None = None,
    end: date | None = None,
    clock: Clock | None = None,
) -> list[LedgerRow]:
    """One evaluation pass over local dates [start, end) (default: all data present),
    each site's days and months in its own zone; ``clock`` says which days are still
    open (default: the system clock)."""
    now_ms = int((clock or SystemClock()).time() * 1000)
    if start is None or end is None:
        span = data_span(
            influx,
            *sorted({s.timezone for s in config.sites}),
            until_ms=now_ms,
            sites=[s.id for s in config.sites],
        )
        if span is None:
            log.info("no meter data yet: nothing to compute")
            return []
        start, end = start or span[0], end or span[1]
    ledger = Ledger(config, influx, records, clock)
    # load one extra year before: previous-year baselines come from the same data
    base_years = [st.ledger.base_year for st in config.sites]
    ledger.load(date(min([start.year - 1, *base_years]), 1, 1), end)
    periods = months_between(start, end) + [year(y) for y in range(start.year, end.year + 1)]
    rows = ledger.rows(periods)
    lines = ledger.daily_lines(start, end)
    pv = pv_days(config, influx, start, end, clock)
    for site in config.sites:
        lines.extend(ledger_lines([r for r in rows if r.site == site.id], site.timezone))
        for y, m in months_of(start, end):
            lines.extend(demand_lines(month_demand(config, influx, site, y, m), site.timezone))
        lines.extend(pv_lines([r for r in pv if r.site == site.id], site.timezone))
        if site.tariff is not None:
            for y, m in months_of(start, end):
                try:
                    b_periods = billing_periods(site, y, m, records)
                except BillingPeriodError as exc:
                    log.warning("bill %s %d-%02d: %s", site.id, y, m, exc)
                    continue
                for b_start, b_end in b_periods:
                    try:
                        bill = site_bill(
                            config, influx, site, b_start, b_end, records, now_ms=now_ms
                        )
                    except (NoTariff, NoMeterData) as exc:
                        log.info("bill %s %d-%02d: %s", site.id, y, m, exc)
                        continue
                    lines.extend(bill_lines(bill, site.timezone))
            # the rebuilt bill against the real one (bill_check: the bill_difference alert)
            for y, m in months_of(start, end):
                lines.extend(
                    check_lines(bill_checks(config, influx, site, y, m, records), site.timezone)
                )
        # what the site's PV is worth on its bill (pv_value_month, rules/pvvalue.py)
        lines.extend(pvvalue.month_lines(config, influx, site, months_of(start, end), records))
    for i in range(0, len(lines), 5000):
        influx.write(lines[i : i + 5000])
    log.info("ledger: %d rows for %s .. %s written", len(rows), start, end)
    if config.services.influxdb.retention.enabled:
        # the hourly and daily rollups kept for ever (rules/downsample.py)
        downsample.run_pass(config, influx, clock)
    return rows


def derived_window(config: Config, clock: Clock) -> tuple[date, date]:
    """Local dates [first of the previous month, tomorrow) that each pass recomputes.

    With sites in several zones "today" differs between them (by a day at most): the
    window runs from the previous month of the earliest local today to the day after
    the latest, so it covers every site's current and previous month."""
    days = [today(clock, tz) for tz in {s.timezone for s in config.sites}]
    first, last = min(days), max(days)
    return month(*add_months(first.year, first.month, -1)).start, last + timedelta(days=1)


def run_forever(
    config: Config,
    stop: threading.Event,
    influx: InfluxClient,
    records: RecordStore,
    clock: Clock,
    alerts: AlertEngine,
) -> None:
    """Alerts (and the running block's demand forecast) every alert_interval_s; the
    current and previous month's derived results every interval_s, until ``stop``.
    The caller (``foursave.app.run_rules``) owns and closes the clients."""
    next_derived = 0.0
    while not stop.is_set():
        try:
            alerts.evaluate()
            lines = forecast_lines(config, influx, clock.time())
            if lines:
                influx.write(lines)
        except Exception:  # one bad pass must not end the engine
            log.exception("alert pass failed; retrying next interval")
        if time.monotonic() >= next_derived:
            start, end = derived_window(config, clock)
            try:
                run_once(config, influx, records, start, end, clock)
            except Exception:
                log.exception("derived-results pass failed; retrying next interval")
            next_derived = time.monotonic() + config.services.rules.interval_s
        stop.wait(config.services.rules.alert_interval_s)
