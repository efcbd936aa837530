"""`Cache`: the façade users hold — operations, `get_or_set`, invalidation, `use()`, lifecycle."""

from __future__ import annotations

import asyncio
import inspect
import math
import random
import re
import secrets
import struct
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, ParamSpec, TypeVar, cast, final, overload

from typing_extensions import Self, Unpack

from ._cached import CachedFunction
from ._entry import HEADER, HEADER_SIZE, MAGIC, encode_entry
from ._errors import BackendError, ConfigurationError, LockTimeout, SerializationError
from ._health import HealthReport, HealthStatus
from ._keys import KeyBuilder
from ._log import LOGGER, RateLimitedLog
from ._policy import FreshnessPolicy, PolicyOptions, StampedePolicy, build_policies
from ._singleflight import SingleFlight
from ._stats import CacheStats, ReadEvent, ReadHook, StatsRecorder
from ._ttl import TTL, TTLLike, to_seconds
from ._types import MISSING, Clock, Outcome
from .backends._protocol import Backend, LockingBackend, ServerInfoBackend
from .serializers import JsonSerializer, Serializer

if TYPE_CHECKING:
    from ._settings import CacheSettings

__all__ = ("Cache",)

T = TypeVar("T")
R = TypeVar("R")
P = ParamSpec("P")
D = TypeVar("D")

_HEADER_FRESH: Final = struct.Struct("<d")
_FRESH_OFFSET: Final = 12
_COUNTER: Final = re.compile(rb"-?[0-9]{1,20}")
_DEFAULT_MAX_VALUE_BYTES: Final = 1024 * 1024
_SCAN_BATCH: Final = 500
_LOCK_PREFIX: Final = "cachetier:lock:"
_READY_PREFIX: Final = "cachetier:ready:"
_DEFAULT_POLICIES: Final = build_policies()


