"""What each kind of alert rule observes, one function per kind, registered in
``OBSERVERS``.  An observer reads InfluxDB for the rule's devices at ``now`` and says,
per device, whether the condition holds, has held for the whole ``for_s`` window, has
cleared (hysteresis), and the value shown in the incident.

Most kinds observe a *condition* (it holds as long as the readings say so).  The kinds
in ``EVENTS`` observe *events* instead, something that happened at a time of its own
(``Observation.since``, e.g. a new firmware): the engine dates the incident by the
event, reports each event once, resolves its incident when it is acknowledged or when
the observer no longer sees it (history only, not notified again), and opens a new one
for a newer event.

Adding a kind of rule touches this file only: its name in ``Kind``, the rule fields it
needs in ``NEEDS`` (checked when the rules file is loaded) and its observer function.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from foursave.core.config import Config, Device, Site
from foursave.core.influx import InfluxClient
from foursave.core.influxql import Cond, agg, column, eq, select, tag_in, time_range
from foursave.core.periods import zone
from foursave.rules.demand import forecast
from foursave.rules.pv import array_of

if TYPE_CHECKING:
    from foursave.rules.alerts.spec import RuleSpec

Kind = Literal[
    "threshold",
    "state",
    "stale",
    "demand_forecast",
    "rate_of_change",
    "peer_deviation",
    "identity_change",
    "bill_difference",
]

# rule fields a kind reads; a rule of that kind without one is refused on load
NEEDS: dict[str, tuple[str, ...]] = {
    "threshold": ("field", "value"),
    "state": (),
    "stale": (),
    "demand_forecast": ("value",),
    "rate_of_change": ("field", "value"),
    "peer_deviation": ("value",),
    "identity_change": (),
    "bill_difference": (),
}

# kinds whose observations are events (dated by Observation.since, cleared by an ack)
EVENTS = frozenset({"identity_change", "bill_difference"})

# stale rules look at the last day first; a device silent for longer is looked up once
STALE_LOOKBACK_MS = 86_400_000
LATEST_WINDOW_S = 120  # a threshold rule without for_s looks at the last value in this window
# a field every reading of the kind carries (stale rules look at its last time)
STALE_FIELDS = {
    "inverter": "state",
    "meter": "active_power_w",
    "weather": "ambient_temp_c",
    "water": "volume_m3",
}


@dataclass(frozen=True)
class Observation:
    active: bool  # the condition holds now
    sustained: bool  # ... and for the whole for_s window
    clear: bool  # the clear (hysteresis) condition holds
    value: float | None
    detail: str | None = None  # what the incident says in words (e.g. old -> new values)
    since: float | None = None  # an event's own time (epoch s): this observation is an event


@dataclass
class Context:
    """What observers share across passes: the configuration, the database, when the
    engine started and, for stale rules, the last time silent devices were heard."""

    config: Config
    influx: InfluxClient
    started: float  # a device never heard from is stale only stale_s after this
    sites: dict[str, Site] = field(init=False)
    # (measurement, field, device) -> last reading time before the look-back window
    heard: dict[tuple[str, str, str], int | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.sites = {s.id: s for s in self.config.sites}


@dataclass(frozen=True)
class Window:
    """The rule's devices at ``now``; ``since(ms)`` is their readings in (now - ms, now]."""

    devices: list[Device]
    now: float

    @property
    def now_ms(self) -> int:
        return int(self.now * 1000)

    def since(self, window_ms: int) -> list[Cond]:
        return [
            tag_in("device", [d.id for d in self.devices]),
            time_range(self.now_ms - window_ms, self.now_ms, include_start=False, include_end=True),
        ]


Observer = Callable[["RuleSpec", Window, Context], dict[str, Observation]]


def _value(rule: RuleSpec) -> float:
    if rule.value is None:  # refused on load (NEEDS): only a rule built in code gets here
        raise ValueError(f"rule {rule.id}: a {rule.kind} rule needs value")
    return rule.value


def _field(rule: RuleSpec) -> str:
    if rule.field is None:
        raise ValueError(f"rule {rule.id}: a {rule.kind} rule needs field")
    return rule.field


def _clear(rule: RuleSpec) -> float:
    return rule.clear_value if rule.clear_value is not None else _value(rule)


