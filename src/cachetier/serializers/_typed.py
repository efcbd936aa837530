"""`TypedSerializer`: values of one declared type, rebuilt on read with a pydantic `TypeAdapter`.

A decorated function's return annotation says what a hit must be: a pydantic model, a dataclass,
a ``datetime``, a ``list[UUID]``... Plain JSON would give back dicts and strings; this serializer
validates what it reads into the declared type, and anything that does not validate (an older
schema, a corrupt or foreign entry) raises `SerializationError`, which the cache turns into a miss.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar, final

from pydantic import TypeAdapter, ValidationError
from pydantic_core import PydanticSerializationError

from .._errors import SerializationError
from ._protocol import Serializer
from .json import JsonSerializer

__all__ = ("TypedSerializer",)

T = TypeVar("T")


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
            adapter = self._adapter = TypeAdapter(self._annotation)
        return adapter

    def dumps(self, value: object) -> bytes:
        """Returns ``value`` encoded as its declared type."""
        try:
            if self._json:
                return self.adapter.dump_json(value, warnings=False)  # type: ignore[arg-type]  # any value is tried
            assert self._inner is not None  # noqa: S101  # _json is False only with an inner serializer
            return self._inner.dumps(self.adapter.dump_python(value, mode="json", warnings=False))  # type: ignore[arg-type]  # same
        except (PydanticSerializationError, TypeError, ValueError) as exc:
            raise SerializationError(
                f"cannot serialize a value of type {type(value).__qualname__} as {self._annotation!r}: {exc}"
            ) from exc

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
