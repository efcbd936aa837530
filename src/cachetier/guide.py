"""`RedisCache`, `CacheConfig` and `cached`: the API of the Redis caching integration guide, on `Cache`.

Applications written against the guide's ``services/redis_cache.py`` move to cachetier by
changing one import::

    from services.redis_cache import RedisCache, CacheConfig, cached   # before
    from cachetier.guide import RedisCache, CacheConfig, cached        # after

``cachetier.compat``, this module's first name, stays as an alias holding the same objects.

Every call goes to one default `Cache`, built on first use with `Cache.from_settings` (so
``REDIS_URL``, ``REDIS_ENABLED`` and ``CACHE_*`` apply, and the start-up line with the backend,
the redacted URL and the default TTL is logged once). Nothing here is a second cache
implementation: keys, serialization, fail-open, the circuit breaker, stampede protection and
pattern invalidation are `Cache`'s own. Keys are relative to the cache's namespace and version,
so ``"query:tasks:pending:10"`` is stored as ``cache:v1:query:tasks:pending:10``.

Start-up and tests replace the default cache explicitly::

    RedisCache.configure(Cache(RedisBackend.from_url(url), namespace="app"))   # at start-up
    ok = await RedisCache.initialize()         # in a lifespan: configure from settings, ping
    await RedisCache.close()                   # at shutdown

    with RedisCache.use(Cache(MemoryBackend())):   # in a test
        ...
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Collection, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import (
    Any,
    ClassVar,
    Concatenate,
    Final,
    Generic,
    ParamSpec,
    TypeVar,
    cast,
    final,
    overload,
)

from typing_extensions import Self, Unpack

from ._cache import Cache
from ._cached import CachedFunction
from ._core.stats import CacheStats
from ._errors import BackendError, CounterError
from ._log import LOGGER
from ._policy import PolicyOptions
from ._settings import CacheSettings
from ._ttl import TTL, TTLLike
from .backends.null import NullBackend

__all__ = ("CacheConfig", "LazyCachedFunction", "RedisCache", "cached")

P = ParamSpec("P")
P2 = ParamSpec("P2")
R = TypeVar("R")
S = TypeVar("S")
T = TypeVar("T")

_UNBOUND: Final = object()


@final
class CacheConfig:
    """The guide's TTL constants (seconds, equal to the `TTL` presets) and key prefixes."""

    DEFAULT_TTL: Final = TTL.DEFAULT
    """1 hour: writes that give no TTL."""
    QUERY_CACHE_TTL: Final = TTL.QUERY
    """30 minutes: database queries."""
    USER_CACHE_TTL: Final = TTL.USER
    """5 minutes: user profiles."""
    METRICS_CACHE_TTL: Final = TTL.METRICS
    """1 minute: volatile metrics."""
    CONTENT_CACHE_TTL: Final = TTL.CONTENT
    """2 hours: content articles."""
    MODEL_CACHE_TTL: Final = TTL.MODEL
    """1 day: model configurations."""

    PREFIX_QUERY: Final = "query:"
    """Query results, e.g. ``query:tasks:pending:10``."""
    PREFIX_USER: Final = "user:"
    """User profiles, e.g. ``user:123``."""
    PREFIX_METRICS: Final = "metrics:"
    """Metrics, e.g. ``metrics:api:calls``."""
    PREFIX_CONTENT: Final = "content:"
    """Content articles, e.g. ``content:42``."""
    PREFIX_MODEL: Final = "model:"
    """Model configurations."""
    PREFIX_SESSION: Final = "session:"
    """User sessions, e.g. ``session:user_123``."""
    PREFIX_TASK: Final = "task:"
    """Single tasks, e.g. ``task:123``."""
    PREFIX_COMPUTATION: Final = "computation:"
    """Computed reports, e.g. ``computation:analytics:daily``."""


