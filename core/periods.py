"""The time kernel: local days, months and years, and their bounds as epoch milliseconds.

Everything foursave counts per day, month or year is counted in the *site's* local
calendar, and every instant it stores is epoch milliseconds (UTC).  This module is the
one place that turns one into the other, so no caller writes
``datetime(y, m, d, tzinfo=...).timestamp() * 1000`` or ``m % 12 + 1`` by hand.

- :class:`Period`: a half-open range of local dates ``[start, end)`` with a label —
  ``"2025"`` (a year), ``"2025-07"`` (a month) or ``"2025-07-31"`` (a day);
  :func:`year`, :func:`month`, :func:`day_period`, :func:`parse_period`;
- month stepping: :func:`next_month`, :func:`add_months`, :func:`months_between`;
- bounds: :func:`day_start_ms`, :func:`day_bounds_ms`, :func:`bounds_ms`,
  :func:`period_bounds_ms` — where a local date begins and ends, in a given zone;
- the other way: :func:`local_date` of an epoch-ms instant, :func:`today` from a clock.

Zones are IANA names (``Site.timezone``) or ``tzinfo`` objects (``ZoneInfo``); an
unknown name raises :class:`ValueError` naming it (:func:`zone`).

Days are not 24 hours long.  A local day starts at its local midnight and ends at the
next day's: in Europe/Berlin 2025-03-30 lasts 23 hours and 2025-10-26 25 hours.
Midnight is read with ``fold=0``.  Where a zone moves its clocks *at* midnight, that
still gives the instant the day begins: midnight inside a gap (America/Havana on
2025-03-09 jumps from 00:00 to 01:00; America/Santiago likewise) is read with the offset
before the jump, which is the instant of the jump, the first one of that day; a repeated
midnight (America/Havana on 2025-11-02 goes back from 01:00 to 00:00) is its first
occurrence, when the day began.  So consecutive days always tile the time line.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo

from foursave.core.clock import Clock

ZoneLike = str | tzinfo
"""An IANA zone name (``"Europe/Berlin"``) or a tzinfo (``ZoneInfo``)."""

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def zone(tz: ZoneLike) -> tzinfo:
    """The tzinfo for a zone name (a tzinfo is returned as it is).

    Raises :class:`ValueError` naming the zone if it is not a known IANA name."""
    if isinstance(tz, tzinfo):
        return tz
    if not isinstance(tz, str) or not tz:
        raise ValueError(f"time zone {tz!r}: expected an IANA name such as 'Europe/Berlin'")
    try:
        return ZoneInfo(tz)
    except (KeyError, ValueError, OSError):  # ZoneInfoNotFoundError is a KeyError
        raise ValueError(
            f"unknown time zone {tz!r}: expected an IANA name such as 'Europe/Berlin'"
        ) from None


# ---------------------------------------------------------------------- periods


@dataclass(frozen=True)
class Period:
    """Local dates ``[start, end)`` with a label: ``"2025"``, ``"2025-07"`` or ``"2025-07-31"``.

    A period is a range of *dates*, the same in every zone; where it begins and ends in
    time depends on the zone (:func:`period_bounds_ms`)."""

    label: str
    start: date
    end: date  # exclusive

    @property
    def days(self) -> int:
        """How many local days it has."""
        return (self.end - self.start).days

    @property
    def months(self) -> list[str]:
        """Labels (``"2025-07"``) of the months it touches, in order."""
        return [p.label for p in months_between(self.start, self.end)]

    def dates(self) -> list[date]:
        """Every local date in it, in order."""
        return [self.start + timedelta(days=k) for k in range(self.days)]

    def __contains__(self, d: object) -> bool:
        return isinstance(d, date) and self.start <= d < self.end

    def shifted_years(self, years: int) -> Period:
        """The same period ``years`` earlier (``2025-07`` shifted by 1 is ``2024-07``)."""
        s, e = self.start, self.end
        return Period(
            str(int(self.label[:4]) - years) + self.label[4:],
            s.replace(year=s.year - years),
            e.replace(year=e.year - years),
        )


def year(y: int) -> Period:
    """The calendar year ``y`` (label ``"2025"``)."""
    return Period(f"{y:04d}", date(y, 1, 1), date(y + 1, 1, 1))


def month(y: int, m: int) -> Period:
    """Month ``m`` (1..12) of year ``y`` (label ``"2025-07"``)."""
    if not 1 <= m <= 12:
        raise ValueError(f"month {m} is not 1..12")
    ny, nm = next_month(y, m)
    return Period(f"{y:04d}-{m:02d}", date(y, m, 1), date(ny, nm, 1))


def day_period(d: date) -> Period:
    """The single local day ``d`` (label ``"2025-07-31"``)."""
    return Period(d.isoformat(), d, d + timedelta(days=1))


def month_of(d: date) -> Period:
    """The month that contains ``d``."""
    return month(d.year, d.month)


def parse_period(label: str) -> Period:
    """``"2025"``, ``"2025-07"`` or ``"2025-07-31"`` as a :class:`Period`."""
    try:
        if len(label) == 4:
            return year(int(label))
        if len(label) == 7 and label[4] == "-":
            return month(int(label[:4]), int(label[5:]))
        if len(label) == 10:
            return day_period(date.fromisoformat(label))
    except ValueError:
        pass
    raise ValueError(f"period {label!r}: expected YYYY, YYYY-MM or YYYY-MM-DD")


# ---------------------------------------------------------------------- month stepping


def add_months(y: int, m: int, k: int) -> tuple[int, int]:
    """(year, month) ``k`` months after month ``m`` of ``y`` (``k`` may be negative)."""
    i = y * 12 + (m - 1) + k
    return i // 12, i % 12 + 1


def next_month(y: int, m: int) -> tuple[int, int]:
    """(year, month) after month ``m`` of ``y``: December is followed by January."""
    return add_months(y, m, 1)


def months_between(start: date, end: date) -> list[Period]:
    """The months that touch local dates ``[start, end)``: from ``start``'s month up to
    the month in which ``end - 1 day`` falls (none if ``end <= start``)."""
    out: list[Period] = []
    p = month_of(start)
    while p.start < end:
        out.append(p)
        p = month(*next_month(p.start.year, p.start.month))
    return out


def days_between(start: date, end: date) -> list[date]:
    """Local dates ``[start, end)``."""
    return [start + timedelta(days=k) for k in range((end - start).days)]


# ---------------------------------------------------------------------- bounds in a zone


def day_start(d: date, tz: ZoneLike) -> datetime:
    """The instant local date ``d`` begins in ``tz`` (aware; local midnight, ``fold=0``)."""
    return datetime(d.year, d.month, d.day, tzinfo=zone(tz))


def epoch_ms(t: datetime) -> int:
    """An aware datetime as epoch milliseconds (exact, no float rounding)."""
    if t.tzinfo is None:
        raise ValueError(f"{t.isoformat()} has no time zone: epoch milliseconds need one")
    return (t - EPOCH) // _MS


def day_start_ms(d: date, tz: ZoneLike) -> int:
    """Epoch ms at which local date ``d`` begins in ``tz``."""
    return epoch_ms(day_start(d, tz))


def day_bounds_ms(d: date, tz: ZoneLike) -> tuple[int, int]:
    """``[begin, end)`` of local date ``d`` in ``tz``, epoch ms (23, 24 or 25 hours)."""
    return bounds_ms(d, d + timedelta(days=1), tz)


def bounds_ms(start: date, end: date, tz: ZoneLike) -> tuple[int, int]:
    """``[begin, end)`` in epoch ms of the local dates ``[start, end)`` in ``tz``."""
    z = zone(tz)
    return day_start_ms(start, z), day_start_ms(end, z)


def period_bounds_ms(p: Period, tz: ZoneLike) -> tuple[int, int]:
    """``[begin, end)`` in epoch ms of period ``p`` in ``tz``."""
    return bounds_ms(p.start, p.end, tz)


# ---------------------------------------------------------------------- instants to dates


def local_datetime(ms: float, tz: ZoneLike) -> datetime:
    """Epoch-ms instant ``ms`` as an aware local datetime in ``tz``."""
    return (EPOCH + timedelta(milliseconds=ms)).astimezone(zone(tz))


def local_date(ms: float, tz: ZoneLike) -> date:
    """The local date in ``tz`` on which epoch-ms instant ``ms`` falls."""
    return local_datetime(ms, tz).date()


def today(clock: Clock, tz: ZoneLike) -> date:
    """The local date in ``tz`` now, by ``clock`` (never the machine's own date or zone)."""
    return local_date(clock.time() * 1000, tz)