def stale(rule: RuleSpec, w: Window, ctx: Context) -> dict[str, Observation]:
    """No reading for ``stale_s``: the device's real age however long ago it was last
    heard from; one never heard from at all is stale only ``stale_s`` after start."""
    last: dict[str, int | None] = {}
    for m in sorted({rule.measurement or d.kind for d in w.devices}):  # each kind its own
        # one selector, so the row's time is the reading's time
        fld = rule.field or STALE_FIELDS.get(m, "online")
        kind_devices = [d for d in w.devices if (rule.measurement or d.kind) == m]
        rows = ctx.influx.rows(
            select(agg("last", fld), m, where=w.since(STALE_LOOKBACK_MS), group_by=["device"])
        )
        for r in rows:
            last[r["device"]] = r["time"]
            ctx.heard[(m, fld, r["device"])] = r["time"]  # the latest known
        last.update(
            _heard_before(ctx, m, fld, [d for d in kind_devices if d.id not in last], w.now_ms)
        )
    out: dict[str, Observation] = {}
    for d in w.devices:
        t = last.get(d.id)
        age = None if t is None else (w.now_ms - t) / 1000
        if age is None:  # never heard from at all: a fresh start gets stale_s
            age = w.now - ctx.started if w.now - ctx.started > rule.stale_s else None
            is_stale = age is not None
        else:  # heard from, however long ago: its real age
            is_stale = age > rule.stale_s
        out[d.id] = Observation(is_stale, is_stale, not is_stale, age)
    return out


def _heard_before(
    ctx: Context, measurement: str, fld: str, devices: list[Device], now_ms: int
) -> dict[str, int | None]:
    """Last reading time of devices silent for the whole look-back window, found once
    per engine run without a lower time bound (None: never heard from at all).

    A device that was last heard from a week ago is stale at once with its real
    age; only one never heard from gets the start-up grace period.  Later readings
    fall inside the look-back window, so one unbounded query per device suffices.
    """
    todo = [d for d in devices if (measurement, fld, d.id) not in ctx.heard]
    if todo:
        rows = ctx.influx.rows(
            select(
                agg("last", fld),
                measurement,
                where=[
                    tag_in("device", [d.id for d in todo]),
                    time_range(None, now_ms, include_end=True),
                ],
                group_by=["device"],
            )
        )
        found = {r["device"]: r["time"] for r in rows}
        for d in todo:
            ctx.heard[(measurement, fld, d.id)] = found.get(d.id)
    return {d.id: ctx.heard[(measurement, fld, d.id)] for d in devices}


def demand_forecast(rule: RuleSpec, w: Window, ctx: Context) -> dict[str, Observation]:
    """The running 15-minute block's forecast demand above ``value`` times the site's
    contract capacity."""
    out: dict[str, Observation] = {}
    for d in w.devices:
        site = ctx.sites[d.site]
        fc = forecast(ctx.config, ctx.influx, site, w.now)
        if fc is None or not site.contract_capacity_kw:
            continue
        cap = site.contract_capacity_kw
        active = fc.forecast_kw > _value(rule) * cap
        out[d.id] = Observation(active, active, fc.forecast_kw < _clear(rule) * cap, fc.forecast_kw)
    return out


def rate_of_change(rule: RuleSpec, w: Window, ctx: Context) -> dict[str, Observation]:
    """A field's change per hour over ``window_s`` beyond ``value`` (either sign)."""
    fld, m = _field(rule), rule.measurement or w.devices[0].kind
    rows = ctx.influx.rows(
        select(
            [agg("first", fld, "a"), agg("last", fld, "b")],
            m,
            where=w.since(int(rule.window_s * 1000)),
            group_by=["device"],
        )
    )
    out: dict[str, Observation] = {}
    for r in rows:
        if r["a"] is None or r["b"] is None:
            continue
        per_h = (r["b"] - r["a"]) / (rule.window_s / 3600)
        mag = abs(per_h)
        out[r["device"]] = Observation(
            mag > _value(rule), mag > _value(rule), mag < _clear(rule), per_h
        )
    return out


