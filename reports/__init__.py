"""The audit committee's four-saving report in PDF, XLSX and CSV, in zh-TW or English."""

from __future__ import annotations

from foursave.reports.csv import render_csv
from foursave.reports.i18n import LANGS, check_lang
from foursave.reports.model import ReportData
from foursave.reports.pdf import render_pdf
from foursave.reports.xlsx import render_xlsx

FORMATS = {
    "pdf": (render_pdf, "application/pdf"),
    "xlsx": (render_xlsx, "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
    "csv": (render_csv, "text/csv; charset=utf-8"),
}


def render(data: ReportData, fmt: str, lang: str) -> tuple[bytes, str, str]:
    """The report as (bytes, media type, file name), e.g. ``foursave-report-2025-07-rev1-zh-TW.pdf``;
    ``ValueError`` naming an unknown format or language."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown report format {fmt!r}: choose one of {', '.join(FORMATS)}")
    check_lang(lang)
    renderer, media_type = FORMATS[fmt]
    name = f"foursave-report-{data.period}-rev{data.revision}-{lang}.{fmt}"
    return renderer(data, lang), media_type, name


__all__ = ["FORMATS", "LANGS", "render"]
