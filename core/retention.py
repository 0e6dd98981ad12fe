"""Where readings and results live: the retention policies (``services.influxdb.retention``).

Without ``raw_days`` (the default) nothing changes: every point goes to the database's
default retention policy and is kept for ever.  With ``raw_days: N``:

==============  ===================  =========================================================
policy          duration             what
==============  ===================  =========================================================
``raw``         N days               the readings as stored: :data:`RAW_MEASUREMENTS` (the
                                     kinds' measurements, their parts, device and collector
                                     status, the ingester's counters)
``rollup_1h``   for ever             hourly rollups of the readings (rules/downsample.py)
``rollup_1d``   for ever             daily rollups, local days of each site's zone
(the default)   for ever, as ever    everything else: the rules engine's results (ledger,
                                     demand, bills, PV days, the ``counter_daily`` rollup),
                                     alert history, ``device_info``, ``late_data`` markers
==============  ===================  =========================================================

The raw readings move out rather than the results because the results, the alert
history and the counter rollup are what must never be lost, and they already live in
the default policy: nothing of theirs is moved or altered, and turning retention on
never shortens a policy that holds anything but readings.

Routing is the client's (core/influx.py): a line whose measurement is a raw one is
written with ``rp=raw``; a query of a raw measurement (``Query.measurement``) is sent
with ``rp=raw`` unless its builder named a policy (``select(..., rp=...)``,
:data:`~foursave.core.influxql.DEFAULT_RP` for the default one).  The policy travels as
``/write``'s and ``/query``'s ``rp`` parameter, never in the statement's text: InfluxDB
1.x serves both, and InfluxDB 3 maps ``db`` + ``rp`` onto the database ``db/rp``
(``foursave/raw``, ``foursave/rollup_1h``, ...), each with its own retention period,
whereas a qualified ``"raw"."meter"`` in InfluxQL it refuses.

:func:`ensure_policies` creates the three policies and alters ``raw`` to the
configured duration (InfluxDB 1.x statements; an admin's: ``foursave influx-setup``,
or the ingester on a server that checks no credentials).  When it creates ``raw`` in a
database whose default policy already holds readings, it copies the last N days of
them into ``raw`` (``SELECT ... INTO``), so that the results recomputed from the
readings (this and last month's bills, demand, PV days) keep their inputs; older
readings stay where they were, kept, and are read from there once, by the rollups
(rules/downsample.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from foursave.core import influxql
from foursave.core.config import InfluxRetention
from foursave.core.glossary import KINDS, PARTS
from foursave.core.influxql import AdminStatement

log = logging.getLogger("foursave.retention")

RAW_RP = "raw"
HOURLY_RP = "rollup_1h"
DAILY_RP = "rollup_1d"
ROLLUP_RPS: dict[str, str] = {"1h": HOURLY_RP, "1d": DAILY_RP}  # bucket -> its policy
RAW_SHARD_DAYS = 1  # raw points leave a day at a time (1.x drops whole shard groups)

# the measurements readings are stored in, and what they are rolled up by (their tags)
ROLLED_UP: dict[str, tuple[str, ...]] = {
    **{k: ("device", "role") if k == "meter" else ("device",) for k in KINDS},
    **{part: ("device", *tags) for parts in PARTS.values() for part, tags in parts.items()},
}
RAW_MEASUREMENTS = frozenset(ROLLED_UP) | {
    "device_status",
    "collector_status",
    "ingest_stats",
    "ingest_seq",
}

Runner = Callable[[AdminStatement, str, float | None], list[dict[str, Any]]]
"""``run(statement, what, timeout_s)``: one statement's series (``InfluxAdmin.execute``)."""

COPY_MARGIN_MS = 3_600_000  # copies start an hour inside the window (clocks disagree)
COPY_CHUNK_DAYS = 7  # SELECT ... INTO per measurement and week: each request stays short
COPY_TIMEOUT_S = 300.0


def raw_rp_for(retention: InfluxRetention | None, measurement: str | None) -> str | None:
    """The policy a point of ``measurement`` goes to and is read from: ``raw`` for a
    reading with retention on, else None (the database's default)."""
    if retention is None or not retention.enabled or measurement not in RAW_MEASUREMENTS:
        return None
    return RAW_RP


def raw_from_ms(retention: InfluxRetention | None, now_ms: int) -> int | None:
    """The oldest instant the raw policy still holds at ``now_ms`` (None: for ever)."""
    if retention is None or retention.raw_days is None:
        return None
    return now_ms - retention.raw_days * 86_400_000


