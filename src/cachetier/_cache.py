"""`Cache`: the façade users hold — operations, `get_or_set`, invalidation, `use()`, lifecycle."""

from __future__ import annotations

import asyncio
import inspect
import random
import re
import struct
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast, final

from typing_extensions import Self

from ._entry import HEADER_SIZE, MAGIC, encode_entry
from ._errors import BackendError, ConfigurationError, SerializationError
from ._health import HealthReport, HealthStatus
from ._keys import KeyBuilder
from ._log import LOGGER, RateLimitedLog
from ._singleflight import SingleFlight
from ._stats import CacheStats, StatsRecorder
from ._ttl import TTL, TTLLike, to_seconds
from ._types import MISSING, Clock, Outcome
from .backends._protocol import Backend, ServerInfoBackend
from .serializers import JsonSerializer, Serializer

if TYPE_CHECKING:
    from ._settings import CacheSettings

__all__ = ("Cache",)

T = TypeVar("T")
D = TypeVar("D")

_HEADER_FRESH: Final = struct.Struct("<d")
_FRESH_OFFSET: Final = 12
_COUNTER: Final = re.compile(rb"-?[0-9]{1,20}")
_DEFAULT_MAX_VALUE_BYTES: Final = 1024 * 1024
_SCAN_BATCH: Final = 500


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
        "_jitter",
        "_keys",
        "_max_value_bytes",
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
            for _ in relative:
                self._stats.record(Outcome.BACKEND_ERROR)
            return {}
        result: dict[str, object] = {}
        now = self._clock()
        for key, full_key, data in zip(relative, full, found, strict=True):
            if data is None:
                self._stats.misses += 1
                continue
            outcome, value = self._decode(data, self._serializer.loads, now)
            if outcome is Outcome.DECODE_ERROR:
                await self._drop_undecodable(full_key, value)
            self._stats.record(Outcome.MISS if outcome is Outcome.STALE else outcome)
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
        seconds = self._ttl_seconds(ttl)
        data = self._encode(full, value, seconds)
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
        seconds = self._ttl_seconds(ttl)
        data = self._encode(full, value, seconds)
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
        seconds = self._ttl_seconds(ttl)
        items: dict[str, bytes] = {}
        for key, value in mapping.items():
            full = self._keys.full(key)
            data = self._encode(full, value, seconds)
            if data is not None:
                items[full] = data
        if not items:
            return not mapping
        try:
            await self._backend.set_many(items, self._jittered(seconds))
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

    async def get_or_set(
        self,
        key: str,
        fetch_fn: Callable[[], T | Awaitable[T]],
        ttl: TTLLike | None = None,
    ) -> T:
        """Returns the value at ``key``; on a miss, calls ``fetch_fn``, stores and returns its result.

        ``fetch_fn`` takes no arguments and returns a value or an awaitable. Concurrent misses of
        one key in this process share one call of ``fetch_fn`` (single flight); its exceptions
        reach every waiting caller and nothing is stored. A value that cannot be serialized is
        returned uncached and logged.

        Raises:
            TypeError: ``key`` is not a ``str``.
            BackendError: the backend failed and the cache is strict.
        """
        full = self._keys.full(key)
        seconds = self._ttl_seconds(ttl)
        outcome, value = await self._read(full, self._serializer.loads)
        if outcome is Outcome.HIT:
            return cast("T", value)  # deserialization boundary: the entry was written from a T

        async def compute() -> T:
            started = time.perf_counter()
            result = fetch_fn()
            if inspect.isawaitable(result):
                result = await result
            delta = time.perf_counter() - started
            await self._store_quietly(full, result, seconds, delta)
            return cast("T", result)  # awaited above when it was awaitable

        result, _ = await self._flights.run(full, compute)
        return cast("T", result)

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

    def _encode(
        self, full: str, value: object, seconds: float | None, delta: float = 0.0
    ) -> bytes | None:
        """Returns the stored form of ``value``, or ``None`` when it is too large to cache."""
        payload = self._serializer.dumps(value)
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
        return encode_entry(
            payload, created=now, fresh_until=0.0 if seconds is None else now + seconds, delta=delta
        )

    async def _write(self, full: str, data: bytes, seconds: float | None) -> bool:
        try:
            await self._backend.set(full, data, self._jittered(seconds))
        except BackendError as exc:
            self._backend_failed("set", exc)
            return False
        self._stats.sets += 1
        return True

    async def _store_quietly(
        self, full: str, value: object, seconds: float | None, delta: float
    ) -> None:
        """Stores a computed value; a value that cannot be stored is logged, never raised."""
        try:
            data = self._encode(full, value, seconds, delta)
        except SerializationError as exc:
            self._failures.warning("serialize", "not caching %s: %s", full, exc)
            return
        if data is not None:
            await self._write(full, data, seconds)

    async def _read(self, full: str, loads: Callable[[bytes], object]) -> tuple[Outcome, object]:
        """Reads and decodes one entry; records the outcome. The hot path of every hit."""
        try:
            data = await self._backend.get(full)
        except BackendError as exc:
            self._backend_failed("get", exc)
            self._stats.record(Outcome.BACKEND_ERROR)
            return Outcome.BACKEND_ERROR, MISSING
        if data is None:
            self._stats.misses += 1
            return Outcome.MISS, MISSING
        outcome, value = self._decode(data, loads, self._clock())
        if outcome is Outcome.HIT:
            self._stats.hits += 1
            return outcome, value
        if outcome is Outcome.DECODE_ERROR:
            await self._drop_undecodable(full, value)
            value = MISSING
        # A stale entry is served only by policies that ask for it; a plain read misses.
        self._stats.record(Outcome.MISS if outcome is Outcome.STALE else outcome)
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


def _int_or_none(value: object) -> int | None:
    return int(value) if isinstance(value, int | float | str) and str(value).strip() else None


def _float_or_none(value: object) -> float | None:
    return float(value) if isinstance(value, int | float | str) and str(value).strip() else None
