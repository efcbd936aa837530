"""`KeyBuilder`: ``namespace:version:part:part`` keys, escaping, hashing, and keys of calls.

Escaping. Inside a part, ``\\``, ``:`` and the glob characters ``*?[]`` are preceded by a
backslash. An unescaped ``:`` therefore always separates parts, which makes the map from
part sequences to keys injective, and an escaped part used inside a Redis glob matches only
itself, because Redis reads ``\\x`` in a pattern as a literal ``x``.

Shortening. A key longer than ``max_length`` keeps its first characters (never fewer than
the namespace and version prefix) and ends in ``#`` plus a 32-hex-digit BLAKE2b digest of the
whole key, so it stays unique, stable across processes, and reachable by prefix patterns.

Reserved keys. The generation counter, tag stamps, locks and wake-up channels live under the
prefix too (an ACL limited to ``namespace:*`` reaches them), after a ``\\_`` that escaping never
produces (it puts a backslash only before ``\\:*?[]``). A relative key given to a `Cache` method
is written as is, so `KeyBuilder.full` refuses one that starts with it: no user key can clobber
cachetier's own. Keys holding a lone surrogate, which Redis cannot store as UTF-8, are refused
on every backend alike.

Call keys. Arguments are bound to the signature with defaults applied, so keyword order and
positional versus keyword passing do not matter, and each value is encoded with its type:
``1``, ``1.0``, ``"1"`` and ``True`` give different keys. Values whose only text is
``object.__repr__`` (a memory address) are refused, since they would make every key unique.
`encode_argument` is the text of one value; `cachetier._calls` compiles the rule for a whole
call, once per function, for both `Cache.cached` and `KeyBuilder.call_key`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import hashlib
import inspect
import json
import re
import uuid
from collections.abc import Callable, Collection, Mapping
from decimal import Decimal
from typing import Any, Final, final

from ._errors import ConfigurationError
from ._glob import glob_escape

__all__ = (
    "KeyBuilder",
    "check_key_collection",
    "encode_argument",
    "escape_part",
    "function_name",
)

_PART_ESCAPES: Final = str.maketrans({c: "\\" + c for c in "\\:*?[]"})
_DIGEST_LENGTH: Final = 32  # hex digits of a 16-byte BLAKE2b digest
_ADDRESS: Final = re.compile(r"\bat 0x[0-9a-fA-F]+")
# Starts the relative part of every key cachetier keeps for itself; see the module docstring.
_RESERVED: Final = "\\_"
_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def _surrogate_escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def check_key_collection(keys: object, *, argument: str = "keys") -> None:
    """Raises TypeError when ``keys``, which should hold several keys, is one ``str`` or ``bytes``.

    A string is an iterable of its characters, so ``get_many("abc")`` would read ``"a"``,
    ``"b"`` and ``"c"``.
    """
    if isinstance(keys, str | bytes):
        raise TypeError(
            f"{argument} must be a collection of keys, not a single {type(keys).__name__} "
            f"({keys!r}); pass [{keys!r}]"
        )


def _check_text(text: str, what: str) -> None:
    """Raises ValueError when ``text`` holds a lone surrogate, which UTF-8 cannot encode."""
    if not text.isascii() and _SURROGATE.search(text):
        raise ValueError(
            f"{what} {text!r} holds a lone surrogate, which cannot be encoded as UTF-8; "
            "keys must be valid Unicode text"
        )


def escape_part(part: str) -> str:
    """Returns ``part`` with ``\\``, ``:`` and ``*?[]`` escaped by a backslash."""
    return part.translate(_PART_ESCAPES)


def function_name(func: Callable[..., object]) -> str:
    """Returns ``module.qualname`` of ``func``, the stable identity of its calls."""
    func = inspect.unwrap(func)
    module = getattr(func, "__module__", None) or "?"
    qualname = getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or "?"
    return f"{module}.{qualname}"


def _qualname(value: object) -> str:
    return type(value).__qualname__


# What ``json.dumps(value, ensure_ascii=False)`` gives a str, without building an encoder a call.
_JSON_TEXT: Final = json.JSONEncoder(ensure_ascii=False).encode


def _encode_str(value: str) -> str:
    text = _JSON_TEXT(value)
    if text.isascii():
        return text
    # A lone surrogate is written as JSON's \\uXXXX escape (as ensure_ascii would), which
    # UTF-8 can carry; other characters stay as they are, so existing keys do not change.
    return _SURROGATE.sub(_surrogate_escape, text)


def _encode_bytes(value: bytes | bytearray | memoryview) -> str:
    return f"bytes:{bytes(value).hex()}"


def _encode_sequence(open_: str, items: Collection[Any], close: str) -> str:
    return open_ + ",".join(encode_argument(item) for item in items) + close


def _encode_tuple(value: tuple[Any, ...]) -> str:
    return _encode_sequence("(", value, ")")


def _encode_list(value: list[Any]) -> str:
    return _encode_sequence("[", value, "]")


def _encode_set(value: set[Any] | frozenset[Any]) -> str:
    return "set{" + ",".join(sorted(encode_argument(item) for item in value)) + "}"


def _encode_mapping(value: Mapping[Any, Any]) -> str:
    items = sorted(f"{encode_argument(k)}:{encode_argument(v)}" for k, v in value.items())
    return "{" + ",".join(items) + "}"


def _encode_moment(value: dt.datetime | dt.date | dt.time) -> str:
    return f"{_qualname(value)}({value.isoformat()})"


def _encode_timedelta(value: dt.timedelta) -> str:
    return f"timedelta({value.total_seconds()!r})"


def _encode_decimal(value: Decimal) -> str:
    return f"Decimal({value})"


# Exact types whose text needs no other check: builtin and C types, which can be given no
# ``__cache_key__``; every other type (subclasses among them) takes `_encode_other`.
_ENCODERS: Final[Mapping[type, Callable[[Any], str]]] = {
    bool: str,  # "True", "False"
    int: str,
    str: _encode_str,
    float: repr,  # always has ".", "e", "inf" or "nan", so never equal to an int's text
    bytes: _encode_bytes,
    bytearray: _encode_bytes,
    memoryview: _encode_bytes,
    tuple: _encode_tuple,
    list: _encode_list,
    set: _encode_set,
    frozenset: _encode_set,
    dict: _encode_mapping,
    dt.datetime: _encode_moment,
    dt.date: _encode_moment,
    dt.time: _encode_moment,
    dt.timedelta: _encode_timedelta,
    Decimal: _encode_decimal,
}


def encode_argument(value: object) -> str:
    """Returns a canonical text for ``value`` that includes its type.

    Equal values of the same type give equal texts in every process; values of different
    types give different texts. Objects may define ``__cache_key__(self) -> str`` to choose
    their own text.

    Raises:
        TypeError: the value's only text is a memory address (``object.__repr__``).
    """
    if value is None:  # the commonest default, before any lookup
        return "None"
    encoder = _ENCODERS.get(type(value))
    return encoder(value) if encoder is not None else _encode_other(value)


def _encode_other(value: object) -> str:
    """`encode_argument` of any type but those `_ENCODERS` hold exactly."""
    # Order matters: IntEnum is an int and an Enum, StrEnum is a str, and a class's own
    # __cache_key__ wins over everything.
    custom = getattr(type(value), "__cache_key__", None)
    if custom is not None:
        return f"{_qualname(value)}<{custom(value)}>"
    if isinstance(value, enum.Enum):
        return f"{_qualname(value)}.{value.name}"
    if isinstance(value, bytes | bytearray | memoryview):
        return _encode_bytes(value)
    if isinstance(value, tuple | list):
        opener, closer = ("(", ")") if isinstance(value, tuple) else ("[", "]")
        return _encode_sequence(f"{_qualname(value)}{opener}", value, closer)
    if isinstance(value, set | frozenset):
        return _encode_set(value)
    if isinstance(value, Mapping):
        return _encode_mapping(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return _encode_moment(value)
    if isinstance(value, dt.timedelta):
        return _encode_timedelta(value)
    if isinstance(value, uuid.UUID):
        return f"UUID({value.hex})"
    if isinstance(value, Decimal):
        return _encode_decimal(value)
    if isinstance(value, int | str | float):
        # Subclasses of the builtins: tag with the subclass so they differ from the builtin.
        base = int if isinstance(value, int) else str if isinstance(value, str) else float
        return f"{_qualname(value)}<{encode_argument(base(value))}>"
    return _encode_object(value)


def _encode_object(value: object) -> str:
    """Returns the text of a pydantic model, a dataclass, a class or an object with a repr."""
    model_dump_json = getattr(value, "model_dump_json", None)
    if callable(model_dump_json):
        return f"{_qualname(value)}{model_dump_json()}"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = ",".join(
            f"{f.name}={encode_argument(getattr(value, f.name))}" for f in dataclasses.fields(value)
        )
        return f"{_qualname(value)}({fields})"
    if isinstance(value, type):
        return f"type:{value.__module__}.{value.__qualname__}"
    text = repr(value)
    if type(value).__repr__ is object.__repr__ or _ADDRESS.search(text):
        raise TypeError(
            f"cannot build a cache key from a {type(value).__module__}.{_qualname(value)} argument: "
            "its text is a memory address, so every call would get a new key; exclude the "
            "argument by name, or give the class a __cache_key__() or a stable __repr__()"
        )
    return f"{_qualname(value)}<{text}>"


@final
class KeyBuilder:
    """Builds keys of the form ``namespace:version:part:part...``.

    Keys handed to `Cache` methods are relative: the builder prepends the escaped namespace and
    version, leaves the relative key as written (so ``"tasks:pending:*"`` patterns reach
    ``"tasks:pending:10"``), and shortens the result past ``max_length`` characters.
    """

    __slots__ = ("_max_length", "_namespace", "_prefix", "_version")

    def __init__(
        self, namespace: str = "cache", version: str | int = "v1", *, max_length: int = 200
    ) -> None:
        """Args:
        namespace: the application's name for its keys; non-empty, no whitespace.
        version: a schema version; changing it leaves old entries unreachable.
        max_length: longest key kept as written, at least 64 characters.
        """
        if not isinstance(namespace, str) or not namespace or any(c.isspace() for c in namespace):
            raise ConfigurationError(
                f"namespace must be a non-empty string without whitespace, got {namespace!r}"
            )
        if isinstance(version, bool) or not isinstance(version, str | int) or str(version) == "":
            raise ConfigurationError(
                f"version must be a non-empty string or an int, got {version!r}"
            )
        self._namespace = namespace
        self._version = str(version)
        self._prefix = f"{escape_part(namespace)}:{escape_part(self._version)}:"
        if max_length < max(64, len(self._prefix) + _DIGEST_LENGTH + 8):
            raise ConfigurationError(
                f"max_length must be at least 64 and leave room for the prefix and a digest, got {max_length}"
            )
        self._max_length = max_length

    def __repr__(self) -> str:
        return f"KeyBuilder(namespace={self._namespace!r}, version={self._version!r}, max_length={self._max_length})"

    @property
    def namespace(self) -> str:
        """The namespace, as given."""
        return self._namespace

    @property
    def version(self) -> str:
        """The version, as text."""
        return self._version

    @property
    def max_length(self) -> int:
        """Keys longer than this are shortened with a digest."""
        return self._max_length

    @property
    def prefix(self) -> str:
        """``namespace:version:`` with both parts escaped; every key starts with it."""
        return self._prefix

    def key(self, *parts: str | int) -> str:
        """Returns ``namespace:version:part:...`` with every part escaped and the whole shortened.

        Raises:
            TypeError: a part is not a ``str`` or an ``int``.
            ValueError: a part holds a lone surrogate.
        """
        texts: list[str] = []
        for part in parts:
            if isinstance(part, str):
                _check_text(part, "key part")
                texts.append(escape_part(part))
            elif isinstance(part, int) and not isinstance(part, bool):
                texts.append(str(part))
            else:
                raise TypeError(f"key parts must be str or int, not {type(part).__name__}")
        return self._shorten(self._prefix + ":".join(texts))

    def relative(self, *parts: str | int) -> str:
        """Returns the escaped parts joined by ``:`` without the prefix, for `Cache` methods."""
        return self.key(*parts)[len(self._prefix) :] if parts else ""

    def full(self, key: str) -> str:
        """Returns the stored key for a relative ``key`` given to a `Cache` method.

        Raises:
            TypeError: ``key`` is not a ``str``.
            ValueError: ``key`` starts with the reserved ``\\_`` or holds a lone surrogate.
        """
        if type(key) is not str:
            if not isinstance(key, str):
                raise TypeError(f"cache keys must be str, not {type(key).__name__}")
            key = str(key)
        if key.startswith(_RESERVED):
            raise ValueError(
                f"cache key {key!r} starts with {_RESERVED!r}, which is reserved for the keys "
                "cachetier keeps for itself (generation, tags, locks)"
            )
        _check_text(key, "cache key")
        full = self._prefix + key
        return full if len(full) <= self._max_length else self._shorten(full)

    def literal(self, *parts: str | int) -> str:
        """Returns a relative glob that matches exactly the relative key of ``parts``.

        Use it to put untrusted text into a pattern: ``cache.delete_pattern(
        cache.keys.literal("tasks", user) + ":*")`` can never reach another user's keys.
        """
        return glob_escape(self.relative(*parts))

    def fit(self, key: str) -> str:
        """Returns a stored ``key`` as is, or shortened with its digest when over ``max_length``."""
        return key if len(key) <= self._max_length else self._shorten(key)

    def lock_key(self, stored_key: str) -> str:
        """Returns the key of the lock that guards computing ``stored_key`` (as `full` made it).

        It stays inside this namespace and version, so an ACL user limited to them can lock.
        """
        return self._prefix + _RESERVED + "lock:" + stored_key[len(self._prefix) :]

    def ready_channel(self, stored_key: str) -> str:
        """Returns the pub/sub channel that announces a value for ``stored_key`` has landed."""
        return self._prefix + _RESERVED + "ready:" + stored_key[len(self._prefix) :]

    def tag_key(self, tag: str) -> str:
        """Returns the key holding the stamp of ``tag`` (an escaped part)."""
        if not isinstance(tag, str):
            raise TypeError(f"tags must be str, not {type(tag).__name__}")
        _check_text(tag, "tag")
        return self.fit(self._prefix + _RESERVED + "tag:" + escape_part(tag))

    def generation_key(self) -> str:
        """Returns the key of the counter that `Cache.bump_version` increments."""
        return self._prefix + _RESERVED + "generation"

    def pattern(self, glob: str) -> str:
        """Returns the Redis glob that matches relative ``glob`` within this namespace and version.

        Raises:
            TypeError: ``glob`` is not a ``str``.
        """
        if not isinstance(glob, str):
            raise TypeError(f"patterns must be str, not {type(glob).__name__}")
        _check_text(glob, "pattern")
        return glob_escape(self._prefix) + glob

    def call_key(
        self,
        func: Callable[..., object],
        args: tuple[object, ...],
        kwargs: Mapping[str, object],
        *,
        exclude: Collection[str] = (),
        prefix: str | None = None,
    ) -> str:
        """Returns the stored key of ``func(*args, **kwargs)``, as `Cache.cached` keys it.

        The relative key is ``prefix`` (default ``module.qualname:``) followed by
        ``name=value`` parts for every bound argument not in ``exclude``; a function with no
        such argument gets ``module.qualname`` (or ``prefix``) alone. The rule is compiled
        once per function, by the same code as the decorator's.

        Raises:
            TypeError: the arguments do not fit the signature, one has no stable text,
                ``exclude`` names no parameter, or a method's ``self`` has no
                ``__cache_key__``.
        """
        # Imported here: `cachetier._calls` builds on this module.
        from ._calls import plan_for

        plan = plan_for(func, self, exclude=exclude, head=prefix)
        return self.full(plan.relative(args, kwargs))

    def _shorten(self, key: str) -> str:
        if len(key) <= self._max_length:
            return key
        digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
        keep = self._max_length - _DIGEST_LENGTH - 1
        head = key[:keep]
        # A cut right after an escaping backslash would leave it escaping the "#".
        if (len(head) - len(head.rstrip("\\"))) % 2 == 1:
            head = head[:-1]
        return f"{head}#{digest}"