def _days(duration: str) -> float | None:
    """InfluxDB's ``168h0m0s`` as days (``0s``: for ever, None)."""
    if duration in ("0s", "INF", ""):
        return None
    hours = 0.0
    num = ""
    for ch in duration:
        if ch.isdigit() or ch == ".":
            num += ch
            continue
        value, num = float(num or 0), ""
        hours += {"h": value, "m": value / 60, "s": value / 3600}.get(ch, 0.0)
    return hours / 24


def policies(run: Runner, database: str) -> dict[str, tuple[float | None, bool]]:
    """Policy name -> (duration in days, None for ever; whether the default)."""
    out: dict[str, tuple[float | None, bool]] = {}
    for s in run(influxql.show_retention_policies(database), "list the retention policies", None):
        cols = s.get("columns", [])
        for v in s.get("values", []):
            row = dict(zip(cols, v, strict=False))
            out[row["name"]] = (_days(str(row.get("duration", "0s"))), bool(row.get("default")))
    return out


def _what(days: float | None) -> str:
    return "for ever" if days is None else f"{days:g} days"


def ensure_policies(
    run: Runner, database: str, retention: InfluxRetention, now_ms: int
) -> list[str]:
    """Create or bring up to date the retention policies of ``retention`` (module
    docstring) in ``database``; what was done (or is worth saying), a line each."""
    have = policies(run, database)
    done: list[str] = []
    if not retention.enabled:
        if RAW_RP in have:
            done.append(
                f"note: retention policy {RAW_RP!r} exists in {database} but "
                "services.influxdb.retention.raw_days is not set: readings go to the default "
                f"policy, and those in {RAW_RP!r} are no longer read"
            )
        return done
    days = retention.raw_days
    assert days is not None
    created = RAW_RP not in have
    if created:
        run(
            influxql.create_retention_policy(RAW_RP, database, days, RAW_SHARD_DAYS),
            f"create retention policy {RAW_RP}",
            None,
        )
        done.append(f"retention policy {RAW_RP}: created, {days} days")
    elif have[RAW_RP][0] != days:
        was = have[RAW_RP][0]
        run(
            influxql.alter_retention_policy(RAW_RP, database, days),
            f"alter retention policy {RAW_RP}",
            None,
        )
        line = f"retention policy {RAW_RP}: {_what(was)} -> {days} days"
        if was is None or days < was:
            line += (
                f" (readings older than {days} days are deleted at the server's next "
                "retention check, [retention] check-interval: 30 min by default)"
            )
        done.append(line)
    else:
        done.append(f"retention policy {RAW_RP}: {days} days")
    for rp in (HOURLY_RP, DAILY_RP):
        if rp not in have:
            run(
                influxql.create_retention_policy(rp, database, None),
                f"create retention policy {rp}",
                None,
            )
            done.append(f"retention policy {rp}: created, for ever")
        elif have[rp][0] is not None:
            run(
                influxql.alter_retention_policy(rp, database, None),
                f"alter retention policy {rp}",
                None,
            )
            done.append(f"retention policy {rp}: {_what(have[rp][0])} -> for ever")
    default = next((name for name, (_, is_default) in have.items() if is_default), None)
    if default is not None and have[default][0] is not None:
        done.append(
            f"warning: the default retention policy {default!r} of {database} keeps "
            f"{_what(have[default][0])}: the rules engine's results and alert history live "
            f"there and are deleted after that; make it keep for ever (ALTER RETENTION "
            f'POLICY "{default}" ON "{database}" DURATION INF)'
        )
    if created and default is not None:
        done.extend(_copy_recent(run, database, default, days, now_ms))
    return done


def _copy_recent(run: Runner, database: str, default: str, days: int, now_ms: int) -> list[str]:
    """The readings of the last ``days`` days copied from the default policy into
    ``raw`` (a database that held readings before retention was turned on)."""
    start = now_ms - days * 86_400_000 + COPY_MARGIN_MS  # never beyond the policy
    copied: dict[str, int] = {}
    for m in sorted(RAW_MEASUREMENTS):
        if not run(influxql.any_point(database, default, m, start), f"look for {m}", None):
            continue
        t = start
        while t < now_ms + 86_400_000:
            t1 = t + COPY_CHUNK_DAYS * 86_400_000
            series = run(
                influxql.copy_points(database, m, default, RAW_RP, t, t1),
                f"copy {m} into {RAW_RP}",
                COPY_TIMEOUT_S,
            )
            for s in series:
                for v in s.get("values", []):
                    copied[m] = copied.get(m, 0) + int(v[-1] or 0)
            t = t1
    if not any(copied.values()):
        return []
    what = ", ".join(f"{m} {n:,}" for m, n in sorted(copied.items()) if n)
    log.info("copied the last %d days of readings into %s: %s", days, RAW_RP, what)
    return [
        f"readings of the last {days} days copied from {default!r} into {RAW_RP!r} ({what}); "
        f"older ones stay in {default!r}, where the rollups read them"
    ]
