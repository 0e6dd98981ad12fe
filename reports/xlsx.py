"""The four-saving report as an Excel workbook (openpyxl): raw numbers, formatted by Excel.

Deterministic: the document properties carry ``data.generated_at`` and the zip entries a
fixed date, so the same :class:`ReportData` and language give the same bytes.  No cell
is a formula: text beginning like one is written as a string (reports/cells.py).
"""

from __future__ import annotations

import io
import re
import zipfile
from datetime import UTC, datetime

from openpyxl import Workbook
from openpyxl.chart import BarChart, LineChart, Reference, Series
from openpyxl.chart.data_source import AxDataSource, StrRef
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.worksheet.worksheet import Worksheet
from openpyxl.writer.excel import ExcelWriter

from foursave.reports.cells import formula_like
from foursave.reports.i18n import (
    ADJUSTMENT_KEYS,
    BILL_KEYS,
    CONTRACT_KEYS,
    PV_BILL_KEYS,
    PV_PERIOD_KEYS,
    SUMMARY_KEYS,
    adjustment_row,
    bill_row,
    check_lang,
    contract_row,
    item_label,
    note_label,
    pv_bill_row,
    pv_period_rows,
    pv_total_row,
    site_name,
    summary_row,
    t,
    title,
    unit_label,
)
from foursave.reports.model import ITEMS, ItemRow, ReportData

ZIP_DATE = (1980, 1, 1, 0, 0, 0)
HEAD_FILL = PatternFill("solid", fgColor="E8EEF5")
PERCENT, QUANTITY, EUI = "0.0%", "#,##0.0", "0.0"
RATES = {"target_rate", "savings_rate", "completeness"}
IN_UNIT = {"actual", "baseline", "target", "adjustments"}
CELL_VALUE = re.compile(rb'(<c r="([A-Z]+[0-9]+)"[^>]*><v>)[^<]*(</v>)')
PV_FORMATS = ("#,##0.0", "#,##0.0", "#,##0.0", "0.000", PERCENT, "#,##0.0")


def _number_format(key: str, row: ItemRow) -> str | None:
    """Excel's format for a summary column; ``None`` for text columns."""
    if key in IN_UNIT:
        return PERCENT if row.unit == "online-signing rate" else QUANTITY
    return PERCENT if key in RATES else QUANTITY if key == "co2e" else EUI if key == "eui" else None


def _head(ws: Worksheet, row: int, labels: list[str]) -> None:
    for col, label in enumerate(labels, 1):
        cell = ws.cell(row, col, label)
        cell.font, cell.fill = Font(bold=True), HEAD_FILL
        cell.alignment = Alignment(wrap_text=True, vertical="center")


def _summary(ws: Worksheet, data: ReportData, lang: str) -> None:
    """Header block, then one line per ledger row."""
    ws.append([title(data, lang)])
    ws["A1"].font = Font(bold=True, size=14)
    for key, value in (
        ("period", data.period),
        ("revision", data.revision),
        ("method_version", data.method_version),
        ("generated_at", data.generated_at),
        ("status", t(lang, "closed" if data.closed else "open")),
        ("fingerprint", data.fingerprint),
        ("recomputed", data.recomputed_reason),
        ("data_note", data.later_data_note),
    ):
        ws.append([t(lang, key), value])
    ws.append([])
    top = ws.max_row + 1
    _head(ws, top, [t(lang, k) for k in SUMMARY_KEYS])
    for i, row in enumerate(data.items, top + 1):
        for col, (key, value) in enumerate(
            zip(SUMMARY_KEYS, summary_row(data, row, lang), strict=True), 1
        ):
            cell = ws.cell(i, col, value)
            if value is not None and (number_format := _number_format(key, row)):
                cell.number_format = number_format
    ws.freeze_panes = ws.cell(top + 1, 3)
    for letter, width in zip("ABCDEFGHIJKLMNOP", (12, 20, 10, 10, 12, 14, 14, 30), strict=False):
        ws.column_dimensions[letter].width = width


def _chart(ws: Worksheet, first: int, last: int, heading: str, unit: str, lang: str) -> BarChart:
    """Actual bars with baseline and target lines over the months in rows first..last."""
    bar, line = BarChart(), LineChart()
    for chart, col, key in ((bar, 6, "actual"), (line, 7, "baseline"), (line, 8, "target")):
        values = Reference(ws, min_col=col, min_row=first, max_row=last)
        chart.series.append(Series(values, title=t(lang, key)))
    months = Reference(ws, min_col=5, min_row=first, max_row=last)
    for series in bar.series + line.series:  # the months are text: a string reference
        series.cat = AxDataSource(strRef=StrRef(f=str(months)))
    bar.title, bar.y_axis.title, bar.width, bar.height = heading, unit, 18, 7.5
    bar.x_axis.delete = bar.y_axis.delete = False  # else recent Excel hides the axes
    bar += line
    return bar


