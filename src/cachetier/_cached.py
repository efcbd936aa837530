"""`CachedFunction[P, R]`, the object `Cache.cached` returns, and how it keys each call."""

from __future__ import annotations

import functools
import inspect
import string
import typing
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
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

from ._core.engine import Engine
from ._core.spec import FetchSpec
from ._core.stats import CacheStats, StatsRecorder
from ._errors import SerializationError
from ._keys import _ADDRESS, KeyBuilder, encode_argument, escape_part, function_name
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


_REQUIRED: Final = inspect.Parameter.empty
_UNBOUND: Final = object()


class _TemplateFormatter(string.Formatter):
    """Formats ``tags=`` templates over a call's arguments, refusing address-bearing text.

    A tag is escaped as a whole when its key is built, so values stay as they are.
    """

    what = "tag"

    def format_field(self, value: Any, format_spec: str) -> str:
        text = format(value, format_spec)
        if _ADDRESS.search(text):
            raise TypeError(
                f"cannot build a cache {self.what} from a {type(value).__qualname__} value: its "
                f"text {text!r} holds a memory address, so every call would get a new one"
            )
        return text


class _EscapingFormatter(_TemplateFormatter):
    """Formats ``key=`` templates, escaping each substituted value as a key part."""

    what = "key"

    def format_field(self, value: Any, format_spec: str) -> str:
        return escape_part(super().format_field(value, format_spec))


_FORMATTER: Final = _EscapingFormatter()
_TAG_FORMATTER: Final = _TemplateFormatter()


def _template_names(template: str) -> set[str]:
    """Returns the argument names a ``str.format`` template refers to."""
    return {
        field.split(".")[0].split("[")[0]
        for _, field, _, _ in string.Formatter().parse(template)
        if field
    }


def _encode_part(value: Any) -> str:
    """Returns the escaped, typed text of one argument; the common builtins take a short cut.

    The short cuts give exactly what ``escape_part(encode_argument(value))`` gives.
    """
    kind = type(value)
    if kind is int:
        return str(value)  # digits and "-": nothing to escape
    if kind is str and value.isascii() and value.isalnum():
        return f'"{value}"'  # what json.dumps makes of it, with nothing to escape
    return escape_part(encode_argument(value))


