"""Backends: async byte stores behind a `Cache`.

`RedisBackend` (redis-py asyncio), `MemoryBackend` (process-local) and `NullBackend` (stores
nothing). Any object meeting the `Backend` protocol can be passed to ``Cache(backend=...)``.
"""

from __future__ import annotations

from ._protocol import Backend, ServerInfoBackend
from .memory import MemoryBackend
from .null import NullBackend
from .redis import RedisBackend

__all__ = ("Backend", "MemoryBackend", "NullBackend", "RedisBackend", "ServerInfoBackend")
