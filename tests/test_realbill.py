"""The rebuilt bill against the real one on a real influxd: billing periods from the
meter-reading dates, rebuilt versus billed kWh and NT$, the likely cause of a
difference and the bill_difference alert."""

from __future__ import annotations

import io
import json
from datetime import date, datetime, timedelta, timezone

import pytest
from openpyxl import load_workbook
from pypdf import PdfReader

from foursave.core.clock import ManualClock
from foursave.core.config import parse_config
from foursave.core.influxql import column, select, time_range
from foursave.core.reading import to_line
from foursave.reports.build import build_report
from foursave.reports.csv import render_csv
from foursave.reports.model import ReportData
from foursave.reports.pdf import render_pdf
from foursave.reports.xlsx import render_xlsx
from foursave.rules.alerts import AlertEngine, AlertSettings, IncidentStore, Notifier
from foursave.rules.bill import billing_periods, site_bill
from foursave.rules.engine import run_once
from foursave.rules.realbill import CAUSE_TEXT, bill_checks
from foursave.rules.records import RecordIn, RecordStore
from foursave.rules.tariff import load_tariffs

pytestmark = [pytest.mark.integration, pytest.mark.clock]
TAIPEI = timezone(timedelta(hours=8))
LOAD_KW = 100.0  # the meter's constant load: 25 kWh per 15-minute block
CFG = """
sites:
  - id: demo
    name: Demo
    lat: 22.992
    lon: 120.185
    tariff: {plan: three_stage, contracts_kw: {regular: 300}, industry: "831"}
devices:
  - {id: meter-main, site: demo, kind: meter, role: main, profile: sunspec, host: h, port: 3}
"""
RULE = {
    "id": "bill-difference",
    "kind": "bill_difference",
    "title": "Rebuilt bill differs",
    "match": {"kind": "meter", "role": "main"},
    "window_s": 62 * 86400,
}


def local_ms(d: date) -> int:
    return int(datetime(d.year, d.month, d.day, tzinfo=TAIPEI).timestamp() * 1000)


def write_meter(influx, start: date, end: date, skip: tuple[date, date] | None = None) -> None:
    """Counter points at every block start of local days [start, end] (the next day's
    first block closes the last one), none in ``skip`` (from, to)."""
    t0 = local_ms(start)
    lines = []
    for i in range(((end - start).days + 1) * 96 + 1):
        ms = t0 + i * 900_000
        if skip and local_ms(skip[0]) < ms < local_ms(skip[1]):
            continue
        wh = 5_000_000 + i * LOAD_KW * 250  # 25 kWh per block
        lines.append(
            to_line(
                "meter",
                {"site": "demo", "device": "meter-main", "role": "main"},
                {"import_energy_wh": wh},
                ms,
            )
        )
    influx.write(lines)


def hand_bill_ntd(start: date, end: date) -> tuple[float, float]:
    """kWh and NT$ of the constant load over [start, end), block by block from the
    tariff file's prices: the regular contract's basic charge of one month, the energy
    at each block's TOU price, times the industry coefficient (no PF: not measured)."""
    t = load_tariffs()
    kwh = ntd = 0.0
    d = start
    while d < end:
        e = t.edition_on(d)
        summer = e.is_summer(d)
        for q in range(96):
            at = datetime(d.year, d.month, d.day, tzinfo=TAIPEI) + timedelta(minutes=15 * q)
            kwh += LOAD_KW / 4
            ntd += (
                LOAD_KW / 4 * e.energy_price("three_stage", e.period_at("three_stage", at), summer)
            )
        d += timedelta(days=1)
    e = t.edition_on(start)
    basic = e.basic_price("three_stage", "regular", e.is_summer(start))
    assert basic is not None
    ntd += basic * 300
    return kwh, ntd * t.coefficient("831", start)[0]


@pytest.fixture
def setup(tmp_path, influx):
    cfg = parse_config(CFG, env={})
    records = RecordStore(tmp_path / "records.sqlite")
    yield cfg, cfg.sites[0], records
    records.close()


def record(records: RecordStore, period: str, kind: str, value: float, supersedes=None) -> int:
    return records.add(
        RecordIn(
            site="demo",
            period=period,
            kind=kind,
            value=value,
            entered_by="clerk",
            supersedes=supersedes,
        )
    )


def real_bill(records, kwh: float, ntd: float) -> dict[str, int]:
    """The 2025-07 bill: read on 2025-06-11 and 2025-07-11."""
    record(records, "2025-06", "electricity_bill_read_on", 11)
    record(records, "2025-07", "electricity_bill_read_on", 11)
    return {
        "kwh": record(records, "2025-07", "electricity_bill_kwh", kwh),
        "ntd": record(records, "2025-07", "electricity_bill_ntd", ntd),
    }


