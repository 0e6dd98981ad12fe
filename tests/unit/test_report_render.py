"""The report renderers: PDF text, XLSX cells and CSV numbers all carry the ledger's values."""

from __future__ import annotations

import csv
import io
import zipfile
from dataclasses import replace

import pytest
from openpyxl import load_workbook
from pypdf import PdfReader

from foursave.reports import render
from foursave.reports.csv import render_csv
from foursave.reports.i18n import ADJUSTMENT_KEYS, DASH, LANGS, fmt, item_label, met_label, t, title
from foursave.reports.model import (
    Adjustment,
    ItemRow,
    MonthBar,
    PvRow,
    ReportData,
    SiteInfo,
)
from foursave.reports.pdf import render_pdf
from foursave.reports.xlsx import render_xlsx

pytestmark = pytest.mark.clock  # local days and hours: run again under a second zone in CI

REASON = "7月空調主機更換，停機期間外租發電機供電（另計）"
APPROVER = "陳秘書 Chen"


def _row(site, item, unit, actual, baseline, rule, rate, **kw) -> ItemRow:
    target = rate if item == "paper" else None if baseline is None else baseline * (1 - rate)
    savings = None if actual is None or baseline is None else (baseline - actual) / baseline
    return ItemRow(site, item, "2025-07", unit, actual, baseline, rule, rate, target, savings, **kw)


def report() -> ReportData:
    """Two Tainan civic centres in July 2025: all four items, one adjustment, one gap."""
    sites = (
        SiteInfo(
            "yonghua", "永華市政中心", "Yonghua Civic Center", 52_310.5, 8_200.0, 99.4, "plan_2016"
        ),
        SiteInfo("minzhi", "民治市政中心", None, 31_877.0, 3_150.0, None, "plan_2011"),
    )
    items = (
        _row(
            "yonghua",
            "electricity",
            "kWh",
            412_345.678,
            452_001.25,
            "previous year (2024-07)",
            0.01,
            met=True,
            co2e_kg=195_040.5,
            completeness=0.9987,
            adjustments=-1_250.0,
            details={"eui_kwh_m2": 9.3517, "eui_rolling_12m_kwh_m2": 101.2468},
            notes=("source: main meters", "grid factor 0.474 kg CO2e/kWh (2024; published)"),
        ),
        _row(
            "yonghua",
            "water",
            "m³",
            1_523.4,
            1_498.7,
            "previous year (2024-07)",
            0.01,
            met=False,
            co2e_kg=252.88,
            completeness=1.0,
            adjustments=0.0,
            notes=("source: main meters",),
        ),
        _row(
            "yonghua",
            "fuel",
            "L",
            812.36,
            905.0,
            "previous year (2024-07)",
            0.01,
            met=True,
            co2e_kg=1_883.2,
            completeness=1.0,
            adjustments=0.0,
        ),
        _row(
            "yonghua",
            "paper",
            "online-signing rate",
            0.9123,
            None,
            "online-signing rate against the year's target",
            0.85,
            met=True,
            co2e_kg=None,
            completeness=1.0,
            adjustments=0.0,
        ),
        _row(
            "minzhi",
            "electricity",
            "kWh",
            None,
            None,
            "",
            None,
            met=None,
            co2e_kg=None,
            completeness=0.42,
            adjustments=0.0,
            notes=("data 42% complete: not judged until the period is complete",),
        ),
        _row(
            "minzhi",
            "water",
            "m³",
            987.65,
            1_010.0,
            "base year 2007",
            0.15,
            met=False,
            co2e_kg=163.95,
            completeness=1.0,
            adjustments=0.0,
        ),
        _row(
            "minzhi",
            "fuel",
            "L",
            455.5,
            600.0,
            "base year 2007",
            0.15,
            met=True,
            co2e_kg=1_056.8,
            completeness=1.0,
            adjustments=0.0,
        ),
        _row(
            "minzhi",
            "paper",
            "online-signing rate",
            0.7781,
            None,
            "online-signing rate against the year's target",
            0.8,
            met=False,
            co2e_kg=None,
            completeness=1.0,
            adjustments=0.0,
        ),
    )
    base = {"electricity": 430_000.0, "water": 1_450.0, "fuel": 880.0, "paper": 0.0}
    monthly = tuple(
        MonthBar(
            site,
            item,
            f"2025-{m:02d}",
            None
            if (site == "minzhi" and m in (7, 8)) or m > 7 or item == "paper"
            else base[item] * (0.9 + 0.02 * m) / (2 if site == "minzhi" else 1),
            base[item] / (2 if site == "minzhi" else 1),
            base[item] * 0.99 / (2 if site == "minzhi" else 1),
        )
        for site in ("yonghua", "minzhi")
        for item in ("electricity", "water", "fuel", "paper")
        for m in range(1, 13)
    )
    return ReportData(
        year=2025,
        month=7,
        period="2025-07",
        method_version="ledger-2025.3",
        generated_at="2025-08-05T09:30:00+08:00",
        revision=2,
        closed=True,
        recomputed_reason="台電帳單更正 7 月讀數 (Taipower corrected the July bill)",
        fingerprint="3f9a" * 16,
        sites=sites,
        items=items,
        monthly=monthly,
        pv=(PvRow("yonghua", 12_480.2, 125.56, 160.3, 0.7833, 0.995, 5_915.6),),
        adjustments=(
            Adjustment(
                17,
                "yonghua",
                "electricity",
                "2025-07",
                -1_250.0,
                "kWh",
                REASON,
                APPROVER,
                "2025-08-01",
            ),
        ),
        factors=("grid_electricity 0.474 kg CO2e/kWh (Energy Administration 2024; published)",),
        later_data_note=None,
    )


