"""Late data: a marker written beside readings stored for a day that may already be
closed, so derived results (the ``counter_daily`` rollup, ``pv_daily``) notice it
without comparing every day's readings again.

Whoever stores a point older than :data:`LATE_AFTER_S` (the ingester, a spool flushed
after an outage; ``foursave backfill``) writes one ``late_data`` point *after* those
points are stored: time = when it was written, fields ``first_ms``/``last_ms`` = the
span of the late points' times and ``n`` = how many.  The rollup reads the markers it
has not handled yet (a handful of rows) and rescans the local days they touch.

Data written past both (by hand, straight into InfluxDB) is not noticed: ``foursave
rules --once --rebuild`` stays the remedy.
"""

from __future__ import annotations

from collections.abc import Iterable

from foursave.core.reading import to_line

LATE = "late_data"
# older than this when stored: the rollup closes a local day two days before "today",
# i.e. at least 48 h before now; one day is a margin for clocks that disagree
LATE_AFTER_S = 86_400


def late_line(first_ms: int, last_ms: int, n: int, at_ms: int) -> str:
    """The marker for ``n`` points in [first_ms, last_ms] stored at ``at_ms``."""
    return to_line(
        LATE, {}, {"first_ms": float(first_ms), "last_ms": float(last_ms), "n": float(n)}, at_ms
    )


def late_marker(times_ms: Iterable[int], now_ms: int) -> str | None:
    """The marker for the points at ``times_ms`` just stored, or None when none of them
    is older than :data:`LATE_AFTER_S` at ``now_ms``."""
    cut = now_ms - LATE_AFTER_S * 1000
    late = [t for t in times_ms if t < cut]
    if not late:
        return None
    return late_line(min(late), max(late), len(late), now_ms)
