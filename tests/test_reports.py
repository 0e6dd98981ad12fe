"""The audit committee's reports, over the API and the CLI, from a backfilled year:
the files carry the rules engine's numbers, and a closed period's report is frozen."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys

import httpx
import openpyxl
import pytest
from pypdf import PdfReader

from foursave.api.main import create_app
from foursave.reports.i18n import fmt, t
from tests.api_fixtures import ServerThread, build_stack
from tests.helpers import ROOT

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(api_history, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reports")
    # no broker needed; the shared history: records and issued reports go to this
    # module's own files, InfluxDB is only read
    st = build_stack(tmp, 1, api_history)
    with ServerThread(create_app(st.config, clock=st.clock, refresh=False)) as server:
        st.url = server.url
        yield st
    st.influx.close()


def get(st, path: str, role: str = "auditor", method: str = "GET", **kw) -> httpx.Response:
    r = httpx.request(
        method, st.url + path, headers={"X-API-Key": st.keys[role]}, timeout=300, **kw
    )
    return r


def pdf_text(body: bytes) -> str:
    """The PDF's text with line breaks as spaces (a table cell may wrap anywhere)."""
    return " ".join(" ".join(p.extract_text() for p in PdfReader(io.BytesIO(body)).pages).split())


def csv_rows(body: bytes) -> dict[str, dict[str, str]]:
    lines = body.decode("utf-8-sig").split("\r\n\r\n")[0].splitlines() or []
    rows = list(csv.DictReader(io.StringIO("\n".join(lines))))
    return {r[t("en", "item")]: r for r in rows}