def pdf_text(data: bytes) -> str:
    return "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(data)).pages)


def summary_table(ws) -> list[tuple]:
    """The summary sheet's ledger lines (below the header line starting with the site id)."""
    rows = list(ws.iter_rows(values_only=True))
    top = next(i for i, r in enumerate(rows) if r[0] in {t(lang, "site_id") for lang in LANGS})
    return rows[top + 1 :]


@pytest.mark.parametrize("lang", LANGS)
def test_pdf_text_carries_the_formatted_numbers(lang):
    data = report()
    text = pdf_text(render_pdf(data, lang))
    assert title(data, lang) in text
    assert ("四省" in text) == (lang == "zh-TW")
    assert "永華市政中心" in text if lang == "zh-TW" else "Yonghua Civic Center" in text
    assert "民治市政中心" in text  # no English name: the configured one
    for row in data.items:
        assert item_label(lang, row.item) in text
        for value in (fmt(row.actual, row.unit), fmt(row.baseline, row.unit)):
            assert value in text, (row.site, row.item, value)
        assert fmt(row.savings_rate, "rate") in text
        assert met_label(lang, row.met) in text
    assert fmt(412_345.678, "kWh") == "412,346" and "412,346" in text
    assert fmt(0.08770, "rate") == "8.8%" and "8.8%" in text
    assert fmt(-0.016482, "rate") == "-1.6%" and "-1.6%" in text
    assert fmt(0.9123, "online-signing rate") == "91.2%" and "91.2%" in text
    assert fmt(None, "kWh") == DASH and DASH in text
    assert "9.4" in text and "101.2" in text  # EUI [kWh/m²], month and rolling 12 months
    assert "0.783" in text  # PR
    assert REASON in text.replace("\n", "") and APPROVER in text
    assert "台電帳單更正" in text  # the recomputation box
    assert t(lang, "sign_approved") in text


def test_pdf_embeds_a_subset_cjk_font():
    pdf = render_pdf(report(), "zh-TW")
    fonts = {
        f["/BaseFont"]
        for page in PdfReader(io.BytesIO(pdf)).pages
        for f in page["/Resources"]["/Font"].values()
    }
    assert fonts and all("+UMing" in name for name in fonts), fonts


def test_annual_report_without_adjustments_or_pv():
    data = replace(
        report(),
        month=None,
        period="2025",
        items=tuple(replace(r, period="2025") for r in report().items),
        pv=(),
        adjustments=(),
        factors=(),
        recomputed_reason=None,
        later_data_note="2025-12 的新讀數會改變本報告 (newer readings would change it)",
    )
    text = pdf_text(render_pdf(data, "zh-TW"))
    assert "2025年 四省專案執行報告" in text and "2025年7月" not in text
    for key in ("no_adjustments", "no_pv", "no_factors"):
        assert t("zh-TW", key) in text
    assert "新讀數會改變本報告" in text and t("zh-TW", "recomputed") not in text
    assert title(data, "en") == "Four-saving report 2025"
    assert render(data, "xlsx", "en")[2] == "foursave-report-2025-rev2-en.xlsx"
    lines = list(csv.reader(io.StringIO(render_csv(data, "en").decode("utf-8-sig"))))
    assert lines[-1] == list(map(t, ["en"] * 9, ADJUSTMENT_KEYS))  # header, no rows
    wb = load_workbook(io.BytesIO(render_xlsx(data, "en")))
    assert wb["Adjustments"]["A2"].value == t("en", "no_adjustments")


