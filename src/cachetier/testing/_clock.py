"""`FakeClock`: a clock that moves only when a test moves it."""

from __future__ import annotations

from typing import final

__all__ = ("FakeClock",)


@final
class FakeClock:
    """A callable clock for ``clock=`` parameters; time moves only through `advance` and `set`."""

    __slots__ = ("_now",)

    def __init__(self, start: float = 1_000_000.0) -> None:
        self._now = float(start)

    def __call__(self) -> float:
        return self._now

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now})"

    def advance(self, seconds: float) -> None:
        """Moves time forward by ``seconds``."""
        if seconds < 0:
            raise ValueError("a clock does not go backwards; advance by a non-negative amount")
        self._now += seconds

    def set(self, now: float) -> None:
        """Sets the time to ``now`` (which may not be earlier than the current time)."""
        if now < self._now:
            raise ValueError("a clock does not go backwards")
        self._now = float(now)
