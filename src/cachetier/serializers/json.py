"""`JsonSerializer`, the default: orjson when installed, the standard library otherwise.

Both paths encode the same types the same way: pydantic models through ``model_dump(mode="json")``,
dataclasses as objects, ``datetime``/``date``/``time`` in ISO 8601, ``UUID`` and ``Decimal`` as
strings, enums by value, sets and tuples as arrays. Decoding gives plain JSON types; the typed
decode of `Cache.cached` rebuilds the original types from the return annotation.

NaN and the infinities round-trip exactly, written as the ``NaN``, ``Infinity`` and ``-Infinity``
tokens that Python's ``json`` and pydantic read (strict JSON has no spelling for them, and orjson
would silently write ``null``). Values nested deeper than the parser allows raise
`SerializationError`, on write and on read, never ``RecursionError``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json as _stdlib_json
import math
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any, Final

from .._errors import SerializationError

try:
    import orjson as _orjson
except ImportError:  # pragma: no cover - exercised in the no-extras CI job
    _orjson = None  # type: ignore[assignment]  # optional dependency absent

__all__ = ("JsonSerializer",)

_ORJSON_OPTIONS: Final = 0 if _orjson is None else _orjson.OPT_NON_STR_KEYS


def _default(value: object) -> Any:
    """Encodes the types JSON lacks; raises TypeError for anything else, as json expects."""
    model_dump = getattr(value, "model_dump", None)
    if model_dump is not None and callable(model_dump):
        return model_dump(mode="json")
    if isinstance(value, Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, set | frozenset):
        return list(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


def _type_name(value: object) -> str:
    return f"{type(value).__module__}.{type(value).__qualname__}"


def _has_non_finite(value: object) -> bool:
    """Tells whether ``value`` holds a NaN or infinite float in a JSON container or object.

    Called only when an encoding holds ``null``, which is where a non-finite float may have
    been written by a library that cannot spell it; the walk costs nothing on other writes.
    Raises ``RecursionError`` for values too deep to walk, as the encoders do.
    """
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_non_finite(item) for item in value.values())
    if isinstance(value, list | tuple | set | frozenset):
        return any(_has_non_finite(item) for item in value)
    kind = type(value)
    # Pydantic models: __pydantic_fields__ from 2.10, model_fields before it.
    fields = getattr(kind, "__pydantic_fields__", None) or getattr(kind, "model_fields", None)
    if isinstance(fields, dict):
        return any(_has_non_finite(getattr(value, name, None)) for name in fields)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return any(_has_non_finite(getattr(value, f.name)) for f in dataclasses.fields(value))
    return False


def _stdlib_dumps(value: object) -> bytes:
    return _stdlib_json.dumps(
        value, default=_default, separators=(",", ":"), ensure_ascii=False, allow_nan=True
    ).encode()


class JsonSerializer:
    """Encodes values as compact UTF-8 JSON; uses orjson when it is installed."""

    __slots__ = ("_use_orjson",)

    def __init__(self, *, use_orjson: bool | None = None) -> None:
        """Args:
        use_orjson: force orjson on or off; by default it is used when importable.
        """
        if use_orjson and _orjson is None:
            raise ImportError('orjson is not installed: pip install "cachetier[orjson]"')
        self._use_orjson = _orjson is not None if use_orjson is None else use_orjson

    def __repr__(self) -> str:
        return f"JsonSerializer(use_orjson={self._use_orjson})"

    @property
    def fast_loads(self) -> Callable[[bytes], object] | None:
        """``orjson.loads`` when this serializer decodes with it, else ``None``.

        For a caller on a hot path, which saves the frame of `loads`; it must hand whatever
        ``fast_loads`` refuses (a ``ValueError``) to `loads`, which decides (the ``NaN``
        tokens, the `SerializationError` to raise). ``None`` for a subclass with a `loads` of
        its own.
        """
        if not self._use_orjson or type(self).loads is not JsonSerializer.loads:
            return None
        return _orjson.loads

    def dumps(self, value: object) -> bytes:
        """Returns ``value`` as UTF-8 JSON bytes."""
        try:
            if self._use_orjson:
                data: bytes = _orjson.dumps(value, default=_default, option=_ORJSON_OPTIONS)
                # orjson writes NaN and the infinities as null; the standard library spells them.
                if b"null" in data and _has_non_finite(value):
                    return _stdlib_dumps(value)
                return data
            return _stdlib_dumps(value)
        except (TypeError, ValueError, RecursionError) as exc:
            raise SerializationError(
                f"cannot serialize a value of type {_type_name(value)} as JSON: {exc}"
            ) from exc

    def loads(self, data: bytes) -> object:
        """Returns the value the JSON bytes hold."""
        try:
            if self._use_orjson:
                try:
                    return _orjson.loads(data)
                except ValueError:
                    # orjson refuses the NaN and Infinity tokens that dumps writes for
                    # non-finite floats; only then is the slower parser worth a second pass.
                    if b"NaN" not in data and b"Infinity" not in data:
                        raise
            return _stdlib_json.loads(data)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise SerializationError(f"stored bytes are not valid JSON: {exc}") from exc
