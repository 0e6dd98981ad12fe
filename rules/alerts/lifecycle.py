"""The lifecycle of an alert: each pass asks every rule's observer about the devices
it matches, then moves each rule and device's incident pending -> firing -> resolved
(or cancelled), notifies once per incident (repeats only if asked for, never once
acknowledged) and writes every transition to alert history (``alert_events``), and
the acknowledgements made since the last pass.  Rules apply only in their ``hours``,
in daylight when ``daylight_only`` (the sun computed for the site with pvlib) and
outside maintenance windows.

An observed *event* (``Observation.since``: a firmware or serial change) is dated by
its own time, reported once (an incident for the same event is never opened again),
resolved when acknowledged or when its observer no longer sees it, and replaced by a
new incident when a newer event comes; its resolution goes to alert history and is not
notified (the one notification said all there is)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, tzinfo
from typing import Any

import pandas as pd
import pvlib

from foursave.core.clock import Clock
from foursave.core.config import Config, Device
from foursave.core.influx import InfluxClient
from foursave.core.periods import zone
from foursave.core.reading import to_line
from foursave.rules.alerts.incidents import (
    Incident,
    IncidentStore,
    with_text,
    write_pending_acks,
)
from foursave.rules.alerts.notify import Notifier
from foursave.rules.alerts.observers import EVENTS, OBSERVERS, Context, Observation, Window
from foursave.rules.alerts.spec import AlertSettings, RuleSpec

log = logging.getLogger("foursave.alerts")

Event = dict[str, Any]  # an incident event as notified (JSON) and written to history


def _epoch(t: datetime, tz: tzinfo) -> float:
    """Maintenance times without a UTC offset are the site's local time, not the host's."""
    return (t if t.tzinfo else t.replace(tzinfo=tz)).timestamp()


class AlertEngine:
    def __init__(
        self,
        config: Config,
        settings: AlertSettings,
        influx: InfluxClient,
        store: IncidentStore,
        notifier: Notifier,
        clock: Clock,
        owns: Callable[[str], bool] | None = None,
    ):
        """``config`` holds the devices evaluated (a rules partition's configuration is
        restricted to its sites, ``rules/partition.py``); ``owns`` says which sites'
        incidents in ``store`` are this engine's to write acknowledgements of (default:
        all; a store is shared by the partitions on a machine)."""
        self.config = config
        self.owns = owns
        self.s = settings
        self.influx = influx
        self.store = store
        self.notifier = notifier
        self.clock = clock
        self.sites = {s.id: s for s in config.sites}
        # what observers keep across passes (a device never heard from is stale only
        # stale_s after this start)
        self.context = Context(config, influx, started=clock.time())

    # -------------------------------------------------------------- conditions
    def _daylight(self, site_id: str, now: float) -> bool:
        site = self.sites[site_id]
        t = pd.DatetimeIndex([pd.Timestamp(now, unit="s", tz="UTC")])
        elev = pvlib.solarposition.get_solarposition(t, site.lat, site.lon)[
            "apparent_elevation"
        ].iloc[0]
        return bool(elev > 5.0)

    def _in_hours(self, rule: RuleSpec, site_id: str, now: float) -> bool:
        if rule.hours is None:
            return True
        h = datetime.fromtimestamp(now, zone(self.sites[site_id].timezone)).hour
        a, b = rule.hours
        return a <= h < b if a <= b else (h >= a or h < b)

    def _maintained(self, rule: RuleSpec, device: str, now: float, site_id: str = "") -> str | None:
        tz = zone(self.sites[site_id].timezone) if site_id in self.sites else UTC
        for m in self.s.maintenance:
            if (
                _epoch(m.start, tz) <= now < _epoch(m.end, tz)
                and (not m.rules or rule.id in m.rules)
                and (not m.devices or device in m.devices)
            ):
                return m.reason
        return None

    # -------------------------------------------------------------- lifecycle
    def evaluate(self) -> list[Event]:
        """One pass over every rule; returns the events it sent.  Acknowledgements
        made since the last pass (the API's, the CLI's) go to alert history too."""
        now = self.clock.time()
        events: list[Event] = []
        for rule in self.s.rules:
            devices = [d for d in self.config.devices if rule.match(d)]
            if not devices:
                continue
            try:
                obs = OBSERVERS[rule.kind](rule, Window(devices, now), self.context)
            except Exception:
                log.exception("rule %s: evaluation failed", rule.id)
                continue
            for d in devices:
                events.extend(self._step(rule, d, obs.get(d.id), now))
        if events:
            self._history(events)
        try:
            write_pending_acks(self.store, self.influx, self.owns)
        except Exception as exc:  # pending still: the next pass tries again
            log.warning("acknowledgements not written to alert history: %s", exc)
        return events

    def _step(self, rule: RuleSpec, d: Device, o: Observation | None, now: float) -> list[Event]:
        inc = self.store.open_for(rule.id, d.id)
        silenced = self._maintained(rule, d.id, now, d.site)
        applicable = (
            self._in_hours(rule, d.site, now)
            and not silenced
            and (not rule.daylight_only or self._daylight(d.site, now))
        )
        active = o is not None and o.active and applicable
        event = rule.kind in EVENTS
        since = o.since if o is not None else None
        events: list[Event] = []
        if inc is not None and active and since is not None and inc.pending_since != since:
            # a newer event: the previous one's incident is done, the new one gets its own
            events.extend(self._close(rule, inc, now, notify=False))
            inc = None
        if inc is None:
            if o is None or not active:
                return events
            if since is not None:
                last = self.store.last_for(rule.id, d.id)
                if last is not None and last.pending_since == since:
                    return events  # this event was reported (and acknowledged) already
            start = since if since is not None else now
            inc = self.store.create(rule.id, d.site, d.id, start, o.value, o.detail)
        if o is not None:
            inc.value, inc.detail = o.value, o.detail if o.detail is not None else inc.detail
        if inc.state == "pending":
            if not active:
                inc.state = "cancelled"
            elif rule.for_s == 0 or (
                o is not None and o.sustained and now - inc.pending_since >= rule.for_s
            ):
                # held for the whole for_s: since the incident opened and, in InfluxDB,
                # across the window (no dip in between)
                inc.state, inc.fired_at = "firing", now
                events.append(self._event("firing", rule, inc, now))
        elif inc.state == "firing":
            if o is not None and (o.clear or (event and inc.acked_by)):
                # an event's resolution is history only: its one notification said it all
                return events + self._close(rule, inc, now, notify=not event)
            elif (
                rule.repeat_s
                and not inc.acked_by
                and not silenced
                and applicable
                and now - (inc.last_notified_at or 0) >= rule.repeat_s
            ):
                events.append(self._event("repeat", rule, inc, now))
        self.store.update(inc)
        return events

    def _close(self, rule: RuleSpec, inc: Incident, now: float, notify: bool) -> list[Event]:
        """Resolve a firing incident (cancel a pending one) and store it."""
        if inc.state == "pending":
            inc.state = "cancelled"
            self.store.update(inc)
            return []
        inc.state, inc.resolved_at = "resolved", now
        done = self._event("resolved", rule, inc, now, notify=notify)
        self.store.update(inc)
        return [done]

    def _event(
        self, kind: str, rule: RuleSpec, inc: Incident, now: float, notify: bool = True
    ) -> Event:
        event: Event = {
            "event": kind,
            "incident": inc.id,
            "rule": rule.id,
            "title": rule.title,
            "title_zh": rule.title_zh,
            "severity": rule.severity,
            "site": inc.site,
            "device": inc.device,
            "value": inc.value,
            "detail": inc.detail,
            "ts": int(now * 1000),
            "since": datetime.fromtimestamp(inc.pending_since, UTC).isoformat(),
        }
        if notify:
            self.notifier.send(event)
            inc.last_notified_at = now
            inc.notifications += 1
        log.info("alert %s %s on %s/%s (incident %d)", kind, rule.id, inc.site, inc.device, inc.id)
        return event

    def _history(self, events: list[Event]) -> None:
        lines = [
            with_text(
                to_line(
                    "alert_events",
                    {
                        "site": e["site"],
                        "device": e["device"],
                        "rule": e["rule"],
                        "event": e["event"],
                        "severity": e["severity"],
                    },
                    {
                        "incident": e["incident"],
                        **({"value": float(e["value"])} if e["value"] is not None else {}),
                    },
                    e["ts"],
                ),
                {"detail": e["detail"]} if e["detail"] else {},
            )
            for e in events
        ]
        try:
            self.influx.write(lines)
        except Exception as exc:
            log.warning("alert history not written: %s", exc)
