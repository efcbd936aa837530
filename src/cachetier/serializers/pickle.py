"""`PickleSerializer`: any picklable value. Never a default; use it only for data you trust.

Unpickling runs code chosen by whoever wrote the bytes. Use it only when no one else can
write to the store, and prefer ``Cache(signing_key=...)`` with it.
"""

from __future__ import annotations

import pickle as _pickle

from .._errors import SerializationError

__all__ = ("PickleSerializer",)


class PickleSerializer:
    """Encodes values with :mod:`pickle` at the highest protocol."""

    __slots__ = ("_protocol",)

    def __init__(self, *, protocol: int = _pickle.HIGHEST_PROTOCOL) -> None:
        self._protocol = protocol

    def __repr__(self) -> str:
        return f"PickleSerializer(protocol={self._protocol})"

    def dumps(self, value: object) -> bytes:
        """Returns ``value`` pickled."""
        try:
            return _pickle.dumps(value, protocol=self._protocol)
        except (_pickle.PicklingError, TypeError, AttributeError) as exc:
            raise SerializationError(
                f"cannot pickle a value of type {type(value).__qualname__}: {exc}"
            ) from exc

    def loads(self, data: bytes) -> object:
        """Returns the unpickled value."""
        try:
            return _pickle.loads(data)  # noqa: S301  # opt-in by name; see the module docstring
        except Exception as exc:  # unpickling bad bytes raises arbitrary types
            raise SerializationError(f"stored bytes are not a valid pickle: {exc}") from exc
