"""A token bucket per client address for the public display (no login, so no key to
limit by).  Pure: the caller passes the time, tests pass their own."""

from __future__ import annotations

import threading
from collections import OrderedDict


class RateLimiter:
    def __init__(self, rate_per_s: float, burst: int, max_clients: int = 10_000):
        self.rate = rate_per_s
        self.burst = float(burst)
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, time
        self._lock = threading.Lock()

    def allow(self, client: str, now: float) -> tuple[bool, float]:
        """(allowed, seconds until the next request would be allowed)."""
        with self._lock:
            tokens, last = self._buckets.pop(client, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            allowed = tokens >= 1.0
            if allowed:
                tokens -= 1.0
            self._buckets[client] = (tokens, now)  # most recent last
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)  # forget the longest-idle client
            return allowed, 0.0 if allowed else (1.0 - tokens) / self.rate
