"""cachetier: async-first caching for Python, on Redis or in process."""

from __future__ import annotations

from ._errors import BackendError, CacheError, ConfigurationError, LockTimeout, SerializationError
from ._ttl import TTL, TTLLike
from ._types import MISSING, Outcome
from ._version import __version__

__all__ = (
    "MISSING",
    "TTL",
    "BackendError",
    "CacheError",
    "ConfigurationError",
    "LockTimeout",
    "Outcome",
    "SerializationError",
    "TTLLike",
    "__version__",
)
