"""The four-saving report as an A4 PDF (reportlab platypus, CJK font embedded).

Deterministic: the same :class:`ReportData` and language give the same bytes (reportlab's
invariant mode; the only time in the file is ``data.generated_at``).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from xml.sax.saxutils import escape

from reportlab.graphics.charts.barcharts import VerticalBarChart
from reportlab.graphics.charts.legends import Legend
from reportlab.graphics.shapes import Drawing, String
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFError, TTFont
from reportlab.platypus import (
    CondPageBreak,
    KeepTogether,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from foursave.reports.i18n import (
    BILL_KEYS,
    DASH,
    ReportError,
    baseline_rule_label,
    billing_period_label,
    cause_label,
    check_lang,
    contract_reason_label,
    contracts_label,
    eui,
    fmt,
    item_label,
    labelled,
    met_label,
    month_label,
    months_label,
    note_label,
    plan_label,
    pv_bill_row,
    pv_period_label,
    pv_reason_label,
    pv_total_row,
    site_name,
    site_rows,
    t,
    title,
    tou_label,
    tou_periods,
    unit_label,
)
from foursave.reports.model import ItemRow, MonthBar, ReportData, SiteInfo

FONT_PATH = Path("/usr/share/fonts/truetype/arphic/uming.ttc")
FONT = "UMingTW"  # AR PL UMing TW: Traditional Chinese glyph forms
MARGIN = 15 * mm
WIDTH = A4[0] - 2 * MARGIN  # [pt]
GRID = colors.HexColor("#9e9e9e")
HEAD_BG = colors.HexColor("#e8eef5")
RESULT_COLOURS = {True: colors.HexColor("#1b7a2e"), False: colors.HexColor("#b71c1c")}
SERIES = (("actual", "#1f5f9e"), ("baseline", "#616161"), ("target", "#43a047"))


def _load_font() -> TTFont:
    """The collection's TW face (Traditional Chinese forms), else its first face."""
    first = None
    for index in range(4):
        try:
            font = TTFont(FONT, str(FONT_PATH), subfontIndex=index)
        except TTFError:
            break
        if font.face.name == FONT.encode():
            return font
        first = first or font
    if first is None:
        raise ReportError(f"CJK font {FONT_PATH} is unreadable: reinstall fonts-arphic-uming")
    return first


def _font() -> str:
    """Register the UMing font once per process [font name]; ``ReportError`` if missing."""
    if FONT not in pdfmetrics.getRegisteredFontNames():
        if not FONT_PATH.is_file():
            raise ReportError(
                f"CJK font {FONT_PATH} is missing: install the Debian package fonts-arphic-uming"
            )
        pdfmetrics.registerFont(_load_font())
        pdfmetrics.registerFontFamily(FONT, normal=FONT, bold=FONT, italic=FONT, boldItalic=FONT)
    return FONT


def _styles(lang: str) -> dict[str, ParagraphStyle]:
    wrap = "CJK" if lang == "zh-TW" else None
    base = ParagraphStyle("body", fontName=_font(), fontSize=9, leading=12, wordWrap=wrap)
    return {
        "title": ParagraphStyle("title", base, fontSize=17, leading=22, spaceAfter=6),
        "h1": ParagraphStyle("h1", base, fontSize=13, leading=17, spaceBefore=10, spaceAfter=4),
        "h2": ParagraphStyle("h2", base, fontSize=10.5, leading=14, spaceBefore=6, spaceAfter=3),
        "body": base,
        "cell": ParagraphStyle("cell", base, fontSize=8, leading=10),
        "small": ParagraphStyle("small", base, fontSize=7, leading=9, leftIndent=6),
    }


def _p(text: str, style: ParagraphStyle) -> Paragraph:
    return Paragraph(escape(text), style)


