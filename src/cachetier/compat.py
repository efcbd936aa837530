"""The integration guide's API under its first name: an alias of `cachetier.guide`.

``from cachetier.compat import RedisCache`` and ``from cachetier.guide import RedisCache`` give
the same object. The module was named for compatibility with the guide's code, but holds the
guide's API, not version compatibility; new code imports `cachetier.guide`.
"""

from __future__ import annotations

from .guide import CacheConfig, LazyCachedFunction, RedisCache, cached

__all__ = ("CacheConfig", "LazyCachedFunction", "RedisCache", "cached")
