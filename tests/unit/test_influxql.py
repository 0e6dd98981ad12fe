"""core/influxql.py: quoting, conditions, SELECT and SHOW as text, bad input refused
with a clear message, and hostile tag values matched exactly on a real influxd."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from foursave.core.influx import InfluxClient
from foursave.core.influxql import (
    ALL,
    GRAFANA_INTERVAL,
    TIME_FILTER,
    Cond,
    agg,
    arith,
    column,
    create_database,
    eq,
    every,
    grafana_match,
    ident,
    is_served,
    literal,
    select,
    show_field_keys,
    show_measurements,
    show_tag_keys,
    show_tag_values,
    string,
    tag_in,
    time_range,
    zone_name,
)
from foursave.core.reading import to_line

HOSTILE = [
    "x' OR 1=1 --",
    '"; DROP MEASUREMENT "meter"; --',
    "back\\slash",
    "two\\\\back",  # (a tag value cannot end in a backslash in line protocol)
    "\\'",
    "永華",
    "it's",
    'a"b',
    "a b,c=d",
    ".*",
    "/^a$/",
]


@pytest.mark.parametrize(
    ("name", "quoted"),
    [
        ("meter", '"meter"'),
        ('a"b', '"a\\"b"'),
        ("back\\slash", '"back\\\\slash"'),
        ("trailing\\", '"trailing\\\\"'),
        ("two\nlines", '"two\\nlines"'),
        ("永華", '"永華"'),
        ("it's", '"it\'s"'),  # the other quote needs nothing
        ('"; DROP MEASUREMENT meter; --', '"\\"; DROP MEASUREMENT meter; --"'),
    ],
)
def test_identifiers_are_double_quoted_and_escaped(name, quoted):
    assert ident(name) == quoted


@pytest.mark.parametrize(
    ("value", "quoted"),
    [
        ("main", "'main'"),
        ("x' OR 1=1 --", "'x\\' OR 1=1 --'"),
        ("back\\slash", "'back\\\\slash'"),
        ("trailing\\", "'trailing\\\\'"),  # cannot escape the closing quote
        ("\\'", "'\\\\\\''"),
        ("two\nlines", "'two\\nlines'"),
        ("永華", "'永華'"),
        ('a"b', "'a\"b'"),
        ('"; DROP', "'\"; DROP'"),
        ("", "''"),
    ],
)
def test_string_literals_are_single_quoted_and_escaped(value, quoted):
    assert string(value) == quoted


@pytest.mark.parametrize(
    ("value", "text"),
    [(True, "true"), (False, "false"), (5, "5"), (-3, "-3"), (0.25, "0.25"), ("5", "'5'")],
)
def test_literals_keep_their_type(value, text):
    assert literal(value) == text


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: ident(""), "non-empty"),
        (lambda: ident(None), "non-empty"),
        (lambda: string(5), "must be a str"),
        (lambda: literal(float("nan")), "no InfluxQL literal"),
        (lambda: literal(float("inf")), "no InfluxQL literal"),
        (lambda: tag_in("device", []), "no values to match"),
        (lambda: tag_in("device", "inv-01"), "list of values"),
        (lambda: time_range(), "needs a start, an end or both"),
        (lambda: time_range(1.5, 2), "integer epoch milliseconds"),
        (lambda: time_range(True, 2), "integer epoch milliseconds"),
        (lambda: time_range("0", 2), "integer epoch milliseconds"),
        (lambda: every("1 d"), "not an InfluxQL duration"),
        (lambda: every("0s"), "not an InfluxQL duration"),
        (lambda: every("1d), time(1h"), "not an InfluxQL duration"),
        (lambda: every(""), "not an InfluxQL duration"),
        (lambda: zone_name("Mars/Olympus_Mons"), "unknown time zone 'Mars/Olympus_Mons'"),
        (lambda: zone_name("Asia/Taipei'); DROP"), "unknown time zone"),
        (lambda: zone_name("../../etc/passwd"), "unknown time zone"),
        (lambda: zone_name(""), "unknown time zone"),
        (lambda: select(ALL, "m", tz="Nowhere/Town"), "unknown time zone"),
        (lambda: select([], "m"), "needs columns"),
        (lambda: select(["x"], "m"), "needs columns"),
        (lambda: select(ALL, "m", fill="none"), "fill() needs a GROUP BY"),
        (lambda: select(ALL, "m", group_by=["device"], fill="zero"), "expected none, null"),
        (lambda: select(ALL, "m", limit=0), "positive integer"),
        (lambda: agg("drop", "x"), "unknown aggregate 'drop'"),
        (lambda: select(ALL, []), "at least one measurement"),
        (lambda: arith(agg("max", "x"), "%", 1), "operator '%'"),
        (lambda: arith(agg("max", "x"), "-", "1"), "is not a number"),
        (lambda: arith(agg("max", "x", "m"), "-", 1), "unaliased"),
        (lambda: arith(ALL, "-", 1), "unaliased"),
        (lambda: grafana_match("site", "site/ OR 1"), "not a Grafana variable name"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(call, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call()


def test_several_measurements_and_arithmetic_between_aggregates():
    q = select(
        [arith(arith(agg("spread", "seq"), "-", agg("count", "seq")), "+", 1, "gaps")],
        ["meter", 'we"ird'],
        group_by=["device"],
    )
    assert q == (
        'SELECT spread("seq") - count("seq") + 1 AS "gaps" FROM "meter","we\\"ird" '
        'GROUP BY "device"'
    )


def test_where_takes_only_built_conditions():
    with pytest.raises(TypeError, match="conditions built with"):
        select(ALL, "m", where=["\"device\" = 'x'"])
    with pytest.raises(TypeError, match="conditions built with"):
        show_tag_values("m", "device", where=["1=1"])


@pytest.mark.parametrize(
    ("cond", "text"),
    [
        (time_range(0, 10), "time >= 0ms AND time < 10ms"),
        (time_range(0, 10, include_end=True), "time >= 0ms AND time <= 10ms"),
        (time_range(5, 9, include_start=False, include_end=True), "time > 5ms AND time <= 9ms"),
        (time_range(5, include_start=False), "time > 5ms"),
        (time_range(1_700_000_000_000), "time >= 1700000000000ms"),
        (time_range(None, 7, include_end=True), "time <= 7ms"),
        (time_range(-86_400_000, 0), "time >= -86400000ms AND time < 0ms"),
    ],
)
def test_time_ranges_are_epoch_milliseconds(cond, text):
    assert cond.text == text


@pytest.mark.parametrize(
    ("cond", "text"),
    [
        (tag_in("device", ["a"]), "(\"device\" = 'a')"),
        (tag_in("device", ["a", "b"]), "(\"device\" = 'a' OR \"device\" = 'b')"),
        (tag_in("device", ["x' OR 1=1 --"]), "(\"device\" = 'x\\' OR 1=1 --')"),
        (tag_in("site", ["永華", ".*"]), "(\"site\" = '永華' OR \"site\" = '.*')"),
        (eq("site", "s"), "\"site\" = 's'"),
        (eq("state", 5), '"state" = 5'),
        (eq("clear_day", True), '"clear_day" = true'),
        (eq('we"ird', "it's"), "\"we\\\"ird\" = 'it\\'s'"),
        (grafana_match("site", "site"), '"site" =~ /^$site$/'),
        (TIME_FILTER, "$timeFilter"),
    ],
)
def test_matches(cond, text):
    assert isinstance(cond, Cond) and cond.text == text


@pytest.mark.parametrize(
    ("query", "text"),
    [
        (
            select(
                [agg("last", "import_energy_wh", "c"), agg("count", "import_energy_wh", "n")],
                "meter",
                where=[tag_in("device", ["m-1", "m-2"]), time_range(0, 86_400_000)],
                group_by=[every("1d"), "device", "source"],
                fill="none",
                tz="Asia/Taipei",
            ),
            'SELECT last("import_energy_wh") AS "c", count("import_energy_wh") AS "n" '
            'FROM "meter" WHERE ("device" = \'m-1\' OR "device" = \'m-2\') '
            'AND time >= 0ms AND time < 86400000ms GROUP BY time(1d), "device", "source" '
            "fill(none) tz('Asia/Taipei')",
        ),
        (
            select(ALL, "ledger", where=[eq("site", "s")], newest_first=True, limit=1),
            'SELECT * FROM "ledger" WHERE "site" = \'s\' ORDER BY time DESC LIMIT 1',
        ),
        (select(agg("count", "*"), "inverter"), 'SELECT count(*) FROM "inverter"'),
        (
            select([column("c"), column("device", "d")], "counter_daily"),
            'SELECT "c", "device" AS "d" FROM "counter_daily"',
        ),
        (
            select(
                agg("mean", "x"), "m", group_by=[every("15m")], fill="previous", tz="Europe/London"
            ),
            'SELECT mean("x") FROM "m" GROUP BY time(15m) fill(previous) tz(\'Europe/London\')',
        ),
        (
            select(agg("max", "x"), "m", group_by=[every("1h")], fill=0),
            'SELECT max("x") FROM "m" GROUP BY time(1h) fill(0)',
        ),
        (  # Grafana's macros, as the dashboards write them
            select(
                agg("sum", "p", "pv"),
                select(
                    agg("mean", "ac_power_w", "p"),
                    "inverter",
                    where=[grafana_match("site", "site"), TIME_FILTER],
                    group_by=[every(GRAFANA_INTERVAL), "device"],
                    fill="none",
                ),
                where=[TIME_FILTER],
                group_by=[every(GRAFANA_INTERVAL)],
            ),
            'SELECT sum("p") AS "pv" FROM (SELECT mean("ac_power_w") AS "p" FROM "inverter" '
            'WHERE "site" =~ /^$site$/ AND $timeFilter GROUP BY time($__interval), "device" '
            "fill(none)) WHERE $timeFilter GROUP BY time($__interval)",
        ),
        (show_measurements(), "SHOW MEASUREMENTS"),
        (show_tag_keys(), "SHOW TAG KEYS"),
        (show_tag_keys("meter"), 'SHOW TAG KEYS FROM "meter"'),
        (show_field_keys(), "SHOW FIELD KEYS"),
        (show_field_keys("meter"), 'SHOW FIELD KEYS FROM "meter"'),
        (show_tag_values("meter", "site"), 'SHOW TAG VALUES FROM "meter" WITH KEY = "site"'),
        (
            show_tag_values("inverter", "device", where=[grafana_match("site", "site")]),
            'SHOW TAG VALUES FROM "inverter" WITH KEY = "device" WHERE "site" =~ /^$site$/',
        ),
        (create_database('t"x'), 'CREATE DATABASE "t\\"x"'),
    ],
)
def test_statements(query, text):
    assert query == text


@pytest.mark.parametrize(
    ("q", "served"),
    [
        ('SELECT * FROM "m"', True),
        ("  select last(x) from m", True),
        ("SHOW MEASUREMENTS", True),
        ('show tag values from "m" with key = "site"', True),
        ("SHOW TAG KEYS", True),
        ("SHOW FIELD KEYS FROM m", True),
        ('DROP MEASUREMENT "counter_daily"', False),
        ("DELETE FROM m WHERE time < 0", False),
        ('CREATE DATABASE "x"', False),
        ("SHOW DATABASES", False),
        ("SELECTX", False),
        ("", False),
    ],
)
def test_only_statements_influxdb_3_serves_run(q, served):
    assert is_served(q) is served
    client = InfluxClient("http://127.0.0.1:9", "db")  # never reached: refused first
    try:
        if not served:
            with pytest.raises(ValueError, match="not a statement InfluxDB 3 serves"):
                client.query(q)
    finally:
        client.close()


def test_user_statements_quote_names_and_escape_passwords():
    from foursave.core import influxql

    pw = 'it\'s a \\ "pass"\nword'
    q = influxql.create_user('we"ird', pw, admin=True)
    assert q == (
        'CREATE USER "we\\"ird" WITH PASSWORD \'it\\\'s a \\\\ "pass"\\nword\' WITH ALL PRIVILEGES'
    )
    assert influxql.set_password("r", "a'b") == "SET PASSWORD FOR \"r\" = 'a\\'b'"
    assert influxql.grant("READ", "foursave", "r") == 'GRANT READ ON "foursave" TO "r"'
    assert influxql.revoke_admin("w") == 'REVOKE ALL PRIVILEGES FROM "w"'
    for bad, error in (
        (lambda: influxql.grant("WRITE ALL", "db", "u"), "privilege 'WRITE ALL'"),
        (lambda: influxql.create_user("u", ""), "empty password"),
        (lambda: influxql.create_user("", "pw"), "non-empty string"),
    ):
        with pytest.raises(ValueError, match=error):
            bad()
    # never through the client's query path (InfluxDB 3 serves none of them)
    for stmt in (q, influxql.show_users(), influxql.grant("ALL", "d", "u")):
        assert not is_served(stmt) and not isinstance(stmt, influxql.Query)


# ---------------------------------------------------------------- on a real influxd
TAIPEI = timezone(timedelta(hours=8))
T0 = int(datetime(2026, 3, 2, 9, 0, tzinfo=TAIPEI).timestamp() * 1000)


def _key(s: str) -> str:
    # InfluxDB 1.x line protocol unescapes only "\,", "\=" and "\ ": a backslash is
    # kept as written (core/reading.py doubles it, which 1.6 stores doubled)
    return s.replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def _line(measurement: str, tags: dict[str, str], fields: dict[str, float], ts: int) -> str:
    tag_part = "".join(f",{_key(k)}={_key(v)}" for k, v in sorted(tags.items()))
    field_part = ",".join(f"{_key(k)}={v!r}" for k, v in fields.items())
    return f"{_key(measurement)}{tag_part} {field_part} {ts}"


@pytest.mark.integration
def test_hostile_tag_values_match_exactly_their_own_series(influx: InfluxClient):
    devices = ["a", "b", "x", *HOSTILE]
    lines = [
        _line("meter", {"device": d, "site": "s"}, {"v": float(i), "k": float(n)}, T0 + n * 1000)
        for i, d in enumerate(devices)
        for n in range(3)
    ]
    influx.write(lines)
    stored = {r["value"] for r in influx.rows(show_tag_values("meter", "device"))}
    assert stored == set(devices)  # written as meant (line protocol escaping)
    for i, d in enumerate(devices):
        rows = influx.rows(select(ALL, "meter", where=[eq("device", d)]))
        assert [(r["device"], r["v"]) for r in rows] == [(d, float(i))] * 3, d
        other = "b" if d == "a" else "a"
        pair = influx.rows(select(ALL, "meter", where=[tag_in("device", [d, other])]))
        assert {r["device"] for r in pair} == {d, other} and len(pair) == 6, d
        assert influx.rows(select(ALL, "meter", where=[eq("device", d + "\n")])) == []
    # all of them at once: exactly theirs, not a point more
    everything = influx.rows(select(agg("count", "v"), "meter", where=[tag_in("device", HOSTILE)]))
    assert everything[0]["count"] == 3 * len(HOSTILE)


@pytest.mark.integration
def test_hostile_identifiers_name_exactly_their_measurement_and_field(influx: InfluxClient):
    m, f = 'we"ird\\m 永華,x', 'f"x\\y'
    influx.write([_line(m, {"device": "a"}, {f: 1.5, "other": 2.0}, T0)])
    assert m in {r["name"] for r in influx.rows(show_measurements())}
    assert {r["fieldKey"] for r in influx.rows(show_field_keys(m))} == {f, "other"}
    assert {r["tagKey"] for r in influx.rows(show_tag_keys(m))} == {"device"}
    rows = influx.rows(select(column(f, "it's"), m))
    assert rows == [{"time": T0, "it's": 1.5}]


@pytest.mark.integration
def test_time_ranges_and_local_days_on_influxd(influx: InfluxClient):
    influx.write([to_line("m", {"device": "a"}, {"v": float(n)}, T0 + n * 1000) for n in range(4)])

    def times(cond: Cond) -> list[int]:
        return [r["time"] for r in influx.rows(select(column("v"), "m", where=[cond]))]

    t = [T0 + n * 1000 for n in range(4)]
    assert times(time_range(t[0], t[2])) == t[0:2]
    assert times(time_range(t[0], t[2], include_end=True)) == t[0:3]
    assert times(time_range(t[0], t[2], include_start=False, include_end=True)) == t[1:3]
    assert times(time_range(t[1])) == t[1:]
    # local days: a reading at 23:30 and one at 00:30 in Taipei fall on two days
    late = int(datetime(2026, 3, 3, 23, 30, tzinfo=TAIPEI).timestamp() * 1000)
    influx.write([to_line("d", {"device": "a"}, {"v": 1.0}, late + k * 3_600_000) for k in (0, 1)])
    rows = influx.rows(
        select(
            agg("count", "v"),
            "d",
            where=[time_range(late - 86_400_000, late + 86_400_000)],
            group_by=[every("1d")],
            fill="none",
            tz="Asia/Taipei",
        )
    )
    midnights = [int(datetime(2026, 3, d, tzinfo=TAIPEI).timestamp() * 1000) for d in (3, 4)]
    assert [(r["time"], r["count"]) for r in rows] == [(midnights[0], 1), (midnights[1], 1)]
