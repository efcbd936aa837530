"""Entries as stored: payload plus the metadata the freshness policies need, optionally signed.

Layout of an entry (little-endian)::

    0  magic     0xC1          never the first byte of UTF-8 text, JSON or a decimal counter
    1  format    2
    2  flags     reserved, 0
    3  reserved  0
    4  gen       uint32        the namespace generation it was computed under (`Cache.bump_version`)
    8  created   float64       unix seconds when the value was computed
    16 fresh     float64       unix seconds after which the value is stale; 0.0 = never
    24 delta     float32       seconds the computation took (XFetch early refresh uses it)
    28 payload   serializer output

The backend expiry of a key is ``fresh`` plus any stale window, so a stale entry may still be
read and served on purpose (stale-while-revalidate, stale-if-error).

A signed entry (``Cache(signing_key=...)``) starts with 0xC2 instead and carries a 32-byte
HMAC-SHA256 tag after the header. The tag covers the stored key as well as the entry, so an
entry copied to another key is refused too. A reader without the signing key sees 0xC2 as a
foreign value, and a reader with it refuses everything unsigned.

A lease (0xC3 0xFF, never the start of UTF-8 text, then 16 random bytes) holds the key of a value being computed: a delete,
pattern or tag invalidation that removes it tells the computation not to store its result
(see `Engine.compute`). Readers treat a lease as absent.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import struct
from typing import Final, final

from ._errors import ConfigurationError

__all__ = (
    "GUARD_SIZE",
    "HEADER",
    "HEADER_SIZE",
    "LEASE_PREFIX",
    "MAGIC",
    "SIGNED_MAGIC",
    "EntrySigner",
    "encode_entry",
    "new_lease",
)

MAGIC: Final = 0xC1
SIGNED_MAGIC: Final = 0xC2
LEASE_PREFIX: Final = b"\xc3\xff"
_FORMAT: Final = 2
HEADER: Final = struct.Struct("<BBBBIddf")
HEADER_SIZE: Final = HEADER.size
_TAG_SIZE: Final = 32
GUARD_SIZE: Final = HEADER_SIZE + _TAG_SIZE
"""Leading bytes of a stored entry that identify it: its header, and its signature if signed.

A conditional write compares these, not the whole value: the creation time in the header (and
the signature over the key and payload, when signed) tells two entries at one key apart.
"""
_MIN_KEY_BYTES: Final = 16


def encode_entry(
    payload: bytes, *, created: float, fresh_until: float, delta: float = 0.0, generation: int = 0
) -> bytes:
    """Returns the stored form of ``payload``; ``fresh_until=0.0`` means it never goes stale."""
    return (
        HEADER.pack(MAGIC, _FORMAT, 0, 0, generation & 0xFFFFFFFF, created, fresh_until, delta)
        + payload
    )


def new_lease() -> bytes:
    """Returns a lease value no other computation holds."""
    return LEASE_PREFIX + secrets.token_bytes(16)


@final
class EntrySigner:
    """Signs entries with HMAC-SHA256 and checks them, so values others wrote are never decoded."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if len(key) < _MIN_KEY_BYTES:
            raise ConfigurationError(f"signing_key must be at least {_MIN_KEY_BYTES} bytes long")
        self._key = key

    def __repr__(self) -> str:
        return "EntrySigner(key=***)"

    def _tag(self, full: str, header: bytes, payload: bytes) -> bytes:
        mac = hmac.new(self._key, full.encode("utf-8", "surrogatepass"), hashlib.sha256)
        mac.update(b"\x00")  # the key is text and cannot hold NUL: a boundary nobody can forge
        mac.update(header)
        mac.update(payload)
        return mac.digest()

    def seal(self, full: str, entry: bytes) -> bytes:
        """Returns the signed form of ``entry`` (as `encode_entry` made it) stored at ``full``."""
        header = bytes((SIGNED_MAGIC,)) + entry[1:HEADER_SIZE]
        payload = entry[HEADER_SIZE:]
        return header + self._tag(full, header, payload) + payload

    def open(self, full: str, data: bytes) -> bytes | None:
        """Returns the unsigned entry inside ``data``, or ``None`` when the tag does not verify."""
        if len(data) < HEADER_SIZE + _TAG_SIZE or data[0] != SIGNED_MAGIC:
            return None
        header = data[:HEADER_SIZE]
        tag = data[HEADER_SIZE : HEADER_SIZE + _TAG_SIZE]
        payload = data[HEADER_SIZE + _TAG_SIZE :]
        if not hmac.compare_digest(tag, self._tag(full, header, payload)):
            return None
        return bytes((MAGIC,)) + header[1:] + payload
