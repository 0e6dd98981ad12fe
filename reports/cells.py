"""Text cells that a spreadsheet must not take for a formula (CSV / formula injection).

A cell whose text begins with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return
is read by Excel, LibreOffice and Google Sheets as a formula when the CSV is opened
(OWASP, "CSV Injection"): an adjustment's reason or a recompute reason typed as
``=HYPERLINK(...)`` would run in the auditor's spreadsheet.  Following OWASP, such
text is written with a leading single quote in CSV, and as a string cell (never a
formula) with Excel's quote prefix in XLSX.  Numbers are not text: a negative amount
stays a number.
"""

from __future__ import annotations

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def formula_like(value: object) -> bool:
    """True for text a spreadsheet would evaluate (numbers never are)."""
    return isinstance(value, str) and value.startswith(FORMULA_START)


def csv_text(value: str) -> str:
    """``value`` for a CSV cell: a leading ``'`` before a formula-like start."""
    return "'" + value if formula_like(value) else value
