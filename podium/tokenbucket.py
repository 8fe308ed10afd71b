"""A token bucket: ``rate`` actions per second on average, up to ``burst`` at once.

The console limits what each agent may send with it; the agent paces its replays
with the same bucket so that it stays under that limit.
"""

import time


class TokenBucket:
    """Tokens refill continuously at ``rate`` per second, up to ``burst``."""

    def __init__(self, rate: float, burst: int) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs a positive rate and a burst of at least one")
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.at = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now

    def take(self) -> bool:
        """Spend one token if there is one; False (nothing spent) when the bucket is empty."""
        self._refill()
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False

    def delay(self) -> float:
        """Reserve one token; how long to wait before using it (0: go now)."""
        self._refill()
        self.tokens -= 1.0
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate
