"""Backends: async byte stores behind a `Cache`.

`RedisBackend` (redis-py asyncio), `MemoryBackend` (process-local) and `NullBackend` (stores
nothing). Any object meeting the `Backend` protocol can be passed to ``Cache(backend=...)``.
`RedisBackend` is imported on first use, so a process that never touches Redis never loads
redis-py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._protocol import Backend, ServerInfoBackend
from .memory import MemoryBackend
from .null import NullBackend

if TYPE_CHECKING:
    from .redis import RedisBackend

__all__ = ("Backend", "MemoryBackend", "NullBackend", "RedisBackend", "ServerInfoBackend")


def __getattr__(name: str) -> object:
    if name == "RedisBackend":
        from .redis import RedisBackend

        return RedisBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
