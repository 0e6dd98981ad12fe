"""Frozen reports served from the report store, without rebuilding them.

:func:`reports.build.report_for` rebuilds the whole report on every request so that
it can say when late data or records would change an issued (frozen) revision.  Here
a frozen revision's answer is kept in the report store (``reports/store.py``, so it
survives a restart) with the fingerprint of its inputs (``reports/inputs.py``): while
that fingerprint is unchanged the request is answered from the store — the rendered
bytes per format and language, rendered once — and when it has changed the report is
rebuilt by ``report_for`` exactly as before, which says "late data" if a number would
change, and the new fingerprint is kept with that answer.

An open period's report is built on every request, as before (it is never stored).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, replace
from datetime import datetime
from functools import cache
from pathlib import Path

from foursave.core.config import Config
from foursave.core.influx import InfluxClient
from foursave.reports import FORMATS, render
from foursave.reports.build import period_of, report_for, report_today
from foursave.reports.i18n import check_lang
from foursave.reports.inputs import input_fingerprint
from foursave.reports.model import ReportData
from foursave.reports.store import ReportStore
from foursave.rules.records import RecordStore

log = logging.getLogger("foursave.reports")


@dataclass(frozen=True)
class ReportFile:
    body: bytes
    media_type: str
    filename: str
    period: str
    revision: int
    fingerprint: str
    closed: bool
    later_data_note: str | None
    source: str  # "cache": the stored answer; "built": the report was built for this


@cache
def renderer_digest() -> str:
    """The rendering code's digest: bytes rendered by other code are not served."""
    h = hashlib.sha256()
    for f in sorted(Path(__file__).resolve().parent.glob("*.py")):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def _variant(note: str | None) -> str:
    return "" if note is None else hashlib.sha256(note.encode()).hexdigest()[:16]


def _file(
    store: ReportStore, data: ReportData, fmt: str, lang: str, source: str, cache_it: bool
) -> ReportFile:
    key = (data.period, data.revision, _variant(data.later_data_note), fmt, lang)
    rendered = store.file(*key, renderer_digest()) if cache_it else None
    if rendered is None:
        rendered = render(data, fmt, lang)
        if cache_it:
            store.save_file(*key, renderer_digest(), rendered)
    else:
        source = "cache"
    return ReportFile(
        *rendered,
        period=data.period,
        revision=data.revision,
        fingerprint=data.fingerprint,
        closed=data.closed,
        later_data_note=data.later_data_note,
        source=source,
    )


def report_file(
    config: Config,
    influx: InfluxClient,
    records: RecordStore,
    store: ReportStore,
    y: int,
    m: int | None,
    now: datetime,
    fmt: str,
    lang: str,
    recompute_reason: str | None = None,
    by: str = "",
) -> ReportFile:
    """The report file :func:`report_for` would hand out, from the store when the
    frozen revision's inputs are unchanged.  ``ValueError`` for an unknown format or
    language (before anything is built), ``ReportUnchanged`` as ``report_for``."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown report format {fmt!r}: choose one of {', '.join(FORMATS)}")
    check_lang(lang)
    p = period_of(y, m)
    now, _, closed = report_today(config, p, now)
    if not closed:  # open: built on every request, never stored
        data = report_for(config, influx, records, store, y, m, now, recompute_reason, by)
        return _file(store, data, fmt, lang, "built", cache_it=False)
    inputs = input_fingerprint(config, influx, records, p, y)  # before any build
    head = store.head(p.label)
    if head is not None and recompute_reason is None:
        seen = store.check(p.label, head[0])
        if seen is not None and seen[0] == inputs:
            note = seen[1]
            key = (p.label, head[0], _variant(note), fmt, lang, renderer_digest())
            hit = store.file(*key)
            if hit is not None:
                return ReportFile(*hit, p.label, head[0], head[1], True, note, "cache")
            stored = store.latest(p.label)
            if stored is not None:
                data = replace(stored, later_data_note=note)
                return _file(store, data, fmt, lang, "cache", cache_it=True)
    data = report_for(config, influx, records, store, y, m, now, recompute_reason, by)
    store.save_check(p.label, data.revision, inputs, data.later_data_note)
    log.info(
        "report %s revision %d built (inputs %s)%s",
        p.label,
        data.revision,
        inputs[:12],
        "; later data would change it" if data.later_data_note else "",
    )
    return _file(store, data, fmt, lang, "built", cache_it=True)
