"""No InfluxQL is written by hand outside core/influxql.py: every string constant and
f-string of the source folders is looked at (``ast``), and one that reads like
InfluxQL fails the test with its file and line.

SQLite's SQL (spool, dead letters, records, incidents, keys, reports) is not InfluxQL:
a string is SQLite's when its module uses SQLite (imports ``sqlite3`` or
``foursave.core.store``) and the string goes to ``execute``/``executemany``/
``executescript``/``open_db``, directly or through a variable assigned it.
Docstrings are prose and are skipped.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("core", "collector", "simulators", "rules", "reports", "api", "dashboards")
FOLDERS += ("foursave", "bench")
BUILDER = ROOT / "core" / "influxql.py"

INFLUXQL = re.compile(
    r"""
    \bSELECT\b.*\bFROM\b
    | \bSHOW\s+(MEASUREMENTS|TAG\s+KEYS|TAG\s+VALUES|FIELD\s+KEYS|SERIES|DATABASES|RETENTION)\b
    | \b(DROP|DELETE)\s+(FROM|MEASUREMENT|SERIES|DATABASE|SHARD|RETENTION)\b
    | \bCREATE\s+(DATABASE|RETENTION|CONTINUOUS|USER|SUBSCRIPTION)\b
    | \bGROUP\s+BY\b | \bORDER\s+BY\b
    | \btime\s*[<>]=?\s*[-\d'{%]
    | =~\s*/ | \bfill\( | \btz\('
    """,
    re.IGNORECASE | re.VERBOSE | re.DOTALL,
)
UPPER = re.compile(r"\b(SELECT|SHOW|DROP|DELETE|CREATE|WHERE)\b")  # a fragment of a statement
SQL_CALLS = {"execute", "executemany", "executescript", "open_db"}


def _text(node: ast.AST) -> str:
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
    return node.value


def _call_name(call: ast.Call) -> str | None:
    f = call.func
    return f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None


def _strings(node: ast.AST):
    for n in ast.walk(node):
        if isinstance(n, ast.JoinedStr) or (
            isinstance(n, ast.Constant) and isinstance(n.value, str)
        ):
            yield n


def _sqlite_strings(tree: ast.Module) -> set[int]:
    """ids of the string nodes that are SQLite SQL (see the module docstring)."""
    uses = any(
        (isinstance(n, ast.Import) and any(a.name == "sqlite3" for a in n.names))
        or (isinstance(n, ast.ImportFrom) and n.module in ("sqlite3", "foursave.core.store"))
        for n in ast.walk(tree)
    )
    if not uses:
        return set()
    out, names = set(), set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Call) and _call_name(n) in SQL_CALLS:
            for arg in n.args:
                out |= {id(s) for s in _strings(arg)}
                names |= {a.id for a in ast.walk(arg) if isinstance(a, ast.Name)}
    for n in ast.walk(tree):
        if isinstance(n, ast.Assign | ast.AnnAssign) and n.value is not None:
            targets = n.targets if isinstance(n, ast.Assign) else [n.target]
            for t in targets:
                pairs = [(t, n.value)]
                if isinstance(t, ast.Tuple) and isinstance(n.value, ast.Tuple):
                    pairs = list(zip(t.elts, n.value.elts, strict=False))
                for target, value in pairs:
                    if isinstance(target, ast.Name) and target.id in names:
                        out |= {id(s) for s in _strings(value)}
    return out


def raw_influxql(source: str, filename: str) -> list[str]:
    """``file:line: text`` of every string in ``source`` that looks like InfluxQL."""
    tree = ast.parse(source, filename)
    skip = _sqlite_strings(tree)
    for n in ast.walk(tree):
        body = getattr(n, "body", None)
        if isinstance(body, list):  # docstrings and other bare strings: prose
            for stmt in body:
                if isinstance(stmt, ast.Expr):
                    skip |= {id(s) for s in _strings(stmt.value)}
        if isinstance(n, ast.JoinedStr):  # judged whole, not by its pieces
            skip |= {id(v) for v in n.values}
    hits = []
    for n in sorted(_strings(tree), key=lambda n: (n.lineno, n.col_offset)):
        if id(n) in skip:
            continue
        text = _text(n)
        if INFLUXQL.search(text) or UPPER.search(text):
            hits.append(f"{filename}:{n.lineno}: {text[:90]!r}")
    return hits


def test_no_influxql_outside_the_builder():
    hits = []
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path != BUILDER:
                rel = path.relative_to(ROOT)
                hits += raw_influxql(path.read_text(encoding="utf-8"), str(rel))
    assert not hits, "InfluxQL written by hand (build it with core/influxql.py):\n" + "\n".join(
        hits
    )


def test_the_check_finds_what_it_looks_for():
    planted = '''
"""SELECT in a docstring is prose."""
import sqlite3
SCHEMA = "CREATE TABLE t (x)"
def f(db, m, ids, now):
    db.executescript(SCHEMA)
    db.execute("SELECT x FROM t WHERE x = ?", (1,))
    q, args = "SELECT * FROM t", ()
    db.execute(q + " ORDER BY x", args)
    a = f'SELECT last("v") FROM "{m}"'
    b = "time >= %dms" % now
    c = '"device" =~ /^(' + "|".join(ids) + ")$/"
    d = f"DROP MEASUREMENT {m}"
    e = "select * from meter"
    g = f"{m} GROUP BY time(1d)"
    return "a rate that is too low"
'''
    hits = raw_influxql(planted, "planted.py")
    assert [h.split(":")[1] for h in hits] == ["10", "11", "12", "13", "14", "15"], hits
