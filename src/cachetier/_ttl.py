"""TTL presets, the `TTLLike` alias and its conversion to seconds."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Final, TypeAlias

from ._errors import ConfigurationError

__all__ = ("MAX_TTL", "TTL", "TTLLike", "to_seconds")

TTLLike: TypeAlias = "float | int | timedelta"

# Ten years. Redis refuses an expiry whose absolute time in milliseconds overflows 64 bits, so
# "forever" spellings such as sys.maxsize fail on every write there while the memory backend
# takes them; refusing them where they are given keeps both backends alike and keeps such
# writes from counting as backend failures that open the circuit breaker.
MAX_TTL: Final = 10 * 365 * 24 * 3600


class TTL:
    """Named time-to-live presets, in seconds."""

    DEFAULT: Final = 3600
    QUERY: Final = 1800
    USER: Final = 300
    METRICS: Final = 60
    CONTENT: Final = 7200
    MODEL: Final = 86400


def to_seconds(ttl: TTLLike | None, *, name: str = "ttl") -> float | None:
    """Returns ``ttl`` as positive finite seconds, or ``None`` for "no expiry".

    Raises:
        TypeError: ``ttl`` is not a number or a ``timedelta`` (``bool`` is refused).
        ConfigurationError: ``ttl`` is zero, negative, NaN, infinite or above `MAX_TTL`
            (ten years); the message names ``name``.
    """
    if ttl is None:
        return None
    if isinstance(ttl, timedelta):
        seconds = ttl.total_seconds()
    elif isinstance(ttl, (int, float)) and not isinstance(ttl, bool):
        seconds = float(ttl)
    else:
        raise TypeError(
            f"{name} must be seconds (int or float) or a timedelta, not {type(ttl).__name__}"
        )
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigurationError(
            f"{name} must be a positive, finite number of seconds, got {seconds!r}"
        )
    if seconds > MAX_TTL:
        raise ConfigurationError(
            f"{name} must be at most {MAX_TTL} seconds (ten years), got {seconds:g}"
        )
    return seconds