def _table(rows: list[list], widths: list[float], header: str = "row") -> Table:
    """A grid table; ``header`` "row" shades the first row, "col" the first column too."""
    style = [
        ("FONT", (0, 0), (-1, -1), _font(), 8, 10),
        ("GRID", (0, 0), (-1, -1), 0.25, GRID),
        ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
        ("BACKGROUND", (0, 0), (-1, 0), HEAD_BG),
    ]
    if header == "col":
        style += [("BACKGROUND", (0, 0), (0, -1), HEAD_BG), ("ALIGN", (1, 1), (-1, -1), "RIGHT")]
    return Table(rows, colWidths=widths, style=TableStyle(style), repeatRows=1)


def _box(text: str, style: ParagraphStyle, colour: str) -> Table:
    """A framed, shaded paragraph (recomputation, later data)."""
    return Table(
        [[_p(text, style)]],
        colWidths=[WIDTH],
        style=TableStyle(
            [
                ("FONT", (0, 0), (-1, -1), _font(), 9),
                ("BOX", (0, 0), (-1, -1), 1, colors.HexColor(colour)),
                ("BACKGROUND", (0, 0), (-1, -1), colors.HexColor("#fff8e1")),
            ]
        ),
    )


def _header(data: ReportData, lang: str, st: dict) -> list:
    """Title, period, sites and the provenance of the numbers."""
    fields = [
        ("period", data.period),
        ("sites", "、".join(site_name(lang, s) for s in data.sites)),
        ("revision", str(data.revision)),
        ("method_version", data.method_version),
        ("generated_at", data.generated_at),
        ("status", t(lang, "closed" if data.closed else "open")),
        ("fingerprint", data.fingerprint),
    ]
    rows = [[t(lang, k), _p(v, st["cell"])] for k, v in fields]
    out = [_p(title(data, lang), st["title"]), _table(rows, [0.22 * WIDTH, 0.78 * WIDTH], "col")]
    if data.recomputed_reason:
        text = labelled(lang, "recomputed", data.recomputed_reason)
        out += [Spacer(0, 6), _box(text, st["body"], "#e65100")]
    if data.later_data_note:
        text = labelled(lang, "data_note", data.later_data_note)
        out += [Spacer(0, 6), _box(text, st["body"], "#1565c0")]
    return out


def _target_rate(row: ItemRow) -> str:
    """Paper's target is a required online-signing rate, the others a reduction."""
    text = fmt(row.target_rate, "rate")
    return f"≥ {text}" if row.item == "paper" and row.target_rate is not None else text


def _items_table(rows: list[ItemRow], lang: str, st: dict) -> Table:
    """The site's four items side by side (one column per item)."""
    lines: list[tuple[str, Callable[[ItemRow], str | Paragraph]]] = [
        ("unit", lambda r: unit_label(lang, r.unit)),
        ("actual", lambda r: fmt(r.actual, r.unit)),
        ("baseline", lambda r: fmt(r.baseline, r.unit)),
        (
            "baseline_rule",
            lambda r: _p(baseline_rule_label(lang, r.baseline_rule) or DASH, st["cell"]),
        ),
        ("target_rate", _target_rate),
        ("target", lambda r: fmt(r.target, r.unit)),
        ("savings_rate", lambda r: fmt(r.savings_rate, "rate")),
        ("result", lambda r: met_label(lang, r.met)),
        ("co2e", lambda r: fmt(r.co2e_kg, "kg")),
        ("completeness", lambda r: fmt(r.completeness, "rate")),
        ("adjustments", lambda r: fmt(r.adjustments, r.unit)),
    ]
    for key, detail in (("eui", "eui_kwh_m2"), ("eui_12m", "eui_rolling_12m_kwh_m2")):
        if any(detail in r.details for r in rows if r.item == "electricity"):

            def eui_cell(r: ItemRow, d: str = detail) -> str:
                return fmt(eui(r, d), "eui") if r.item == "electricity" else ""

            lines.append((key, eui_cell))
    table = [[t(lang, "item"), *(item_label(lang, r.item) for r in rows)]]
    table += [[t(lang, key), *(cell(r) for r in rows)] for key, cell in lines]
    col = (WIDTH - 0.24 * WIDTH) / max(len(rows), 1)
    out = _table(table, [0.24 * WIDTH] + [col] * len(rows), "col")
    result_line = 1 + [k for k, _ in lines].index("result")
    out.setStyle(
        [
            ("TEXTCOLOR", (i + 1, result_line), (i + 1, result_line), RESULT_COLOURS[r.met])
            for i, r in enumerate(rows)
            if r.met is not None
        ]
    )
    return out


