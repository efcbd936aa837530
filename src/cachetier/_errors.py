"""Exceptions raised by cachetier.

The tree::

    CacheError
    ├── BackendError          a backend was unreachable, timed out or failed
    │   ├── CircuitOpenError  the call was not made: the circuit breaker is open
    │   ├── CounterError      incr found no 64-bit integer at the key, or would overflow (also ValueError)
    │   └── ValueRejected     the store answered, but can never hold a value that large
    ├── SerializationError    a value could not be encoded, or stored bytes decoded  (also ValueError)
    ├── ConfigurationError    a setting or argument is invalid                        (also ValueError)
    └── LockTimeout           a distributed lock was not obtained in time            (also TimeoutError)

A non-``str`` key raises the builtin ``TypeError``. Messages name the key, type or environment
variable at fault and never contain a password, token or full URL.
"""

from __future__ import annotations

__all__ = (
    "BackendError",
    "CacheError",
    "CircuitOpenError",
    "ConfigurationError",
    "CounterError",
    "LockTimeout",
    "SerializationError",
    "ValueRejected",
)


class CacheError(Exception):
    """Base class of every exception cachetier raises."""


class BackendError(CacheError):
    """Raised when a backend is unreachable, times out or answers with an error.

    With the default fail-open behaviour the `Cache` turns this into a miss or a skipped write;
    it reaches callers only with ``strict=True`` or from operations that have no safe fallback.
    """


class CircuitOpenError(BackendError):
    """Raised (to strict caches) when a call was skipped because the circuit breaker is open."""


class CounterError(BackendError, ValueError):
    """Raised by ``incr`` when the value at the key is not a 64-bit integer, or would overflow.

    The backend answered: this is a caller's mistake, not an outage, so it never counts
    against the circuit breaker.
    """


class ValueRejected(BackendError):
    """Raised by a write when the store can never hold the value, however much it evicts.

    A `MemoryBackend` raises it for a value larger than its ``max_bytes`` on its own. Nothing
    is stored under the key, and any older value there is removed, so a later read misses
    rather than returning a value older than this write. The store answered: this is not an
    outage, and it never counts against the circuit breaker.
    """


class SerializationError(CacheError, ValueError):
    """Raised when a value cannot be serialized, naming its type; nothing is stored then."""


class ConfigurationError(CacheError, ValueError):
    """Raised when a setting or argument is invalid, naming the setting or environment variable."""


class LockTimeout(CacheError, TimeoutError):
    """Raised when a distributed lock is not obtained, nor its value seen, within the timeout."""
