"""InfluxQL, built in one place: every statement foursave sends is made here.

Values never meet a query as raw text: identifiers are double-quoted and string
literals single-quoted with ``\\``, the quote and newlines escaped (the escapes
InfluxQL's scanner knows), numbers and booleans are checked, durations, ``fill`` and
zone names are validated.  ``where`` takes only conditions built here, so a plain
string (an id someone forgot to check) cannot slip into a statement.

    select(agg("last", "import_energy_wh", "c"), "meter",
           where=[tag_in("device", ["m-1", "m-2"]), time_range(0, 86_400_000)],
           group_by=[every("1d"), "device"], fill="none", tz="Asia/Taipei")
    -> SELECT last("import_energy_wh") AS "c" FROM "meter"
       WHERE ("device" = 'm-1' OR "device" = 'm-2') AND time >= 0ms AND time < 86400000ms
       GROUP BY time(1d), "device" fill(none) tz('Asia/Taipei')

The pieces: :func:`ident`, :func:`string`, :func:`literal` (quoting); :func:`eq`,
:func:`tag_in`, :func:`time_range` (conditions); :func:`column`, :func:`agg`, ``ALL``
(the SELECT list); :func:`every` (``time(..)`` buckets); :func:`select`; the
``show_*`` statements.  Bad input (an empty id list, an unknown zone, a malformed
duration) raises ValueError saying what was expected.

A set of tag values is always matched as an OR-chain of equalities in parentheses
(:func:`tag_in`), never as a regex.  Times are epoch milliseconds.  Grafana's macros
have their own names: :data:`TIME_FILTER` (``$timeFilter``), :data:`GRAFANA_INTERVAL`
(``$__interval``) and :func:`grafana_match` (``"tag" =~ /^$variable$/``); they are for
``dashboards/build.py``, where Grafana expands them.

Only statements InfluxDB 3 also serves are built for use at run time: SELECT and
SHOW MEASUREMENTS / TAG KEYS / TAG VALUES / FIELD KEYS (:func:`is_served`; writes go
through ``/write``).  :func:`create_database` is the one 1.x-only convenience.  User
and retention-policy management (CREATE USER, GRANT, CREATE RETENTION POLICY, ...:
1.x only) is built at the end, as :class:`AdminStatement`, for core/influxadmin.py
and core/retention.py alone.  A query reads the retention policy its
:class:`Query` names (``select(..., rp=...)``), sent beside it, not in its text.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


class Query(str):
    """A complete InfluxQL statement built here (a ``str``: the client takes it as is).

    ``measurement`` is the measurement it reads (a subquery's own), ``rp`` the retention
    policy its caller named (:data:`DEFAULT_RP`: the database's default; ``None``: the
    client decides, core/retention.py): the client sends it as ``/query``'s ``rp``
    parameter, which InfluxDB 1.x serves and InfluxDB 3 maps to the database
    ``db/rp``; a qualified ``"rp"."measurement"`` in the text is not served by
    InfluxDB 3 (``select(..., qualify=True)``: Grafana's panels only)."""

    measurement: str | None = None
    rp: str | None = None


@dataclass(frozen=True)
class Cond:
    """A WHERE condition built here; several are joined with AND."""

    text: str


@dataclass(frozen=True)
class Expr:
    """An item of a SELECT list: a field, a tag or an aggregate, maybe with an alias."""

    text: str


@dataclass(frozen=True)
class Bucket:
    """``time(<duration>)`` in a GROUP BY."""

    text: str


Value = str | int | float | bool

# ------------------------------------------------------------------ quoting


def ident(name: str) -> str:
    """A double-quoted identifier (measurement, field, tag key, alias)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"an identifier must be a non-empty string, not {name!r}")
    return '"' + _escape(name, '"') + '"'


def string(value: str) -> str:
    """A single-quoted string literal (tag values, string fields)."""
    if not isinstance(value, str):
        raise ValueError(f"a string literal must be a str, not {value!r}")
    return "'" + _escape(value, "'") + "'"


def _escape(s: str, quote: str) -> str:
    # InfluxQL's scanner knows \\ \' \" \n; a raw newline would end the token
    return s.replace("\\", "\\\\").replace(quote, "\\" + quote).replace("\n", "\\n")


def literal(value: Value) -> str:
    """A value as InfluxQL writes it: 'string', true/false, an integer or a float."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} has no InfluxQL literal")
        return repr(value)
    return string(value)


# ------------------------------------------------------------------ conditions


def eq(key: str, value: Value) -> Cond:
    """``"key" = value`` (a tag or a field)."""
    return Cond(f"{ident(key)} = {literal(value)}")


def tag_in(key: str, values: Sequence[str]) -> Cond:
    """The tag is one of ``values``: ``("key" = 'a' OR "key" = 'b')``."""
    if isinstance(values, str):
        raise ValueError(f"tag_in({key!r}, ...) takes a list of values, not the string {values!r}")
    if not values:
        raise ValueError(f"tag_in({key!r}, []): no values to match (callers skip the query)")
    return Cond("(" + " OR ".join(f"{ident(key)} = {string(v)}" for v in values) + ")")


def time_range(
    start_ms: int | None = None,
    end_ms: int | None = None,
    *,
    include_start: bool = True,
    include_end: bool = False,
) -> Cond:
    """``time >= start AND time < end`` in epoch milliseconds; either bound may be
    left open, and each may include its instant or not."""
    parts = []
    for ms, op in (
        (start_ms, ">=" if include_start else ">"),
        (end_ms, "<=" if include_end else "<"),
    ):
        if ms is None:
            continue
        if isinstance(ms, bool) or not isinstance(ms, int):
            raise ValueError(f"time bounds are integer epoch milliseconds, not {ms!r}")
        parts.append(f"time {op} {ms}ms")
    if not parts:
        raise ValueError("time_range() needs a start, an end or both")
    return Cond(" AND ".join(parts))


# Grafana's macros (dashboards/build.py only: Grafana replaces them before InfluxDB sees them)
TIME_FILTER = Cond("$timeFilter")
GRAFANA_INTERVAL = "$__interval"
_VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def grafana_match(key: str, variable: str) -> Cond:
    """``"key" =~ /^$variable$/``: the tag matches a Grafana template variable (Grafana
    writes its value, or several as ``(a|b)``, regex-escaped)."""
    if not _VARIABLE.match(variable):
        raise ValueError(f"{variable!r} is not a Grafana variable name")
    return Cond(f"{ident(key)} =~ /^${variable}$/")


# ------------------------------------------------------------------ SELECT

AGGREGATES = frozenset(
    {"count", "distinct", "first", "last", "max", "mean", "median", "min", "mode", "spread"}
    | {"stddev", "sum"}
)
ALL = Expr("*")
DEFAULT_RP = ""  # Query.rp: the database's default retention policy, whatever its name
_DURATION = re.compile(r"^[1-9][0-9]*(ns|u|µ|ms|s|m|h|d|w)$")
_FILLS = frozenset({"none", "null", "previous", "linear"})


def _alias(text: str, alias: str | None) -> Expr:
    return Expr(text if alias is None else f"{text} AS {ident(alias)}")


def column(name: str, alias: str | None = None) -> Expr:
    """A field or tag by name: ``"name"`` (``AS "alias"``)."""
    return _alias(ident(name), alias)


def agg(function: str, name: str, alias: str | None = None) -> Expr:
    """``function("name")``, e.g. ``agg("last", "c")``; ``name="*"``: every field."""
    if function not in AGGREGATES:
        raise ValueError(f"unknown aggregate {function!r}; known: {', '.join(sorted(AGGREGATES))}")
    return _alias(f"{function}({'*' if name == '*' else ident(name)})", alias)


def arith(left: Expr, op: str, right: Expr | int | float, alias: str | None = None) -> Expr:
    """``left op right`` between columns or aggregates (no aliases inside), e.g.
    ``arith(agg("max", "seq"), "-", agg("min", "seq"))`` -> ``max("seq") - min("seq")``."""
    if op not in ("+", "-", "*", "/"):
        raise ValueError(f"operator {op!r}: expected +, -, * or /")
    if not isinstance(right, Expr):
        if isinstance(right, bool) or not isinstance(right, int | float):
            raise ValueError(f"arith(): {right!r} is not a number")
        right = Expr(literal(right))
    terms = [left, right]
    for t in terms:
        if not isinstance(t, Expr) or " AS " in t.text or t is ALL:
            raise ValueError(f"arith() takes unaliased columns or aggregates, not {t!r}")
    return _alias(f"{terms[0].text} {op} {terms[1].text}", alias)


def every(duration: str) -> Bucket:
    """``time(15m)`` for GROUP BY; ``duration`` like 15m, 1h, 1d, or GRAFANA_INTERVAL."""
    if duration != GRAFANA_INTERVAL and not _DURATION.match(duration):
        raise ValueError(f"{duration!r} is not an InfluxQL duration like 15m, 1h or 1d")
    return Bucket(f"time({duration})")


def zone_name(tz: str) -> str:
    """``tz`` if it is a time zone zoneinfo knows (the name InfluxDB looks up too)."""
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ValueError(
            f"unknown time zone {tz!r}: expected an IANA name like 'Asia/Taipei'"
        ) from None
    return tz


def qualified(measurement: str, rp: str, database: str | None = None) -> str:
    """``"rp"."measurement"`` or ``"db"."rp"."measurement"``: a measurement of a named
    retention policy, as InfluxDB 1.x (and Grafana's query editor) writes it."""
    if not rp:
        raise ValueError(f"{measurement!r}: a qualified name needs a retention policy")
    parts = [database, rp, measurement] if database is not None else [rp, measurement]
    return ".".join(ident(p) for p in parts)


def select(
    fields: Sequence[Expr] | Expr,
    source: str | Query | Sequence[str],
    *,
    where: Sequence[Cond] = (),
    group_by: Sequence[Bucket | str] = (),
    fill: str | int | float | None = None,
    newest_first: bool = False,
    limit: int | None = None,
    tz: str | None = None,
    rp: str | None = None,
    qualify: bool = False,
) -> Query:
    """``SELECT fields FROM source [WHERE a AND b] [GROUP BY time(..), "tag"] [fill(..)]
    [ORDER BY time DESC] [LIMIT n] [tz('Zone/Name')]``.

    ``source`` is a measurement name, several (``FROM "a","b"``: each answers as its
    own series), or a Query for a subquery.  ``group_by`` items are
    :func:`every` buckets or tag keys.  ``tz`` makes ``every("1d")`` local days.
    ``rp`` names the retention policy read (:class:`Query`); ``qualify`` writes it into
    the text as ``"rp"."measurement"`` (for Grafana, whose data source names the
    database; InfluxDB 3 refuses it: run-time queries leave it to the client).
    """
    items = [fields] if isinstance(fields, Expr) else list(fields)
    if not items or not all(isinstance(f, Expr) for f in items):
        raise ValueError("select() needs columns built with column(), agg() or ALL")
    if isinstance(source, Query):
        if qualify:
            raise ValueError("qualify names a measurement's retention policy, not a subquery's")
        src, measurement = f"({source})", source.measurement
        rp = source.rp if rp is None else rp
    elif isinstance(source, str):
        src = qualified(source, rp) if qualify and rp else ident(source)
        measurement = source
    else:
        if not source:
            raise ValueError("select() needs at least one measurement")
        names = list(source)
        src = ",".join(qualified(m, rp) if qualify and rp else ident(m) for m in names)
        # one query reads one retention policy: the first names it (the readings' kinds
        # all live in the same one)
        measurement = names[0]
    q = f"SELECT {', '.join(f.text for f in items)} FROM {src}"
    q += _where(where)
    if group_by:
        dims = [g.text if isinstance(g, Bucket) else ident(g) for g in group_by]
        q += " GROUP BY " + ", ".join(dims)
    if fill is not None:
        if not group_by:
            raise ValueError("fill() needs a GROUP BY")
        if isinstance(fill, str) and fill not in _FILLS:
            raise ValueError(f"fill({fill!r}): expected none, null, previous, linear or a number")
        q += f" fill({fill if isinstance(fill, str) else literal(fill)})"
    if newest_first:
        q += " ORDER BY time DESC"
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"LIMIT must be a positive integer, not {limit!r}")
        q += f" LIMIT {limit}"
    if tz is not None:
        q += f" tz({string(zone_name(tz))})"
    return _query(q, measurement, rp)


