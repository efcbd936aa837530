"""`CachedFunction[P, R]`, the object `Cache.cached` returns, and how it keys each call."""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import (
    Any,
    Concatenate,
    Final,
    Generic,
    ParamSpec,
    Protocol,
    TypeVar,
    cast,
    final,
    overload,
)

from typing_extensions import Self

from ._calls import _KeyPlan
from ._core.engine import Engine
from ._core.spec import FetchSpec
from ._core.stats import CacheStats, StatsRecorder
from ._errors import SerializationError
from ._keys import KeyBuilder, function_name
from ._log import LOGGER
from ._policy import FreshnessPolicy, StampedePolicy
from ._types import MISSING, Outcome
from .serializers import PickleSerializer, Serializer
from .serializers._typed import TypedSerializer

__all__ = ("CachedFunction",)

P = ParamSpec("P")
P2 = ParamSpec("P2")
R = TypeVar("R")
S = TypeVar("S")


class _Owner(Protocol):
    """What a `CachedFunction` needs of the `Cache` that made it."""

    @property
    def keys(self) -> KeyBuilder: ...

    @property
    def default_ttl(self) -> float | None: ...

    async def delete(self, *keys: str) -> int: ...


_UNBOUND: Final = object()


@final
class CachedFunction(Generic[P, R]):
    """An ``async def`` function whose results are cached; calling it awaits to ``R``.

    Made by `Cache.cached`. The call signature and return type are the function's own.
    ``invalidate``, ``refresh`` and ``key_for`` take the same arguments as the function.
    Accessed through an instance, it binds like a method, and ``self``/``cls`` never enter
    the key.
    """

    def __init__(
        self,
        cache: _Owner,
        func: Callable[P, Awaitable[R]],
        *,
        engine: Engine,
        ttl: float | None,
        key: str | None,
        key_prefix: str | None,
        exclude: Collection[str],
        tags: tuple[str, ...] = (),
        condition: Callable[[R], bool] | None,
        cache_none: bool,
        typed: bool,
        stampede: StampedePolicy,
        freshness: FreshnessPolicy,
    ) -> None:
        if not inspect.iscoroutinefunction(func):
            raise TypeError(
                f"cached decorates async def functions; {function_name(func)} is not one "
                "(wrap synchronous work in an async def, or use get_or_set)"
            )
        functools.update_wrapper(self, func)
        self.__wrapped__ = func
        self._cache = cache
        # The engine and key builder of a cache never change (`use` swaps the engine's backend),
        # so the hot path reaches them without going through the façade.
        self._engine = engine
        self._read_through = engine.through.through
        self._breaker = engine.guard.breaker
        self._strict = engine.guard.strict
        self._keys = cache.keys
        self._func = func
        self._ttl = ttl
        self._plan = _KeyPlan(func, cache.keys, key=key, key_prefix=key_prefix, exclude=exclude)
        self._typed = typed
        self._stampede = stampede
        self._freshness = freshness
        self._stats = StatsRecorder(function_name(func))
        self._should_store = _store_rule(condition, cache_none)
        self._tags = self._plan.tag_rule(tags)
        self._spec: FetchSpec | None = None
        # Set on the copies that __get__ makes: the instance a method was read through.
        self._bound: object = _UNBOUND

    def __repr__(self) -> str:
        return f"<CachedFunction {function_name(self._func)}>"

    @property
    def stats(self) -> CacheStats:
        """A snapshot of this function's own counters."""
        return self._stats.snapshot()

    @overload
    def __get__(self, instance: None, owner: type[Any]) -> Self: ...

    @overload
    def __get__(
        self: CachedFunction[Concatenate[S, P2], R], instance: S, owner: type[Any] | None = None
    ) -> CachedFunction[P2, R]: ...

    def __get__(self, instance: object, owner: type[Any] | None = None) -> Any:
        if instance is None or self._bound is not _UNBOUND:
            return self
        bound = object.__new__(CachedFunction)
        bound.__dict__.update(self.__dict__)
        bound._bound = instance
        return bound

    async def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Returns the cached result of the call, computing and storing it on a miss."""
        if self._bound is not _UNBOUND:
            args = (self._bound, *args)  # type: ignore[assignment]  # P of the bound method excludes self
        local = self._engine.local
        if local is not None:
            # A local hit costs no coroutine of the engine's: one dict lookup.
            full = self._plan.stored(args, kwargs)
            spec = self._spec or self._make_spec()
            value = local.get(full, spec.codec, self._stats)
            if value is MISSING:
                value = await self._read_through(full, self._func, args, kwargs, spec)
            # Not typing.cast: a call on every hit. The codec validated the value as R.
            return value  # type: ignore[no-any-return]
        breaker = self._breaker
        if breaker.open_until and not self._strict and breaker.blocked():
            # The backend is known to be down: skip even the key, and call the function as if
            # there were no cache; an outage then costs about a microsecond a call.
            reporter = self._engine.reporter
            reporter.count(
                Outcome.BACKEND_ERROR,
                self._plan.stored(args, kwargs) if reporter.hooks else "",
                self._stats,
            )
            return await self._func(*args, **kwargs)
        # The codec validated the value as R (no typing.cast: it would be a call on every hit).
        return await self._read_through(  # type: ignore[no-any-return]
            self._plan.stored(args, kwargs),
            self._func,
            args,
            kwargs,
            self._spec or self._make_spec(),
        )

    def key_for(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """Returns the key (relative, as `Cache.delete` takes it) that this call is cached under."""
        return self._relative(args, kwargs)

    async def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> bool:
        """Removes the cached result of this call; returns whether there was one."""
        return bool(await self._cache.delete(self._relative(args, kwargs)))

    async def refresh(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Computes the call now, stores the result whatever is cached, and returns it."""
        if self._bound is not _UNBOUND:
            args = (self._bound, *args)  # type: ignore[assignment]  # as in __call__
        spec = self._spec or self._make_spec()
        value = await self._engine.through.compute(
            self._plan.stored(args, kwargs),
            functools.partial(self._func, *args, **kwargs),
            spec,
            tags=spec.tags_of(args, kwargs),
            force=True,
        )
        self._stats.refreshes += 1
        return cast("R", value)

    def _relative(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
        if self._bound is not _UNBOUND:
            args = (self._bound, *args)
        return self._plan.relative(args, kwargs)

    def _make_spec(self) -> FetchSpec:
        """Builds, on first call, how this function's calls read through the cache."""
        spec = self._spec = FetchSpec(
            ttl=self._ttl if self._ttl is not None else self._cache.default_ttl,
            codec=self._make_codec(),
            stampede=self._stampede,
            freshness=self._freshness,
            stats=self._stats,
            should_store=self._should_store,
            tags=self._tags,
        )
        return spec

    def _make_codec(self) -> Serializer:
        """Returns the serializer that rebuilds ``R`` from the return annotation."""
        serializer = self._engine.serializer
        if not self._typed or isinstance(serializer, PickleSerializer):
            return serializer
        annotation = _return_annotation(self._func)
        if annotation is None:
            return serializer
        plain = _plain_json_type(annotation)
        if plain is not None:
            # What JSON decodes to already is this type: check it, skip pydantic's validation.
            return _CheckedSerializer(serializer, plain)
        typed: TypedSerializer[Any] = TypedSerializer(annotation, inner=serializer)
        try:
            _ = typed.adapter
        except Exception as exc:  # noqa: BLE001  # pydantic raises several types for unsupported annotations
            LOGGER.warning(
                "caching %s untyped: its return annotation %r is not one pydantic can validate (%s)",
                function_name(self._func),
                annotation,
                exc,
            )
            return serializer
        return typed


_ANY_VALUE: Final = (Any, object)


def _plain_json_type(annotation: Any) -> type | tuple[type, ...] | None:
    """Returns the Python type(s) JSON gives for ``annotation`` when no validation can add more.

    ``dict[str, Any]`` decodes to a ``dict`` whose values need no checking, and so on; a
    parametrized type with anything narrower than ``Any`` (``list[int]``) returns ``None``.
    """
    origin = typing.get_origin(annotation) or annotation
    arguments = typing.get_args(annotation)
    if arguments and not all(
        arg in _ANY_VALUE or (origin is dict and arg is str) for arg in arguments
    ):
        return None
    if origin is dict:
        return dict
    if origin is list:
        return list
    if origin is float:
        return (float, int)
    if origin in (str, int, bool):
        return cast("type", origin)
    return None


@final
class _CheckedSerializer:
    """Decodes with ``inner`` and refuses a value whose top-level type is not the declared one."""

    __slots__ = ("_decode", "_expected", "_inner", "_loads")

    def __init__(self, inner: Serializer, expected: type | tuple[type, ...]) -> None:
        self._inner = inner
        self._expected = expected
        # Bound once: this runs on every hit of a decorated function. Over orjson, orjson's
        # own function (one frame less a hit); what it refuses goes to ``inner``, which decides.
        self._loads = inner.loads
        self._decode: Callable[[bytes], object] = getattr(inner, "fast_loads", None) or self._loads

    def dumps(self, value: object) -> bytes:
        return self._inner.dumps(value)

    def loads(self, data: bytes) -> object:
        try:
            value = self._decode(data)
        except ValueError:
            if self._decode is self._loads:
                raise
            value = self._loads(data)
        if not isinstance(value, self._expected) or (
            isinstance(value, bool) and self._expected is int
        ):
            raise SerializationError(
                f"stored value is a {type(value).__name__}, not the declared {self._expected}"
            )
        return value


def _return_annotation(func: Callable[..., object]) -> Any:
    """Returns the declared return type, or ``None`` when there is none worth validating."""
    try:
        hints = typing.get_type_hints(func)
    except Exception:  # noqa: BLE001  # unresolvable forward references: cache untyped, not crash
        return None
    annotation = hints.get("return", inspect.Signature.empty)
    if annotation is inspect.Signature.empty or annotation is Any:
        return None
    return annotation


def _store_rule(
    condition: Callable[[Any], bool] | None, cache_none: bool
) -> Callable[[Any], bool] | None:
    if condition is None:
        return None if cache_none else _is_not_none
    if cache_none:
        return condition
    return lambda value: value is not None and condition(value)


def _is_not_none(value: object) -> bool:
    return value is not None
