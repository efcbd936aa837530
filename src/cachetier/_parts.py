"""Key parts: escaping, the text of one call argument, and the checks every key part passes.

Escaping. Inside a part, ``\\``, ``:`` and the glob characters ``*?[]`` are preceded by a
backslash. An unescaped ``:`` therefore always separates parts, which makes the map from
part sequences to keys injective, and an escaped part used inside a Redis glob matches only
itself, because Redis reads ``\\x`` in a pattern as a literal ``x``.

Arguments. Each value is encoded with its type: ``1``, ``1.0``, ``"1"`` and ``True`` give
different texts. Values whose only text is ``object.__repr__`` (a memory address) are refused,
since they would make every key unique. Keys holding a lone surrogate, which Redis cannot store
as UTF-8, are refused on every backend alike.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import inspect
import json
import re
import uuid
from collections.abc import Callable, Collection, Mapping
from decimal import Decimal
from typing import Any, Final

__all__ = (
    "ADDRESS",
    "DIGEST_LENGTH",
    "RESERVED",
    "check_key_collection",
    "check_text",
    "encode_argument",
    "escape_part",
    "function_name",
)

_PART_ESCAPES: Final = str.maketrans({c: "\\" + c for c in "\\:*?[]"})
DIGEST_LENGTH: Final = 32  # hex digits of a 16-byte BLAKE2b digest
ADDRESS: Final = re.compile(r"\bat 0x[0-9a-fA-F]+")
# Starts the relative part of every key cachetier keeps for itself; see the module docstring.
RESERVED: Final = "\\_"
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


def check_text(text: str, what: str) -> None:
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
    if type(value).__repr__ is object.__repr__ or ADDRESS.search(text):
        raise TypeError(
            f"cannot build a cache key from a {type(value).__module__}.{_qualname(value)} argument: "
            "its text is a memory address, so every call would get a new key; exclude the "
            "argument by name, or give the class a __cache_key__() or a stable __repr__()"
        )
    return f"{_qualname(value)}<{text}>"