def _query(text: str, measurement: str | None, rp: str | None) -> Query:
    out = Query(text)
    out.measurement, out.rp = measurement, rp
    return out


def _where(conds: Sequence[Cond]) -> str:
    if isinstance(conds, Cond):
        conds = [conds]
    for c in conds:
        if not isinstance(c, Cond):
            raise TypeError(f"where takes conditions built with eq(), tag_in() ..., not {c!r}")
    return " WHERE " + " AND ".join(c.text for c in conds) if conds else ""


# ------------------------------------------------------------------ SHOW


def show_measurements() -> Query:
    return Query("SHOW MEASUREMENTS")


def show_tag_keys(measurement: str | None = None) -> Query:
    return _query(
        "SHOW TAG KEYS" + (f" FROM {ident(measurement)}" if measurement else ""), measurement, None
    )


def show_field_keys(measurement: str | None = None) -> Query:
    return _query(
        "SHOW FIELD KEYS" + (f" FROM {ident(measurement)}" if measurement else ""),
        measurement,
        None,
    )


def show_tag_values(
    measurement: str,
    key: str,
    where: Sequence[Cond] = (),
    *,
    rp: str | None = None,
    qualify: bool = False,
) -> Query:
    """``SHOW TAG VALUES FROM "m" WITH KEY = "key" [WHERE ...]`` (``rp``, ``qualify``: as
    :func:`select`'s)."""
    src = qualified(measurement, rp) if qualify and rp else ident(measurement)
    return _query(
        f"SHOW TAG VALUES FROM {src} WITH KEY = {ident(key)}{_where(where)}", measurement, rp
    )


