"""Sites, devices with live status, latest readings and time series."""

from __future__ import annotations

import re
import time
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Response
from pydantic import AwareDatetime, BaseModel

from foursave.api.deps import TOO_MANY, Reader, State, Throttled
from foursave.core.config import Device, InfluxRetention, Site
from foursave.core.glossary import FIELDS
from foursave.core.influxql import ALL, Expr, agg, column, eq, every, select, time_range
from foursave.core.retention import ROLLUP_RPS, raw_from_ms
from foursave.rules.downsample import stats_of

router = APIRouter(prefix="/api/v1", tags=["sites and devices"])

LATEST_WINDOW_S = 2 * 86_400  # "latest" looks back this far


class SitePublic(BaseModel):
    id: str
    name: str
    name_en: str | None
    lat: float
    lon: float
    timezone: str
    floor_area_m2: float | None
    contract_capacity_kw: float | None
    pv_capacity_kwp: float | None
    devices: int


class DeviceStatus(BaseModel):
    online: bool | None = None
    poll_ms: float | None = None
    errors: int | None = None
    last_error: str | None = None
    last_reading_ts: int | None = None
    status_ts: int | None = None
    collector: str | None = None
    out_of_bounds: dict[str, int] | None = None  # values left out since the collector started
    out_of_bounds_now: list[str] | None = None
    # identity and ratings as the device gives them (SunSpec models 1, 120, 702)
    info: dict[str, float | str] | None = None


class DevicePublic(BaseModel):
    id: str
    site: str
    kind: str
    role: str | None
    profile: str
    transport: str
    interval_s: float
    fields: list[str]
    status: DeviceStatus | None  # None: no status message seen since the API started


class FieldValue(BaseModel):
    value: float | int | bool | None
    unit: str


class Latest(BaseModel):
    device: str
    ts: int | None  # epoch ms of the reading; None: nothing in the last two days
    fields: dict[str, FieldValue]


Resolution = Literal["raw", "1h", "1d"]


class Series(BaseModel):
    device: str
    field: str
    unit: str
    interval: str | None
    aggregate: str | None
    points: list[tuple[int, float | int | bool | None]]
    resolution: Resolution = "raw"
    """What the points were computed from: the readings, or their hourly or daily
    rollup (``services.influxdb.retention``; also the X-Foursave-Resolution header)."""


def _site(state, site_id: str) -> Site:
    for s in state.config.sites:
        if s.id == site_id:
            return s
    raise HTTPException(404, f"no site {site_id!r}; sites: {[s.id for s in state.config.sites]}")


def device_of(state, device_id: str) -> Device:
    for d in state.config.devices:
        if d.id == device_id:
            return d
    raise HTTPException(404, f"no device {device_id!r}")


_CHECKED = {"status_ts", "out_of_bounds", "out_of_bounds_now", "info"}


def _counts(v: object) -> dict[str, int] | None:
    if not isinstance(v, dict):
        return None
    return {str(k): n for k, n in v.items() if isinstance(n, int) and not isinstance(n, bool)}


def _names(v: object) -> list[str] | None:
    return [x for x in v if isinstance(x, str)] if isinstance(v, list) else None


def _info(v: object) -> dict[str, float | str] | None:
    """The status's ``info``: only device_info fields of their type (a collector's
    status is not trusted to be well formed)."""
    if not isinstance(v, dict):
        return None
    out: dict[str, float | str] = {}
    for name, value in v.items():
        fdef = FIELDS["device_info"].get(name)
        if fdef is None:
            continue
        if fdef.type == "str" and isinstance(value, str):
            out[name] = value[:64]
        elif (
            fdef.type == "float" and isinstance(value, int | float) and not isinstance(value, bool)
        ):
            out[name] = float(value)
    return out or None


def _device_public(state, d: Device) -> DevicePublic:
    body = state.live.device(d.site, d.id)
    status = None
    if body is not None:
        plain = {k: body.get(k) for k in DeviceStatus.model_fields if k not in _CHECKED}
        status = DeviceStatus(
            **plain,
            status_ts=body.get("ts"),
            out_of_bounds=_counts(body.get("out_of_bounds")),
            out_of_bounds_now=_names(body.get("out_of_bounds_now")),
            info=_info(body.get("info")),
        )
    return DevicePublic(
        id=d.id,
        site=d.site,
        kind=d.kind,
        role=d.role,
        profile=d.profile,
        transport=d.transport,
        interval_s=d.interval_s,
        fields=sorted(FIELDS[d.kind]),
        status=status,
    )


@router.get("/sites")
def list_sites(who: Reader, state: State) -> list[SitePublic]:
    """The configured sites."""
    return [_site_public(state, s) for s in state.config.sites]


def _site_public(state, s: Site) -> SitePublic:
    n = sum(d.site == s.id for d in state.config.devices)
    return SitePublic(
        **{k: getattr(s, k) for k in SitePublic.model_fields if k != "devices"}, devices=n
    )


@router.get("/sites/{site_id}")
def get_site(site_id: str, who: Reader, state: State) -> SitePublic:
    """One site."""
    return _site_public(state, _site(state, site_id))