def _pv_table(data: ReportData, site: str, lang: str, st: dict) -> list:
    rows = [p for p in data.pv if p.site == site]
    if not rows:
        return [_p(t(lang, "no_pv"), st["body"])]
    keys = ("pv_energy", "specific_yield", "reference_yield", "pr", "availability", "co2_avoided")
    table = [[_p(t(lang, k), st["cell"]) for k in keys]]
    table += [
        [
            fmt(p.energy_kwh, "kWh"),
            fmt(p.specific_yield_kwh_kwp, "kWh/kWp"),
            fmt(p.reference_yield_h, "h"),
            fmt(p.performance_ratio, "pr"),
            fmt(p.availability, "rate"),
            fmt(p.co2e_avoided_kg, "kg"),
        ]
        for p in rows
    ]
    out = _table(table, [WIDTH / len(keys)] * len(keys))
    out.setStyle([("ALIGN", (0, 1), (-1, -1), "RIGHT")])
    return [out]


def _site_section(data: ReportData, site: SiteInfo, lang: str, st: dict) -> list:
    rows = site_rows(data, site.id)
    facts = ("　" if lang == "zh-TW" else "    ").join(
        (
            labelled(lang, "site_id", site.id),
            labelled(lang, "floor_area", fmt(site.floor_area_m2, "m²")),
            labelled(lang, "pv_capacity", fmt(site.pv_capacity_kwp, "kWp")),
        )
    )
    out = [CondPageBreak(120), _p(site_name(lang, site), st["h1"]), _p(facts, st["body"])]
    out += [Spacer(0, 4), _items_table(rows, lang, st)]
    notes = [(r, n) for r in rows for n in r.notes]
    if notes:
        out.append(_p(t(lang, "notes"), st["h2"]))
        out += [
            _p(f"• {labelled(lang, r.item, note_label(lang, n))}", st["small"]) for r, n in notes
        ]
    out += [_p(t(lang, "pv"), st["h2"]), *_pv_table(data, site.id, lang, st)]
    return out


def _adjustments(data: ReportData, lang: str, st: dict) -> list:
    out = [_p(t(lang, "adjustment_records"), st["h1"])]
    if not data.adjustments:
        return [*out, _p(t(lang, "no_adjustments"), st["body"])]
    names = {s.id: site_name(lang, s) for s in data.sites}
    keys = ("sites", "item", "period", "amount", "reason", "approved_by", "approved_on")
    table = [[_p(t(lang, k), st["cell"]) for k in keys]]
    table += [
        [
            _p(names.get(a.site, a.site), st["cell"]),
            item_label(lang, a.item),
            a.period,
            f"{fmt(a.amount, a.unit)} {unit_label(lang, a.unit)}",
            _p(a.reason, st["cell"]),
            _p(a.approved_by, st["cell"]),
            a.approved_on,
        ]
        for a in data.adjustments
    ]
    widths = [0.16, 0.08, 0.1, 0.14, 0.28, 0.12, 0.12]
    return [*out, _table(table, [w * WIDTH for w in widths])]


