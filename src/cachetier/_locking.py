"""The cross-process lock of ``lock=True``: one process computes, the others wait for its value."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._errors import BackendError, LockTimeout
from ._types import MISSING
from .backends._protocol import LockingBackend

if TYPE_CHECKING:
    from ._engine import Engine, FetchSpec

__all__ = ("compute_locked",)


async def compute_locked(
    engine: Engine,
    backend: LockingBackend,
    full: str,
    produce: Callable[[], Any],
    spec: FetchSpec,
    seen: bytes | None,
    tags: tuple[str, ...],
    *,
    force: bool = False,
) -> Any:
    """One process computes; the others wait for its value, woken by a message when it lands.

    With ``force`` (`CachedFunction.refresh`), a value found in the store is not taken: this
    process waits for the lock, however long another holds it, then computes.
    """
    lock_name = engine.keys.lock_key(full)
    channel = engine.keys.ready_channel(full)
    token = secrets.token_hex(16)
    stampede = spec.stampede

    async def holding() -> Any:
        try:
            # The value may have landed between our miss and taking the lock.
            found = MISSING if force else await engine.peek(full, spec.codec)
            if found is not MISSING:
                return found
            return await engine.fetch_and_store(full, produce, spec, seen=seen, tags=tags)
        finally:
            # Release before waking the waiters, so that after a failed fetch one of them can
            # take the lock at once instead of waiting for it to expire.
            try:
                await backend.release_lock(lock_name, token)
                await backend.publish(channel)
            except BackendError as exc:
                engine.backend_failed("release_lock", exc)

    try:
        if await backend.acquire_lock(lock_name, token, stampede.lock_ttl):
            return await holding()
        engine.stats.lock_waits += 1
        if spec.stats is not None:
            spec.stats.lock_waits += 1
        deadline = time.monotonic() + stampede.lock_timeout
        # A holder that died never publishes: re-check at least this often, and take the
        # lock once it has expired.
        recheck = max(stampede.lock_ttl / 4, 0.01)
        async with backend.subscribe(channel) as notifications:
            # Subscribed first, then looked: a value that landed before we subscribed is seen.
            found = MISSING if force else await engine.peek(full, spec.codec)
            if found is not MISSING:
                return found
            while (remaining := deadline - time.monotonic()) > 0:
                await notifications.wait(min(remaining, recheck))
                found = MISSING if force else await engine.peek(full, spec.codec)
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
                return await engine.fetch_and_store(full, produce, spec, seen=seen, tags=tags)
    except BackendError as exc:
        engine.backend_failed("lock", exc)
        return await engine.fetch_and_store(full, produce, spec, seen=seen, tags=tags)
    return await holding()
