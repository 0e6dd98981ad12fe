"""The report's contract capacity and PV value sections, from the backfilled demo site
(tests/api_fixtures.py): the annual report's advice is ``rules/contract.advise`` over
2025's 12 billing months, the PV value is ``rules/pvvalue.site_pv_value`` per billing
period, the CSV/XLSX/PDF carry those numbers, and a report frozen before the sections
existed loads, renders and stays frozen as it was."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from datetime import date

import pytest
from openpyxl import load_workbook
from pypdf import PdfReader

from foursave.reports.build import as_issued, build_report, fingerprint, report_for
from foursave.reports.csv import render_csv
from foursave.reports.i18n import contracts_label, fmt, t, tou_label
from foursave.reports.model import ReportData
from foursave.reports.pdf import render_pdf
from foursave.reports.store import ReportStore
from foursave.reports.xlsx import render_xlsx
from foursave.rules.contract import advise
from foursave.rules.pvvalue import site_pv_value
from foursave.rules.records import RecordStore
from tests.api_fixtures import NOW, build_stack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(api_history, tmp_path_factory):
    st = build_stack(tmp_path_factory.mktemp("report-sections"), 1, api_history)
    st.records = RecordStore(st.config.services.rules.records_path)
    yield st
    st.records.close()
    st.influx.close()


@pytest.fixture(scope="module")
def annual(stack) -> ReportData:
    return build_report(stack.config, stack.influx, stack.records, 2025, None, NOW)


@pytest.fixture(scope="module")
def july(stack) -> ReportData:
    return build_report(stack.config, stack.influx, stack.records, 2025, 7, NOW)


def pdf_text(body: bytes) -> str:
    return " ".join(" ".join(p.extract_text() for p in PdfReader(io.BytesIO(body)).pages).split())


def test_contract_section_is_the_optimiser_over_the_years_months(stack, annual, july):
    [site] = stack.config.sites
    a = advise(stack.config, stack.influx, site, (2025, 12), 12, 0.0, stack.records)
    [c] = annual.contracts
    assert c.reason is None and c.months == a.months == tuple(f"2025-{m:02d}" for m in range(1, 13))
    r, o = a.current, a.other
    assert o is not None
    assert (c.plan, c.current_kw, c.recommended_kw) == (a.plan, r.current_kw, r.recommended_kw)
    assert c.current_kw == {"regular": 300.0}  # config/demo.yaml
    assert (c.current_annual_ntd, c.recommended_annual_ntd, c.annual_saving_ntd) == (
        r.current_annual_ntd,
        r.recommended_annual_ntd,
        r.annual_saving_ntd,
    )
    assert (c.raise_cost_ntd, c.months_over, c.margin_pct) == (r.raise_cost_ntd, r.months_over, 0)
    assert (c.other_plan, c.other_recommended_kw, c.other_bills_ntd) == (
        o.plan,
        o.recommended_kw,
        o.bills_total_ntd,
    )
    assert c.cheaper_plan == a.cheaper_plan and c.confidence == a.confidence
    assert c.cheaper_by_ntd == abs(r.bills_total_ntd - o.bills_total_ntd) > 0
    assert july.contracts == ()  # the monthly report has no contract advice
    text = render_csv(annual, "en").decode("utf-8-sig")
    assert t("en", "contract_section") not in text  # the CSV has no headings, only tables
    assert f"demo,2025-01 .. 2025-12,0.0,three-stage,{contracts_label('en', c.current_kw)}" in text
    assert f"{c.annual_saving_ntd!r}" in text and f"{c.cheaper_by_ntd!r}" in text


def test_too_few_months_and_no_tariff_are_explained(stack):
    cfg = stack.config
    [site] = cfg.sites
    # the open year 2026: one billing month with data, said in one line, not raised
    data = build_report(cfg, stack.influx, stack.records, 2026, None, NOW)
    [c] = data.contracts
    assert (c.reason, c.months, c.recommended_kw) == ("too_few_months", ("2026-01",), {})
    assert "2026-02" in (c.detail or "")
    assert [v.month for v in data.pv_value] == ["2026-01"]  # no line for the months ahead
    zh = pdf_text(render_pdf(data, "zh-TW"))
    assert "主電表資料僅涵蓋 1 / 12 個計費月份" in zh
    assert "main-meter data in 1 of the 12 billing months" in render_csv(data, "en").decode()
    # a site without a tariff: no advice and no PV value, one line each
    no_tariff = cfg.model_copy(update={"sites": [site.model_copy(update={"tariff": None})]})
    data = build_report(no_tariff, stack.influx, stack.records, 2025, None, NOW)
    [c] = data.contracts
    assert (c.reason, c.recommended_kw, c.annual_saving_ntd) == ("no_tariff", {}, None)
    [v] = data.pv_value
    assert (v.reason, v.month, v.value_total_ntd) == ("no_tariff", "2025", None)
    zh = pdf_text(render_pdf(data, "zh-TW"))
    assert t("zh-TW", "contract_no_tariff") in zh and t("zh-TW", "pv_no_tariff") in zh
    en = render_csv(data, "en").decode("utf-8-sig")
    assert t("en", "contract_no_tariff") in en and t("en", "pv_no_tariff") in en


def test_pv_value_section_is_site_pv_value(stack, annual, july):
    [site] = stack.config.sites
    v = site_pv_value(stack.config, stack.influx, site, date(2025, 7, 1), date(2025, 8, 1))
    assert v is not None
    [row] = july.pv_value
    assert (row.month, row.start, row.last, row.reason) == (
        "2025-07",
        "2025-07-01",
        "2025-07-31",
        None,
    )
    assert row.consumed_kwh == v.consumed_kwh and row.value_ntd == v.value_ntd
    assert set(row.consumed_kwh) == {"peak", "semi_peak", "sat_semi_peak", "off_peak"}
    assert row.value_total_ntd == v.total_value_ntd > 0
    assert row.demand_reduction_kw == v.demand_reduction_kw() and row.demand_kw == v.demand_kw
    assert (row.bill_saved_ntd, row.over_contract_saved_ntd) == (
        v.bill_saved_ntd,
        v.over_contract_saved_ntd,
    )
    assert (row.generation_kwh, row.exported_kwh) == (v.generation_kwh, v.exported_kwh)
    # the annual report has the year's 12 billing periods, July's the same
    assert [x.month for x in annual.pv_value] == [f"2025-{m:02d}" for m in range(1, 13)]
    assert annual.pv_value[6] == row

    text = render_csv(july, "en").decode("utf-8-sig")
    assert f"demo,2025-07,{tou_label('en', 'peak')},{row.consumed_kwh['peak']!r}," in text
    assert f"{row.value_ntd['peak']!r}" in text and f"{row.bill_saved_ntd!r}" in text
    wb = load_workbook(io.BytesIO(render_xlsx(july, "en")))
    assert wb.sheetnames[-2:] == [t("en", "pv_value_sheet"), t("en", "notes_sheet")]
    cells = [c.value for r in wb[t("en", "pv_value_sheet")].iter_rows() for c in r]
    for x in (*row.consumed_kwh.values(), *row.value_ntd.values(), row.bill_saved_ntd):
        assert x in cells  # the floats themselves


def test_annual_files_carry_both_sections(annual):
    [c] = annual.contracts
    wb = load_workbook(io.BytesIO(render_xlsx(annual, "zh-TW")))
    ws = wb[t("zh-TW", "contract_sheet")]
    head = [x.value for x in ws[1]]
    values = dict(zip(head, [x.value for x in ws[2]], strict=True))
    assert values[t("zh-TW", "annual_saving")] == c.annual_saving_ntd
    assert values[t("zh-TW", "recommended_contract")] == contracts_label("zh-TW", c.recommended_kw)
    assert values[t("zh-TW", "cheaper_plan")] in ("二段式", "三段式")
    assert values[t("zh-TW", "cheaper_by")] == c.cheaper_by_ntd

    text = pdf_text(render_pdf(annual, "zh-TW"))
    assert t("zh-TW", "contract_section") in text and t("zh-TW", "pv_value_section") in text
    assert fmt(c.annual_saving_ntd, "NT$") in text and fmt(c.cheaper_by_ntd, "NT$") in text
    assert "經常契約" in text and "三段式" in text and "尖峰" in text
    year_value = sum(v.value_total_ntd or 0 for v in annual.pv_value)
    assert fmt(year_value, "NT$") in text  # the annual total line
    en = pdf_text(render_pdf(annual, "en"))
    assert "Contract capacity" in en and "What the PV is worth" in en and "off-peak" in en
    assert ReportData.from_dict(json.loads(json.dumps(annual.to_dict()))) == annual


def test_report_frozen_before_the_sections_stays_as_issued(stack, annual, tmp_path):
    """A revision stored by the code before these sections (its JSON has no such keys)
    loads with them empty, keeps its fingerprint and bytes, and gets no 'data changed'
    note for sections it never had; a changed number still gets one."""
    old = annual.to_dict()
    for key in ("contracts", "pv_value", "sections"):
        del old[key]
    issued = replace(ReportData.from_dict(old), revision=1, closed=True)
    assert (issued.contracts, issued.pv_value, issued.sections) == ((), (), ())
    # the fingerprint is over the numbers the old code counted, nothing more
    assert fingerprint(issued) == fingerprint(replace(annual, contracts=(), pv_value=()))
    assert fingerprint(issued) != annual.fingerprint
    issued = replace(issued, fingerprint=fingerprint(issued))
    bodies = {f: r(issued, "zh-TW") for f, r in (("csv", render_csv), ("pdf", render_pdf))}
    assert t("zh-TW", "contract_section") not in pdf_text(bodies["pdf"])
    assert bodies["csv"].decode("utf-8-sig").count("\r\n\r\n") == 1  # summary, adjustments

    store = ReportStore(tmp_path / "reports.sqlite")
    store.save(issued)
    got = report_for(stack.config, stack.influx, stack.records, store, 2025, None, NOW)
    assert got == issued and got.later_data_note is None
    assert render_csv(got, "zh-TW") == bodies["csv"] and render_pdf(got, "zh-TW") == bodies["pdf"]
    store.close()
    # but a number that would change still counts: the check leaves out only the sections
    changed = replace(issued, items=(replace(issued.items[0], actual=1.0), *issued.items[1:]))
    changed = replace(changed, fingerprint=fingerprint(changed))
    assert as_issued(annual, changed).fingerprint == issued.fingerprint != changed.fingerprint
    assert as_issued(annual, annual) is annual  # a report issued with the sections: all count