def _monthly(ws: Worksheet, data: ReportData, lang: str) -> None:
    """MonthBar table, and per site and item (not paper) actual bars with baseline and
    target lines."""
    keys = ("site_id", "site_name", "item", "unit", "month", "actual", "baseline", "target")
    _head(ws, 1, [t(lang, k) for k in keys])
    units = {(r.site, r.item): r.unit for r in data.items}
    charts = 0
    for site in data.sites:
        for item in ITEMS:
            bars = sorted(
                (b for b in data.monthly if b.site == site.id and b.item == item),
                key=lambda b: b.month,
            )
            if not bars:
                continue
            first, unit = ws.max_row + 1, unit_label(lang, units.get((site.id, item), ""))
            for b in bars:
                ws.append(
                    [
                        site.id,
                        site_name(lang, site),
                        item_label(lang, item),
                        unit,
                        b.month,
                        b.actual,
                        b.baseline,
                        b.target,
                    ]
                )
                for cell in ws[ws.max_row][5:]:
                    cell.number_format = PERCENT if item == "paper" else QUANTITY
            if item == "paper":
                continue
            heading = f"{site_name(lang, site)} · {item_label(lang, item)} [{unit}]"
            bar = _chart(ws, first, ws.max_row, heading, unit, lang)
            ws.add_chart(bar, f"J{2 + 16 * charts}")
            charts += 1
    ws.freeze_panes = "A2"


def _pv(ws: Worksheet, data: ReportData, lang: str) -> None:
    keys = ("pv_energy", "specific_yield", "reference_yield", "pr", "availability", "co2_avoided")
    _head(ws, 1, [t(lang, "site_id"), t(lang, "site_name")] + [t(lang, k) for k in keys])
    names = {s.id: site_name(lang, s) for s in data.sites}
    for p in data.pv:
        ws.append(
            [
                p.site,
                names.get(p.site, p.site),
                p.energy_kwh,
                p.specific_yield_kwh_kwp,
                p.reference_yield_h,
                p.performance_ratio,
                p.availability,
                p.co2e_avoided_kg,
            ]
        )
        for cell, number_format in zip(ws[ws.max_row][2:], PV_FORMATS, strict=True):
            cell.number_format = number_format


def _adjustments(ws: Worksheet, data: ReportData, lang: str) -> None:
    _head(ws, 1, [t(lang, k) for k in ADJUSTMENT_KEYS])
    for a in data.adjustments:
        ws.append(adjustment_row(a, lang))
        ws.cell(ws.max_row, 5).number_format = QUANTITY
    if not data.adjustments:
        ws.append([t(lang, "no_adjustments")])
    ws.column_dimensions["G"].width = 50


# rebuilt/billed kWh, difference, NT$, NT$, difference, completeness (columns D..J)
BILL_FORMATS = ("#,##0", "#,##0", "+0.0%;-0.0%", "#,##0", "#,##0", "+0.0%;-0.0%", PERCENT)


def _bills(ws: Worksheet, data: ReportData, lang: str) -> None:
    _head(ws, 1, [t(lang, k) for k in BILL_KEYS])
    for b in data.bills:
        ws.append(bill_row(b, lang))
        for cell, number_format in zip(ws[ws.max_row][3:10], BILL_FORMATS, strict=True):
            cell.number_format = number_format
    ws.column_dimensions["C"].width = 26
    ws.column_dimensions["K"].width = 60


# the contract row's numbers by column (CONTRACT_KEYS): margin, NT$ amounts
CONTRACT_FORMATS = {3: PERCENT, 7: "#,##0", 8: "#,##0", 9: "#,##0", 10: "#,##0"}
CONTRACT_FORMATS |= {12: "#,##0", 15: "#,##0", 17: "#,##0"}


def _contracts(ws: Worksheet, data: ReportData, lang: str) -> None:
    _head(ws, 1, [t(lang, k) for k in CONTRACT_KEYS])
    for c in data.contracts:
        ws.append(contract_row(c, lang))
        for col, number_format in CONTRACT_FORMATS.items():
            ws.cell(ws.max_row, col).number_format = number_format
    for letter in "EFKN":
        ws.column_dimensions[letter].width = 30
    ws.column_dimensions["S"].width = 60
    ws.append([])
    ws.append([t(lang, "contract_basis")])


def _pv_value(ws: Worksheet, data: ReportData, lang: str) -> None:
    """Per TOU period, then per billing period (with the annual report's totals)."""
    _head(ws, 1, [t(lang, k) for k in PV_PERIOD_KEYS])
    for v in data.pv_value:
        for row in pv_period_rows(v, lang):
            ws.append(row)
            for cell in ws[ws.max_row][3:]:
                cell.number_format = QUANTITY
    ws.append([])
    _head(ws, ws.max_row + 1, [t(lang, k) for k in PV_BILL_KEYS])
    rows = [pv_bill_row(v, lang) for v in data.pv_value]
    if data.month is None:
        rows += [
            pv_total_row(list(data.pv_value), s, lang) for s in {v.site: 0 for v in data.pv_value}
        ]
    for row in rows:
        ws.append(row)
        for cell in ws[ws.max_row][4:11]:
            cell.number_format = QUANTITY
    ws.append([])
    ws.append([t(lang, "pv_value_basis")])
    ws.column_dimensions["C"].width = 26
    ws.column_dimensions["L"].width = 50


