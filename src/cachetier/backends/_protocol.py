"""The `Backend` protocol: the small async byte-level contract every backend meets."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol, runtime_checkable

__all__ = (
    "Backend",
    "GuardedBackend",
    "LockingBackend",
    "Notifications",
    "ServerInfoBackend",
    "TrackingBackend",
)


class Backend(Protocol):
    """An async store of ``bytes`` values under ``str`` keys, with per-key expiry.

    Keys reach a backend fully built (namespace and version included). ``ttl`` arguments are
    positive seconds, or ``None`` for no expiry; backends keep at least millisecond precision.
    Failures are raised as `cachetier.BackendError`; the `Cache` decides whether they fail open.
    At this level ``None`` means "absent", which is unambiguous because values are bytes.

    A backend whose calls never wait on I/O may set a class attribute ``in_process = True``;
    the cache then skips merging concurrent reads of one key, which could not help. Such a
    backend may also offer ``get_nowait(key)``, answering as ``get`` does without a coroutine:
    the cache then reads it without one on a hit (added in 0.2).
    """

    @property
    def kind(self) -> str:
        """A short name for reports and logs: ``"redis"``, ``"memory"``, ``"null"`` ..."""
        ...

    async def get(self, key: str) -> bytes | None:
        """Returns the value of ``key``, or ``None`` when it is absent or expired."""
        ...

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """Returns the values of ``keys`` in order, ``None`` for each absent one; one round trip."""
        ...

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        """Stores ``value`` under ``key``, replacing any value and expiry it had."""
        ...

    async def set_many(self, items: Mapping[str, bytes], ttl: float | None = None) -> None:
        """Stores every item with the same ``ttl``; one round trip."""
        ...

    async def add(self, key: str, value: bytes, ttl: float | None = None) -> bool:
        """Stores ``value`` only if ``key`` is absent; returns whether it was stored."""
        ...

    async def delete(self, *keys: str) -> int:
        """Removes ``keys``; returns how many existed."""
        ...

    async def exists(self, key: str) -> bool:
        """Returns whether ``key`` holds a live value."""
        ...

    async def ttl(self, key: str) -> float | None:
        """Returns the seconds ``key`` has left, ``math.inf`` if it never expires, ``None`` if absent."""
        ...

    async def expire(self, key: str, ttl: float) -> bool:
        """Sets the expiry of an existing ``key``; returns ``False`` if it is absent."""
        ...

    async def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        """Adds ``amount`` to the integer at ``key`` (absent counts as 0) and returns the result.

        When the increment creates the key, ``ttl`` is applied in the same atomic step; an
        existing key keeps the expiry it had. A value that is not an integer raises
        `BackendError`.
        """
        ...

    def scan(self, pattern: str, *, count: int = 500) -> AsyncIterator[list[str]]:
        """Yields batches of keys matching a Redis glob ``pattern``, never blocking the store.

        A key present for the whole scan is yielded at least once; one added or removed
        meanwhile may or may not be. ``count`` is a hint for the batch size.
        """
        ...

    async def ping(self) -> None:
        """Checks that the store answers; raises `BackendError` if not."""
        ...

    async def aclose(self) -> None:
        """Releases connections and other resources; the backend may be used again after."""
        ...


@runtime_checkable
class ServerInfoBackend(Protocol):
    """A backend that can describe the server behind it, for `Cache.health_check`."""

    async def server_info(self) -> dict[str, float | int | str]:
        """Returns server facts: ``uptime_seconds``, ``used_memory_mb``, ``connected_clients``,
        ``ops_per_sec`` where known."""
        ...


class Notifications(Protocol):
    """A subscription to one channel, open for the life of a `LockingBackend.subscribe` block."""

    async def wait(self, timeout: float) -> bool:
        """Waits up to ``timeout`` seconds for a message; returns whether one came."""
        ...


@runtime_checkable
class LockingBackend(Protocol):
    """A backend shared between processes that offers locks and wake-up messages.

    `Cache` uses it for ``lock=True``: one process computes a missing value while the others
    wait for it. A backend without it (memory, null) is process-local, where single flight
    already merges concurrent misses.
    """

    async def acquire_lock(self, name: str, token: str, ttl: float) -> bool:
        """Takes the lock ``name`` for ``ttl`` seconds if nobody holds it; returns whether it did."""
        ...

    async def release_lock(self, name: str, token: str) -> bool:
        """Releases ``name`` only if ``token`` still holds it (an expired lock may be someone else's)."""
        ...

    async def publish(self, channel: str) -> None:
        """Wakes every process waiting on ``channel``."""
        ...

    def subscribe(self, channel: str) -> AbstractAsyncContextManager[Notifications]:
        """Subscribes to ``channel``; messages published after entry are delivered to ``wait``."""
        ...


@runtime_checkable
class GuardedBackend(Protocol):
    """A backend with the conditional writes and tag stamps that make invalidation race-safe.

    `Cache` holds the key of a value being computed with a lease (`Backend.add`) and stores the
    result with `set_if` on that lease, so an invalidation that removed the lease meanwhile
    wins. Tags are versioned: `tag_stamps` reads (or creates) the stamp of each tag and
    `tag_bump` replaces it. Without this protocol a backend still caches, but tags are refused
    and invalidation is not race-safe.
    """

    async def set_if(self, key: str, expected: bytes, value: bytes, ttl: float | None) -> bool:
        """Stores ``value`` only if the value at ``key`` starts with ``expected``; returns whether it did.

        ``ttl`` applies as in `Backend.set`. ``expected`` is never empty.
        """
        ...

    async def delete_if(self, key: str, expected: bytes) -> bool:
        """Removes ``key`` only if its value is exactly ``expected``; returns whether it did."""
        ...

    async def tag_stamps(self, keys: Sequence[str], fresh: bytes, ttl: float | None) -> list[bytes]:
        """Returns the stamp at each of ``keys``, in order; a key that holds none is given ``fresh``.

        A tag is one key holding a short random stamp. An entry records the stamps of its
        tags when its computation begins, and is served only while each still matches, so
        replacing a stamp (`tag_bump`) invalidates every entry carrying the tag, and a stamp
        lost to expiry, eviction or a restart can only make entries miss.

        Creation is atomic per key (SET NX semantics), so concurrent callers agree on one
        stamp. Each key then lives at least ``ttl`` more seconds: a key with less left, or
        created here, expires in twice ``ttl`` (so that frequent callers rarely write, which
        matters because every write of a key is an invalidation message to tracking clients);
        a key with more left keeps its expiry. ``None`` means it never expires (an expiry it
        had is removed).
        """
        ...

    async def tag_bump(self, keys: Sequence[str], fresh: bytes, ttl: float) -> int:
        """Replaces the stamp at each of ``keys`` with ``fresh``, expiring in ``ttl`` seconds;
        returns how many of them held a stamp before."""
        ...


@runtime_checkable
class TrackingBackend(Protocol):
    """A shared backend that reports every change of the keys under a prefix, for `LocalTier`."""

    def invalidations(self, prefix: str, *, heartbeat: float) -> AsyncIterator[list[str] | None]:
        """Follows changes of keys starting with ``prefix``, by any client, until closed.

        Yields ``[]`` once the subscription is confirmed, then a list of changed keys for each
        change, or ``None`` when everything must be assumed changed (the store was flushed).
        Checks the subscription every ``heartbeat`` seconds, and raises `BackendError` when it
        fails or stops answering: changes may then have been missed.
        """
        ...