@router.get("/devices")
def list_devices(
    who: Reader, state: State, site: str | None = None, kind: str | None = None
) -> list[DevicePublic]:
    """Devices with their live status (from the collector's retained status messages)."""
    if site is not None:
        _site(state, site)
    return [
        _device_public(state, d)
        for d in state.config.devices
        if (site is None or d.site == site) and (kind is None or d.kind == kind)
    ]


@router.get("/devices/{device_id}")
def get_device(device_id: str, who: Reader, state: State) -> DevicePublic:
    """One device with its live status."""
    return _device_public(state, device_of(state, device_id))


@router.get("/devices/{device_id}/latest")
def latest(device_id: str, who: Reader, state: State) -> Latest:
    """The device's last stored reading (fields that failed to read are absent)."""
    d = device_of(state, device_id)
    now_ms = int(state.clock.time() * 1000)
    rows = state.influx.rows(
        select(
            ALL,
            d.kind,
            where=[
                eq("device", d.id),
                time_range(now_ms - LATEST_WINDOW_S * 1000, now_ms, include_end=True),
            ],
            newest_first=True,
            limit=1,
        )
    )
    if not rows:
        return Latest(device=d.id, ts=None, fields={})
    row = rows[0]
    known = FIELDS[d.kind]
    return Latest(
        device=d.id,
        ts=row["time"],
        fields={
            k: FieldValue(value=v, unit=known[k].unit)
            for k, v in row.items()
            if k in known and v is not None
        },
    )