# ------------------------------------------------------------------ the rest

_SERVED = re.compile(
    r"^\s*(SELECT\b|SHOW\s+(MEASUREMENTS|TAG\s+KEYS|TAG\s+VALUES|FIELD\s+KEYS)\b)", re.IGNORECASE
)


def is_served(q: str) -> bool:
    """Whether ``q`` is a statement InfluxDB 3 serves too (SELECT or one of the SHOWs)."""
    return bool(_SERVED.match(q))


def create_database(name: str) -> Query:
    """``CREATE DATABASE "name"``: InfluxDB 1.x only (3.x creates a database on the first
    write); kept because the ingester and the tests start from an empty 1.x server."""
    return Query(f"CREATE DATABASE {ident(name)}")


# ------------------------------------------------------------------ users (1.x only)
#
# InfluxDB 1.x manages its users with InfluxQL; 2.x and 3.x have tokens instead and serve
# none of these.  They are sent only by core/influxadmin.py (``foursave influx-setup``),
# never through ``InfluxClient.query`` (:func:`is_served` refuses them), and their type
# is not Query.

PRIVILEGES = ("READ", "WRITE", "ALL")


class AdminStatement(str):
    """A user-management statement built here (InfluxDB 1.x only; may hold a password:
    never log one)."""


def show_users() -> AdminStatement:
    return AdminStatement("SHOW USERS")


