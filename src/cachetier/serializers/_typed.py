"""`TypedSerializer`: values of one declared type, rebuilt on read with a pydantic `TypeAdapter`.

A decorated function's return annotation says what a hit must be: a pydantic model, a dataclass,
a ``datetime``, a ``list[UUID]``... Plain JSON would give back dicts and strings; this serializer
validates what it reads into the declared type, and anything that does not validate (an older
schema, a corrupt or foreign entry) raises `SerializationError`, which the cache turns into a miss.
"""

from __future__ import annotations

from typing import Any, Final, Generic, TypeVar, final

from pydantic import ConfigDict, PydanticUserError, TypeAdapter, ValidationError
from pydantic_core import PydanticSerializationError

from .._errors import SerializationError
from ._protocol import Serializer
from .json import JsonSerializer, _has_non_finite

__all__ = ("TypedSerializer",)

T = TypeVar("T")

_NON_FINITE_AS_CONSTANTS: Final = ConfigDict(ser_json_inf_nan="constants")


@final
class TypedSerializer(Generic[T]):
    """Serializes values of type ``T`` and validates reads back into ``T``.

    With the default JSON serializer, pydantic-core encodes and decodes JSON directly; with
    another ``inner`` serializer (msgpack...), values pass through their JSON-compatible Python
    form. The `TypeAdapter` is built on first use, so forward references in annotations resolve
    once the module that defines them has loaded.
    """

    __slots__ = ("_adapter", "_annotation", "_inner", "_json")

    def __init__(self, annotation: Any, inner: Serializer | None = None) -> None:
        self._annotation = annotation
        self._inner = inner
        self._json = inner is None or isinstance(inner, JsonSerializer)
        self._adapter: TypeAdapter[T] | None = None

    def __repr__(self) -> str:
        return f"TypedSerializer({self._annotation!r})"

    @property
    def adapter(self) -> TypeAdapter[T]:
        """The pydantic `TypeAdapter` of the declared type."""
        adapter = self._adapter
        if adapter is None:
            try:
                # NaN and the infinities are written as tokens that validate_json reads back,
                # instead of pydantic's default null, which would read back as None.
                adapter = TypeAdapter(self._annotation, config=_NON_FINITE_AS_CONSTANTS)
            except PydanticUserError:
                # Models, dataclasses and TypedDicts carry their own config; dumps checks that
                # no non-finite float was lost to it.
                adapter = TypeAdapter(self._annotation)
            self._adapter = adapter
        return adapter

    def dumps(self, value: object) -> bytes:
        """Returns ``value`` encoded as its declared type.

        Raises:
            SerializationError: ``value`` does not serialize as the declared type, is nested
                too deeply, or holds a NaN or infinity that a model's own config
                (``ser_json_inf_nan``) would write as ``null``.
        """
        try:
            if self._json:
                data = self.adapter.dump_json(value, warnings=False)  # type: ignore[arg-type]  # any value is tried
            else:
                assert self._inner is not None  # noqa: S101  # _json is False only with an inner serializer
                plain = self.adapter.dump_python(value, mode="json", warnings=False)  # type: ignore[arg-type]  # same
                data = self._inner.dumps(plain)
            if b"null" in data and _has_non_finite(value) and not self._keeps_non_finite(data):
                raise SerializationError(
                    f"cannot serialize a value of type {type(value).__qualname__} as "
                    f"{self._annotation!r}: it holds a NaN or infinite float that its model's "
                    "config writes as null; set ser_json_inf_nan='constants' in that config"
                )
        except (PydanticSerializationError, TypeError, ValueError, RecursionError) as exc:
            raise SerializationError(
                f"cannot serialize a value of type {type(value).__qualname__} as {self._annotation!r}: {exc}"
            ) from exc
        return data

    def _keeps_non_finite(self, data: bytes) -> bool:
        """Tells whether ``data`` reads back with a non-finite float, as the value held one."""
        try:
            return _has_non_finite(self.loads(data))
        except SerializationError:
            return False

    def loads(self, data: bytes) -> T:
        """Returns the stored value validated into the declared type.

        Raises:
            SerializationError: the bytes do not hold a valid value of the declared type.
        """
        try:
            if self._json:
                return self.adapter.validate_json(data)
            assert self._inner is not None  # noqa: S101  # see dumps
            return self.adapter.validate_python(self._inner.loads(data))
        except ValidationError as exc:
            raise SerializationError(
                f"stored value does not validate as {self._annotation!r} ({exc.error_count()} errors)"
            ) from exc
        except RecursionError as exc:
            raise SerializationError(
                f"stored value is nested too deeply to validate as {self._annotation!r}"
            ) from exc