def _notes(ws: Worksheet, data: ReportData, lang: str) -> None:
    _head(ws, 1, [t(lang, "site_id"), t(lang, "item"), t(lang, "period"), t(lang, "notes")])
    for r in data.items:
        for note in r.notes:
            ws.append([r.site, item_label(lang, r.item), r.period, note_label(lang, note)])
    ws.append([])
    _head(ws, ws.max_row + 1, [t(lang, "factors")])
    for factor in data.factors:
        ws.append([factor])
    ws.column_dimensions["D"].width = 80


def _text_not_formulas(wb: Workbook) -> None:
    """openpyxl takes a str beginning with ``=`` for a formula: every formula-like text
    cell becomes a string cell with Excel's quote prefix (shown as typed, and still
    text when someone edits the cell)."""
    for ws in wb.worksheets:
        for row in ws.iter_rows():
            for cell in row:
                if formula_like(cell.value):
                    cell.data_type = "s"
                    cell.quotePrefix = True


def _timestamp(iso: str) -> datetime:
    """``generated_at`` as the naive UTC time Excel's document properties expect."""
    when = datetime.fromisoformat(iso)
    return when.astimezone(UTC).replace(tzinfo=None) if when.tzinfo else when


def _exact_numbers(wb: Workbook) -> dict[str, dict[bytes, bytes]]:
    """The floats openpyxl would round (it writes 16 significant digits) as ``repr``
    [archive path → cell → text], so the cells equal the ledger's floats exactly."""
    return {
        f"xl/worksheets/sheet{i}.xml": {
            c.coordinate.encode(): repr(float(c.value)).encode()  # numpy's repr is not a number
            for row in ws.iter_rows()
            for c in row
            if isinstance(c.value, float) and float(f"{c.value:.16g}") != c.value
        }
        for i, ws in enumerate(wb.worksheets, 1)
    }


def _fixed_zip(raw: bytes, exact: dict[str, dict[bytes, bytes]]) -> bytes:
    """The same archive with every entry dated :data:`ZIP_DATE`, in the order written, and
    the :func:`_exact_numbers` restored."""
    out = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(raw)) as src,
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst,
    ):
        for info in src.infolist():
            body, cells = src.read(info), exact.get(info.filename, {})
            if cells:

                def restore(m: re.Match[bytes], cells: dict[bytes, bytes] = cells) -> bytes:
                    return m[1] + cells[m[2]] + m[3] if m[2] in cells else m[0]

                body = CELL_VALUE.sub(restore, body)
            entry = zipfile.ZipInfo(info.filename, date_time=ZIP_DATE)
            entry.compress_type, entry.external_attr = zipfile.ZIP_DEFLATED, 0o644 << 16
            dst.writestr(entry, body)
    return out.getvalue()


def render_xlsx(data: ReportData, lang: str) -> bytes:
    """The report in ``lang`` as .xlsx bytes (sheets: summary, monthly, PV, adjustments,
    bills where recorded, contract advice (annual), PV value where valued, notes)."""
    check_lang(lang)
    wb = Workbook()
    renderers = [_summary, _monthly, _pv, _adjustments, _notes]
    names = ["summary_sheet", "monthly_sheet", "pv_sheet", "adjustments_sheet", "notes_sheet"]
    if data.bills:  # the real bills, where recorded (a report without them is unchanged)
        renderers.insert(4, _bills)
        names.insert(4, "bills_sheet")
    # the same for the contract advice and the PV value: before the notes, when present
    for present, render, name in (
        (data.contracts, _contracts, "contract_sheet"),
        (data.pv_value, _pv_value, "pv_value_sheet"),
    ):
        if present:
            renderers.insert(-1, render)
            names.insert(-1, name)
    sheets = [wb.active] + [wb.create_sheet() for _ in range(len(names) - 1)]
    for ws, render, name in zip(sheets, renderers, names, strict=True):
        ws.title = t(lang, name)
        render(ws, data, lang)
    _text_not_formulas(wb)
    when = _timestamp(data.generated_at)
    props = wb.properties
    props.created = props.modified = when
    props.creator = props.lastModifiedBy = "foursave"
    props.title, props.language = title(data, lang), lang
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        ExcelWriter(wb, archive).save()  # not wb.save(): that stamps the current time
    return _fixed_zip(buf.getvalue(), _exact_numbers(wb))