def _bills(data: ReportData, lang: str, st: dict) -> list:
    """Rebuilt versus billed per billing period; nothing when no bill is recorded."""
    if not data.bills:
        return []
    names = {s.id: site_name(lang, s) for s in data.sites}
    keys = ["sites", *BILL_KEYS[1:]]  # the site's name, not its id, heads the PDF's column
    table = [[_p(t(lang, k), st["cell"]) for k in keys]]
    table += [
        [
            _p(names.get(b.site, b.site), st["cell"]),
            b.month,
            _p(billing_period_label(b), st["cell"]),
            fmt(b.rebuilt_kwh, "kWh"),
            fmt(b.billed_kwh, "kWh"),
            fmt(b.kwh_diff_share, "rate"),
            fmt(b.rebuilt_ntd, "NT$"),
            fmt(b.billed_ntd, "NT$"),
            fmt(b.ntd_diff_share, "rate"),
            fmt(b.completeness, "rate"),
            _p(cause_label(lang, b), st["cell"]),
        ]
        for b in data.bills
    ]
    widths = [0.1, 0.07, 0.11, 0.08, 0.08, 0.07, 0.08, 0.08, 0.07, 0.08, 0.18]
    out = _table(table, [w * WIDTH for w in widths])
    out.setStyle([("ALIGN", (3, 1), (9, -1), "RIGHT")])
    return [CondPageBreak(120), _p(t(lang, "bills"), st["h1"]), out]


def _contracts(data: ReportData, lang: str, st: dict) -> list:
    """The annual report's contract capacity advice, a two-column table per site (one
    line for a site that has none); nothing when the report has no such section."""
    if not data.contracts:
        return []
    names = {s.id: site_name(lang, s) for s in data.sites}
    out: list = [CondPageBreak(160), _p(t(lang, "contract_section"), st["h1"])]
    for c in data.contracts:
        out.append(_p(names.get(c.site, c.site), st["h2"]))
        if c.reason is not None:
            out.append(_p(contract_reason_label(lang, c), st["body"]))
            continue
        other = c.other_plan is not None
        fields = [
            ("contract_months", f"{c.months[0]} .. {c.months[-1]} ({len(c.months)})"),
            ("margin", fmt(c.margin_pct / 100, "rate")),
            ("plan", plan_label(lang, c.plan)),
            ("current_contract", contracts_label(lang, c.current_kw)),
            ("recommended_contract", contracts_label(lang, c.recommended_kw)),
            ("current_annual", fmt(c.current_annual_ntd, "NT$")),
            ("recommended_annual", fmt(c.recommended_annual_ntd, "NT$")),
            ("annual_saving", fmt(c.annual_saving_ntd, "NT$")),
            ("raise_cost", fmt(c.raise_cost_ntd, "NT$")),
            ("months_over", months_label(lang, c.months_over)),
            ("plan_bills", fmt(c.plan_bills_ntd, "NT$")),
            *(
                [
                    ("other_plan", plan_label(lang, c.other_plan)),
                    ("other_contract", contracts_label(lang, c.other_recommended_kw)),
                    ("other_bills", fmt(c.other_bills_ntd, "NT$")),
                    ("cheaper_plan", plan_label(lang, c.cheaper_plan)),
                    ("cheaper_by", fmt(c.cheaper_by_ntd, "NT$")),
                ]
                if other
                else []
            ),
            ("confidence", c.confidence or DASH),
        ]
        rows = [[_p(t(lang, k), st["cell"]), _p(v, st["cell"])] for k, v in fields]
        out.append(_table(rows, [0.45 * WIDTH, 0.55 * WIDTH], "col"))
    out.append(_p(t(lang, "contract_basis"), st["small"]))
    return out