_INTERVAL = re.compile(r"^([1-9][0-9]{0,5})(s|m|h|d)$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


# a range longer than this is served from the rollup of that bucket, when the interval
# is a whole number of its buckets (or the range begins before the raw readings kept)
LONG_RANGE_S = {"1h": 2 * 86_400, "1d": 60 * 86_400}
BUCKET_S = {"1h": 3_600, "1d": 86_400}
# what a rollup answers exactly, per kind of field (rules/downsample.py)
ROLLUP_ANSWERS = {
    "gauge": {"mean", "min", "max", "sum", "count"},
    "counter": {"last", "first", "count"},
    "state": {"last", "count"},
}


def _resolution(
    retention: InfluxRetention,
    kind: str | None,
    aggregate: str,
    step_s: int | None,
    span_s: float,
    before_raw: bool,
) -> Resolution:
    """Which points answer: the daily rollup, the hourly one, or the readings."""
    if not retention.enabled or kind is None:
        return "raw"
    if step_s is None:  # the points themselves: the hourly ones where the readings are gone
        return "1h" if before_raw else "raw"
    if aggregate not in ROLLUP_ANSWERS[kind]:
        return "raw"
    for res in ("1d", "1h"):
        if step_s % BUCKET_S[res] == 0 and (span_s > LONG_RANGE_S[res] or before_raw):
            return res
    return "raw"


def _rollup_exprs(field: str, kind: str, aggregate: str) -> list[Expr]:
    """The rollup's columns that give ``aggregate`` of ``field`` per interval."""
    if aggregate == "count":
        return [agg("sum", f"{field}_n", "v")]
    if kind == "gauge":
        if aggregate == "mean":  # the readings' mean: their sum over their count
            return [agg("sum", f"{field}_sum", "s"), agg("sum", f"{field}_n", "n")]
        return [
            {"min": agg("min", f"{field}_min", "v"), "max": agg("max", f"{field}_max", "v")}.get(
                aggregate, agg("sum", f"{field}_sum", "v")
            )
        ]
    if aggregate == "first":
        return [agg("first", f"{field}_first", "v")]
    return [agg("last", field, "v")]


@router.get("/series", responses=TOO_MANY)
def series(
    who: Reader,
    state: State,
    _: Throttled,
    response: Response,
    device: str,
    field: str,
    start: AwareDatetime,
    end: AwareDatetime,
    interval: Annotated[
        str | None,
        Query(
            description="aggregation interval like 60s, 15m, 1h, 1d; omit for raw points",
            max_length=8,
        ),
    ] = None,
    aggregate: Literal["mean", "min", "max", "last", "first", "sum", "count"] = "mean",
) -> Series:
    """A field of one device over [start, end), raw or aggregated per interval
    (intervals are aligned to the site's local time).

    With retention on (``services.influxdb.retention.raw_days``) a long range is
    computed from the rollups the rules engine keeps for ever, with the same field
    names: an interval of whole days over more than 60 days from the daily rollup, of
    whole hours over more than 2 days from the hourly one, and any range that begins
    before the raw readings kept; ``resolution`` (and the X-Foursave-Resolution header)
    says which.  A rollup answers mean, min, max, sum and count of a gauge, last,
    first and count of a counter, last and count of a state; raw points asked for
    before the readings kept are the hourly rollup's values.

    At most ``services.api.max_series_points`` points and ``max_series_days`` days per
    request: more is refused with 413 and the interval that would fit."""
    d = device_of(state, device)
    known = FIELDS[d.kind]
    if field not in known:
        raise HTTPException(
            422, f"field {field!r} is not a {d.kind} field; known: {', '.join(sorted(known))}"
        )
    if end <= start:
        raise HTTPException(
            422, f"end ({end.isoformat()}) must be after start ({start.isoformat()})"
        )
    cfg = state.config.services.api
    span_s = (end - start).total_seconds()
    if span_s > cfg.max_series_days * 86400:
        raise HTTPException(
            413,
            f"range of {span_s / 86400:.1f} days exceeds the limit of {cfg.max_series_days} days",
        )
    s_ms, e_ms = _epoch_ms(start), _epoch_ms(end)
    where = [eq("device", d.id), time_range(s_ms, e_ms)]
    retention = state.config.services.influxdb.retention
    raw_from = raw_from_ms(retention, int(time.time() * 1000))  # the server's window
    before_raw = raw_from is not None and s_ms < raw_from
    kind = stats_of(d.kind).get(field)
    tz = _site(state, d.site).timezone  # days and hours start at local midnight
    step_s = None
    if interval is not None:
        m = _INTERVAL.match(interval)
        if not m:
            raise HTTPException(
                422, f"interval {interval!r}: expected a number and s, m, h or d (e.g. 15m)"
            )
        step_s = int(m.group(1)) * _SECONDS[m.group(2)]
    res = _resolution(retention, kind, aggregate, step_s, span_s, before_raw)
    response.headers["X-Foursave-Resolution"] = res
    if res != "raw" and kind is not None:
        return _from_rollup(
            state, d, field, kind, res, interval, aggregate, step_s, span_s, where, tz
        )
    if before_raw and interval is not None:
        raise HTTPException(
            422,
            f"{field} from {start.isoformat()}: the readings are kept "
            f"{retention.raw_days} days, and the rollups keep the mean, min, max, sum and count "
            "of a gauge, the last, first and count of a counter, the last and count of a "
            "state, per hour or day: ask for one of those with a whole number of hours",
        )
    if interval is None:
        expected = span_s / d.interval_s
        if expected > cfg.max_series_points:
            counted = state.influx.rows(select(agg("count", field), d.kind, where=where))
            n = counted[0]["count"] if counted else 0
            if n > cfg.max_series_points:
                raise HTTPException(413, _too_many(n, cfg.max_series_points, span_s))
        q = select(column(field), d.kind, where=where)
        points = [(r["time"], r[field]) for r in state.influx.rows(q) if r[field] is not None]
        return Series(
            device=d.id,
            field=field,
            unit=known[field].unit,
            interval=None,
            aggregate=None,
            points=points,
        )
    assert step_s is not None
    n = int(span_s // step_s) + 1
    if n > cfg.max_series_points:
        raise HTTPException(413, _too_many(n, cfg.max_series_points, span_s))
    if known[field].type == "bool" and aggregate in ("mean", "sum"):
        raise HTTPException(422, f"{field} is a true/false field: use last, first or count")
    q = select(
        agg(aggregate, field),
        d.kind,
        where=where,
        group_by=[every(interval)],
        fill="none",
        tz=tz,
    )
    points = [(r["time"], r[aggregate]) for r in state.influx.rows(q)]
    return Series(
        device=d.id,
        field=field,
        unit=known[field].unit,
        interval=interval,
        aggregate=aggregate,
        points=points,
    )


def _from_rollup(
    state,
    d: Device,
    field: str,
    kind: str,
    res: Resolution,
    interval: str | None,
    aggregate: str,
    step_s: int | None,
    span_s: float,
    where: list,
    tz: str,
) -> Series:
    """The series from the hourly or daily rollup (rules/downsample.py)."""
    cfg = state.config.services.api
    known = FIELDS[d.kind]
    rp = ROLLUP_RPS[res]
    n = int(span_s // (step_s or BUCKET_S[res])) + 1
    if n > cfg.max_series_points:
        raise HTTPException(413, _too_many(n, cfg.max_series_points, span_s))
    if interval is None:
        rows = state.influx.rows(select(column(field), d.kind, where=where, rp=rp))
        return Series(
            device=d.id,
            field=field,
            unit=known[field].unit,
            interval=None,
            aggregate=None,
            points=[(r["time"], r[field]) for r in rows if r[field] is not None],
            resolution=res,
        )
    q = select(
        _rollup_exprs(field, kind, aggregate),
        d.kind,
        where=where,
        group_by=[every(interval)],
        fill="none",
        tz=tz,
        rp=rp,
    )
    points = []
    for r in state.influx.rows(q):
        v = r.get("v") if "n" not in r else (r["s"] / r["n"] if r["n"] else None)
        if v is not None:
            points.append((r["time"], v))
    return Series(
        device=d.id,
        field=field,
        unit=known[field].unit,
        interval=interval,
        aggregate=aggregate,
        points=points,
        resolution=res,
    )


def _epoch_ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def _too_many(n: int, limit: int, span_s: float) -> str:
    need = span_s / limit
    for unit, secs in (("s", 1), ("m", 60), ("h", 3600), ("d", 86400)):
        if need / secs < 60 or unit == "d":
            suggestion = f"{max(1, int(-(-need // secs)))}{unit}"
            break
    return f"this would return {n} points; the limit is {limit}: ask for interval={suggestion} or a shorter range"
