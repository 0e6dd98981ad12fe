"""Missing readings, counted from what is stored: every reading point holds its
``seq`` (the ingester writes it, field ``seq``), so the gaps of a device over a time
window are the seq numbers between the lowest and the highest stored there that no
point holds.

This is the figure that stays right whatever stored the readings: one ingester or
several sharing a subscription (each member sees only part of each device's seqs and
cannot tell the group's gaps), ingesters restarted, readings stored twice (InfluxDB
keeps one point per series and time, and a reading sent again has the same time), or
brokers bridged.  One query over the window, whatever the number of devices.

What it does not see: readings missing before the first or after the last stored one
of the window (a device silent at the window's edges), readings stored without a
``seq`` (``foursave backfill``'s history), and a collector that counted again from 0
(it lost its spool): then the seqs are not increasing with time and the gaps are
``None`` for that window.
"""

from __future__ import annotations

from dataclasses import dataclass

from foursave.core.glossary import KINDS
from foursave.core.influx import InfluxClient
from foursave.core.influxql import Query, agg, select, time_range
from foursave.core.reading import SEQ_FIELD


@dataclass(frozen=True)
class SeqGaps:
    site: str
    device: str
    stored: int  # readings stored in the window (one point per reading, however often sent)
    first: int  # seq of the window's earliest stored reading
    last: int  # seq of its latest
    gaps: int | None  # seqs between them that no point holds; None: the seq restarted


def seq_gaps_query(start_ms: int, end_ms: int) -> Query:
    return select(
        [
            agg("count", SEQ_FIELD, "n"),
            agg("min", SEQ_FIELD, "lo"),
            agg("max", SEQ_FIELD, "hi"),
            agg("first", SEQ_FIELD, "first"),
            agg("last", SEQ_FIELD, "last"),
        ],
        KINDS,
        where=[time_range(start_ms, end_ms)],
        group_by=["site", "device"],
    )


def seq_gaps(influx: InfluxClient, start_ms: int, end_ms: int) -> list[SeqGaps]:
    """Per device with readings in [start_ms, end_ms): what is stored and what is missing
    between its lowest and highest stored seq, sorted by site and device."""
    out = []
    for row in influx.rows(seq_gaps_query(start_ms, end_ms)):
        n, lo, hi, first, last = (row[k] for k in ("n", "lo", "hi", "first", "last"))
        if not n:
            continue
        increasing = first == lo and last == hi
        out.append(
            SeqGaps(
                row.get("site", ""),
                row.get("device", ""),
                n,
                first,
                last,
                hi - lo + 1 - n if increasing else None,
            )
        )
    return sorted(out, key=lambda g: (g.site, g.device))