def test_annual_report_files_carry_the_engine_ledger(stack):
    ledger = {
        r["item"]: r for r in stack.influx.rows('SELECT * FROM "ledger" WHERE "period" = \'2025\'')
    }
    assert set(ledger) == {"electricity", "water", "fuel", "paper"}

    r = get(stack, "/api/v1/reports/2025", params={"format": "xlsx", "lang": "en"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/vnd.openxmlformats")
    ws = openpyxl.load_workbook(io.BytesIO(r.content)).worksheets[0]
    head = next(
        i for i, row in enumerate(ws.iter_rows(values_only=True), 1) if row[0] == t("en", "site_id")
    )
    cols = [c.value for c in ws[head]]
    got = {}
    for row in ws.iter_rows(min_row=head + 1, values_only=True):
        if row[0] == "demo" and row[cols.index(t("en", "period"))] == "2025":
            got[row[cols.index(t("en", "item"))]] = dict(zip(cols, row, strict=True))
    for item, stored in ledger.items():
        cells = got[t("en", item)]
        for key, field in (
            ("actual", "actual"),
            ("baseline", "baseline"),
            ("savings_rate", "savings_rate"),
            ("co2e", "co2e_kg"),
            ("completeness", "completeness"),
        ):
            assert cells[t("en", key)] == stored.get(field), (item, key)  # exactly, not roughly
    assert got[t("en", "electricity")][t("en", "adjustments")] == -1500.0

    r = get(stack, "/api/v1/reports/2025", params={"format": "pdf", "lang": "zh-TW"})
    assert r.status_code == 200 and r.content.startswith(b"%PDF")
    text = pdf_text(r.content)
    assert "四省" in text and "示範站" in text and "ledger/1" in text
    for item, stored in ledger.items():
        unit = {"electricity": "kWh", "water": "m³", "fuel": "L", "paper": "online-signing rate"}[
            item
        ]
        assert fmt(stored["actual"], unit) in text, item
        if stored.get("savings_rate") is not None:
            assert fmt(stored["savings_rate"], "rate") in text, item
    assert "王科長" in text and "EV charger commissioning tests" in text  # the adjustment
    pv = stack.influx.rows(
        'SELECT sum("e_ac_kwh") FROM "pv_daily" WHERE time >= \'2024-12-31T16:00:00Z\' '
        "AND time < '2025-12-31T16:00:00Z'"
    )
    assert fmt(pv[0]["sum"], "kWh") in text  # PV yield: the engine's pv_daily, summed


def test_closed_month_is_frozen_until_recomputed_with_a_reason(stack):
    path = "/api/v1/reports/2025"
    month = {"month": 7}
    first = {
        f: get(stack, path, params={**month, "format": f, "lang": "zh-TW"})
        for f in ("pdf", "xlsx", "csv")
    }
    for f, r in first.items():
        assert r.status_code == 200 and r.headers["x-report-revision"] == "1", f
        again = get(stack, path, params={**month, "format": f, "lang": "zh-TW"})
        assert again.content == first[f].content, f"{f} differs between runs"
    fuel_before = float(
        csv_rows(get(stack, path, params={**month, "format": "csv", "lang": "en"}).content)["Fuel"][
            t("en", "actual")
        ]
    )
    assert fuel_before == 95.0

    # a late fuel invoice for July arrives after the report was issued
    r = get(
        stack,
        "/api/v1/records",
        method="POST",
        json={
            "site": "demo",
            "period": "2025-07",
            "kind": "diesel_l",
            "value": 20,
            "evidence": "late invoice",
        },
    )
    assert r.status_code == 201
    late = get(stack, path, params={**month, "format": "csv", "lang": "en"})
    assert late.headers["x-report-revision"] == "1"
    assert float(csv_rows(late.content)["Fuel"][t("en", "actual")]) == 95.0  # as issued
    text = pdf_text(get(stack, path, params={**month, "format": "pdf", "lang": "en"}).content)
    assert "would change" in text and "demo fuel 95 → 115" in text

    why = "late diesel invoice INV-2025-0711 received in January"
    r = get(
        stack,
        f"{path}/recompute",
        method="POST",
        params={**month, "format": "csv", "lang": "en"},
        json={"reason": why},
    )
    assert r.status_code == 201 and r.headers["x-report-revision"] == "2"
    assert float(csv_rows(r.content)["Fuel"][t("en", "actual")]) == 115.0
    text = pdf_text(get(stack, path, params={**month, "format": "pdf", "lang": "en"}).content)
    assert why in text and "replaces revision 1" in text and "would change" not in text
    r = get(
        stack,
        f"{path}/recompute",
        method="POST",
        params=month,
        json={"reason": "again, for nothing"},
    )
    assert r.status_code == 409 and "revision 2 stands" in r.json()["detail"]
    revs = [(x["period"], x["revision"]) for x in get(stack, "/api/v1/reports").json()]
    assert ("2025-07", 1) in revs and ("2025-07", 2) in revs


def test_open_period_is_provisional_and_never_stored(stack):
    r = get(stack, "/api/v1/reports/2026", params={"month": 1, "format": "csv", "lang": "en"})
    assert r.status_code == 200 and r.headers["x-report-revision"] == "0"
    assert all(x["period"] != "2026-01" for x in get(stack, "/api/v1/reports").json())
    r = get(
        stack,
        "/api/v1/reports/2026/recompute",
        method="POST",
        params={"month": 1},
        json={"reason": "just because"},
    )
    assert r.status_code == 409 and "still open" in r.json()["detail"]
    for bad in ({"month": 13}, {"format": "docx"}, {"lang": "fr"}):
        r = get(stack, "/api/v1/reports/2025", params=bad)
        assert r.status_code == 422 and next(iter(bad)) in r.text


def test_report_command_writes_the_issued_report(stack, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FOURSAVE_")}
    api = get(stack, "/api/v1/reports/2025", params={"month": 3, "format": "csv", "lang": "en"})
    out = tmp_path / "march.csv"
    cmd = [
        sys.executable,
        "-m",
        "foursave",
        "report",
        "--config",
        str(stack.tmp / "config.yaml"),
        "--year",
        "2025",
        "--month",
        "3",
        "--format",
        "csv",
        "--lang",
        "en",
        "--out",
        str(out),
    ]
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "revision 1 (frozen)" in p.stdout
    assert out.read_bytes() == api.content  # the CLI hands out the same issued report
    bad = subprocess.run(
        [*cmd[:-6], "--month", "13"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2 and "--month 13" in bad.stderr and "Traceback" not in bad.stderr