def _pv_value(data: ReportData, lang: str, st: dict) -> list:
    """What each site's PV is worth: per TOU period, then the bill it saved per billing
    period (the annual report adds the total); nothing when there is no such section."""
    if not data.pv_value:
        return []
    names = {s.id: site_name(lang, s) for s in data.sites}
    out: list = [CondPageBreak(160), _p(t(lang, "pv_value_section"), st["h1"])]
    for site in dict.fromkeys(v.site for v in data.pv_value):
        mine = [v for v in data.pv_value if v.site == site]
        valued = [v for v in mine if v.reason is None]
        out.append(_p(names.get(site, site), st["h2"]))
        if valued:
            keys = [
                "bill_month",
                "tou_period",
                "pv_consumed",
                "pv_value_ntd",
                "demand_with_pv",
                "demand_without_pv",
                "demand_reduction",
            ]
            table = [[_p(t(lang, k), st["cell"]) for k in keys]]
            table += [
                [
                    v.month,
                    tou_label(lang, p),
                    fmt(v.consumed_kwh.get(p), "kWh"),
                    fmt(v.value_ntd.get(p), "NT$"),
                    fmt(v.demand_kw.get(p), "kW"),
                    fmt(v.demand_without_pv_kw.get(p), "kW"),
                    fmt(v.demand_reduction_kw.get(p), "kW"),
                ]
                for v in valued
                for p in tou_periods(v)
            ]
            widths = [0.11, 0.17, 0.13, 0.13, 0.15, 0.16, 0.15]
            per_period = _table(table, [w * WIDTH for w in widths])
            per_period.setStyle([("ALIGN", (2, 1), (-1, -1), "RIGHT")])
            keys = [
                "bill_month",
                "billing_period",
                "pv_generation",
                "pv_exported",
                "pv_consumed",
                "pv_value_total",
                "over_contract_saved",
                "bill_saved",
            ]
            table = [[_p(t(lang, k), st["cell"]) for k in keys]]
            rows = [pv_bill_row(v, lang) for v in valued]
            if data.month is None:
                rows.append(pv_total_row(valued, site, lang))
            table += [
                [
                    r[1],
                    _p(r[2], st["cell"]),
                    *(fmt(x, "kWh") for x in r[4:6]),
                    fmt(r[7], "kWh"),
                    *(fmt(x, "NT$") for x in r[8:11]),
                ]
                for r in rows
            ]
            widths = [0.1, 0.17, 0.12, 0.11, 0.12, 0.13, 0.13, 0.12]
            per_bill = _table(table, [w * WIDTH for w in widths])
            per_bill.setStyle([("ALIGN", (2, 1), (-1, -1), "RIGHT")])
            out += [per_period, Spacer(0, 4), _p(t(lang, "pv_value_bill"), st["body"]), per_bill]
        for v in mine:
            if v.reason is not None:
                when = v.month if v.start is None else f"{v.month} ({pv_period_label(v)})"
                out.append(_p(f"• {when}{t(lang, 'colon')}{pv_reason_label(lang, v)}", st["small"]))
    out.append(_p(t(lang, "pv_value_basis"), st["small"]))
    return out


def _chart(bars: list[MonthBar], heading: str, lang: str) -> Drawing:
    """Monthly actual against baseline and target; a month without data has no bar."""
    font, height = _font(), 170
    drawing = Drawing(WIDTH, height, initialFontName=font, initialFontSize=8)
    drawing.add(String(0, height - 12, heading, fontName=font, fontSize=9))
    series = [[getattr(b, key) for b in bars] for key, _ in SERIES]
    if all(v is None for row in series for v in row):
        drawing.add(String(WIDTH / 2, height / 2, DASH, fontName=font, fontSize=12))
        return drawing
    chart = VerticalBarChart()
    chart.x, chart.y, chart.width, chart.height = 55, 22, WIDTH - 160, height - 45
    chart.data = series
    chart.categoryAxis.categoryNames = [month_label(lang, b.month) for b in bars]
    chart.valueAxis.valueMin = 0
    chart.valueAxis.labelTextFormat = lambda v: f"{v:,.0f}"
    chart.groupSpacing, chart.barSpacing = 4, 0.5
    for axis in (chart.categoryAxis, chart.valueAxis):
        axis.labels.fontName, axis.labels.fontSize = font, 7
    for i, (_, colour) in enumerate(SERIES):
        chart.bars[i].fillColor = colors.HexColor(colour)
        chart.bars[i].strokeColor = None
    for i in (1, 2):  # baseline and target as lines across each month
        chart.bars[i].isLine, chart.bars[i].strokeWidth = True, 1.5
        chart.bars[i].strokeColor = colors.HexColor(SERIES[i][1])
    chart.bars[1].strokeDashArray = (3, 2)
    chart.categoryAxis.style = "mixed"
    legend = Legend()
    legend.x, legend.y, legend.fontName, legend.fontSize = WIDTH - 95, height - 40, font, 8
    legend.colorNamePairs = [(colors.HexColor(c), t(lang, k)) for k, c in SERIES]
    drawing.add(chart)
    drawing.add(legend)
    return drawing


