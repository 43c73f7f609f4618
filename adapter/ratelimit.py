"""Per-tenant rate limits on runs per second (token buckets, one per tenant and worker process)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class TokenBucket:
    """``rate`` runs per second on average, ``burst`` at once."""

    rate: float
    burst: float
    tokens: float
    updated: float

    def take(self, runs: int, now: float) -> float:
        """Take ``runs`` tokens; return 0 when allowed, else the seconds until they would be."""
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if runs <= self.tokens or (runs > self.burst and self.tokens >= self.burst):
            self.tokens -= runs  # a batch larger than the burst passes on a full bucket, leaving a debt
            return 0.0
        return (min(runs, self.burst) - self.tokens) / self.rate


class RateLimits:
    """Buckets by tenant name; a tenant without a limit is never refused."""

    def __init__(self, limits: dict[str, tuple[float, int]], clock: Callable[[], float] = time.monotonic) -> None:
        now = clock()
        self._clock = clock
        self._buckets = {
            tenant: TokenBucket(rate, float(burst or math.ceil(rate * 10)), float(burst or math.ceil(rate * 10)), now)
            for tenant, (rate, burst) in limits.items()
            if rate > 0
        }

    def retry_after(self, tenant: str, runs: int) -> int | None:
        """None when the batch may pass; else whole seconds to wait (for ``Retry-After``)."""
        bucket = self._buckets.get(tenant)
        if bucket is None:
            return None
        wait = bucket.take(runs, self._clock())
        return max(1, math.ceil(wait)) if wait > 0 else None
