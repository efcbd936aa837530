"""cachetier: async-first caching for Python, on Redis or in process."""

from __future__ import annotations

from ._cache import Cache
from ._cached import CachedFunction
from ._core.breaker import CircuitBreaker
from ._core.health import HealthReport
from ._core.inspect import Inspection, InspectionState
from ._core.local import LocalTier
from ._core.stats import CacheStats, ReadEvent, ReadHook
from ._errors import (
    BackendError,
    CacheError,
    CircuitOpenError,
    ConfigurationError,
    CounterError,
    LockTimeout,
    SerializationError,
)
from ._keys import KeyBuilder
from ._policy import PolicyOptions
from ._settings import BackendChoice, CacheSettings
from ._ttl import TTL, TTLLike
from ._types import MISSING, Outcome
from ._version import __version__

__all__ = (
    "MISSING",
    "TTL",
    "BackendChoice",
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
