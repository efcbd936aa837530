"""The `Serializer` protocol: values to bytes and back."""

from __future__ import annotations

from typing import Protocol

__all__ = ("Serializer",)


class Serializer(Protocol):
    """Turns values into bytes and back.

    ``dumps`` raises `cachetier.SerializationError` naming the type it cannot encode; ``loads``
    raises it for bytes it cannot decode. Neither may raise anything else for bad input.
    """

    def dumps(self, value: object) -> bytes:
        """Returns the bytes that represent ``value``."""
        ...

    def loads(self, data: bytes) -> object:
        """Returns the value that ``data`` represents."""
        ...