def alerts(tmp_path, cfg, influx, now: float) -> AlertEngine:
    settings = AlertSettings.model_validate({"rules": [RULE], "mqtt": False})
    store = IncidentStore(tmp_path / "incidents.sqlite")
    return AlertEngine(cfg, settings, influx, store, Notifier(settings), ManualClock(now))


NOW = datetime(2025, 7, 20, 10, 0, tzinfo=TAIPEI).timestamp()


def test_meter_reading_dates_bill_exactly_those_days(setup, influx):
    cfg, site, records = setup
    write_meter(influx, date(2025, 6, 1), date(2025, 7, 31))
    assert billing_periods(site, 2025, 7, records) == [(date(2025, 7, 1), date(2025, 8, 1))]
    record(records, "2025-06", "electricity_bill_read_on", 11)
    record(records, "2025-07", "electricity_bill_read_on", 11)
    periods = billing_periods(site, 2025, 7, records)
    assert periods == [(date(2025, 6, 12), date(2025, 7, 12))]  # 2025-06-12 .. 2025-07-11
    bill = site_bill(cfg, influx, site, *periods[0], records)

    # the stored counter's difference between the period's local midnights
    def counter_at(d: date) -> float:
        q = select(
            column("import_energy_wh"), "meter", where=[time_range(local_ms(d), local_ms(d) + 1)]
        )
        [row] = influx.rows(q)
        return row["import_energy_wh"]

    stored_kwh = (counter_at(date(2025, 7, 12)) - counter_at(date(2025, 6, 12))) / 1000
    assert stored_kwh == 30 * 24 * LOAD_KW
    assert bill.total_kwh == pytest.approx(stored_kwh, abs=1e-6)
    assert bill.completeness == 1.0
    assert (bill.start, bill.end, bill.days) == (date(2025, 6, 12), date(2025, 7, 12), 30)
    # August has no reading yet: the next one is expected a month after July's
    assert billing_periods(site, 2025, 8, records) == [(date(2025, 7, 12), date(2025, 8, 12))]
    # June's own start (May's reading) is unknown: no June bill rather than a wrong one
    assert billing_periods(site, 2025, 6, records) == []


def test_matching_bill_raises_nothing(tmp_path, setup, influx):
    cfg, site, records = setup
    write_meter(influx, date(2025, 6, 1), date(2025, 7, 31))
    kwh, ntd = hand_bill_ntd(date(2025, 6, 12), date(2025, 7, 12))
    real_bill(records, kwh * 1.005, ntd * 0.99)  # the bill's own rounding, within 2 %
    [c] = bill_checks(cfg, influx, site, 2025, 7, records)
    assert c.cause is None and not c.exceeds
    assert c.rebuilt_ntd == pytest.approx(ntd, rel=1e-9)  # the hand computation
    assert c.kwh_diff_share == pytest.approx(1 / 1.005 - 1)
    run_once(cfg, influx, records, date(2025, 6, 1), date(2025, 8, 1), ManualClock(NOW))
    assert alerts(tmp_path, cfg, influx, NOW).evaluate() == []


@pytest.mark.parametrize(
    ("kwh_factor", "ntd_factor", "cause"),
    [
        (1.10, 1.10, "meter_coverage"),  # the meter sees 91 % of what Taipower billed
        (1.0, 1.08, "tariff"),  # the kWh agree, the NT$ do not
        (0.90, 0.90, "unexplained"),  # the meter sees more than was billed
    ],
)
def test_mismatch_alerts_with_its_cause(tmp_path, setup, influx, kwh_factor, ntd_factor, cause):
    cfg, site, records = setup
    write_meter(influx, date(2025, 6, 1), date(2025, 7, 31))
    kwh, ntd = hand_bill_ntd(date(2025, 6, 12), date(2025, 7, 12))
    ids = real_bill(records, kwh * kwh_factor, ntd * ntd_factor)
    [c] = bill_checks(cfg, influx, site, 2025, 7, records)
    assert c.cause == cause
    run_once(cfg, influx, records, date(2025, 6, 1), date(2025, 8, 1), ManualClock(NOW))
    engine = alerts(tmp_path, cfg, influx, NOW)
    [e] = engine.evaluate()
    assert (e["event"], e["rule"], e["device"]) == ("firing", "bill-difference", "meter-main")
    assert CAUSE_TEXT[cause] in e["detail"] and "2025-06-12..2025-07-11" in e["detail"]
    assert engine.evaluate() == []  # one notification per bill
    # the bill was mistyped: corrected records bring it within 2 %, the incident resolves
    record(records, "2025-07", "electricity_bill_kwh", kwh, supersedes=ids["kwh"])
    record(records, "2025-07", "electricity_bill_ntd", ntd, supersedes=ids["ntd"])
    run_once(cfg, influx, records, date(2025, 6, 1), date(2025, 8, 1), ManualClock(NOW))
    assert [e["event"] for e in engine.evaluate()] == ["resolved"]


