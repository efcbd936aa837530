"""cachetier: async-first caching for Python, on Redis or in process."""

from __future__ import annotations

from ._breaker import CircuitBreaker
from ._cache import Cache
from ._cached import CachedFunction
from ._errors import (
    BackendError,
    CacheError,
    CircuitOpenError,
    ConfigurationError,
    CounterError,
    LockTimeout,
    SerializationError,
)
from ._health import HealthReport
from ._inspect import Inspection, InspectionState
from ._keys import KeyBuilder
from ._local import LocalTier
from ._policy import PolicyOptions
from ._settings import CacheSettings
from ._stats import CacheStats, ReadEvent, ReadHook
from ._ttl import TTL, TTLLike
from ._types import MISSING, Outcome
from ._version import __version__

__all__ = (
    "MISSING",
    "TTL",
    "BackendError",
    "Cache",
    "CacheError",
    "CacheSettings",
    "CacheStats",
    "CachedFunction",
    "CircuitBreaker",
    "CircuitOpenError",
    "ConfigurationError",
    "CounterError",
    "HealthReport",
    "Inspection",
    "InspectionState",
    "KeyBuilder",
    "LocalTier",
    "LockTimeout",
    "Outcome",
    "PolicyOptions",
    "ReadEvent",
    "ReadHook",
    "SerializationError",
    "TTLLike",
    "__version__",
)
