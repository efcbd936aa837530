"""The ``cachetier`` logger and a rate limit for the warnings an outage would repeat."""

from __future__ import annotations

import logging
import time
from typing import Final, final

from ._types import Clock

__all__ = ("LOGGER", "RateLimitedLog")

LOGGER: Final = logging.getLogger("cachetier")


@final
class RateLimitedLog:
    """Logs a warning of each kind at most once per ``interval`` seconds.

    A dead Redis fails every call; logging each would flood the logs and slow the app. The
    first failure of a kind is logged at once; later ones within the interval are counted and
    the count is reported with the next line of that kind.
    """

    __slots__ = ("_clock", "_interval", "_logger", "_next_allowed", "_suppressed")

    def __init__(
        self,
        logger: logging.Logger = LOGGER,
        *,
        interval: float = 10.0,
        clock: Clock = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._next_allowed: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, kind: str, message: str, *args: object) -> None:
        """Logs ``message % args`` at WARNING unless a line of ``kind`` was logged recently."""
        now = self._clock()
        if now < self._next_allowed.get(kind, 0.0):
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return
        self._next_allowed[kind] = now + self._interval
        suppressed = self._suppressed.pop(kind, 0)
        if suppressed:
            message += " (%d similar messages suppressed in the last %.0f s)"
            args = (*args, suppressed, self._interval)
        self._logger.warning(message, *args)
