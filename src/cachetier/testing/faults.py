"""`FaultyBackend`: a backend wrapper that injects outages, latency and corruption in tests.

::

    faulty = FaultyBackend(MemoryBackend())
    cache = Cache(faulty)
    faulty.outage = True        # every call now raises BackendError
    faulty.outage = False
    faulty.latency = 0.2        # every call now waits 200 ms first
    faulty.corrupt = True       # reads now return bytes no serializer can decode

The modes are plain attributes, so a test switches them mid-run. ``calls`` counts the calls
that reached the wrapper, by operation name, faulty or not.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Final, final

from .._core.entry import HEADER_SIZE
from .._errors import BackendError
from ..backends._protocol import Backend

__all__ = ("FaultyBackend",)

GARBAGE: Final = b"\xff\xfe\x00 not an entry: corrupted by cachetier.testing.FaultyBackend"
"""What replaces the payload of every value read while ``corrupt`` is on."""


@final
class FaultyBackend:
    """A `Backend` that delegates to ``inner`` unless told to fail.

    Args:
        inner: the backend that does the real work.
        outage: every call raises `BackendError`, as with a server that is down.
        latency: seconds every call waits (``asyncio.sleep``) before delegating; combine with
            a short ``command_timeout`` or a deadline to test slow servers.
        corrupt: `get` and `get_many` keep each value's header and replace its payload with
            `GARBAGE`, so reads fail to decode, as after a foreign write or a bit flip.

    It offers none of the optional abilities of its inner backend (locks, server info), so a
    cache over it behaves as over a process-local backend for ``lock=True``.
    """

    __slots__ = ("calls", "corrupt", "inner", "latency", "outage")

    def __init__(
        self,
        inner: Backend,
        *,
        outage: bool = False,
        latency: float = 0.0,
        corrupt: bool = False,
    ) -> None:
        if latency < 0:
            raise ValueError(f"latency must be non-negative seconds, got {latency!r}")
        self.inner = inner
        self.outage = outage
        self.latency = latency
        self.corrupt = corrupt
        self.calls: Counter[str] = Counter()

    def __repr__(self) -> str:
        return (
            f"FaultyBackend({self.inner!r}, outage={self.outage}, latency={self.latency}, "
            f"corrupt={self.corrupt})"
        )

    @property
    def kind(self) -> str:
        """The inner backend's kind, so reports read as they would in production."""
        return self.inner.kind

    async def _enter(self, operation: str) -> None:
        self.calls[operation] += 1
        if self.latency:
            await asyncio.sleep(self.latency)
        if self.outage:
            raise BackendError(f"{operation} failed: outage injected by FaultyBackend")

    def _spoil(self, value: bytes | None) -> bytes | None:
        if value is None or not self.corrupt:
            return value
        return value[:HEADER_SIZE] + GARBAGE

    async def get(self, key: str) -> bytes | None:
        """Delegates, unless a fault applies."""
        await self._enter("get")
        return self._spoil(await self.inner.get(key))

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """Delegates, unless a fault applies."""
        await self._enter("get_many")
        return [self._spoil(value) for value in await self.inner.get_many(keys)]

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        """Delegates, unless a fault applies."""
        await self._enter("set")
        await self.inner.set(key, value, ttl)

    async def set_many(self, items: Mapping[str, bytes], ttl: float | None = None) -> None:
        """Delegates, unless a fault applies."""
        await self._enter("set_many")
        await self.inner.set_many(items, ttl)

    async def add(self, key: str, value: bytes, ttl: float | None = None) -> bool:
        """Delegates, unless a fault applies."""
        await self._enter("add")
        return await self.inner.add(key, value, ttl)

    async def delete(self, *keys: str) -> int:
        """Delegates, unless a fault applies."""
        await self._enter("delete")
        return await self.inner.delete(*keys)

    async def exists(self, key: str) -> bool:
        """Delegates, unless a fault applies."""
        await self._enter("exists")
        return await self.inner.exists(key)

    async def ttl(self, key: str) -> float | None:
        """Delegates, unless a fault applies."""
        await self._enter("ttl")
        return await self.inner.ttl(key)

    async def expire(self, key: str, ttl: float) -> bool:
        """Delegates, unless a fault applies."""
        await self._enter("expire")
        return await self.inner.expire(key, ttl)

    async def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        """Delegates, unless a fault applies."""
        await self._enter("incr")
        return await self.inner.incr(key, amount, ttl)

    async def scan(self, pattern: str, *, count: int = 500) -> AsyncIterator[list[str]]:
        """Delegates, unless a fault applies (checked before the first batch)."""
        await self._enter("scan")
        async for batch in self.inner.scan(pattern, count=count):
            yield batch

    async def ping(self) -> None:
        """Delegates, unless a fault applies."""
        await self._enter("ping")
        await self.inner.ping()

    async def aclose(self) -> None:
        """Closes the inner backend; never faulty, so teardown always releases it."""
        self.calls["aclose"] += 1
        await self.inner.aclose()
