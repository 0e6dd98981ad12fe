"""The four-saving report as CSV: UTF-8 with BOM (Excel opens Chinese correctly), raw numbers.

One line per ledger row with the summary sheet's columns, a blank line, then the
adjustments; then, each after a blank line and only when present (a report without
them keeps its bytes): the rebuilt-versus-billed table where Taipower bills are
recorded, the contract capacity advice (annual reports), and what the PV is worth per
TOU period and the bill it saved per billing period (sites with PV and a tariff; the
annual report adds each site's total line).  Numbers are written with ``repr`` so they
compare exactly to the ledger; text that a spreadsheet would take for a formula gets a
leading ``'`` (reports/cells.py).
"""

from __future__ import annotations

import csv
import io

from foursave.reports.cells import csv_text
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
    pv_bill_row,
    pv_period_rows,
    pv_total_row,
    summary_row,
    t,
)
from foursave.reports.model import ReportData


def _cell(value: object) -> str:
    """None → empty; floats at full precision (``repr`` round-trips exactly); text
    never as a formula."""
    if value is None:
        return ""
    if isinstance(value, str):
        return csv_text(value)
    # float(): a numpy float's repr is "np.float64(...)"
    return repr(float(value)) if isinstance(value, float) else str(value)


def render_csv(data: ReportData, lang: str) -> bytes:
    """The report in ``lang`` as CSV bytes (UTF-8 with BOM, CRLF line ends)."""
    check_lang(lang)
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\r\n")
    out.writerow([t(lang, k) for k in SUMMARY_KEYS])
    out.writerows([_cell(v) for v in summary_row(data, r, lang)] for r in data.items)
    out.writerow([])
    out.writerow([t(lang, k) for k in ADJUSTMENT_KEYS])
    out.writerows([_cell(v) for v in adjustment_row(a, lang)] for a in data.adjustments)
    if data.bills:  # the real bills, where recorded: rebuilt vs billed per billing period
        out.writerow([])
        out.writerow([t(lang, k) for k in BILL_KEYS])
        out.writerows([_cell(v) for v in bill_row(b, lang)] for b in data.bills)
    if data.contracts:  # the annual report's contract capacity advice
        out.writerow([])
        out.writerow([t(lang, k) for k in CONTRACT_KEYS])
        out.writerows([_cell(v) for v in contract_row(c, lang)] for c in data.contracts)
    if data.pv_value:  # what the PV is worth: per TOU period, then per billing period
        out.writerow([])
        out.writerow([t(lang, k) for k in PV_PERIOD_KEYS])
        for v in data.pv_value:
            out.writerows([_cell(x) for x in row] for row in pv_period_rows(v, lang))
        out.writerow([])
        out.writerow([t(lang, k) for k in PV_BILL_KEYS])
        out.writerows([_cell(x) for x in pv_bill_row(v, lang)] for v in data.pv_value)
        if data.month is None:
            for site in dict.fromkeys(v.site for v in data.pv_value):
                out.writerow([_cell(x) for x in pv_total_row(list(data.pv_value), site, lang)])
    return buf.getvalue().encode("utf-8-sig")
