"""`CircuitBreaker`: stops calling a backend that keeps failing, until a probe succeeds."""

from __future__ import annotations

import math
import time
from typing import Final, Literal, final

from .._errors import ConfigurationError
from .._types import Clock

__all__ = ("MAX_COOLDOWN", "CircuitBreaker")

# One hour: an open breaker turns caching off, so a longer cool-down is a mistake (an infinite one
# never probes again) rather than a policy.
MAX_COOLDOWN: Final = 3600.0


@final
class CircuitBreaker:
    """Closed, open, half-open: the state machine in front of every backend call of a cache.

    Closed: calls go through; ``threshold`` consecutive failures open it. Open: calls are not
    made (the cache treats them as failed: a miss, a skipped write) for ``cooldown`` seconds, so a
    dead server costs microseconds instead of a timeout per call. Half-open: after the cool-down
    one call is let through as a probe; its success closes the breaker, its failure opens it for
    another cool-down. While the probe runs, other calls still fail fast.

    The closed path is two attribute reads, because it sits on every cache hit.
    """

    __slots__ = (
        "_clock",
        "_probe_until",
        "_probing",
        "cooldown",
        "failures",
        "open_until",
        "opened",
        "threshold",
    )

    def __init__(
        self, *, threshold: int = 5, cooldown: float = 5.0, clock: Clock = time.monotonic
    ) -> None:
        """Args:
        threshold: consecutive failures that open the breaker.
        cooldown: seconds it stays open before one probe is let through; finite, at most
            `MAX_COOLDOWN` (one hour).
        clock: monotonic seconds.
        """
        if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
            raise ConfigurationError(
                f"breaker threshold must be an int of at least 1, got {threshold!r}"
            )
        if (
            isinstance(cooldown, bool)
            or not isinstance(cooldown, int | float)
            or not (0 < cooldown <= MAX_COOLDOWN and math.isfinite(cooldown))
        ):
            raise ConfigurationError(
                f"breaker cooldown must be positive seconds, at most {MAX_COOLDOWN:g}, "
                f"got {cooldown!r}"
            )
        self.threshold = threshold
        self.cooldown = float(cooldown)
        self._clock = clock
        # Read on the hot path, written only here: consecutive failures, and the monotonic
        # time until which the breaker is open (0.0 while closed). ``opened`` counts openings.
        self.failures = 0
        self.open_until = 0.0
        self._probing = False
        self._probe_until = 0.0
        self.opened = 0

    def __repr__(self) -> str:
        return f"CircuitBreaker(state={self.state!r}, failures={self.failures}, threshold={self.threshold})"

    @property
    def state(self) -> Literal["closed", "open", "half_open"]:
        """``closed`` (calls pass), ``open`` (calls fail fast) or ``half_open`` (a probe may pass)."""
        if not self.open_until:
            return "closed"
        return "open" if self._clock() < self.open_until else "half_open"

    def allow(self) -> bool:
        """Returns whether a call may go to the backend now; in half-open state, to one caller.

        A caller that was allowed must report `succeeded`, `failed` or `abandoned`.
        """
        if not self.open_until:
            return True
        now = self._clock()
        # A probe that never reported (its caller was cancelled mid-call) gives up its turn
        # after one cool-down, so the breaker cannot stay half-open for ever.
        if now >= self.open_until and (not self._probing or now >= self._probe_until):
            self._probing = True
            self._probe_until = now + self.cooldown
            return True
        return False

    def succeeded(self) -> None:
        """Records a successful call: closes the breaker and forgets past failures."""
        self.failures = 0
        self.open_until = 0.0
        self._probing = False

    def blocked(self) -> bool:
        """Returns whether calls are being refused now (open, or half-open with a probe out)."""
        if not self.open_until:
            return False
        now = self._clock()
        return now < self.open_until or (self._probing and now < self._probe_until)

    def abandoned(self) -> None:
        """Records a call that ended without an answer (cancelled): a new probe may go out."""
        self._probing = False

    def failed(self) -> None:
        """Records a failed call: opens the breaker at the threshold, or when a probe fails."""
        self.failures += 1
        if self._probing or self.failures >= self.threshold:
            if not self.open_until or self._probing:
                self.opened += 1
            self.open_until = self._clock() + self.cooldown
            self._probing = False
