"""Frozen reports served from the report store (reports/cache.py): the second request
builds nothing and hands out the same bytes, across an API restart too; a changed
record or late readings (seen by the ledger as it sees them: raw for the period's open
days, through the rollup after ``rules --once --rebuild`` otherwise) make the next
request rebuild and say "late data" exactly as ``report_for`` does."""

from __future__ import annotations

import io
from datetime import date, datetime, timedelta

import httpx
import pytest
from pypdf import PdfReader

from foursave.api.main import create_app
from foursave.core.influxql import agg, eq, select, time_range
from foursave.core.late import late_line
from foursave.core.periods import day_start_ms
from foursave.core.reading import to_line
from foursave.reports import build
from foursave.reports.build import build_report
from foursave.rules.engine import run_once
from foursave.rules.records import RecordStore
from foursave.rules.rollup import rebuild_rollup
from tests.api_fixtures import TZ, ServerThread, build_stack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(api_history, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report-cache")
    st = build_stack(tmp, 1, api_history, own_database=True)  # late data is written
    yield st
    st.influx.close()


def serve(st) -> ServerThread:
    return ServerThread(create_app(st.config, clock=st.clock, refresh=False))


def get(st, url: str, path: str, method: str = "GET", **kw) -> httpx.Response:
    r = httpx.request(
        method, url + path, headers={"X-API-Key": st.keys["auditor"]}, timeout=300, **kw
    )
    assert r.status_code in (200, 201), r.text
    return r


def pdf_text(body: bytes) -> str:
    return " ".join(" ".join(p.extract_text() for p in PdfReader(io.BytesIO(body)).pages).split())


def builds() -> int:
    return build.BUILDS[0]


def test_second_request_is_served_from_the_store_and_survives_a_restart(stack):
    params = {"month": 6, "format": "pdf", "lang": "en"}
    with serve(stack) as server:
        before = builds()
        first = get(stack, server.url, "/api/v1/reports/2025", params=params)
        assert first.headers["x-report-revision"] == "1"
        assert first.headers["x-report-source"] == "built" and builds() == before + 1
        second = get(stack, server.url, "/api/v1/reports/2025", params=params)
        assert second.headers["x-report-source"] == "cache"
        assert second.content == first.content and builds() == before + 1
        # another format of the same revision: rendered from the stored numbers, not built
        csv = get(stack, server.url, "/api/v1/reports/2025", params={**params, "format": "csv"})
        assert csv.headers["x-report-source"] == "cache" and builds() == before + 1
    with serve(stack) as server:  # the API restarted: the cache is in the report store
        again = get(stack, server.url, "/api/v1/reports/2025", params=params)
        assert again.headers["x-report-source"] == "cache"
        assert again.content == first.content and builds() == before + 1


def test_a_changed_record_says_late_data_then_is_cached_again(stack):
    params = {"month": 5, "format": "pdf", "lang": "en"}
    with serve(stack) as server:
        issued = get(stack, server.url, "/api/v1/reports/2025", params=params)
        assert "would change" not in pdf_text(issued.content)
        get(
            stack,
            server.url,
            "/api/v1/records",
            method="POST",
            json={"site": "demo", "period": "2025-05", "kind": "diesel_l", "value": 20},
        )
        before = builds()
        late = get(stack, server.url, "/api/v1/reports/2025", params=params)
        assert late.headers["x-report-source"] == "built" and builds() == before + 1
        assert late.headers["x-report-revision"] == "1"
        text = pdf_text(late.content)
        assert "would change" in text and "demo fuel" in text
        again = get(stack, server.url, "/api/v1/reports/2025", params=params)
        assert again.headers["x-report-source"] == "cache" and builds() == before + 1
        assert again.content == late.content  # the same note, from the store


def _late_reading(st, day: date, extra_wh: float) -> None:
    """A live reading of the main meter at the end of ``day`` (Taipei), its import
    counter ``extra_wh`` above the day's last backfilled value: late data."""
    main = next(d for d in st.config.devices if d.role == "main" and d.kind == "meter")
    end = day_start_ms(day + timedelta(days=1), TZ)
    series = st.influx.query(
        select(
            agg("last", "import_energy_wh"),
            "meter",
            where=[eq("device", main.id), time_range(end - 86_400_000, end)],
            group_by=["site", "device"],
        )
    )
    last = series[0]["values"][0][1]
    tags = {k: v for k, v in series[0]["tags"].items()}
    st.influx.write([to_line("meter", tags, {"import_energy_wh": last + extra_wh}, end - 1000)])


def _as_today(st, y: int, m: int) -> str:
    """The fingerprint of the numbers ``report_for`` would compare now (a fresh build)."""
    records = RecordStore(st.config.services.rules.records_path)
    try:
        now = datetime.fromtimestamp(st.clock.time(), TZ)
        return build_report(st.config, st.influx, records, y, m, now).fingerprint
    finally:
        records.close()


def test_late_readings_say_late_data_as_the_ledger_sees_them(stack):
    aug = {"month": 8, "format": "pdf", "lang": "en"}  # the PDF prints the note
    sep = {"month": 9, "format": "pdf", "lang": "en"}
    with serve(stack) as server:
        r_aug = get(stack, server.url, "/api/v1/reports/2025", params=aug)
        r_sep = get(stack, server.url, "/api/v1/reports/2025", params=sep)
        # 31 August, late: the last (open) day of August, read from the readings at
        # every build; for September the day before it starts, read from the rollup
        _late_reading(stack, date(2025, 8, 31), 10_000.0)
        before = builds()
        late = get(stack, server.url, "/api/v1/reports/2025", params=aug)
        assert late.headers["x-report-source"] == "built" and builds() == before + 1
        text = pdf_text(late.content)
        assert "would change" in text and "demo electricity" in text
        assert _as_today(stack, 2025, 8) != r_aug.headers["x-report-fingerprint"]
        # September's numbers do not change until the rollup sees the reading: as today
        before = builds()
        same = get(stack, server.url, "/api/v1/reports/2025", params=sep)
        assert same.headers["x-report-source"] == "cache" and builds() == before
        assert same.content == r_sep.content
        assert _as_today(stack, 2025, 9) == r_sep.headers["x-report-fingerprint"]
        # made visible as today: foursave rules --once --rebuild
        records = RecordStore(stack.config.services.rules.records_path)
        try:
            rebuild_rollup(stack.influx, stack.config, clock=stack.clock)
            run_once(stack.config, stack.influx, records, clock=stack.clock)
        finally:
            records.close()
        before = builds()
        late = get(stack, server.url, "/api/v1/reports/2025", params=sep)
        assert late.headers["x-report-source"] == "built" and builds() == before + 1
        assert late.headers["x-report-revision"] == "1"
        text = pdf_text(late.content)
        assert "would change" in text and "demo electricity" in text
        again = get(stack, server.url, "/api/v1/reports/2025", params=sep)
        assert again.headers["x-report-source"] == "cache" and again.content == late.content
        # a reading the ingester stores late leaves its late_data marker (core/late.py):
        # whatever it touched (here a mid-September temperature, read raw at each build),
        # the next request builds once to see (its bytes still come from the store when no
        # number changed), and the one after is answered without a build
        t = int(datetime(2025, 9, 15, 12, tzinfo=TZ).timestamp() * 1000)
        stack.influx.write(
            [
                to_line(
                    "weather", {"site": "demo", "device": "weather-01"}, {"ambient_temp_c": 31.5}, t
                ),
                late_line(t, t, 1, int(stack.clock.time() * 1000)),
            ]
        )
        before = builds()
        seen = get(stack, server.url, "/api/v1/reports/2025", params=sep)
        assert builds() == before + 1
        cached = get(stack, server.url, "/api/v1/reports/2025", params=sep)
        assert cached.headers["x-report-source"] == "cache" and builds() == before + 1
        assert cached.content == seen.content
