"""What ``/health`` says of InfluxDB, from a ping at most every ``max_age_s`` seconds.

``/health`` is public: were every call a ping, anyone could make the API hammer
InfluxDB.  The answer is the last ping's while it is younger than ``max_age_s``; one
caller pings when it is older, and callers arriving meanwhile get the previous answer
rather than wait on a slow database.  Pure apart from the ``ping`` it is given; the
caller passes the monotonic clock, tests pass their own."""

from __future__ import annotations

import threading
from collections.abc import Callable


class PingCache:
    def __init__(self, ping: Callable[[], bool], max_age_s: float, monotonic: Callable[[], float]):
        self.ping = ping
        self.max_age_s = max_age_s
        self.monotonic = monotonic
        self.pings = 0  # how many pings were sent (tests, metrics)
        self._ok: bool | None = None
        self._at: float | None = None
        self._lock = threading.Lock()

    def _fresh(self) -> bool:
        return self._at is not None and self.monotonic() - self._at < self.max_age_s

    def state(self) -> bool:
        """True if InfluxDB answered the last ping (sent at most ``max_age_s`` ago)."""
        if self._fresh():
            return bool(self._ok)
        # the first answer is waited for; later ones fall back on the previous result
        # while another caller's ping is under way
        if not self._lock.acquire(blocking=self._ok is None):
            return bool(self._ok)
        try:
            if not self._fresh():
                self.pings += 1
                self._ok = self.ping()
                self._at = self.monotonic()
            return bool(self._ok)
        finally:
            self._lock.release()