def peer_deviation(rule: RuleSpec, w: Window, ctx: Context) -> dict[str, Observation]:
    """An inverter's specific power (W per kWp) below ``value`` times the median of its
    site's other inverters over ``window_s``; not judged under a dim sky."""
    rows = ctx.influx.rows(
        select(
            agg("mean", "ac_power_w", "p"),
            "inverter",
            where=w.since(int(rule.window_s * 1000)),
            group_by=["device"],
        )
    )
    by_dev = {d.id: d for d in w.devices}
    specific: dict[str, tuple[str, float]] = {}
    for r in rows:
        d = by_dev.get(r["device"])
        if d is None or r["p"] is None:
            continue
        site_invs = [x for x in w.devices if x.site == d.site]
        arr = array_of(d, ctx.sites[d.site], len(site_invs))
        if arr:
            specific[d.id] = (d.site, r["p"] / arr[0])  # W per kWp
    out: dict[str, Observation] = {}
    for dev, (site_id, wkwp) in specific.items():
        peers = [v for k, (s2, v) in specific.items() if s2 == site_id and k != dev]
        if not peers:
            continue
        med = statistics.median(peers)
        if med < rule.min_peer_w_per_kwp:
            out[dev] = Observation(False, False, True, None)  # too dim to judge
            continue
        ratio = wkwp / med
        out[dev] = Observation(
            ratio < _value(rule), ratio < _value(rule), ratio > _clear(rule), ratio
        )
    return out


def state(rule: RuleSpec, w: Window, ctx: Context) -> dict[str, Observation]:
    """SunSpec ``St`` in one of ``states`` or ``Evt1`` bits of ``event_mask`` set."""
    rows = ctx.influx.rows(
        select(
            [agg("last", "state", "st"), agg("last", "events", "ev")],
            "inverter",
            where=w.since(int(max(rule.stale_s, 600) * 1000)),
            group_by=["device"],
        )
    )
    out: dict[str, Observation] = {}
    for r in rows:
        st, ev = r.get("st"), r.get("ev") or 0
        bad = (st in rule.states) or bool(rule.event_mask and (int(ev) & rule.event_mask))
        out[r["device"]] = Observation(bad, bad, not bad, float(st) if st is not None else None)
    return out


def threshold(rule: RuleSpec, w: Window, ctx: Context) -> dict[str, Observation]:
    """A field above (``op: ">"``) or below ``value``, sustained for ``for_s``; clears
    only past ``clear_value``.  With ``relative_to``, both are shares of the site's
    contract capacity."""
    # the last value within a few poll intervals; the whole for_s window if longer
    window_ms = int(max(rule.for_s, LATEST_WINDOW_S) * 1000)
    fld, m = _field(rule), rule.measurement or w.devices[0].kind
    rows = ctx.influx.rows(
        select(
            [
                agg("last", fld, "v"),
                agg("min", fld, "lo"),
                agg("max", fld, "hi"),
                agg("first", fld, "f"),
                agg("count", fld, "n"),
            ],
            m,
            where=w.since(window_ms),
            group_by=["device"],
        )
    )
    site_of = {d.id: d.site for d in w.devices}
    out: dict[str, Observation] = {}
    for r in rows:
        v = r["v"]
        if v is None:
            continue
        limit, clear_value = _value(rule), _clear(rule)
        if rule.relative_to == "contract_capacity_w":
            cap = ctx.sites[site_of[r["device"]]].contract_capacity_kw
            if not cap:
                continue  # no contract capacity configured: nothing to compare with
            limit, clear_value = limit * cap * 1000, clear_value * cap * 1000
        if rule.op == ">":
            active, sustained, clear = v > limit, r["lo"] > limit, v < clear_value
        else:
            active, sustained, clear = v < limit, r["hi"] < limit, v > clear_value
        sustained = sustained and (rule.for_s == 0 or r["n"] >= 2)
        out[r["device"]] = Observation(active, sustained, clear, float(v))
    return out


# how an identity change names the device_info fields ("version" is SunSpec Vr, the firmware)
IDENTITY_LABELS = {"version": "firmware"}


