"""`Cache`: the façade users hold — operations, `get_or_set`, invalidation, `use()`, lifecycle."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Iterable,
    Iterator,
    Mapping,
)
from contextlib import asynccontextmanager, contextmanager
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal, ParamSpec, TypeVar, cast, final, overload

from pydantic import SecretStr
from typing_extensions import Self, Unpack

from ._cached import CachedFunction
from ._core.breaker import CircuitBreaker
from ._core.engine import Engine
from ._core.entry import EntrySigner
from ._core.health import HealthReport, check_health
from ._core.inspect import Inspection, inspect_entry
from ._core.local import LocalTier
from ._core.spec import FetchSpec
from ._core.stats import CacheStats, ReadHook
from ._core.tags import check_tags
from ._errors import ConfigurationError
from ._keys import KeyBuilder, check_key_collection
from ._log import LOGGER
from ._policy import PolicyOptions, build_policies
from ._ttl import TTL, TTLLike, to_seconds
from ._types import MISSING, Clock, Outcome
from .backends._protocol import Backend
from .serializers import JsonSerializer, Serializer

if TYPE_CHECKING:
    from ._settings import CacheSettings

__all__ = ("Cache",)

T = TypeVar("T")
R = TypeVar("R")
P = ParamSpec("P")
D = TypeVar("D")

_DEFAULT_MAX_VALUE_BYTES: Final = 1024 * 1024
_DEFAULT_POLICIES: Final = build_policies()


@final
class Cache:
    """An async cache over a `Backend`: one per namespace, safe to create at module level.

    Keys given to its methods are relative: they are stored under ``namespace:version:key``.
    Values are serialized (JSON by default) into entries that carry their freshness. A backend
    failure is a miss or a skipped write, counted and logged at a bounded rate, unless
    ``strict=True``, which raises `BackendError` instead. Construction does no I/O.
    """

    __slots__ = ("_default_ttl", "_engine", "_keys")

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
        breaker: CircuitBreaker | None = None,
        signing_key: bytes | str | SecretStr | None = None,
        clock: Clock = time.time,
        version_check_interval: float = 0.25,
        local: LocalTier | None = None,
        latency_stats: bool = True,
        journal_limit: int = 1000,
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
        breaker: the circuit breaker in front of the backend; by default it opens after 5
            consecutive failures and probes again after 5 s.
        signing_key: a secret of at least 16 bytes; entries are then signed with HMAC-SHA256
            and any entry whose signature does not verify (written by someone without the
            key, or copied from another key) is a miss, never decoded. Counters from `incr`
            stay plain integers.
        clock: wall-clock seconds, shared by every process that reads the entries.
        version_check_interval: how often, in seconds, a read also fetches the generation that
            `bump_version` increments (in the same round trip), which bounds how long another
            process may serve entries from before a bump; ``0`` checks on every read.
        local: a process-local tier of decoded values in front of the backend, kept coherent
            through it (see `LocalTier`): Redis, or a `MemoryBackend` shared by several caches;
            ignored, with an INFO line, on backends that cannot report changes (null).
        latency_stats: time each backend call for the latency percentiles of `stats` (about
            1 µs a call on Redis; never done for in-process backends). The counters are kept
            either way: they cost two integer increments a read.
        journal_limit: how many keys, tags and patterns of invalidations that failed to reach
            the backend this process keeps, to replay before it trusts the backend again;
            past it, the replay is one `bump_version` instead. Added in 0.2.
        """
        if backend is None:
            from .backends.memory import MemoryBackend

            backend = MemoryBackend()
        _check_backend(backend)
        if not 0.0 <= ttl_jitter < 1.0:
            raise ConfigurationError(f"ttl_jitter must be in [0, 1), got {ttl_jitter!r}")
        if not version_check_interval >= 0:
            raise ConfigurationError(
                f"version_check_interval must be >= 0 seconds, got {version_check_interval!r}"
            )
        if type(journal_limit) is not int or journal_limit < 1:
            raise ConfigurationError(f"journal_limit must be a positive int, got {journal_limit!r}")
        if max_value_bytes is not None and max_value_bytes <= 0:
            raise ConfigurationError(
                f"max_value_bytes must be positive or None, got {max_value_bytes!r}"
            )
        self._keys = KeyBuilder(namespace, version, max_length=key_max_length)
        self._default_ttl = to_seconds(default_ttl, name="default_ttl")
        self._engine = Engine(
            backend,
            serializer=serializer if serializer is not None else JsonSerializer(),
            strict=strict,
            max_value_bytes=max_value_bytes,
            jitter=ttl_jitter,
            hooks=tuple(hooks),
            breaker=breaker if breaker is not None else CircuitBreaker(),
            signer=_signer(signing_key),
            keys=self._keys,
            clock=clock,
            generation_interval=float(version_check_interval),
            local=local,
            latency_stats=latency_stats,
            journal_limit=journal_limit,
        )

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
            breaker=CircuitBreaker(
                threshold=settings.breaker_failures, cooldown=settings.breaker_cooldown
            ),
            signing_key=settings.signing_key,
            version_check_interval=settings.version_check_interval,
            latency_stats=settings.latency_stats,
            local=(
                LocalTier(max_entries=settings.local_max_entries, ttl=settings.local_ttl)
                if settings.local_tier
                else None
            ),
        )
        LOGGER.info(startup_log_line(settings, backend))
        return cache

    def __repr__(self) -> str:
        return (
            f"Cache(backend={self._engine.guard.backend!r}, namespace={self._keys.namespace!r}, "
            f"version={self._keys.version!r}, default_ttl={self._default_ttl!r})"
        )

    # -- properties -------------------------------------------------------------------------

    @property
    def backend(self) -> Backend:
        """The backend in use now (the one given to `use` inside that block)."""
        return self._engine.guard.backend

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
        return self._engine.serializer

    @property
    def strict(self) -> bool:
        """Whether backend failures raise `BackendError` instead of failing open."""
        return self._engine.guard.strict

    @property
    def breaker_state(self) -> Literal["closed", "open", "half_open"]:
        """The circuit breaker's state: ``closed``, ``open`` or ``half_open``. Added in 0.2."""
        return self._engine.guard.breaker.state

    @property
    def stats(self) -> CacheStats:
        """A snapshot of this cache's counters."""
        journal = self._engine.journal
        return dataclasses.replace(
            self._engine.stats.snapshot(),
            journaled=journal.journaled,
            replays=journal.replayed,
            journal_overflows=journal.overflows,
            awaiting_replay=journal.pending,
        )

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
        await self._engine.cancel_background()
        await self._engine.guard.backend.aclose()

    def add_hook(self, hook: ReadHook) -> ReadHook:
        """Registers ``hook`` to be told of every read as a `ReadEvent`; returns it (a decorator).

        Hooks run inline on every read, so they must be quick (count, not I/O). An exception
        from a hook is logged at a bounded rate and never reaches the caller.
        """
        reporter = self._engine.reporter
        reporter.hooks = (*reporter.hooks, hook)
        return hook

    def remove_hook(self, hook: ReadHook) -> None:
        """Unregisters ``hook``; does nothing if it was not registered."""
        # == rather than "is", so that a bound method given again matches.
        reporter = self._engine.reporter
        reporter.hooks = tuple(h for h in reporter.hooks if h != hook)

    @contextmanager
    def use(self, backend: Backend) -> Iterator[Backend]:
        """Routes every operation of this cache, decorated functions included, to ``backend``.

        Meant for tests: ``with cache.use(MemoryBackend()):``. The previous backend is restored
        on exit; nesting works. The swap is visible to every task, not only the current one.
        """
        _check_backend(backend)
        engine = self._engine
        previous = engine.guard.backend
        engine.use(backend)
        try:
            yield backend
        finally:
            engine.use(previous)

    @contextmanager
    def bypass(self) -> Iterator[None]:
        """Skips the cache for reads made inside the block by this task (and tasks it starts).

        Decorated calls and `get_or_set` run their function and store nothing; `get` returns
        its default. Each such read counts as `Outcome.BYPASSED`. Writes and invalidation
        still reach the backend. Nesting works; other tasks are not affected.
        """
        token = self._engine.bypassing.set(True)
        try:
            yield
        finally:
            self._engine.bypassing.reset(token)

    def _ttl_seconds(self, ttl: TTLLike | None) -> float | None:
        return self._default_ttl if ttl is None else to_seconds(ttl)

    # -- reads ------------------------------------------------------------------------------

    async def get(self, key: str, default: D | None = None) -> object | D | None:
        """Returns the value at ``key``, or ``default`` when it is absent, expired or unreadable.

        Raises:
            TypeError: ``key`` is not a ``str``.
            BackendError: the backend failed and the cache is strict.
        """
        full = self._keys.full(key)
        outcome, value = await self._engine.lookups.read(full, self._engine.serializer)
        if outcome is Outcome.HIT:
            return value
        return default

    async def get_many(self, keys: Iterable[str]) -> dict[str, object]:
        """Returns ``{key: value}`` for the keys that hold a fresh value, in one round trip.

        Raises:
            TypeError: a key is not a ``str``.
            BackendError: the backend failed and the cache is strict.
        """
        check_key_collection(keys)
        relative = list(keys)
        if not relative:
            return {}
        values = await self._engine.lookups.read_many(
            [self._keys.full(key) for key in relative], self._engine.serializer
        )
        return {
            key: value for key, value in zip(relative, values, strict=True) if value is not MISSING
        }

    async def inspect(self, key: str) -> Inspection:
        """Returns what ``key`` holds and whether a read would serve it, changing nothing.

        Unlike `get`, it tells the kinds of absence apart (expired, leased by a computation,
        written before `bump_version`, invalidated through a tag, stale, undecodable ...) and
        leaves an entry it cannot decode in place. For operators and the ``cachetier get``
        command. Added in 0.2.

        Raises:
            TypeError: ``key`` is not a ``str``.
            BackendError: the backend failed (whether or not the cache is strict).
        """
        full = self._keys.full(key)
        engine = self._engine
        found = await engine.guard.run(
            "GET",
            "inspect",
            inspect_entry,
            engine.lookups,
            key,
            full,
            engine.serializer.loads,
            fallback=None,
            always_raise=True,
        )
        return cast("Inspection", found)  # always_raise: a failure raised already

    async def exists(self, key: str) -> bool:
        """Returns whether ``key`` holds a value; ``False`` when the backend fails open.

        A key being computed (leased) or written before `bump_version` holds none.
        """
        full = self._keys.full(key)
        engine = self._engine
        data = await engine.guard.run(
            "GET", "exists", engine.reader.fetch_one, full, fallback=MISSING
        )
        if data is MISSING or data is None:
            return False
        return await engine.lookups.holds_value(full, data)

    async def ttl(self, key: str) -> float | None:
        """Returns the seconds ``key`` has left, ``math.inf`` if it never expires, ``None`` if absent.

        ``None`` is also the answer when the backend fails open.
        """
        if not await self.exists(key):
            return None
        guard = self._engine.guard
        return await guard.run(
            "PTTL", "ttl", guard.backend.ttl, self._keys.full(key), fallback=None
        )

    # -- writes -----------------------------------------------------------------------------

    async def set(
        self, key: str, value: object, ttl: TTLLike | None = None, *, tags: Iterable[str] = ()
    ) -> bool:
        """Stores ``value`` at ``key`` for ``ttl`` (default: the cache's ``default_ttl``).

        ``tags`` are names that `invalidate_tags` later removes the entry by. Returns whether
        the value was stored: ``False`` when it exceeds ``max_value_bytes``, its tags cannot
        be recorded, or the backend failed open.

        Raises:
            TypeError: ``key`` or a tag is not a ``str``.
            SerializationError: ``value`` cannot be serialized; nothing is stored or removed.
            BackendError: the backend failed and the cache is strict.
        """
        full = self._keys.full(key)
        tag_names = check_tags(tags)
        engine = self._engine
        return await engine.writer.set(
            full, value, self._ttl_seconds(ttl), tag_names, engine.serializer
        )

    async def add(self, key: str, value: object, ttl: TTLLike | None = None) -> bool:
        """Stores ``value`` only if ``key`` holds nothing; returns whether it was stored.

        Raises:
            TypeError: ``key`` is not a ``str``.
            SerializationError: ``value`` cannot be serialized.
            BackendError: the backend failed and the cache is strict.
        """
        full = self._keys.full(key)
        engine = self._engine
        return await engine.writer.add(full, value, self._ttl_seconds(ttl), engine.serializer)

    async def set_many(self, mapping: Mapping[str, object], ttl: TTLLike | None = None) -> bool:
        """Stores every item with the same ``ttl`` in one round trip; returns whether they were stored.

        Every value is serialized before anything is written, so one bad value stores nothing.
        Values over ``max_value_bytes`` are left out.

        Raises:
            TypeError: a key is not a ``str``.
            SerializationError: a value cannot be serialized; nothing is stored.
            BackendError: the backend failed and the cache is strict.
        """
        items = {self._keys.full(key): value for key, value in mapping.items()}
        engine = self._engine
        return await engine.writer.set_many(items, self._ttl_seconds(ttl), engine.serializer)

    async def delete(self, *keys: str) -> int:
        """Removes ``keys``; returns how many held a value (0 when the backend fails open).

        Raises:
            TypeError: a key is not a ``str``.
            BackendError: the backend failed and the cache is strict.
        """
        if not keys:
            return 0
        full = [self._keys.full(key) for key in keys]
        return await self._engine.invalidations.delete(full)

    async def incr(self, key: str, amount: int = 1, ttl: TTLLike | None = None) -> int:
        """Adds ``amount`` to the counter at ``key`` (absent counts as 0) and returns the result.

        The TTL (default: ``default_ttl``) is set atomically with the increment that creates the
        counter; later increments keep it. `get` of a counter returns the ``int``.

        A counter has no safe fallback value, so a backend failure raises `BackendError` even
        when the cache is not strict.

        Raises:
            TypeError: ``key`` is not a ``str`` or ``amount`` not an ``int``.
            CounterError: the value at ``key`` is not a 64-bit integer, or would overflow.
            BackendError: the backend failed.
        """
        if not isinstance(amount, int) or isinstance(amount, bool):
            raise TypeError(f"amount must be an int, not {type(amount).__name__}")
        full = self._keys.full(key)
        return await self._engine.writer.incr(full, amount, self._ttl_seconds(ttl))

    @overload
    async def get_or_set(
        self,
        key: str,
        fetch_fn: Callable[[], Awaitable[T]],
        ttl: TTLLike | None = None,
        *,
        tags: Iterable[str] = (),
        **policy: Unpack[PolicyOptions],
    ) -> T: ...

    @overload
    async def get_or_set(
        self,
        key: str,
        fetch_fn: Callable[[], T],
        ttl: TTLLike | None = None,
        *,
        tags: Iterable[str] = (),
        **policy: Unpack[PolicyOptions],
    ) -> T: ...

    async def get_or_set(
        self,
        key: str,
        fetch_fn: Callable[[], T | Awaitable[T]],
        ttl: TTLLike | None = None,
        *,
        tags: Iterable[str] = (),
        **policy: Unpack[PolicyOptions],
    ) -> T:
        """Returns the value at ``key``; on a miss, calls ``fetch_fn``, stores and returns its result.

        ``fetch_fn`` takes no arguments and returns a value or an awaitable. Concurrent misses of
        one key in this process share one call of ``fetch_fn`` (single flight); its exceptions
        reach every waiting caller and nothing is stored. A value that cannot be serialized is
        returned uncached and logged. ``policy`` takes the stampede and freshness options of
        `PolicyOptions`: ``lock``, ``stale_ttl``, ``stale_if_error``, ``early_refresh`` ...
        ``tags`` are names that `invalidate_tags` later removes the entry by.

        Raises:
            TypeError: ``key`` or a tag is not a ``str``.
            ConfigurationError: a policy option is out of range.
            BackendError: the backend failed and the cache is strict.
        """
        full = self._keys.full(key)
        stampede, freshness = build_policies(**policy) if policy else _DEFAULT_POLICIES
        tag_names = check_tags(tags)
        spec = FetchSpec(
            self._ttl_seconds(ttl),
            self._engine.serializer,
            stampede,
            freshness,
            tags=(lambda _args, _kwargs: tag_names) if tag_names else None,
        )
        engine = self._engine
        local = engine.local
        value = MISSING if local is None else local.get(full, spec.codec, None)
        if value is MISSING:
            value = await engine.through.through(full, fetch_fn, (), {}, spec)
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
        tags: Iterable[str] = (),
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
        tags: Iterable[str] = (),
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
            tags: names that `invalidate_tags` removes the results by; each may be a template
                over the argument names like ``key``, e.g. ``["tasks", "project:{project_id}"]``.
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
                engine=self._engine,
                ttl=seconds,
                key=key,
                key_prefix=key_prefix,
                exclude=exclude,
                tags=tuple(check_tags(tags)),
                condition=condition,
                cache_none=cache_none,
                typed=typed,
                stampede=stampede,
                freshness=freshness,
            )

        return decorate

    # -- invalidation -----------------------------------------------------------------------

    async def delete_pattern(
        self, pattern: str, *, on_progress: Callable[[int, int], object] | None = None
    ) -> int:
        """Removes the keys of this namespace and version that match a Redis glob ``pattern``.

        The pattern is relative, like keys: ``"tasks:pending:*"``. It is applied with SCAN and
        removed in batches with UNLINK, never with KEYS, so the server stays responsive.
        Returns how many keys were removed; a failure part way fails open with the count so far
        (and the pattern is journaled, to be applied again once the backend answers).
        ``on_progress``, if given, is called after each SCAN step with the number of keys
        scanned and removed so far (``cachetier invalidate`` shows them). Added in 0.2.

        Raises:
            TypeError: ``pattern`` is not a ``str``.
            BackendError: the backend failed and the cache is strict.
        """
        return await self._engine.invalidations.delete_matching(
            self._keys.pattern(pattern), tag_keys=False, on_progress=on_progress
        )

    async def clear(self) -> int:
        """Removes every key of this namespace and version (never the whole database).

        Tag stamps go too; the generation counter of `bump_version` stays. Returns how many
        keys were removed.
        """
        return await self._engine.invalidations.delete_matching(
            self._keys.pattern("*"), tag_keys=True
        )

    async def invalidate_tags(self, *tags: str) -> int:
        """Invalidates every entry stored with any of ``tags``; returns how many of the tags
        had entries that recorded them (they may have expired since).

        One write per tag, whatever the number of entries: each tag holds a stamp that its
        entries recorded, and this replaces it, so they are misses from now on, in every
        process. Entries being computed when this runs recorded the old stamp and are misses
        too: their result may predate the change that made you invalidate.

        Raises:
            TypeError: a tag is not a ``str``.
            BackendError: the backend failed and the cache is strict.
        """
        return await self._engine.invalidations.invalidate_tags(check_tags(tags))

    async def bump_version(self) -> int:
        """Invalidates every entry of this namespace and version at once; returns the new generation.

        One increment of a counter that entries record when written: older entries are misses
        from now on in this process, and in others within ``version_check_interval``; they stay
        in the store until they expire or are overwritten. A computation under way when this
        runs stores its result under the old generation, where no read finds it.

        Raises:
            BackendError: the backend failed (a lost bump must not go unnoticed, so this raises
                even when the cache is not strict).
        """
        generation = await self._engine.invalidations.bump_version()
        LOGGER.info(
            "cache %s:%s bumped to generation %d",
            self._keys.namespace,
            self._keys.version,
            generation,
        )
        return generation

    async def invalidate(
        self, *keys: str, tags: Iterable[str] = (), patterns: Iterable[str] = ()
    ) -> int:
        """Removes ``keys``, the entries of ``tags`` and the keys matching ``patterns``.

        The one call to make after a write to the data behind them; returns how many entries
        were removed. Like each invalidation it stands for, it is safe against computations
        under way. See `invalidating` to tie it to a block of code.
        """
        tag_names = check_tags(tags)
        globs = [patterns] if isinstance(patterns, str) else list(patterns)
        removed = await self.delete(*keys) if keys else 0
        if tag_names:
            removed += await self.invalidate_tags(*tag_names)
        for glob in globs:
            removed += await self.delete_pattern(glob)
        return removed

    @asynccontextmanager
    async def invalidating(
        self, *keys: str, tags: Iterable[str] = (), patterns: Iterable[str] = ()
    ) -> AsyncIterator[None]:
        """Runs the block, then `invalidate` the given keys, tags and patterns.

        Wrap the database write whose results the cache holds::

            async with cache.invalidating(tags=[f"project:{task.project_id}"]):
                await db.update_task(task)

        The invalidation runs even when the block raises: a failed write may still have
        changed something, and a needless invalidation costs only a recomputation.
        """
        tag_names = check_tags(tags)  # checked before the block runs, not after its write
        globs = [patterns] if isinstance(patterns, str) else list(patterns)
        for key in keys:
            self._keys.full(key)
        try:
            yield
        finally:
            await self.invalidate(*keys, tags=tag_names, patterns=globs)

    # -- operations -------------------------------------------------------------------------

    async def health_check(self, *, degraded_after_ms: float = 100.0) -> HealthReport:
        """Returns a `HealthReport`: a PING's latency and, for Redis, the server's vital signs.

        ``status`` is ``disabled`` for the null backend, ``unhealthy`` when the backend fails,
        ``degraded`` when PING takes longer than ``degraded_after_ms``, else ``healthy``.
        The PING goes out even while the circuit breaker is open, and its answer counts for
        the breaker: a health check can close it. Never raises for a backend failure; the
        report carries a redacted ``error``.
        """
        engine = self._engine
        return await check_health(
            engine.guard, engine.stats, self._keys.namespace, self._keys.version, degraded_after_ms
        )


_BACKEND_METHODS: Final = ("get", "get_many", "set", "set_many", "add", "delete", "incr", "scan")


def _check_backend(backend: object) -> None:
    """Raises TypeError unless ``backend`` looks like a `Backend` (a URL or a name does not)."""
    if isinstance(backend, str | bytes):
        # Never echo it: a URL may hold a password.
        raise TypeError(
            f"backend must be a Backend object, not a {type(backend).__name__}: for a URL use "
            "Cache(RedisBackend.from_url(url)) (from cachetier.backends), or "
            "Cache.from_settings() to read REDIS_URL and CACHE_BACKEND"
        )
    missing = [name for name in _BACKEND_METHODS if not callable(getattr(backend, name, None))]
    if missing:
        raise TypeError(
            f"backend must be a Backend object (RedisBackend, MemoryBackend, NullBackend or "
            f"your own); a {type(backend).__name__} has no {', '.join(missing)}"
        )


def _signer(key: bytes | str | SecretStr | None) -> EntrySigner | None:
    if key is None:
        return None
    if isinstance(key, SecretStr):
        key = key.get_secret_value()
    return EntrySigner(key.encode() if isinstance(key, str) else bytes(key))
