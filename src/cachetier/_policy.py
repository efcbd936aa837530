"""Frozen policy objects built from the ``lock=``, ``stale_ttl=``, ``early_refresh=`` ... arguments."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Literal, TypedDict

from ._errors import ConfigurationError
from ._ttl import TTLLike, to_seconds

__all__ = ("FreshnessPolicy", "PolicyOptions", "StampedePolicy", "build_policies")

DEFAULT_LOCK_TTL: Final = 10.0
DEFAULT_LOCK_TIMEOUT: Final = 5.0


@dataclass(frozen=True, slots=True)
class StampedePolicy:
    """How concurrent misses of one key are merged.

    In-process single flight is always on. With ``lock``, a miss also takes a backend lock
    (Redis: ``SET NX PX`` with a random token, released by compare-and-delete) so that one
    process computes while the others wait for its value, woken when it lands (pub/sub) and
    re-checking at least every ``lock_ttl / 4`` in case the holder died. After ``lock_timeout``
    a waiter computes anyway (``on_timeout="fetch"``) or raises `LockTimeout` (``"raise"``).
    """

    lock: bool = False
    lock_ttl: float = DEFAULT_LOCK_TTL
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT
    on_timeout: Literal["fetch", "raise"] = "fetch"


@dataclass(frozen=True, slots=True)
class FreshnessPolicy:
    """When a value past its TTL may still be served.

    ``stale_ttl``: seconds an entry is kept past its TTL and served while one background refresh
    runs (stale-while-revalidate). ``stale_if_error``: seconds an entry is kept past its TTL to be
    served only when the fetch that should replace it raises. ``early_refresh_beta``: XFetch
    (Vattani, Chierichetti and Lowenstein, VLDB 2015): a hit refreshes in the background with a
    probability that rises as expiry nears and as the last computation was slower; ``1.0`` is
    the paper's default, larger refreshes earlier.
    """

    stale_ttl: float = 0.0
    stale_if_error: float = 0.0
    early_refresh_beta: float = 0.0

    @property
    def keep_after_ttl(self) -> float:
        """Seconds an entry stays in the backend past its TTL."""
        return max(self.stale_ttl, self.stale_if_error)


class PolicyOptions(TypedDict, total=False):
    """The stampede and freshness options of `Cache.get_or_set` and `Cache.cached`.

    lock: take a cross-process lock on a miss so one process computes (Redis only).
    lock_ttl: seconds the lock lives if its holder dies (default 10).
    lock_timeout: seconds a waiter waits for the holder's value (default 5).
    on_lock_timeout: ``"fetch"`` (compute anyway, the default) or ``"raise"`` (`LockTimeout`).
    stale_ttl: seconds past the TTL a value is served while one background refresh runs.
    stale_if_error: seconds past the TTL (or ``True``: ``stale_ttl``) a value is served when the
        fetch replacing it raises.
    early_refresh: ``True`` or an XFetch beta: refresh hits probabilistically before expiry.
    """

    lock: bool
    lock_ttl: TTLLike
    lock_timeout: TTLLike
    on_lock_timeout: Literal["fetch", "raise"]
    stale_ttl: TTLLike | None
    stale_if_error: TTLLike | bool
    early_refresh: bool | float


_NO_FRESHNESS: Final = FreshnessPolicy()
_NO_STAMPEDE: Final = StampedePolicy()


def _window(value: TTLLike | bool | None, name: str, fallback: float) -> float:
    if value is None or value is False:
        return 0.0
    if value is True:
        if not fallback:
            raise ConfigurationError(
                f"{name}=True needs stale_ttl to say how long stale values are kept"
            )
        return fallback
    seconds = to_seconds(value, name=name)
    return 0.0 if seconds is None else seconds


def build_policies(
    *,
    lock: bool = False,
    lock_ttl: TTLLike = DEFAULT_LOCK_TTL,
    lock_timeout: TTLLike = DEFAULT_LOCK_TIMEOUT,
    on_lock_timeout: Literal["fetch", "raise"] = "fetch",
    stale_ttl: TTLLike | None = None,
    stale_if_error: TTLLike | bool = False,
    early_refresh: bool | float = False,
) -> tuple[StampedePolicy, FreshnessPolicy]:
    """Returns the policies the keyword arguments of `Cache.cached` and `Cache.get_or_set` describe.

    Raises:
        ConfigurationError: an argument is out of range; the message names it.
    """
    if on_lock_timeout not in ("fetch", "raise"):
        raise ConfigurationError(
            f'on_lock_timeout must be "fetch" or "raise", got {on_lock_timeout!r}'
        )
    stale = _window(stale_ttl, "stale_ttl", 0.0)
    if_error = _window(stale_if_error, "stale_if_error", stale)
    if early_refresh is True:
        beta = 1.0
    elif early_refresh is False:
        beta = 0.0
    elif (
        isinstance(early_refresh, int | float)
        and math.isfinite(early_refresh)
        and early_refresh > 0
    ):
        beta = float(early_refresh)
    else:
        raise ConfigurationError(
            f"early_refresh must be a bool or a positive beta, got {early_refresh!r}"
        )
    stampede = (
        StampedePolicy(
            lock=True,
            lock_ttl=to_seconds(lock_ttl, name="lock_ttl") or DEFAULT_LOCK_TTL,
            lock_timeout=to_seconds(lock_timeout, name="lock_timeout") or DEFAULT_LOCK_TIMEOUT,
            on_timeout=on_lock_timeout,
        )
        if lock
        else _NO_STAMPEDE
    )
    freshness = (
        FreshnessPolicy(stale_ttl=stale, stale_if_error=if_error, early_refresh_beta=beta)
        if stale or if_error or beta
        else _NO_FRESHNESS
    )
    return stampede, freshness