@final
class RedisCache:
    """The guide's class-level cache API, delegating every call to one default `Cache`.

    The default cache is built on first use with `Cache.from_settings`, which reads
    ``REDIS_URL``, ``REDIS_ENABLED`` and ``CACHE_*`` and logs one start-up line (backend,
    redacted URL, default TTL). `configure` sets it explicitly, `use` swaps it for a block
    (tests), `initialize` and `close` fit an application's lifespan.

    The application keeps working without Redis: with ``REDIS_ENABLED=false`` the cache stores
    nothing, and when Redis is down or slow reads are misses, writes are skipped and
    `get_or_set` calls ``fetch_fn``, as `Cache` does (unless the cache is ``strict``).

    The class holds the default cache as class state on purpose: the guide's API is called on
    the class itself (``await RedisCache.get(key)``), from any module, with no object to pass.
    It is never instantiated.
    """

    _cache: ClassVar[Cache | None] = None

    def __new__(cls) -> Self:
        raise TypeError("RedisCache is used through its class methods, e.g. RedisCache.get(key)")

    # -- the default cache ------------------------------------------------------------------

    @classmethod
    def current(cls) -> Cache:
        """Returns the default cache, building it with `Cache.from_settings` on first use.

        Raises:
            ConfigurationError: a setting is malformed; the message names its variable.
        """
        cache = cls._cache
        if cache is None:
            cache = cls._cache = Cache.from_settings()
        return cache

    @classmethod
    def configure(
        cls, cache: Cache | None = None, *, settings: CacheSettings | None = None
    ) -> Cache:
        """Makes ``cache`` (or one built from ``settings``) the default cache and returns it.

        With neither argument, builds the cache from the environment now rather than on first
        use, so a malformed setting fails at start-up. The previous default cache is replaced,
        not closed; `close` it first if it holds connections. Functions decorated with
        `cached` use the new cache from their next call.

        Raises:
            ValueError: both ``cache`` and ``settings`` are given.
            ConfigurationError: a setting is malformed; the message names its variable.
        """
        if cache is not None and settings is not None:
            raise ValueError("RedisCache.configure takes a cache or settings, not both")
        cls._cache = cache if cache is not None else Cache.from_settings(settings)
        return cls._cache

    @classmethod
    @contextmanager
    def use(cls, cache: Cache) -> Iterator[Cache]:
        """Makes ``cache`` the default cache inside the ``with`` block, then restores the previous.

        Meant for tests: ``with RedisCache.use(Cache(MemoryBackend())):``. Decorated functions
        follow the swap. Nesting works; the swap is visible to every task, not only the current
        one. Neither cache is closed.
        """
        previous = cls._cache
        cls._cache = cache
        try:
            yield cache
        finally:
            cls._cache = previous

    @classmethod
    async def initialize(cls, settings: CacheSettings | None = None) -> bool:
        """Prepares the default cache at start-up and returns whether its backend answered.

        Builds the cache from ``settings`` when they are given, or from the environment when
        no cache is configured yet, then runs a health check. When the backend does not answer,
        logs a warning and returns ``False``: the application runs on, uncached, and the cache
        reconnects by itself. Returns ``False`` too when caching is off (``REDIS_ENABLED=false``).

        Raises:
            ConfigurationError: a setting is malformed; the message names its variable.
        """
        cache = cls.configure(settings=settings) if settings is not None else cls.current()
        report = await cache.health_check()
        if report.status == "unhealthy":
            LOGGER.warning(
                "cachetier: the %s backend does not answer, the application runs uncached "
                "until it does: %s",
                report.backend,
                report.error,
            )
        return report.available

    @classmethod
    async def close(cls) -> None:
        """Closes the default cache's connections and forgets it (for an application's shutdown).

        The next use builds a default cache from the environment again, unless `configure`
        is called first. Does nothing when no cache was configured or used.
        """
        cache, cls._cache = cls._cache, None
        if cache is not None:
            await cache.aclose()

    # -- the guide's operations ---------------------------------------------------------------

    @classmethod
    async def get(cls, key: str) -> Any:
        """Returns the value at ``key``, or ``None`` when it is absent, expired or unreadable.

        A stored ``None`` reads as ``None`` too; use ``RedisCache.current().get(key, default)``
        to tell them apart.

        Raises:
            TypeError: ``key`` is not a ``str``.
        """
        return await cls.current().get(key)

    @classmethod
    async def set(cls, key: str, value: Any, ttl: TTLLike | None = None) -> bool:
        """Stores ``value`` at ``key`` for ``ttl`` seconds (default `CacheConfig.DEFAULT_TTL`).

        Returns whether it was stored: ``False`` when Redis is down, the value is over the size
        limit or caching is off (``REDIS_ENABLED=false``).

        Raises:
            TypeError: ``key`` is not a ``str``.
            SerializationError: ``value`` cannot be serialized (JSON by default); nothing is
                stored.
        """
        cache = cls.current()
        stored = await cache.set(key, value, ttl)
        # The null backend accepts writes and drops them; the guide's set says nothing was kept.
        return stored and cache.backend.kind != "null"

    @classmethod
    async def delete(cls, key: str) -> bool:
        """Removes ``key``; returns whether it held a value (``False`` when Redis is down)."""
        return await cls.current().delete(key) > 0

    @classmethod
    async def delete_pattern(cls, pattern: str) -> int:
        """Removes this application's keys matching the Redis glob ``pattern``; returns how many.

        ``"query:tasks:*"`` reaches every key that starts with ``query:tasks:`` in the cache's
        namespace and version, and nothing outside it. Keys are found with SCAN and removed in
        batches, never with KEYS.
        """
        return await cls.current().delete_pattern(pattern)

    @classmethod
    async def clear_all(cls) -> int:
        """Removes every key of this application's cache namespace; returns how many.

        Only the default cache's namespace and version are cleared, never the whole Redis
        database (no FLUSHDB or FLUSHALL): other applications, other namespaces and non-cache
        data in the same database are left untouched.
        """
        return await cls.current().clear()

    @classmethod
    async def incr(cls, key: str, amount: int = 1, ttl: TTLLike | None = None) -> int | None:
        """Adds ``amount`` to the counter at ``key`` and returns the new count.

        Returns ``None`` when there is no count to give: Redis is down or caching is off
        (``REDIS_ENABLED=false``). A made-up number would be wrong either way (a rate limiter
        would read 1 forever), so callers decide: ``if count is not None and count > limit``
        fails open. The counter's TTL (``ttl``, else the default TTL) starts with its first
        increment. A ``strict`` cache raises `BackendError` instead of returning ``None``.

        Raises:
            TypeError: ``key`` is not a ``str`` or ``amount`` is not an ``int``.
            BackendError: the value at ``key`` is not a counter, or the cache is strict and
                Redis failed.
        """
        cache = cls.current()
        if cache.backend.kind == "null":
            return None
        try:
            return await cache.incr(key, amount, ttl)
        except CounterError:
            raise  # the key holds something else: a caller's mistake, not an outage
        except BackendError:
            if cache.strict:
                raise
            return None

    @overload
    @classmethod
    async def get_or_set(
        cls,
        key: str,
        fetch_fn: Callable[[], Awaitable[T]],
        ttl: TTLLike | None = None,
        **policy: Unpack[PolicyOptions],
    ) -> T: ...

    @overload
    @classmethod
    async def get_or_set(
        cls,
        key: str,
        fetch_fn: Callable[[], T],
        ttl: TTLLike | None = None,
        **policy: Unpack[PolicyOptions],
    ) -> T: ...

    @classmethod
    async def get_or_set(
        cls,
        key: str,
        fetch_fn: Callable[[], Any],
        ttl: TTLLike | None = None,
        **policy: Unpack[PolicyOptions],
    ) -> Any:
        """Returns the value at ``key``; on a miss, calls ``fetch_fn``, stores and returns its result.

        ``fetch_fn`` takes no arguments and returns a value or an awaitable, so both
        ``fetch_fn=db_query`` and ``fetch_fn=lambda: db.get_pending_tasks()`` work. Concurrent
        misses of one key in this process share one call; ``lock=True`` extends that across
        processes (see `PolicyOptions` for ``stale_ttl``, ``early_refresh`` ...). When Redis is
        down, ``fetch_fn`` is called and its result returned uncached.

        Raises:
            TypeError: ``key`` is not a ``str``.
            Exception: whatever ``fetch_fn`` raises, untouched; nothing is stored.
        """
        return await cls.current().get_or_set(key, fetch_fn, ttl, **policy)

    @classmethod
    async def health_check(cls) -> dict[str, Any]:
        """Returns the guide's health report as a plain dict.

        Keys: ``status`` (``healthy``, ``degraded``, ``unhealthy`` or ``disabled``),
        ``available``, ``uptime_seconds``, ``used_memory_mb``, ``connected_clients`` and
        ``ops_per_sec`` as in the guide, plus cachetier's ``backend``, ``latency_ms``,
        ``namespace``, ``version``, ``server_version``, ``error`` (redacted), ``breaker`` and
        ``stats`` (hits, misses, ``hit_ratio`` ...). Never raises for a backend failure.
        """
        report = await cls.current().health_check()
        return report.to_dict()


