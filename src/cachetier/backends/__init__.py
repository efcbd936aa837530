"""Backends: async byte stores behind a `Cache`.

`RedisBackend` (redis-py asyncio; one server, TLS, Unix socket or Sentinel),
`RedisClusterBackend` (Redis Cluster, made by ``RedisBackend.from_url("redis+cluster://...")``),
`MemoryBackend` (process-local) and `NullBackend` (stores nothing). Any object meeting the
`Backend` protocol can be passed to ``Cache(backend=...)``; one that also meets
`GuardedBackend` gets tags and race-safe invalidation. The Redis backends are imported on
first use, so a process that never touches Redis never loads redis-py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._protocol import Backend, GuardedBackend, LockingBackend, ServerInfoBackend
from .memory import MemoryBackend
from .null import NullBackend

if TYPE_CHECKING:
    from .redis import RedisBackend, RedisClusterBackend

__all__ = (
    "Backend",
    "GuardedBackend",
    "LockingBackend",
    "MemoryBackend",
    "NullBackend",
    "RedisBackend",
    "RedisClusterBackend",
    "ServerInfoBackend",
)


def __getattr__(name: str) -> object:
    if name == "RedisBackend":
        from .redis import RedisBackend

        return RedisBackend
    if name == "RedisClusterBackend":
        from .redis import RedisClusterBackend

        return RedisClusterBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