def identity_change(rule: RuleSpec, w: Window, ctx: Context) -> dict[str, Observation]:
    """An event: a device's identity (``device_info``) changed in any of ``fields``
    (default: firmware ``version`` and ``serial``) within the last ``window_s``, i.e.
    a point whose value differs from the field's last known value before it.

    The ingester writes a point on start and on every change, so equal consecutive
    points (a restart) are no change, and a field a point lacks (a failed read) keeps
    its last known value.  The latest change is reported, dated by its point; it
    stops being news (the incident resolves) when it leaves the window.
    """
    start_ms = w.now_ms - int(rule.window_s * 1000)
    ids = tag_in("device", [d.id for d in w.devices])
    # each field's last value before the window, then the window's points, oldest first
    before = ctx.influx.rows(
        select(
            [agg("last", f, f) for f in rule.fields],
            "device_info",
            where=[ids, time_range(None, start_ms, include_end=True)],
            group_by=["device"],
        )
    )
    points = ctx.influx.rows(
        select(
            [column(f) for f in rule.fields],
            "device_info",
            where=w.since(int(rule.window_s * 1000)),
            group_by=["device"],
        )
    )
    known: dict[str, dict[str, Any]] = {
        r["device"]: {f: r[f] for f in rule.fields if r.get(f) is not None} for r in before
    }
    latest: dict[str, tuple[int, list[tuple[str, Any, Any]], dict[str, Any]]] = {}
    for r in points:
        k = known.setdefault(r["device"], {})
        new = {f: r[f] for f in rule.fields if r.get(f) is not None}
        diffs = [(f, k[f], v) for f, v in new.items() if f in k and k[f] != v]
        k.update(new)
        if diffs:
            latest[r["device"]] = (r["time"], diffs, dict(k))
    site_of = {d.id: d.site for d in w.devices}
    out: dict[str, Observation] = {}
    for dev in known:
        if dev not in latest:
            out[dev] = Observation(False, False, True, None)
            continue
        t_ms, diffs, now_known = latest[dev]
        tz = zone(ctx.sites[site_of[dev]].timezone)
        detail = _identity_detail(dev, t_ms, diffs, now_known, rule.fields, tz)
        out[dev] = Observation(True, True, False, None, detail, t_ms / 1000)
    return out


def _identity_detail(
    dev: str,
    t_ms: int,
    diffs: list[tuple[str, Any, Any]],
    now_known: dict[str, Any],
    fields: tuple[str, ...],
    tz: Any,
) -> str:
    """``inv-01: firmware 3.11.02.R -> 3.12.01.R at 2026-10-13T11:00:00+08:00, serial
    unchanged`` (the site's local time)."""
    changed = {f for f, _, _ in diffs}
    what = ", ".join(f"{IDENTITY_LABELS.get(f, f)} {old} -> {new}" for f, old, new in diffs)
    when = datetime.fromtimestamp(t_ms / 1000, tz).isoformat(timespec="seconds")
    same = [IDENTITY_LABELS.get(f, f) for f in fields if f not in changed and f in now_known]
    return f"{dev}: {what} at {when}" + (f", {', '.join(same)} unchanged" if same else "")


def bill_difference(rule: RuleSpec, w: Window, ctx: Context) -> dict[str, Observation]:
    """An event: the latest bill month checked within ``window_s`` (the rules engine's
    ``bill_check`` point, ``rules/realbill.py``) has its rebuilt bill off the billed one
    by more than the site's ``tariff.bill_difference_share`` in kWh or NT$, or no rebuilt
    bill; the detail names the likely cause.  Reported once per bill month on the site's
    first matched device (match main meters); it resolves when a later pass finds the
    bill within the limit (a corrected record, backfilled data) or it is acknowledged."""
    first: dict[str, Device] = {}
    for d in w.devices:
        first.setdefault(d.site, d)
    out: dict[str, Observation] = {}
    for site_id, d in first.items():
        rows = ctx.influx.rows(
            select(
                [
                    column("exceeds"),
                    column("kwh_diff_share"),
                    column("ntd_diff_share"),
                    column("detail"),
                ],
                "bill_check",
                where=[
                    eq("site", site_id),
                    time_range(w.now_ms - int(rule.window_s * 1000), w.now_ms, include_end=True),
                ],
                newest_first=True,
                limit=1,
            )
        )
        if not rows:
            continue
        r = rows[0]
        shares = [abs(r[k]) for k in ("kwh_diff_share", "ntd_diff_share") if r.get(k) is not None]
        value = max(shares) if shares else None
        if r.get("exceeds"):
            out[d.id] = Observation(True, True, False, value, r.get("detail"), r["time"] / 1000)
        else:
            out[d.id] = Observation(False, False, True, value)
    return out


OBSERVERS: dict[str, Observer] = {
    "threshold": threshold,
    "state": state,
    "stale": stale,
    "demand_forecast": demand_forecast,
    "rate_of_change": rate_of_change,
    "peer_deviation": peer_deviation,
    "identity_change": identity_change,
    "bill_difference": bill_difference,
}