def test_renders_are_byte_identical():
    data = report()
    for lang in LANGS:
        assert render_pdf(data, lang) == render_pdf(report(), lang)
        assert render_xlsx(data, lang) == render_xlsx(report(), lang)
        assert render_csv(data, lang) == render_csv(report(), lang)
    assert render_pdf(data, "zh-TW") != render_pdf(data, "en")


def test_xlsx_summary_cells_are_the_ledger_floats():
    data = report()
    wb = load_workbook(io.BytesIO(render_xlsx(data, "zh-TW")))
    assert wb.sheetnames == ["總表", "月別", "PV", "調整", "附註"]
    lines = summary_table(wb["總表"])
    assert len(lines) == len(data.items)
    for line, row in zip(lines, data.items, strict=True):
        assert line[:3] == (
            row.site,
            {"yonghua": "永華市政中心"}.get(row.site, "民治市政中心"),
            item_label("zh-TW", row.item),
        )
        numbers = (
            row.actual,
            row.baseline,
            row.target_rate,
            row.target,
            row.savings_rate,
            row.co2e_kg,
            row.completeness,
            row.adjustments,
        )
        assert (
            line[5],
            line[6],
            line[8],
            line[9],
            line[10],
            line[12],
            line[13],
            line[14],
        ) == numbers
        assert line[11] == met_label("zh-TW", row.met)
        assert line[15] == (row.details.get("eui_kwh_m2") if row.item == "electricity" else None)
    assert any(
        float(f"{r.savings_rate:.16g}") != r.savings_rate for r in data.items if r.savings_rate
    )
    ws = wb["總表"]
    assert any(c.number_format == "0.0%" for r in ws.iter_rows() for c in r if c.value == 0.9123)
    assert len(wb["月別"]._charts) == 6  # 2 sites × electricity, water, fuel
    monthly = list(wb["月別"].iter_rows(min_row=2, values_only=True))
    assert len(monthly) == len(data.monthly)
    gap = next(r for r in monthly if r[0] == "minzhi" and r[2] == "省電" and r[4] == "2025-07")
    assert gap[5] is None  # a month without data stays empty, not 0
    assert wb["調整"]["G2"].value == REASON and wb["調整"]["H2"].value == APPROVER
    assert wb.properties.created.isoformat() == "2025-08-05T01:30:00"  # generated_at, UTC


def test_xlsx_zip_entries_have_a_fixed_date():
    with zipfile.ZipFile(io.BytesIO(render_xlsx(report(), "en"))) as z:
        assert {i.date_time for i in z.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        assert "Summary" in z.read("xl/workbook.xml").decode()


def test_csv_round_trips_the_ledger_floats():
    data = report()
    raw = render_csv(data, "en")
    assert raw.startswith("\ufeff".encode())
    lines = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))
    header, rows = lines[0], lines[1 : 1 + len(data.items)]
    assert header[0] == "Site ID" and len(header) == 16
    for line, row in zip(rows, data.items, strict=True):
        parsed = [None if v == "" else float(v) for v in (line[5], line[6], line[13])]
        assert parsed == [row.actual, row.baseline, row.completeness]
        assert (line[10] == "") == (row.savings_rate is None)
        if row.savings_rate is not None:
            assert float(line[10]) == row.savings_rate
    assert lines[1 + len(data.items)] == []
    adjustment = lines[3 + len(data.items)]
    assert float(adjustment[4]) == -1250.0 and adjustment[6] == REASON
    assert adjustment[7] == APPROVER
    zh = list(csv.reader(io.StringIO(render_csv(data, "zh-TW").decode("utf-8-sig"))))
    assert zh[1][1] == "永華市政中心" and zh[1][2] == "省電"


def test_render_dispatch_and_errors():
    data = report()
    body, media_type, name = render(data, "pdf", "zh-TW")
    assert body.startswith(b"%PDF") and media_type == "application/pdf"
    assert name == "foursave-report-2025-07-rev2-zh-TW.pdf"
    assert render(data, "csv", "en")[2] == "foursave-report-2025-07-rev2-en.csv"
    with pytest.raises(ValueError, match=r"'fr'.*zh-TW, en"):
        render(data, "pdf", "fr")
    with pytest.raises(ValueError, match=r"'docx'.*pdf, xlsx, csv"):
        render(data, "docx", "en")
    for renderer in (render_pdf, render_xlsx, render_csv):
        with pytest.raises(ValueError, match="'zh-CN'"):
            renderer(data, "zh-CN")