@final
class _KeyPlan:
    """What can be worked out once per function about turning a call into its key."""

    __slots__ = (
        "_constant",
        "_count",
        "_defaults",
        "_exclude",
        "_fast",
        "_index",
        "_key_slots",
        "_keys",
        "_max_length",
        "_positional",
        "_prefix",
        "_receiver",
        "_required",
        "_signature",
        "_single",
        "_stored_prefix",
        "_template",
    )

    def __init__(
        self,
        func: Callable[..., object],
        keys: KeyBuilder,
        *,
        key: str | None,
        key_prefix: str | None,
        exclude: Collection[str],
    ) -> None:
        signature = inspect.signature(func)
        params = list(signature.parameters.values())
        unknown = set(exclude) - set(signature.parameters)
        if unknown:
            raise TypeError(
                f"exclude names no parameter of {function_name(func)}: {sorted(unknown)}"
            )
        exclude = set(exclude)
        # A method's ``self`` is keyed like any argument, so two instances never share a result
        # (dogpile.cache #213); its class must say what identifies an instance. ``cls`` needs no
        # hook: a class encodes as its qualified name.
        self._receiver: str | None = None
        if (
            key is None
            and params
            and params[0].name == "self"
            and params[0].name not in exclude
            and params[0].kind <= inspect.Parameter.POSITIONAL_OR_KEYWORD
        ):
            self._receiver = function_name(func)
        self._signature = signature
        self._keys = keys
        self._exclude = frozenset(exclude)
        self._template = key
        if key is not None:
            names = {
                field.split(".")[0].split("[")[0]
                for _, field, _, _ in string.Formatter().parse(key)
                if field
            }
            missing = names - set(signature.parameters)
            if missing:
                raise TypeError(
                    f"key template {key!r} names no parameter of {function_name(func)}: {sorted(missing)}"
                )
        self._prefix = (key_prefix or "") + function_name(func)
        self._stored_prefix = keys.prefix + self._prefix + ":"
        # The fast path binds by index; functions with *args or **kwargs take signature.bind.
        self._fast = all(
            p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
            for p in params
        )
        self._count = len(params)
        self._positional = sum(p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for p in params)
        self._index = {p.name: i for i, p in enumerate(params)}
        self._defaults = [p.default for p in params]
        self._required = tuple(i for i, p in enumerate(params) if p.default is _REQUIRED)
        self._key_slots = tuple(
            (i, escape_part(p.name) + "=")
            for i, p in enumerate(params)
            if p.name not in self._exclude
        )
        self._constant = self._prefix if key is None and not self._key_slots else None
        # The commonest call of all: every argument by position, one of them in the key.
        self._single: tuple[int, str] | None = None
        if (
            key is None
            and self._fast
            and self._positional == self._count
            and len(self._key_slots) == 1
        ):
            index, name = self._key_slots[0]
            self._single = (index, self._stored_prefix + name)
        self._max_length = keys.max_length

    def relative(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
        """Returns the relative key of a call (what `Cache.delete` takes)."""
        if self._constant is not None and not args and not kwargs:
            return self._constant
        values = self._bind(args, kwargs)
        if self._receiver is not None:
            self._check_receiver(values[0])
        if self._template is not None:
            arguments = dict(zip(self._signature.parameters, values, strict=True))
            return _FORMATTER.vformat(self._template, (), arguments)
        if not self._key_slots:
            return self._prefix
        return (
            self._prefix
            + ":"
            + ":".join([name + _encode_part(values[i]) for i, name in self._key_slots])
        )

    def tag_rule(
        self, tags: tuple[str, ...]
    ) -> Callable[[tuple[Any, ...], Mapping[str, Any]], tuple[str, ...]] | None:
        """Returns what gives the tags of a call: constant tags, or templates over arguments.

        Raises:
            TypeError: a template names a parameter the function does not have.
        """
        if not tags:
            return None
        templated = [tag for tag in tags if _template_names(tag)]
        for tag in templated:
            missing = _template_names(tag) - set(self._signature.parameters)
            if missing:
                raise TypeError(f"tag template {tag!r} names no parameter: {sorted(missing)}")
        if not templated:
            return lambda _args, _kwargs: tags

        def resolve(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> tuple[str, ...]:
            arguments = dict(zip(self._signature.parameters, self._bind(args, kwargs), strict=True))
            return tuple(_TAG_FORMATTER.vformat(tag, (), arguments) for tag in tags)

        return resolve

    def stored(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
        """Returns the stored key of a call: the hot path of every decorated call."""
        if self._receiver is not None and args:
            self._check_receiver(args[0])
        single = self._single
        if single is not None and not kwargs and len(args) == self._count:
            value = args[single[0]]
            key = single[1] + (str(value) if type(value) is int else _encode_part(value))
            return key if len(key) <= self._max_length else self._keys.fit(key)
        if self._template is not None or not self._key_slots:
            return self._keys.full(self.relative(args, kwargs))
        values = self._bind(args, kwargs)
        slots = self._key_slots
        if len(slots) == 1:  # the common one-argument function: no list, no join
            index, name = slots[0]
            return self._keys.fit(self._stored_prefix + name + _encode_part(values[index]))
        key = self._stored_prefix + ":".join([name + _encode_part(values[i]) for i, name in slots])
        return self._keys.fit(key)

    def _check_receiver(self, instance: object) -> None:
        """Raises TypeError unless ``instance``'s class keys its instances with ``__cache_key__``."""
        if getattr(type(instance), "__cache_key__", None) is None:
            kind = type(instance).__qualname__
            raise TypeError(
                f"cannot cache {self._receiver} per instance: {kind} has no __cache_key__() "
                f"method, so two {kind} instances would share one cached result; define "
                f"__cache_key__(self) -> str returning what identifies the instance, or pass "
                f'exclude=["self"] to cached() when the result does not depend on the instance'
            )

    def _bind(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Sequence[Any]:
        if self._fast:
            if not kwargs and len(args) == self._positional == self._count:
                return args  # every argument given by position: nothing to fill in
            if len(args) <= self._positional:
                values = list(self._defaults)
                values[: len(args)] = args
                ok = True
                for name, value in kwargs.items():
                    i = self._index.get(name)
                    if i is None or i < len(args):
                        ok = False
                        break
                    values[i] = value
                if ok and all(values[i] is not _REQUIRED for i in self._required):
                    return values
        # Slow path: also the one that raises the interpreter's own TypeError for a bad call.
        bound = self._signature.bind(*args, **kwargs)
        bound.apply_defaults()
        values = []
        for name, param in self._signature.parameters.items():
            value = bound.arguments[name]
            if param.kind is inspect.Parameter.VAR_KEYWORD:
                value = {k: v for k, v in value.items() if k not in self._exclude}
            values.append(value)
        return values


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
            return cast("R", value)
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
        value = await self._read_through(
            self._plan.stored(args, kwargs),
            self._func,
            args,
            kwargs,
            self._spec or self._make_spec(),
        )
        return cast("R", value)  # deserialization boundary: the codec validated it as R

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

    __slots__ = ("_expected", "_inner", "_loads")

    def __init__(self, inner: Serializer, expected: type | tuple[type, ...]) -> None:
        self._inner = inner
        self._expected = expected
        # Bound once: this runs on every hit of a decorated function.
        self._loads = inner.loads

    def dumps(self, value: object) -> bytes:
        return self._inner.dumps(value)

    def loads(self, data: bytes) -> object:
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