def test_missing_data_is_named(tmp_path, setup, influx):
    cfg, site, records = setup
    # the meter fell silent on 2025-07-08: four days of the period are not measured
    write_meter(
        influx, date(2025, 6, 1), date(2025, 7, 31), skip=(date(2025, 7, 8), date(2025, 8, 2))
    )
    kwh, ntd = hand_bill_ntd(date(2025, 6, 12), date(2025, 7, 12))
    real_bill(records, kwh, ntd)
    [c] = bill_checks(cfg, influx, site, 2025, 7, records)
    assert c.completeness is not None and c.completeness < 1
    assert c.rebuilt_kwh == pytest.approx(26 * 24 * LOAD_KW)  # Jun 12 .. Jul 7
    assert c.cause == "missing_data"
    run_once(cfg, influx, records, date(2025, 6, 1), date(2025, 8, 1), ManualClock(NOW))
    [e] = alerts(tmp_path, cfg, influx, NOW).evaluate()
    assert CAUSE_TEXT["missing_data"] in e["detail"]


def test_no_tariff_for_the_period_is_a_tariff_cause(tmp_path, setup, influx):
    cfg, site, records = setup
    # 2024-04-01 .. 2024-10-15: no edition in the tariff file (TARIFFS.md §3: NOT FOUND)
    write_meter(influx, date(2024, 5, 1), date(2024, 6, 30))
    record(records, "2024-05", "electricity_bill_read_on", 11)
    record(records, "2024-06", "electricity_bill_read_on", 11)
    record(records, "2024-06", "electricity_bill_kwh", 31 * 24 * LOAD_KW)
    [c] = bill_checks(cfg, influx, site, 2024, 6, records)
    assert (c.cause, c.rebuilt_kwh, c.start) == ("tariff", None, date(2024, 5, 12))
    assert "no tariff" in c.detail
    now = datetime(2024, 6, 20, tzinfo=TAIPEI).timestamp()
    run_once(cfg, influx, records, date(2024, 5, 1), date(2024, 7, 1), ManualClock(now))
    [e] = alerts(tmp_path, cfg, influx, now).evaluate()
    assert CAUSE_TEXT["tariff"] in e["detail"]


def pdf_text(body: bytes) -> str:
    return "".join(page.extract_text() for page in PdfReader(io.BytesIO(body)).pages)


def test_report_shows_rebuilt_versus_billed(tmp_path, setup, influx):
    cfg, _site, records = setup
    write_meter(influx, date(2025, 6, 1), date(2025, 7, 31))
    kwh, ntd = hand_bill_ntd(date(2025, 6, 12), date(2025, 7, 12))
    real_bill(records, kwh * 1.10, ntd * 1.10)
    now = datetime(2025, 8, 3, 10, 0, tzinfo=TAIPEI)
    data = build_report(cfg, influx, records, 2025, 7, now)
    [b] = data.bills
    assert (b.month, b.start, b.last, b.cause) == (
        "2025-07",
        "2025-06-12",
        "2025-07-11",
        "meter_coverage",
    )
    assert b.rebuilt_kwh == pytest.approx(kwh) and b.billed_kwh == pytest.approx(kwh * 1.10)
    assert b.rebuilt_ntd == pytest.approx(ntd) and b.ntd_diff_share == pytest.approx(1 / 1.1 - 1)
    assert ReportData.from_dict(json.loads(json.dumps(data.to_dict()))) == data  # frozen as JSON
    # the annual report carries the same period
    assert build_report(cfg, influx, records, 2025, None, now).bills == (b,)

    text = render_csv(data, "en").decode("utf-8-sig")
    assert "Rebuilt (kWh),Billed (kWh)" in text
    assert f"demo,2025-07,2025-06-12 .. 2025-07-11,{b.rebuilt_kwh!r},{b.billed_kwh!r}" in text
    zh = render_csv(data, "zh-TW").decode("utf-8-sig")
    assert "總表未涵蓋全部供電" in zh and "帳單度數 (kWh)" in zh
    wb = load_workbook(io.BytesIO(render_xlsx(data, "en")))
    ws = wb["Bills"]
    assert [c.value for c in ws[2]][:5] == [
        "demo",
        "2025-07",
        "2025-06-12 .. 2025-07-11",
        b.rebuilt_kwh,
        b.billed_kwh,
    ]
    pdf = pdf_text(render_pdf(data, "zh-TW"))
    assert "台電帳單比對" in pdf and f"{b.billed_kwh:,.0f}" in pdf
    # a report without recorded bills has no such table
    records2 = RecordStore(tmp_path / "none.sqlite")
    plain = build_report(cfg, influx, records2, 2025, 7, now)
    records2.close()
    assert (
        plain.bills == ()
        and "Bills" not in load_workbook(io.BytesIO(render_xlsx(plain, "en"))).sheetnames
    )
