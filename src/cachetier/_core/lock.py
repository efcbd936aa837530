"""The cross-process lock of ``lock=True``: one process computes, the others wait for its value."""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .._errors import BackendError, LockTimeout
from .._keys import KeyBuilder
from .._types import MISSING
from ..backends._protocol import LockingBackend
from ..serializers import Serializer
from .guard import Guard
from .spec import FetchSpec
from .stats import StatsRecorder

__all__ = ("compute_locked",)


async def compute_locked(
    backend: LockingBackend,
    full: str,
    spec: FetchSpec,
    *,
    keys: KeyBuilder,
    guard: Guard,
    stats: StatsRecorder,
    peek: Callable[[str, Serializer], Awaitable[Any]],
    fetch: Callable[[], Awaitable[Any]],
    force: bool = False,
) -> Any:
    """One process computes; the others wait for its value, woken by a message when it lands.

    ``peek`` returns the fresh value at a key or `MISSING`; ``fetch`` computes and stores the
    value. With ``force`` (`CachedFunction.refresh`), a value found in the store is not taken:
    this process waits for the lock, however long another holds it, then computes.
    """
    lock_name = keys.lock_key(full)
    channel = keys.ready_channel(full)
    token = secrets.token_hex(16)
    stampede = spec.stampede

    async def holding() -> Any:
        try:
            # The value may have landed between our miss and taking the lock.
            found = MISSING if force else await peek(full, spec.codec)
            if found is not MISSING:
                return found
            return await fetch()
        finally:
            # Release before waking the waiters, so that after a failed fetch one of them can
            # take the lock at once instead of waiting for it to expire.
            try:
                await backend.release_lock(lock_name, token)
                await backend.publish(channel)
            except BackendError as exc:
                guard.failed("release_lock", exc)

    try:
        if await backend.acquire_lock(lock_name, token, stampede.lock_ttl):
            return await holding()
        stats.lock_waits += 1
        if spec.stats is not None:
            spec.stats.lock_waits += 1
        deadline = time.monotonic() + stampede.lock_timeout
        # A holder that died never publishes: re-check at least this often, and take the
        # lock once it has expired.
        recheck = max(stampede.lock_ttl / 4, 0.01)
        async with backend.subscribe(channel) as notifications:
            # Subscribed first, then looked: a value that landed before we subscribed is seen.
            found = MISSING if force else await peek(full, spec.codec)
            if found is not MISSING:
                return found
            while (remaining := deadline - time.monotonic()) > 0:
                await notifications.wait(min(remaining, recheck))
                found = MISSING if force else await peek(full, spec.codec)
                if found is not MISSING:
                    return found
                if await backend.acquire_lock(lock_name, token, stampede.lock_ttl):
                    break
            else:
                if stampede.on_timeout == "raise":
                    raise LockTimeout(
                        f"no value for {full} within lock_timeout={stampede.lock_timeout} s "
                        "while another process held its lock"
                    )
                return await fetch()
    except BackendError as exc:
        guard.failed("lock", exc)
        return await fetch()
    return await holding()
