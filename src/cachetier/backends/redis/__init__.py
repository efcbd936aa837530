"""The Redis backends: `RedisBackend` (one server, or Sentinel) and `RedisClusterBackend`.

The modules of this package are the only ones in cachetier that import redis-py:

- `single`: `RedisBackend`, and ``RedisBackend.from_url`` for every kind of Redis URL.
- `cluster`: `RedisClusterBackend`, which splits multi-key operations by hash slot.
- `commands`: the commands on one key, and lock wake-ups, which both backends share.
- `errors`: the only module knowing redis-py's exceptions; it turns them into `BackendError`.
- `scripts`: the Lua scripts, each with the invariant it keeps.
- `sentinel`: the redis-py client of a ``redis+sentinel://`` URL.
- `tracking`: following changes with client-side tracking, for a `LocalTier`.
- `urls`: multi-host URLs, and the URL checks `CacheSettings` shares; no redis-py.

The backends are imported on first use of their names, not with this package: `CacheSettings`
(imported with cachetier itself) imports `urls`, and must not load redis-py by doing so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .cluster import RedisClusterBackend
    from .single import RedisBackend

__all__ = ("RedisBackend", "RedisClusterBackend")


def __getattr__(name: str) -> object:
    if name == "RedisBackend":
        from .single import RedisBackend

        return RedisBackend
    if name == "RedisClusterBackend":
        from .cluster import RedisClusterBackend

        return RedisClusterBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