@final
class LazyCachedFunction(Generic[P, R]):
    """An ``async def`` function cached in `RedisCache`'s default cache, whichever it is at call time.

    Made by `cached`. Decorating does not touch the default cache, so module-level decoration
    runs before the application configures one. Each call uses `RedisCache.current`, so a later
    `RedisCache.configure` or `RedisCache.use` applies from the next call. The call signature
    and return type are the function's own; methods bind as usual.
    """

    def __init__(
        self,
        func: Callable[P, Awaitable[R]],
        decorate: Callable[[Cache], CachedFunction[P, R]],
    ) -> None:
        functools.update_wrapper(self, func)
        self.__wrapped__ = func
        self._decorate = decorate
        self._cache: Cache | None = None
        self._target: CachedFunction[P, R] | None = None
        # Set on the copies that __get__ makes: the instance a method was read through, and the
        # function they were copied from, which keeps the one CachedFunction per cache.
        self._bound: object = _UNBOUND
        self._origin: LazyCachedFunction[Any, R] = self

    def __repr__(self) -> str:
        return f"<LazyCachedFunction {self.__wrapped__.__module__}.{self.__wrapped__.__qualname__}>"

    @overload
    def __get__(self, instance: None, owner: type[Any]) -> Self: ...

    @overload
    def __get__(
        self: LazyCachedFunction[Concatenate[S, P2], R],
        instance: S,
        owner: type[Any] | None = None,
    ) -> LazyCachedFunction[P2, R]: ...

    def __get__(self, instance: object, owner: type[Any] | None = None) -> Any:
        if instance is None or self._bound is not _UNBOUND:
            return self
        bound = object.__new__(LazyCachedFunction)
        bound.__dict__.update(self.__dict__)
        bound._bound = instance
        return bound

    def resolve(self) -> CachedFunction[P, R]:
        """Returns the `CachedFunction` of the current default cache, making it on first need."""
        cache = RedisCache.current()
        origin = self._origin
        target = origin._target
        if target is None or origin._cache is not cache:
            target = origin._decorate(cache)
            origin._target, origin._cache = target, cache
        return cast("CachedFunction[P, R]", target)

    def _args(self, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return args if self._bound is _UNBOUND else (self._bound, *args)

    async def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Returns the cached result of the call, computing and storing it on a miss."""
        target: Callable[..., Awaitable[R]] = self.resolve()
        return await target(*self._args(args), **kwargs)

    def key_for(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """Returns the key (relative, as `RedisCache.delete` takes it) this call is cached under."""
        target: Any = self.resolve()
        key: str = target.key_for(*self._args(args), **kwargs)
        return key

    async def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> bool:
        """Removes the cached result of this call; returns whether there was one."""
        target: Any = self.resolve()
        removed: bool = await target.invalidate(*self._args(args), **kwargs)
        return removed

    async def refresh(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Computes the call now, stores the result whatever is cached, and returns it."""
        target: Any = self.resolve()
        value: R = await target.refresh(*self._args(args), **kwargs)
        return value

    @property
    def stats(self) -> CacheStats:
        """This function's counters in the current default cache."""
        return self.resolve().stats


@overload
def cached(ttl: Callable[P, Awaitable[R]], /) -> LazyCachedFunction[P, R]: ...


@overload
def cached(
    ttl: TTLLike | None = None,
    key_prefix: str | None = None,
    *,
    key: str | None = None,
    exclude: Collection[str] = (),
    condition: Callable[[Any], bool] | None = None,
    cache_none: bool = False,
    typed: bool = True,
    **policy: Unpack[PolicyOptions],
) -> Callable[[Callable[P, Awaitable[R]]], LazyCachedFunction[P, R]]: ...


def cached(
    ttl: TTLLike | Callable[P, Awaitable[R]] | None = None,
    key_prefix: str | None = None,
    *,
    key: str | None = None,
    exclude: Collection[str] = (),
    condition: Callable[[Any], bool] | None = None,
    cache_none: bool = False,
    typed: bool = True,
    **policy: Unpack[PolicyOptions],
) -> LazyCachedFunction[P, R] | Callable[[Callable[P, Awaitable[R]]], LazyCachedFunction[P, R]]:
    """Decorates an ``async def`` function so that its results are cached in `RedisCache`.

    The guide's decorator: ``@cached(ttl=CacheConfig.QUERY_CACHE_TTL, key_prefix="tasks:")``.
    It is `Cache.cached` of the default cache, bound at the first call rather than at
    decoration, so it can decorate at import time. The key is ``key_prefix`` + the function's
    ``module.qualname`` + its bound arguments, so ``RedisCache.delete_pattern("tasks:*")``
    reaches every cached call. Hits come back as the return annotation's type (a pydantic
    model, a dataclass, a ``datetime`` ...), and ``None`` results are not cached unless
    ``cache_none=True``. The other options are those of `Cache.cached`.

    Raises:
        TypeError: the function is not ``async def``, or ``key``/``exclude`` name parameters it
            does not have.
        ConfigurationError: ``ttl`` or a policy option is out of range.
    """
    if callable(ttl) and not isinstance(ttl, int | float | timedelta):
        return cached()(ttl)

    def decorator_of(
        cache: Cache, exclude: Collection[str] = exclude
    ) -> Callable[[Callable[P, Awaitable[R]]], CachedFunction[P, R]]:
        return cache.cached(
            ttl,
            key=key,
            key_prefix=key_prefix,
            exclude=exclude,
            condition=condition,
            cache_none=cache_none,
            typed=typed,
            **policy,
        )

    # A dry run on a cache that stores nothing (constructing one does no I/O) raises every
    # error Cache.cached would, at decoration, where the guide's decorator runs: at import.
    # This checks the TTL and options now, and the function in `decorate`.
    check = decorator_of(Cache(NullBackend()))

    def decorate(func: Callable[P, Awaitable[R]]) -> LazyCachedFunction[P, R]:
        check(func)  # not async def, or a key template or exclude naming no parameter
        # The guide keys a method by its arguments alone, whatever the instance: its services
        # are stateless. `Cache.cached` keys ``self`` instead; keep the guide's meaning here.
        parameters = list(inspect.signature(func).parameters)
        leave_out = (
            (*exclude, "self")
            if parameters[:1] == ["self"] and "self" not in exclude and key is None
            else exclude
        )
        return LazyCachedFunction(func, lambda cache: decorator_of(cache, leave_out)(func))

    return decorate
