"""`_KeyPlan`: how a call becomes its key, worked out once per function.

The one compiler of the call-key rule (see `cachetier._keys`): `Cache.cached` keys every
decorated call through a plan, and `KeyBuilder.call_key` builds and caches one per function, so
the two cannot drift apart. Also ``key=`` and ``tags=`` templates over a call's arguments.
"""

from __future__ import annotations

import functools
import inspect
import string
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Final, Protocol, final

from ._parts import ADDRESS, encode_argument, escape_part, function_name


class Keys(Protocol):
    """What a plan needs of the `KeyBuilder` whose keys it builds."""

    @property
    def prefix(self) -> str: ...

    @property
    def max_length(self) -> int: ...

    def fit(self, key: str) -> str: ...

    def full(self, key: str) -> str: ...

    def __hash__(self) -> int: ...


__all__ = ("Keys", "_KeyPlan", "plan_for")

_REQUIRED: Final = inspect.Parameter.empty


class _TemplateFormatter(string.Formatter):
    """Formats ``tags=`` templates over a call's arguments, refusing address-bearing text.

    A tag is escaped as a whole when its key is built, so values stay as they are.
    """

    what = "tag"

    def format_field(self, value: Any, format_spec: str) -> str:
        text = format(value, format_spec)
        if ADDRESS.search(text):
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
        "_head",
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
        keys: Keys,
        *,
        key: str | None,
        key_prefix: str | None,
        exclude: Collection[str],
        head: str | None = None,
    ) -> None:
        """Compiles the rule for ``func``'s calls under ``keys``.

        The relative key is ``key`` formatted over the arguments, or else ``key_prefix``,
        ``module.qualname``, ``:`` and the ``name=value`` parts joined by ``:``; ``head``, when
        given, replaces everything before the parts (`KeyBuilder.call_key`'s ``prefix``).

        Raises:
            TypeError: ``exclude`` or ``key`` names a parameter ``func`` does not have.
        """
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
            missing = _template_names(key) - set(signature.parameters)
            if missing:
                raise TypeError(
                    f"key template {key!r} names no parameter of {function_name(func)}: {sorted(missing)}"
                )
        # The relative key of a call when no argument enters it, and what precedes the parts.
        self._prefix = (key_prefix or "") + function_name(func) if head is None else head
        self._head = self._prefix + ":" if head is None else head
        self._stored_prefix = keys.prefix + self._head
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
        return self._head + ":".join(
            [name + _encode_part(values[i]) for i, name in self._key_slots]
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


@functools.lru_cache(maxsize=256)
def _cached_plan(
    func: Callable[..., object], keys: Keys, exclude: frozenset[str], head: str | None
) -> _KeyPlan:
    return _KeyPlan(func, keys, key=None, key_prefix=None, exclude=exclude, head=head)


def plan_for(
    func: Callable[..., object],
    keys: Keys,
    *,
    exclude: Collection[str] = (),
    head: str | None = None,
) -> _KeyPlan:
    """Returns the plan of ``func``'s calls under ``keys``, compiled once for the last 256 asked.

    A function that cannot be a dictionary key (an unhashable callable object) gets a new plan.
    """
    try:
        return _cached_plan(func, keys, frozenset(exclude), head)
    except TypeError:
        # Unhashable ``func``; a TypeError from compiling is raised again here.
        return _KeyPlan(func, keys, key=None, key_prefix=None, exclude=exclude, head=head)