def show_grants(user: str) -> AdminStatement:
    return AdminStatement(f"SHOW GRANTS FOR {ident(user)}")


def create_user(user: str, password: str, *, admin: bool = False) -> AdminStatement:
    """``CREATE USER "user" WITH PASSWORD '...'`` (``WITH ALL PRIVILEGES``: an admin)."""
    if not password:
        raise ValueError(f"user {user!r}: an empty password")
    return AdminStatement(
        f"CREATE USER {ident(user)} WITH PASSWORD {string(password)}"
        + (" WITH ALL PRIVILEGES" if admin else "")
    )


def set_password(user: str, password: str) -> AdminStatement:
    if not password:
        raise ValueError(f"user {user!r}: an empty password")
    return AdminStatement(f"SET PASSWORD FOR {ident(user)} = {string(password)}")


def grant(privilege: str, database: str, user: str) -> AdminStatement:
    """``GRANT READ|WRITE|ALL ON "db" TO "user"``: the user's one privilege on the
    database (1.x replaces the one it had)."""
    if privilege not in PRIVILEGES:
        raise ValueError(f"privilege {privilege!r}: expected one of {', '.join(PRIVILEGES)}")
    return AdminStatement(f"GRANT {privilege} ON {ident(database)} TO {ident(user)}")


