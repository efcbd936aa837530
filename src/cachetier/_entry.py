"""`Entry`: one cached value as stored, payload plus the metadata the freshness policies need.

Layout (little-endian)::

    0  magic     0xC1          never the first byte of UTF-8 text, JSON or a decimal counter
    1  format    1
    2  flags     reserved, 0
    3  reserved  0
    4  created   float64       unix seconds when the value was computed
    12 fresh     float64       unix seconds after which the value is stale; 0.0 = never
    20 delta     float32       seconds the computation took (XFetch early refresh uses it)
    24 payload   serializer output

The backend expiry of a key is ``fresh`` plus any stale window, so a stale entry may still be
read and served on purpose (stale-while-revalidate, stale-if-error).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from ._errors import SerializationError

__all__ = ("HEADER", "HEADER_SIZE", "MAGIC", "Entry", "decode_entry", "encode_entry")

MAGIC: Final = 0xC1
_FORMAT: Final = 1
HEADER: Final = struct.Struct("<BBBBddf")
HEADER_SIZE: Final = HEADER.size
_PREFIX: Final = bytes((MAGIC, _FORMAT))


@dataclass(frozen=True, slots=True)
class Entry:
    """A decoded stored value: the serialized ``payload`` and when it was made and goes stale."""

    payload: bytes
    created: float
    fresh_until: float
    delta: float

    def is_fresh(self, now: float) -> bool:
        """Returns whether the value is still within its TTL at ``now``."""
        return self.fresh_until == 0.0 or now < self.fresh_until


def encode_entry(
    payload: bytes, *, created: float, fresh_until: float, delta: float = 0.0
) -> bytes:
    """Returns the stored form of ``payload``; ``fresh_until=0.0`` means it never goes stale."""
    return HEADER.pack(MAGIC, _FORMAT, 0, 0, created, fresh_until, delta) + payload


def decode_entry(data: bytes) -> Entry:
    """Parses stored bytes written by `encode_entry`.

    Raises:
        SerializationError: the bytes were not written by cachetier's entry format.
    """
    if len(data) < HEADER_SIZE or data[:2] != _PREFIX:
        raise SerializationError(
            "stored bytes are not a cachetier entry (foreign or corrupt value)"
        )
    _, _, _, _, created, fresh_until, delta = HEADER.unpack_from(data)
    return Entry(data[HEADER_SIZE:], created, fresh_until, delta)