def test_fmt_never_shows_a_missing_value_as_zero():
    assert fmt(None, "rate") == fmt(float("nan"), "kWh") == DASH
    assert fmt(0.0, "kWh") == "0.0"
    assert fmt(999.96, "kWh") == "1,000" and fmt(12.34, "m³") == "12.3"
    assert fmt(-0.00001, "rate") == "0.0%"
    assert fmt(9.3517, "eui") == "9.4" and fmt(0.78333, "pr") == "0.783"


def test_missing_font_is_a_clear_error(monkeypatch):
    from foursave.reports import pdf
    from foursave.reports.i18n import ReportError

    monkeypatch.setattr(pdf, "FONT", "UMingTW-missing")
    monkeypatch.setattr(pdf, "FONT_PATH", pdf.Path("/nonexistent/uming.ttc"))
    with pytest.raises(ReportError, match="fonts-arphic-uming"):
        render_pdf(report(), "en")


def test_notes_are_worded_in_the_reports_language_and_keep_the_fingerprint():
    from foursave.reports.build import fingerprint
    from foursave.reports.i18n import note_label
    from foursave.rules.notes import Note

    notes = (
        Note("incomplete", {"share": 0.42}),
        Note("source", {"source": "water_bills"}),
        Note("prorated", {"from_days": 29, "to_days": 28}),
    )
    legacy = tuple(str(n) for n in notes)  # how revisions frozen before stored them
    assert legacy == (
        "data 42% complete: not judged until the period is complete",
        "source: water bills",
        "baseline pro-rated from 29 to 28 days",
    )
    base = report()
    k = next(i for i, r in enumerate(base.items) if (r.site, r.item) == ("minzhi", "electricity"))
    items = list(base.items)
    data = replace(base, items=(*items[:k], replace(items[k], notes=notes), *items[k + 1 :]))
    old = replace(base, items=(*items[:k], replace(items[k], notes=legacy), *items[k + 1 :]))
    assert fingerprint(data) == fingerprint(old)  # frozen revisions see no change
    again = ReportData.from_dict(data.to_dict())  # stored and read back
    assert again.items[k].notes == notes and ReportData.from_dict(old.to_dict()) == old

    zh = [note_label("zh-TW", n) for n in notes]
    assert zh == [
        "資料完整度 42%：期間資料完整前不予判定",
        "資料來源：水費單",
        "基準值依天數比例換算（29 天 → 28 天）",
    ]
    pdf_zh = "".join(
        p.extract_text() for p in PdfReader(io.BytesIO(render_pdf(data, "zh-TW"))).pages
    )
    pdf_en = "".join(p.extract_text() for p in PdfReader(io.BytesIO(render_pdf(data, "en"))).pages)
    assert "資料完整度 42%" in pdf_zh and "data 42% complete" not in pdf_zh
    assert "data 42% complete" in pdf_en and "資料完整度" not in pdf_en
    for lang, words in (("zh-TW", zh[1]), ("en", legacy[1])):
        wb = load_workbook(io.BytesIO(render_xlsx(data, lang)))
        cells = [c.value for ws in wb.worksheets for row in ws.iter_rows() for c in row]
        assert words in cells, lang
    # every note code has Chinese words
    from foursave.reports.i18n import NOTES_ZH
    from foursave.rules.notes import EN

    assert set(NOTES_ZH) == set(EN)


@pytest.mark.parametrize(
    ("rule", "zh"),
    [
        ("previous year (2024)", "前一年（2024）"),
        ("previous year (2024-07)", "前一年（2024-07）"),
        ("base year 2024 (EUI no growth)", "基準年 2024（EUI 不成長）"),
        ("base year 2007", "基準年 2007"),
        ("online-signing rate against the year's target", "線上簽核率對照當年目標"),
        ("", ""),
        ("something new", "something new"),  # shown as the ledger worded it, never dropped
    ],
)
def test_baseline_rules_in_the_reports_language(rule, zh):
    from foursave.reports.i18n import baseline_rule_label

    assert baseline_rule_label("zh-TW", rule) == zh
    assert baseline_rule_label("en", rule) == rule


def test_zh_tw_files_word_the_baseline_rule_in_chinese():
    data = report()
    pdf = "".join(p.extract_text() for p in PdfReader(io.BytesIO(render_pdf(data, "zh-TW"))).pages)
    assert "基準年 2007" in pdf and "base year 2007" not in pdf
    rows = list(csv.reader(io.StringIO(render_csv(data, "zh-TW").decode("utf-8-sig"))))
    assert any("基準年 2007" in row for row in rows)
    rows_en = list(csv.reader(io.StringIO(render_csv(data, "en").decode("utf-8-sig"))))
    assert any("base year 2007" in row for row in rows_en)
