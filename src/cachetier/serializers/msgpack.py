"""`MsgpackSerializer`: compact binary encoding; needs ``pip install "cachetier[msgpack]"``."""

from __future__ import annotations

from .._errors import SerializationError
from .json import _default

try:
    import msgpack as _msgpack
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError('MsgpackSerializer needs msgpack: pip install "cachetier[msgpack]"') from exc

__all__ = ("MsgpackSerializer",)


class MsgpackSerializer:
    """Encodes values with MessagePack; extra types are encoded as `JsonSerializer` does."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MsgpackSerializer()"

    def dumps(self, value: object) -> bytes:
        """Returns ``value`` as MessagePack bytes."""
        try:
            data: bytes = _msgpack.packb(value, default=_default, use_bin_type=True)
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            raise SerializationError(
                f"cannot serialize a value of type {type(value).__qualname__} as MessagePack: {exc}"
            ) from exc
        return data

    def loads(self, data: bytes) -> object:
        """Returns the value the MessagePack bytes hold."""
        try:
            return _msgpack.unpackb(data, raw=False, strict_map_key=False)
        except Exception as exc:  # msgpack raises many unrelated types for bad bytes
            raise SerializationError(f"stored bytes are not valid MessagePack: {exc}") from exc