def _charts(data: ReportData, lang: str, st: dict) -> list:
    out = [CondPageBreak(240), _p(t(lang, "monthly"), st["h1"])]
    for site in data.sites:
        for row in site_rows(data, site.id):
            bars = sorted(
                (b for b in data.monthly if b.site == site.id and b.item == row.item),
                key=lambda b: b.month,
            )
            if row.item == "paper" or not bars:
                continue
            heading = (
                f"{site_name(lang, site)} · {item_label(lang, row.item)} "
                f"[{unit_label(lang, row.unit)}]"
            )
            out += [_chart(bars, heading, lang), Spacer(0, 6)]
    return out


def _closing(data: ReportData, lang: str, st: dict) -> list:
    """Emission factors, data completeness and the signature block."""
    out = [_p(t(lang, "factors"), st["h1"])]
    out += [_p(f"• {f}", st["small"]) for f in data.factors] or [
        _p(t(lang, "no_factors"), st["body"])
    ]
    out.append(_p(t(lang, "completeness"), st["h1"]))
    per_site = [(s, site_rows(data, s.id)) for s in data.sites]
    items = list(dict.fromkeys(r.item for _, rows in per_site for r in rows))
    table = [[t(lang, "sites"), *(item_label(lang, i) for i in items)]]
    for site, rows in per_site:
        by_item = {r.item: r.completeness for r in rows}
        table.append([site_name(lang, site), *(fmt(by_item.get(i), "rate") for i in items)])
    col = 0.7 * WIDTH / max(len(items), 1)
    out.append(_table(table, [0.3 * WIDTH] + [col] * len(items), "col"))
    keys = ("sign_prepared", "sign_reviewed", "sign_approved")
    signatures = Table(
        [[t(lang, k) for k in keys], ["", "", ""]],
        colWidths=[WIDTH / 3] * 3,
        rowHeights=[16, 44],
        style=TableStyle(
            [
                ("FONT", (0, 0), (-1, -1), _font(), 10),
                ("LINEBELOW", (0, 1), (-1, 1), 0.75, colors.black),
                ("LEFTPADDING", (0, 0), (-1, -1), 12),
                ("RIGHTPADDING", (0, 0), (-1, -1), 12),
            ]
        ),
    )
    out += [Spacer(0, 10), KeepTogether([_p(t(lang, "signatures"), st["h1"]), signatures])]
    return out


def render_pdf(data: ReportData, lang: str) -> bytes:
    """The report in ``lang`` as A4 PDF bytes; ``ReportError`` without the CJK font."""
    check_lang(lang)
    st = _styles(lang)
    heading = title(data, lang)

    def footer(canvas, doc) -> None:
        canvas.saveState()
        canvas.setFont(_font(), 7)
        canvas.drawString(MARGIN, 9 * mm, f"{heading} · {t(lang, 'revision')} {data.revision}")
        page = t(lang, "page").format(page=doc.page)
        canvas.drawRightString(A4[0] - MARGIN, 9 * mm, page)
        canvas.restoreState()

    story = _header(data, lang, st)
    for site in data.sites:
        story += _site_section(data, site, lang, st)
    story += _adjustments(data, lang, st) + _bills(data, lang, st)
    story += _contracts(data, lang, st) + _pv_value(data, lang, st)
    story += _charts(data, lang, st) + _closing(data, lang, st)
    buf = io.BytesIO()
    doc = SimpleDocTemplate(
        buf,
        pagesize=A4,
        leftMargin=MARGIN,
        rightMargin=MARGIN,
        topMargin=MARGIN,
        bottomMargin=MARGIN + 5 * mm,
        title=heading,
        author="foursave",
        creator="foursave",
        subject=f"{data.period} rev {data.revision}",
        lang=lang,
        initialFontName=_font(),
        invariant=1,
    )
    doc.build(story, onFirstPage=footer, onLaterPages=footer)
    return buf.getvalue()
