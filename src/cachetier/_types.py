"""Shared aliases, sentinels and small protocols; no runtime logic."""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Final, Literal, TypeAlias

__all__ = ("MISSING", "BackendName", "Clock", "Missing", "Outcome")


class Missing(enum.Enum):
    """The type of `MISSING`; one member, so ``if value is MISSING:`` narrows."""

    MISSING = "MISSING"

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = Missing.MISSING
"""The single miss sentinel: ``None`` is a value that can be cached, `MISSING` is its absence."""

Clock: TypeAlias = Callable[[], float]
"""A zero-argument callable returning seconds; injected so that tests never sleep."""


class Outcome(str, enum.Enum):
    """How one read ended; stats, logs and hooks carry it."""

    HIT = "hit"
    MISS = "miss"
    STALE = "stale"
    BACKEND_ERROR = "backend_error"
    DECODE_ERROR = "decode_error"
    BYPASSED = "bypassed"


BackendName: TypeAlias = Literal["auto", "redis", "memory", "null"]
