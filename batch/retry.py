"""When to retry a request, and how long to wait first."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import httpx

# 408/409 are transient by definition; 429 is the server's concurrency cap; 5xx may
# be a restarting or overloaded server. Other 4xx will fail the same way again.
RETRY_STATUSES = frozenset({408, 409, 429}) | frozenset(range(500, 600))


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 8
    base_delay: float = 0.5
    max_delay: float = 60.0

    def backoff(self, retry: int) -> float:
        """Full-jitter exponential backoff for the `retry`-th retry (0-based): spreads
        clients that failed together so they do not come back together."""
        return random.uniform(0, min(self.max_delay, self.base_delay * 2**retry))

    def delay(self, retry: int, retry_after: float | None) -> float:
        backoff = self.backoff(retry)
        if retry_after is None:
            return backoff
        # Retry-After is a floor, not the schedule: a server that always says "1"
        # would otherwise use up a busy client's retries in seconds. The jitter keeps
        # everyone told "1 second" from arriving at the same instant.
        return min(self.max_delay, max(retry_after + random.uniform(0, self.base_delay), backoff))


def retryable_status(status: int) -> bool:
    return status in RETRY_STATUSES


def retry_after_seconds(response: httpx.Response) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP date), or None."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