@final
class Cache:
    """An async cache over a `Backend`: one per namespace, safe to create at module level.

    Keys given to its methods are relative: they are stored under ``namespace:version:key``.
    Values are serialized (JSON by default) into entries that carry their freshness. A backend
    failure is a miss or a skipped write, counted and logged at a bounded rate, unless
    ``strict=True``, which raises `BackendError` instead. Construction does no I/O.
    """

    __slots__ = (
        "_backend",
        "_clock",
        "_default_ttl",
        "_failures",
        "_flights",
        "_hooks",
        "_jitter",
        "_keys",
        "_max_value_bytes",
        "_reads",
        "_serializer",
        "_stats",
        "_strict",
        "_tasks",
    )

    def __init__(
        self,
        backend: Backend | None = None,
        *,
        namespace: str = "cache",
        version: str | int = "v1",
        default_ttl: TTLLike | None = TTL.DEFAULT,
        serializer: Serializer | None = None,
        strict: bool = False,
        max_value_bytes: int | None = _DEFAULT_MAX_VALUE_BYTES,
        key_max_length: int = 200,
        ttl_jitter: float = 0.0,
        hooks: Iterable[ReadHook] = (),
        clock: Clock = time.time,
    ) -> None:
        """Args:
        backend: where entries live; a process-local `MemoryBackend` when omitted.
        namespace: the first part of every key; `clear` removes only this namespace.
        version: the second part of every key; change it to leave all old entries behind.
        default_ttl: seconds (or ``timedelta``) for writes that give none; ``None`` keeps
            entries until evicted.
        serializer: turns values into bytes; `JsonSerializer` when omitted. Pickle is never
            chosen unless passed here by name.
        strict: raise `BackendError` instead of failing open.
        max_value_bytes: serialized values larger than this are not cached (``None``: no limit).
        key_max_length: keys longer than this are shortened with a stable hash.
        ttl_jitter: a fraction in ``[0, 1)``; each TTL is shortened by a random part of it up to
            this fraction, so entries written together do not expire together.
        hooks: callables told of every read and its `Outcome` (see `add_hook`).
        clock: wall-clock seconds, shared by every process that reads the entries.
        """
        if backend is None:
            from .backends.memory import MemoryBackend

            backend = MemoryBackend()
        if not 0.0 <= ttl_jitter < 1.0:
            raise ConfigurationError(f"ttl_jitter must be in [0, 1), got {ttl_jitter!r}")
        if max_value_bytes is not None and max_value_bytes <= 0:
            raise ConfigurationError(
                f"max_value_bytes must be positive or None, got {max_value_bytes!r}"
            )
        self._backend: Backend = backend
        self._keys = KeyBuilder(namespace, version, max_length=key_max_length)
        self._default_ttl = to_seconds(default_ttl, name="default_ttl")
        self._serializer: Serializer = serializer if serializer is not None else JsonSerializer()
        self._strict = strict
        self._max_value_bytes = max_value_bytes
        self._jitter = ttl_jitter
        self._clock = clock
        self._stats = StatsRecorder()
        self._failures = RateLimitedLog()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._flights: SingleFlight[Any] = SingleFlight(on_start=self._track)
        self._reads: dict[str, asyncio.Future[bytes | None]] = {}
        self._hooks: tuple[ReadHook, ...] = tuple(hooks)

    @classmethod
    def from_settings(cls, settings: CacheSettings | None = None) -> Self:
        """Returns a cache configured from `CacheSettings` (the environment and ``.env`` by default).

        Logs one INFO line naming the backend, the redacted URL and the default TTL.

        Raises:
            ConfigurationError: a setting is malformed; the message names its variable.
        """
        from ._settings import CacheSettings, build_backend, startup_log_line

        if settings is None:
            settings = CacheSettings.load()
        backend = build_backend(settings)
        cache = cls(
            backend,
            namespace=settings.namespace,
            version=settings.version,
            default_ttl=settings.default_ttl,
            strict=settings.strict,
            max_value_bytes=settings.max_value_bytes,
            key_max_length=settings.key_max_length,
        )
        LOGGER.info(startup_log_line(settings, backend))
        return cache

    def __repr__(self) -> str:
        return (
            f"Cache(backend={self._backend!r}, namespace={self._keys.namespace!r}, "
            f"version={self._keys.version!r}, default_ttl={self._default_ttl!r})"
        )

    # -- properties -------------------------------------------------------------------------

    @property
    def backend(self) -> Backend:
        """The backend in use now (the one given to `use` inside that block)."""
        return self._backend

    @property
    def keys(self) -> KeyBuilder:
        """The `KeyBuilder` that turns relative keys into stored ones."""
        return self._keys

    @property
    def namespace(self) -> str:
        """The first part of every stored key."""
        return self._keys.namespace

    @property
    def version(self) -> str:
        """The second part of every stored key."""
        return self._keys.version

    @property
    def default_ttl(self) -> float | None:
        """Seconds applied to writes that give no TTL; ``None`` for no expiry."""
        return self._default_ttl

    @property
    def serializer(self) -> Serializer:
        """The serializer of values."""
        return self._serializer

    @property
    def strict(self) -> bool:
        """Whether backend failures raise `BackendError` instead of failing open."""
        return self._strict

    @property
    def stats(self) -> CacheStats:
        """A snapshot of this cache's counters."""
        return self._stats.snapshot()

    # -- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Cancels background work and releases the backend's connections.

        The cache stays usable: connections reopen lazily on the next call.
        """
        tasks = [task for task in self._tasks if not task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await self._backend.aclose()

    def add_hook(self, hook: ReadHook) -> ReadHook:
        """Registers ``hook`` to be told of every read as a `ReadEvent`; returns it (a decorator).

        Hooks run inline on every read, so they must be quick (count, not I/O). An exception
        from a hook is logged at a bounded rate and never reaches the caller.
        """
        self._hooks = (*self._hooks, hook)
        return hook

    def remove_hook(self, hook: ReadHook) -> None:
        """Unregisters ``hook``; does nothing if it was not registered."""
        self._hooks = tuple(h for h in self._hooks if h != hook)  # == so that bound methods match

    def _notify(self, event: ReadEvent) -> None:
        for hook in self._hooks:
            try:
                hook(event)
            except Exception as exc:  # noqa: BLE001, PERF203  # a broken hook must not break reads; try is free in 3.11+
                self._failures.warning("hook", "read hook %r raised %r", hook, exc)

    @contextmanager
    def use(self, backend: Backend) -> Iterator[Backend]:
        """Routes every operation of this cache, decorated functions included, to ``backend``.

        Meant for tests: ``with cache.use(MemoryBackend()):``. The previous backend is restored
        on exit; nesting works. The swap is visible to every task, not only the current one.
        """
        previous = self._backend
        self._backend = backend
        try:
            yield backend
        finally:
            self._backend = previous

    # -- reads ------------------------------------------------------------------------------

    async def get(self, key: str, default: D | None = None) -> object | D | None:
        """Returns the value at ``key``, or ``default`` when it is absent, expired or unreadable.

        Raises:
            TypeError: ``key`` is not a ``str``.
            BackendError: the backend failed and the cache is strict.
        """
        full = self._keys.full(key)
        outcome, value = await self._read(full, self._serializer.loads)
        if outcome is Outcome.HIT:
            return value
        return default

    async def get_many(self, keys: Iterable[str]) -> dict[str, object]:
        """Returns ``{key: value}`` for the keys that hold a fresh value, in one round trip.

        Raises:
            TypeError: a key is not a ``str``.
            BackendError: the backend failed and the cache is strict.
        """
        relative = list(keys)
        if not relative:
            return {}
        full = [self._keys.full(key) for key in relative]
        try:
            found = await self._backend.get_many(full)
        except BackendError as exc:
            self._backend_failed("get_many", exc)
            for full_key in full:
                self._count(Outcome.BACKEND_ERROR, full_key, None)
            return {}
        result: dict[str, object] = {}
        now = self._clock()
        for key, full_key, data in zip(relative, full, found, strict=True):
            if data is None:
                self._count(Outcome.MISS, full_key, None)
                continue
            outcome, value = self._decode(data, self._serializer.loads, now)
            if outcome is Outcome.DECODE_ERROR:
                await self._drop_undecodable(full_key, value)
            self._count(Outcome.MISS if outcome is Outcome.STALE else outcome, full_key, None)
            if outcome is Outcome.HIT:
                result[key] = value
        return result

    async def exists(self, key: str) -> bool:
        """Returns whether ``key`` holds a value; ``False`` when the backend fails open."""
        full = self._keys.full(key)
        try:
            return await self._backend.exists(full)
        except BackendError as exc:
            self._backend_failed("exists", exc)
            return False

    async def ttl(self, key: str) -> float | None:
        """Returns the seconds ``key`` has left, ``math.inf`` if it never expires, ``None`` if absent.

        ``None`` is also the answer when the backend fails open.
        """
        full = self._keys.full(key)
        try:
            return await self._backend.ttl(full)
        except BackendError as exc:
            self._backend_failed("ttl", exc)
            return None

    # -- writes -----------------------------------------------------------------------------

    async def set(self, key: str, value: object, ttl: TTLLike | None = None) -> bool:
        """Stores ``value`` at ``key`` for ``ttl`` (default: the cache's ``default_ttl``).

        Returns whether the value was stored: ``False`` when it exceeds ``max_value_bytes`` or
        the backend failed open.

        Raises:
            TypeError: ``key`` is not a ``str``.
            SerializationError: ``value`` cannot be serialized; nothing is stored or removed.
            BackendError: the backend failed and the cache is strict.
        """
        full = self._keys.full(key)
        seconds = self._jittered(self._ttl_seconds(ttl))
        data = self._encode(full, value, seconds, self._serializer)
        if data is None:
            return False
        return await self._write(full, data, seconds)

    async def add(self, key: str, value: object, ttl: TTLLike | None = None) -> bool:
        """Stores ``value`` only if ``key`` holds nothing; returns whether it was stored.

        Raises:
            TypeError: ``key`` is not a ``str``.
            SerializationError: ``value`` cannot be serialized.
            BackendError: the backend failed and the cache is strict.
        """
        full = self._keys.full(key)
        seconds = self._jittered(self._ttl_seconds(ttl))
        data = self._encode(full, value, seconds, self._serializer)
        if data is None:
            return False
        try:
            stored = await self._backend.add(full, data, seconds)
        except BackendError as exc:
            self._backend_failed("add", exc)
            return False
        if stored:
            self._stats.sets += 1
        return stored

    async def set_many(self, mapping: Mapping[str, object], ttl: TTLLike | None = None) -> bool:
        """Stores every item with the same ``ttl`` in one round trip; returns whether they were stored.

        Every value is serialized before anything is written, so one bad value stores nothing.
        Values over ``max_value_bytes`` are left out.

        Raises:
            TypeError: a key is not a ``str``.
            SerializationError: a value cannot be serialized; nothing is stored.
            BackendError: the backend failed and the cache is strict.
        """
        # One jitter for the batch: the backend writes it with a single TTL in one round trip.
        seconds = self._jittered(self._ttl_seconds(ttl))
        items: dict[str, bytes] = {}
        for key, value in mapping.items():
            full = self._keys.full(key)
            data = self._encode(full, value, seconds, self._serializer)
            if data is not None:
                items[full] = data
        if not items:
            return not mapping
        try:
            await self._backend.set_many(items, seconds)
        except BackendError as exc:
            self._backend_failed("set_many", exc)
            return False
        self._stats.sets += len(items)
        return len(items) == len(mapping)

    async def delete(self, *keys: str) -> int:
        """Removes ``keys``; returns how many held a value (0 when the backend fails open).

        Raises:
            TypeError: a key is not a ``str``.
            BackendError: the backend failed and the cache is strict.
        """
        if not keys:
            return 0
        full = [self._keys.full(key) for key in keys]
        try:
            deleted = await self._backend.delete(*full)
        except BackendError as exc:
            self._backend_failed("delete", exc)
            return 0
        self._stats.deletes += deleted
        return deleted

    async def incr(self, key: str, amount: int = 1, ttl: TTLLike | None = None) -> int:
        """Adds ``amount`` to the counter at ``key`` (absent counts as 0) and returns the result.

        The TTL (default: ``default_ttl``) is set atomically with the increment that creates the
        counter; later increments keep it. `get` of a counter returns the ``int``.

        A counter has no safe fallback value, so a backend failure raises `BackendError` even
        when the cache is not strict.

        Raises:
            TypeError: ``key`` is not a ``str`` or ``amount`` not an ``int``.
            BackendError: the backend failed, or the value at ``key`` is not an integer.
        """
        if not isinstance(amount, int) or isinstance(amount, bool):
            raise TypeError(f"amount must be an int, not {type(amount).__name__}")
        full = self._keys.full(key)
        try:
            return await self._backend.incr(full, amount, self._ttl_seconds(ttl))
        except BackendError as exc:
            self._backend_failed("incr", exc, always_raise=True)
            raise  # pragma: no cover - _backend_failed raised already

    @overload
    async def get_or_set(
        self,
        key: str,
        fetch_fn: Callable[[], Awaitable[T]],
        ttl: TTLLike | None = None,
        **policy: Unpack[PolicyOptions],
    ) -> T: ...

    @overload
    async def get_or_set(
        self,
        key: str,
        fetch_fn: Callable[[], T],
        ttl: TTLLike | None = None,
        **policy: Unpack[PolicyOptions],
    ) -> T: ...

    async def get_or_set(
        self,
        key: str,
        fetch_fn: Callable[[], T | Awaitable[T]],
        ttl: TTLLike | None = None,
        **policy: Unpack[PolicyOptions],
    ) -> T:
        """Returns the value at ``key``; on a miss, calls ``fetch_fn``, stores and returns its result.

        ``fetch_fn`` takes no arguments and returns a value or an awaitable. Concurrent misses of
        one key in this process share one call of ``fetch_fn`` (single flight); its exceptions
        reach every waiting caller and nothing is stored. A value that cannot be serialized is
        returned uncached and logged. ``policy`` takes the stampede and freshness options of
        `PolicyOptions`: ``lock``, ``stale_ttl``, ``stale_if_error``, ``early_refresh`` ...

        Raises:
            TypeError: ``key`` is not a ``str``.
            ConfigurationError: a policy option is out of range.
            BackendError: the backend failed and the cache is strict.
        """
        full = self._keys.full(key)
        stampede, freshness = build_policies(**policy) if policy else _DEFAULT_POLICIES
        value = await self._through(
            full,
            fetch_fn,
            self._ttl_seconds(ttl),
            self._serializer,
            stampede,
            freshness,
            None,
            None,
        )
        return cast("T", value)  # deserialization boundary: the entry was written from a T

    @overload
    def cached(self, ttl: Callable[P, Awaitable[R]], /) -> CachedFunction[P, R]: ...

    @overload
    def cached(
        self,
        ttl: TTLLike | None = None,
        *,
        key: str | None = None,
        key_prefix: str | None = None,
        exclude: Collection[str] = (),
        condition: Callable[[Any], bool] | None = None,
        cache_none: bool = False,
        typed: bool = True,
        **policy: Unpack[PolicyOptions],
    ) -> Callable[[Callable[P, Awaitable[R]]], CachedFunction[P, R]]: ...

    def cached(
        self,
        ttl: TTLLike | Callable[P, Awaitable[R]] | None = None,
        *,
        key: str | None = None,
        key_prefix: str | None = None,
        exclude: Collection[str] = (),
        condition: Callable[[Any], bool] | None = None,
        cache_none: bool = False,
        typed: bool = True,
        **policy: Unpack[PolicyOptions],
    ) -> CachedFunction[P, R] | Callable[[Callable[P, Awaitable[R]]], CachedFunction[P, R]]:
        """Decorates an ``async def`` function (or method) so that its results are cached.

        ``@cache.cached`` alone uses the cache's default TTL.

        Args:
            ttl: seconds or ``timedelta``; the cache's ``default_ttl`` when omitted.
            key: a template over the argument names, e.g. ``"tasks:pending:{limit}"``; values
                are escaped as key parts. Without it the key is ``key_prefix`` + the function's
                ``module.qualname`` + ``name=value`` parts of the bound arguments.
            key_prefix: text put before the default key, e.g. ``"tasks:"``, so that
                ``delete_pattern("tasks:*")`` reaches it.
            exclude: argument names left out of the key (a DB session, a request).
            condition: cache only results for which it returns ``True``.
            cache_none: cache ``None`` results too (by default they are returned, not stored).
            typed: rebuild hits as the return annotation's type (pydantic ``TypeAdapter``).
            policy: the stampede and freshness options of `PolicyOptions`.

        Raises:
            TypeError: the function is not ``async def``, or ``key``/``exclude`` name parameters
                it does not have.
            ConfigurationError: an option is out of range.
        """
        if callable(ttl) and not isinstance(ttl, int | float | timedelta):
            return self.cached()(ttl)
        seconds = to_seconds(ttl)
        stampede, freshness = build_policies(**policy) if policy else _DEFAULT_POLICIES

        def decorate(func: Callable[P, Awaitable[R]]) -> CachedFunction[P, R]:
            return CachedFunction(
                self,
                func,
                ttl=seconds,
                key=key,
                key_prefix=key_prefix,
                exclude=exclude,
                condition=condition,
                cache_none=cache_none,
                typed=typed,
                stampede=stampede,
                freshness=freshness,
            )

        return decorate

    # -- invalidation -----------------------------------------------------------------------

    async def delete_pattern(self, pattern: str) -> int:
        """Removes the keys of this namespace and version that match a Redis glob ``pattern``.

        The pattern is relative, like keys: ``"tasks:pending:*"``. It is applied with SCAN and
        removed in batches with UNLINK, never with KEYS, so the server stays responsive.
        Returns how many keys were removed; a failure part way fails open with the count so far.

        Raises:
            TypeError: ``pattern`` is not a ``str``.
            BackendError: the backend failed and the cache is strict.
        """
        full_pattern = self._keys.pattern(pattern)
        deleted = 0
        try:
            async for batch in self._backend.scan(full_pattern, count=_SCAN_BATCH):
                deleted += await self._backend.delete(*batch)
        except BackendError as exc:
            self._backend_failed("delete_pattern", exc)
        self._stats.deletes += deleted
        return deleted

    async def clear(self) -> int:
        """Removes every key of this namespace and version (never the whole database).

        Returns how many keys were removed.
        """
        return await self.delete_pattern("*")

    # -- operations -------------------------------------------------------------------------

    async def health_check(self, *, degraded_after_ms: float = 100.0) -> HealthReport:
        """Returns a `HealthReport`: a PING's latency and, for Redis, the server's vital signs.

        ``status`` is ``disabled`` for the null backend, ``unhealthy`` when the backend fails,
        ``degraded`` when PING takes longer than ``degraded_after_ms``, else ``healthy``.
        Never raises for a backend failure; the report carries a redacted ``error``.
        """
        backend = self._backend
        base: dict[str, Any] = {
            "backend": backend.kind,
            "namespace": self._keys.namespace,
            "version": self._keys.version,
            "stats": self._stats.snapshot(),
        }
        if backend.kind == "null":
            return HealthReport(status="disabled", available=False, latency_ms=None, **base)
        started = time.perf_counter()
        try:
            await backend.ping()
            latency_ms = round((time.perf_counter() - started) * 1000, 3)
            info: dict[str, Any] = {}
            if isinstance(backend, ServerInfoBackend):
                info = dict(await backend.server_info())
        except BackendError as exc:
            return HealthReport(
                status="unhealthy", available=False, latency_ms=None, error=str(exc), **base
            )
        status: HealthStatus = "degraded" if latency_ms > degraded_after_ms else "healthy"
        return HealthReport(
            status=status,
            available=True,
            latency_ms=latency_ms,
            uptime_seconds=_int_or_none(info.get("uptime_seconds")),
            used_memory_mb=_float_or_none(info.get("used_memory_mb")),
            connected_clients=_int_or_none(info.get("connected_clients")),
            ops_per_sec=_int_or_none(info.get("ops_per_sec")),
            server_version=str(info["redis_version"]) if "redis_version" in info else None,
            **base,
        )

    # -- internals --------------------------------------------------------------------------

    def _track(self, task: asyncio.Task[Any]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _ttl_seconds(self, ttl: TTLLike | None) -> float | None:
        return self._default_ttl if ttl is None else to_seconds(ttl)

    def _jittered(self, seconds: float | None) -> float | None:
        if seconds is None or not self._jitter:
            return seconds
        return seconds * (1.0 - random.random() * self._jitter)  # noqa: S311  # spreading expiry, not security

    def _count(self, outcome: Outcome, full: str, function_stats: StatsRecorder | None) -> None:
        """Counts a read in the cache's stats (and the function's), and tells the read hooks."""
        self._stats.record(outcome)
        if self._hooks:
            self._notify(ReadEvent(full, outcome, function_stats.name if function_stats else None))
        if function_stats is not None:
            function_stats.record(outcome)

    def _encode(
        self, full: str, value: object, seconds: float | None, codec: Serializer, delta: float = 0.0
    ) -> bytes | None:
        """Returns the stored form of ``value`` fresh for ``seconds``, or ``None`` when too large."""
        payload = codec.dumps(value)
        if self._max_value_bytes is not None and len(payload) > self._max_value_bytes:
            self._failures.warning(
                "too_large",
                "not caching %s: its value is %d bytes, over max_value_bytes=%d",
                full,
                len(payload),
                self._max_value_bytes,
            )
            return None
        now = self._clock()
        fresh_until = 0.0 if seconds is None else now + seconds
        return encode_entry(payload, created=now, fresh_until=fresh_until, delta=delta)

    async def _write(self, full: str, data: bytes, seconds: float | None) -> bool:
        try:
            await self._backend.set(full, data, seconds)
        except BackendError as exc:
            self._backend_failed("set", exc)
            return False
        self._stats.sets += 1
        return True

    async def _store_quietly(
        self,
        full: str,
        value: object,
        seconds: float | None,
        codec: Serializer,
        delta: float,
        keep_after_ttl: float,
        function_stats: StatsRecorder | None,
    ) -> None:
        """Stores a computed value; a value that cannot be stored is logged, never raised."""
        seconds = self._jittered(seconds)
        try:
            data = self._encode(full, value, seconds, codec, delta)
        except SerializationError as exc:
            self._failures.warning("serialize", "not caching %s: %s", full, exc)
            return
        if data is None:
            return
        physical = None if seconds is None else seconds + keep_after_ttl
        if await self._write(full, data, physical) and function_stats is not None:
            function_stats.sets += 1

    async def _shared_get(self, full: str) -> bytes | None:
        """GETs ``full``; concurrent reads of one key in this event loop share one round trip.

        A burst of requests for a hot key would otherwise open one connection each; merged,
        the burst costs one GET and the followers wait for its answer.
        """
        loop = asyncio.get_running_loop()
        shared = self._reads.get(full)
        if shared is not None and shared.get_loop() is loop:
            try:
                # Shielded: a follower's cancellation must not cancel the answer others await.
                return await asyncio.shield(shared)
            except _ReadAbandoned:
                pass  # the leader was cancelled before its answer came; read for ourselves
        future: asyncio.Future[bytes | None] = loop.create_future()
        self._reads[full] = future
        try:
            data = await self._backend.get(full)
        except BaseException as exc:
            future.set_exception(exc if isinstance(exc, BackendError) else _ReadAbandoned())
            future.exception()  # retrieved: a leader without followers must not log it
            raise
        else:
            future.set_result(data)
        finally:
            if self._reads.get(full) is future:
                del self._reads[full]
        return data

    async def _through(
        self,
        full: str,
        produce: Callable[[], Any],
        seconds: float | None,
        codec: Serializer,
        stampede: StampedePolicy,
        freshness: FreshnessPolicy,
        function_stats: StatsRecorder | None,
        should_store: Callable[[Any], bool] | None,
    ) -> Any:
        """Reads ``full``; on a miss computes it once (per process, or per cluster with a lock).

        The one place where freshness, stampede and fail-open rules meet: `get_or_set` and every
        decorated function call come here. The fresh hit is the hot path.
        """
        try:
            data = await self._shared_get(full)
        except BackendError as exc:
            self._backend_failed("get", exc)
            self._count(Outcome.BACKEND_ERROR, full, function_stats)
            data = None
        else:
            if data is None:
                self._count(Outcome.MISS, full, function_stats)
        stale: bytes | None = None
        if data is not None:
            if data[:1] == _MAGIC_BYTE and len(data) >= HEADER_SIZE:
                _, _, _, _, _, fresh_until, delta = HEADER.unpack_from(data)
                now = self._clock()
                if not fresh_until or now < fresh_until:
                    try:
                        value = codec.loads(data[HEADER_SIZE:])
                    except SerializationError as exc:
                        await self._drop_undecodable(full, exc)
                        self._count(Outcome.DECODE_ERROR, full, function_stats)
                    else:
                        self._count(Outcome.HIT, full, function_stats)
                        beta = freshness.early_refresh_beta
                        if beta and fresh_until and _xfetch_due(now, fresh_until, delta, beta):
                            self._refresh_soon(
                                full,
                                produce,
                                seconds,
                                codec,
                                stampede,
                                freshness,
                                function_stats,
                                should_store,
                            )
                        return value
                elif freshness.stale_ttl and now < fresh_until + freshness.stale_ttl:
                    try:
                        value = codec.loads(data[HEADER_SIZE:])
                    except SerializationError as exc:
                        await self._drop_undecodable(full, exc)
                        self._count(Outcome.DECODE_ERROR, full, function_stats)
                    else:
                        self._count(Outcome.STALE, full, function_stats)
                        self._refresh_soon(
                            full,
                            produce,
                            seconds,
                            codec,
                            stampede,
                            freshness,
                            function_stats,
                            should_store,
                        )
                        return value
                else:
                    if freshness.stale_if_error and now < fresh_until + freshness.stale_if_error:
                        stale = data[HEADER_SIZE:]
                    self._count(Outcome.MISS, full, function_stats)
            else:
                await self._drop_undecodable(full, "not an entry written by a cached function")
                self._count(Outcome.DECODE_ERROR, full, function_stats)

        async def compute() -> Any:
            return await self._compute(
                full, produce, seconds, codec, stampede, freshness, function_stats, should_store
            )

        if stale is None:
            value, _ = await self._flights.run(full, compute)
            return value
        try:
            value, _ = await self._flights.run(full, compute)
        except Exception as exc:  # noqa: BLE001  # stale-if-error absorbs exactly the fetch's own errors
            try:
                value = codec.loads(stale)
            except SerializationError:
                raise exc from None
            self._count(Outcome.STALE, full, function_stats)
            self._failures.warning(
                "stale_if_error", "serving the stale value of %s: computing it raised %r", full, exc
            )
        return value

    def _refresh_soon(
        self,
        full: str,
        produce: Callable[[], Any],
        seconds: float | None,
        codec: Serializer,
        stampede: StampedePolicy,
        freshness: FreshnessPolicy,
        function_stats: StatsRecorder | None,
        should_store: Callable[[Any], bool] | None,
    ) -> None:
        """Starts one background recomputation of ``full`` unless one is already under way."""
        if self._flights.is_running(full):
            return
        self._stats.refreshes += 1
        if function_stats is not None:
            function_stats.refreshes += 1

        async def compute() -> Any:
            return await self._compute(
                full, produce, seconds, codec, stampede, freshness, function_stats, should_store
            )

        task, _ = self._flights.start(full, compute)
        task.add_done_callback(self._log_failed_refresh)

    def _log_failed_refresh(self, task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and (exc := task.exception()) is not None:
            self._failures.warning(
                "refresh", "background refresh failed, the old value stays: %r", exc
            )

    async def _compute(
        self,
        full: str,
        produce: Callable[[], Any],
        seconds: float | None,
        codec: Serializer,
        stampede: StampedePolicy,
        freshness: FreshnessPolicy,
        function_stats: StatsRecorder | None,
        should_store: Callable[[Any], bool] | None,
    ) -> Any:
        """Computes and stores ``full``, under a cross-process lock when the policy asks for one."""
        backend = self._backend
        if stampede.lock and isinstance(backend, LockingBackend):
            return await self._compute_locked(
                backend,
                full,
                produce,
                seconds,
                codec,
                stampede,
                freshness,
                function_stats,
                should_store,
            )
        return await self._fetch_and_store(
            full, produce, seconds, codec, freshness, function_stats, should_store
        )

    async def _fetch_and_store(
        self,
        full: str,
        produce: Callable[[], Any],
        seconds: float | None,
        codec: Serializer,
        freshness: FreshnessPolicy,
        function_stats: StatsRecorder | None,
        should_store: Callable[[Any], bool] | None,
    ) -> Any:
        started = time.perf_counter()
        result = produce()
        if inspect.isawaitable(result):
            result = await result
        delta = time.perf_counter() - started
        if should_store is None or should_store(result):
            await self._store_quietly(
                full, result, seconds, codec, delta, freshness.keep_after_ttl, function_stats
            )
        return result

    async def _compute_locked(
        self,
        backend: LockingBackend,
        full: str,
        produce: Callable[[], Any],
        seconds: float | None,
        codec: Serializer,
        stampede: StampedePolicy,
        freshness: FreshnessPolicy,
        function_stats: StatsRecorder | None,
        should_store: Callable[[Any], bool] | None,
    ) -> Any:
        """One process computes; the others wait for its value, woken by a message when it lands."""
        lock_name = _LOCK_PREFIX + full
        channel = _READY_PREFIX + full
        token = secrets.token_hex(16)

        async def holding() -> Any:
            try:
                # The value may have landed between our miss and taking the lock.
                found = await self._peek(full, codec)
                if found is not MISSING:
                    return found
                return await self._fetch_and_store(
                    full, produce, seconds, codec, freshness, function_stats, should_store
                )
            finally:
                # Release before waking the waiters, so that after a failed fetch one of them can
                # take the lock at once instead of waiting for it to expire.
                try:
                    await backend.release_lock(lock_name, token)
                    await backend.publish(channel)
                except BackendError as exc:
                    self._backend_failed("release_lock", exc)

        try:
            if await backend.acquire_lock(lock_name, token, stampede.lock_ttl):
                return await holding()
            self._stats.lock_waits += 1
            if function_stats is not None:
                function_stats.lock_waits += 1
            deadline = time.monotonic() + stampede.lock_timeout
            # A holder that died never publishes: re-check at least this often, and take the
            # lock once it has expired.
            recheck = max(stampede.lock_ttl / 4, 0.01)
            async with backend.subscribe(channel) as notifications:
                # Subscribed first, then looked: a value that landed before we subscribed is seen.
                found = await self._peek(full, codec)
                if found is not MISSING:
                    return found
                while (remaining := deadline - time.monotonic()) > 0:
                    await notifications.wait(min(remaining, recheck))
                    found = await self._peek(full, codec)
                    if found is not MISSING:
                        return found
                    if await backend.acquire_lock(lock_name, token, stampede.lock_ttl):
                        break
                else:
                    if stampede.on_timeout == "raise":
                        raise LockTimeout(
                            f"no value for {full} within lock_timeout={stampede.lock_timeout} s "
                            "while another process held its lock"
                        )
                    return await self._fetch_and_store(
                        full, produce, seconds, codec, freshness, function_stats, should_store
                    )
        except BackendError as exc:
            self._backend_failed("lock", exc)
            return await self._fetch_and_store(
                full, produce, seconds, codec, freshness, function_stats, should_store
            )
        return await holding()

    async def _peek(self, full: str, codec: Serializer) -> Any:
        """Returns the fresh value at ``full``, or `MISSING`; counts nothing."""
        data = await self._backend.get(full)
        if data is None or data[:1] != _MAGIC_BYTE or len(data) < HEADER_SIZE:
            return MISSING
        fresh_until = _HEADER_FRESH.unpack_from(data, _FRESH_OFFSET)[0]
        if fresh_until and self._clock() >= fresh_until:
            return MISSING
        try:
            return codec.loads(data[HEADER_SIZE:])
        except SerializationError:
            return MISSING

    async def _read(self, full: str, loads: Callable[[bytes], object]) -> tuple[Outcome, object]:
        """Reads and decodes one entry; records the outcome. The hot path of every hit."""
        try:
            data = await self._shared_get(full)
        except BackendError as exc:
            self._backend_failed("get", exc)
            self._count(Outcome.BACKEND_ERROR, full, None)
            return Outcome.BACKEND_ERROR, MISSING
        if data is None:
            self._count(Outcome.MISS, full, None)
            return Outcome.MISS, MISSING
        outcome, value = self._decode(data, loads, self._clock())
        if outcome is Outcome.HIT:
            self._count(outcome, full, None)
            return outcome, value
        if outcome is Outcome.DECODE_ERROR:
            await self._drop_undecodable(full, value)
            value = MISSING
        # A stale entry is served only by policies that ask for it; a plain read misses.
        self._count(Outcome.MISS if outcome is Outcome.STALE else outcome, full, None)
        return outcome, value

    @staticmethod
    def _decode(
        data: bytes, loads: Callable[[bytes], object], now: float
    ) -> tuple[Outcome, object]:
        """Returns (HIT or STALE, value), or (DECODE_ERROR, the reason as text)."""
        if data[:1] != _MAGIC_BYTE:
            if _COUNTER.fullmatch(data):
                return Outcome.HIT, int(data)
            return Outcome.DECODE_ERROR, "not a cachetier entry (foreign or corrupt value)"
        if len(data) < HEADER_SIZE:
            return Outcome.DECODE_ERROR, "truncated entry"
        fresh_until = _HEADER_FRESH.unpack_from(data, _FRESH_OFFSET)[0]
        try:
            value = loads(data[HEADER_SIZE:])
        except SerializationError as exc:
            return Outcome.DECODE_ERROR, str(exc)
        if fresh_until and now >= fresh_until:
            return Outcome.STALE, value
        return Outcome.HIT, value

    async def _drop_undecodable(self, full: str, reason: object) -> None:
        """Drops an entry that cannot be served, so the next read recomputes it."""
        self._failures.warning("decode", "dropping unreadable cache entry %s: %s", full, reason)
        try:
            await self._backend.delete(full)
        except BackendError as exc:
            self._backend_failed("delete", exc)

    def _backend_failed(
        self, operation: str, exc: BackendError, *, always_raise: bool = False
    ) -> None:
        """Logs a backend failure at a bounded rate; raises it when strict (or ``always_raise``)."""
        if self._strict or always_raise:
            raise exc
        self._failures.warning(
            "backend:" + operation,
            "cache %s failed, continuing without the cache: %s",
            operation,
            exc,
        )


_MAGIC_BYTE: Final = bytes((MAGIC,))


class _ReadAbandoned(Exception):
    """Tells the followers of a shared read that its leader was cancelled."""


def _xfetch_due(now: float, fresh_until: float, delta: float, beta: float) -> bool:
    """XFetch: refresh early with a probability that grows near expiry and with compute time.

    ``now - delta * beta * ln(U)`` for uniform ``U`` in (0, 1] reaches ``fresh_until`` early
    more often the longer the value took to compute (``delta``); see Vattani et al., VLDB 2015.
    """
    u = 1.0 - random.random()  # noqa: S311  # a refresh schedule, not security
    return now - delta * beta * math.log(u) >= fresh_until


def _int_or_none(value: object) -> int | None:
    return int(value) if isinstance(value, int | float | str) and str(value).strip() else None


def _float_or_none(value: object) -> float | None:
    return float(value) if isinstance(value, int | float | str) and str(value).strip() else None
