"""Pacing a device's stream: a token bucket that slows a fast sender down (the server then
reads slower, so HTTP/2 flow control pushes back), and notices one that never slows down."""

from __future__ import annotations


class TokenBucket:
    """`rate` tokens per second, up to `burst` saved. `take(n, now)` returns how long to wait
    before the n tokens are there (0: at once); waiting is the caller's business."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("rate and burst must be positive")
        self._rate = rate
        self._burst = burst
        self._tokens = burst
        self._updated = now
        # Seconds the caller has been made to wait without a break.
        self.throttled_for = 0.0

    def take(self, count: float, now: float) -> float:
        elapsed = max(0.0, now - self._updated)
        self._updated = now
        self._tokens = min(self._burst, self._tokens + elapsed * self._rate)
        self._tokens -= count
        if self._tokens >= 0:
            self.throttled_for = 0.0
            return 0.0
        delay = -self._tokens / self._rate
        self.throttled_for += delay
        return delay
