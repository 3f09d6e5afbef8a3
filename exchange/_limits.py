"""Per-principal rate limits: a token bucket for each caller, refused with RESOURCE_EXHAUSTED.

A refused request is a refusal like any other and goes in the ledger, but a flood must not turn
into a flood of ledger entries: only the first refusal of a principal in each second is
recorded; the rest are counted in the metrics (``sinergi_denied_total``).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float
    recorded_second: int = -1


class RateLimiter:
    """``rate`` requests per second per principal on average, bursts up to ``burst``."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def take(self, principal: str) -> tuple[bool, bool]:
        """(allowed, record): whether to serve the call, and if refused, whether to record it."""
        now = time.monotonic()
        with self._lock:
            bucket = self._buckets.get(principal)
            if bucket is None:
                bucket = self._buckets[principal] = _Bucket(float(self.burst), now)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
            if bucket.tokens >= 1:
                bucket.tokens -= 1
                return True, False
            second = int(now)
            record = bucket.recorded_second != second
            bucket.recorded_second = second
            return False, record
