"""What the contract's tests share: their TTLs, Redis's integer rule, and scan and cleanup helpers."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, final

import pytest

from ..._glob import glob_escape
from ...backends._protocol import Backend, GuardedBackend

__all__ = (
    "LONG_TTL",
    "PAST_SHORT_TTL",
    "SHORT_TTL",
    "_INT64_MAX",
    "_INT64_MIN",
    "BackendFactory",
    "_delete_prefixed",
    "_guarded",
    "_redis_integer",
    "_scanned",
    "_seconds_left",
)

SHORT_TTL: Final = 0.05
"""Seconds a short-lived entry lives in expiry tests."""

PAST_SHORT_TTL: Final = 0.15
"""Seconds the expiry tests let pass (by clock or by sleeping) after setting `SHORT_TTL`."""

LONG_TTL: Final = 3600.0
"""Seconds an entry lives when a test must see it live."""

_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1

# What Redis's INCRBY takes for an integer (string2ll): "-" as the only sign, no leading zeros,
# no "-0", no spaces, and a 64-bit range checked separately.
_REDIS_INTEGER: Final = re.compile(rb"-?[1-9][0-9]{0,19}|0")


async def _delete_prefixed(backend: Backend, prefix: str) -> None:
    """Deletes every key under ``prefix``, so tests on a shared server leave nothing behind."""
    keys = [key async for batch in backend.scan(glob_escape(prefix) + "*") for key in batch]
    if keys:
        await backend.delete(*keys)


async def _scanned(backend: Backend, pattern: str, count: int = 500) -> set[str]:
    """Returns every key a scan of ``pattern`` yields, checking each batch on the way."""
    found: set[str] = set()
    async for batch in backend.scan(pattern, count=count):
        assert isinstance(batch, list)
        assert batch, "scan yielded an empty batch"
        assert all(isinstance(key, str) for key in batch)
        found.update(batch)
    return found


def _guarded(backend: Backend) -> GuardedBackend:
    """Returns ``backend`` as a `GuardedBackend`, or skips the test when it offers none of it."""
    if not hasattr(backend, "set_if"):
        pytest.skip(f"{type(backend).__name__} is not a GuardedBackend: it keeps no tags")
    # Guarded writes without the tag methods fail rather than skip: the cache would take such
    # a backend for one that cannot keep tags at all.
    assert isinstance(backend, GuardedBackend), (
        f"{type(backend).__name__} has set_if but not every GuardedBackend method"
    )
    return backend


async def _seconds_left(backend: Backend, key: str) -> float:
    """Returns the seconds ``key`` has left, failing the test if it is absent."""
    left = await backend.ttl(key)
    assert left is not None, f"{key!r} is absent"
    return left


def _redis_integer(value: bytes) -> int | None:
    """Returns the integer Redis's INCRBY reads in ``value``, or ``None`` if it reads none."""
    if _REDIS_INTEGER.fullmatch(value) is None:
        return None
    number = int(value)
    return number if _INT64_MIN <= number <= _INT64_MAX else None


@final
@dataclass(frozen=True)
class BackendFactory:
    """Makes fresh backends for the contract suite, and moves their clock when it can.

    Attributes:
        make: Returns a new backend. It is called inside the event loop the backend will run
            on, once per test and once per example of the stateful test, and must do no I/O
            (constructors of backends never do). Backends it returns may share one store: tests stay apart by
            key prefix.
        advance: Moves the clock of every backend ``make`` returns forward by the given
            seconds; ``None`` when the backends run on real time.
    """

    make: Callable[[], Backend]
    advance: Callable[[float], None] | None = None

    @property
    def can_control_time(self) -> bool:
        """Whether expiry is tested by moving a clock rather than by sleeping."""
        return self.advance is not None

    async def let_time_pass(self, seconds: float) -> None:
        """Moves the clock by ``seconds``, or sleeps that long on real time."""
        if self.advance is None:
            await asyncio.sleep(seconds)
        else:
            self.advance(seconds)