def show_retention_policies(database: str) -> AdminStatement:
    return AdminStatement(f"SHOW RETENTION POLICIES ON {ident(database)}")


def _rp_duration(days: int | None) -> str:
    if days is None:
        return "INF"
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise ValueError(f"a retention policy's duration is a whole number of days, not {days!r}")
    return f"{days}d"


def create_retention_policy(
    name: str, database: str, days: int | None, shard_days: int | None = None
) -> AdminStatement:
    """``CREATE RETENTION POLICY "name" ON "db" DURATION 400d|INF REPLICATION 1
    [SHARD DURATION 1d]`` (never the database's default)."""
    shard = f" SHARD DURATION {_rp_duration(shard_days)}" if shard_days is not None else ""
    return AdminStatement(
        f"CREATE RETENTION POLICY {ident(name)} ON {ident(database)} "
        f"DURATION {_rp_duration(days)} REPLICATION 1{shard}"
    )


def alter_retention_policy(name: str, database: str, days: int | None) -> AdminStatement:
    """``ALTER RETENTION POLICY "name" ON "db" DURATION 400d|INF``."""
    return AdminStatement(
        f"ALTER RETENTION POLICY {ident(name)} ON {ident(database)} DURATION {_rp_duration(days)}"
    )


def copy_points(
    database: str, measurement: str, from_rp: str, to_rp: str, start_ms: int, end_ms: int
) -> AdminStatement:
    """``SELECT * INTO "db"."to"."m" FROM "db"."from"."m" WHERE time >= .. AND time < ..
    GROUP BY *``: the points of [start_ms, end_ms) copied into another retention policy,
    tags kept as tags (InfluxDB 1.x only: InfluxDB 3 has no INTO)."""
    return AdminStatement(
        f"SELECT * INTO {qualified(measurement, to_rp, database)} "
        f"FROM {qualified(measurement, from_rp, database)}"
        f"{_where([time_range(start_ms, end_ms)])} GROUP BY *"
    )


def any_point(database: str, rp: str, measurement: str, start_ms: int) -> AdminStatement:
    """``SELECT * FROM "db"."rp"."m" WHERE time >= .. LIMIT 1``: whether a policy holds
    points of a measurement (before :func:`copy_points`)."""
    return AdminStatement(
        f"SELECT * FROM {qualified(measurement, rp, database)}"
        f"{_where([time_range(start_ms)])} LIMIT 1"
    )


def revoke_admin(user: str) -> AdminStatement:
    """``REVOKE ALL PRIVILEGES FROM "user"``: no longer an admin (database grants stay)."""
    return AdminStatement(f"REVOKE ALL PRIVILEGES FROM {ident(user)}")
