"""Entries as stored: payload plus the metadata the freshness policies need, optionally signed.

Layout of an entry (little-endian)::

    0  magic     0xC1          never the first byte of UTF-8 text, JSON or a decimal counter
    1  format    3
    2  flags     bit 0: a tag section follows the header; other bits reserved, 0
    3  reserved  0
    4  gen       uint64        the namespace generation it was computed under (`Cache.bump_version`):
                 a random epoch in the high 32 bits, a count of bumps in the low ones
    12 created   float64       unix seconds when the value was computed
    20 fresh     float64       unix seconds after which the value is stale; 0.0 = never
    28 delta     float32       seconds the computation took (XFetch early refresh uses it)
    32 nonce     8 random bytes that tell apart two entries whose other fields and payload
                 start are alike (a guarded write compares the leading bytes; see GUARD_SIZE)
    40 tags      only with flag bit 0: uint16 length L, then L bytes of records, each a uint16
                 key length, the tag's key (UTF-8), a uint8 stamp length and the stamp
    ..  payload  serializer output

Tags are versioned: a tag's key holds a random stamp, which `Cache.invalidate_tags` replaces.
An entry records the stamp of each of its tags as its computation began, and is served only
while every one of them is still the stamp at its key; so an invalidation, a lost tag key or
one recreated after an eviction or a restart can only turn entries into misses. Format 2 (the
previous release) kept tags in indexes instead, so its entries are read as foreign.

The backend expiry of a key is ``fresh`` plus any stale window, so a stale entry may still be
read and served on purpose (stale-while-revalidate, stale-if-error).

A signed entry (``Cache(signing_key=...)``) starts with 0xC2 instead and carries a 32-byte
HMAC-SHA256 tag after the header. The tag covers the stored key as well as the entry, so an
entry copied to another key is refused too. A reader without the signing key sees 0xC2 as a
foreign value, and a reader with it refuses everything unsigned.

A lease (0xC3 0xFF, never the start of UTF-8 text, then 16 random bytes) holds the key of a value being computed: a delete,
pattern or tag invalidation that removes it tells the computation not to store its result
(see `Writer.begin`). Readers treat a lease as absent.

This module is the one place that knows the layout: the read path, the write path, `inspect`
and the CLI go through the names below.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import struct
from collections.abc import Callable, Sequence
from typing import Final, final

from .._errors import ConfigurationError, SerializationError
from .._types import MISSING, Outcome

__all__ = (
    "COUNTER",
    "DELTA",
    "DELTA_OFFSET",
    "FORMAT",
    "FRESH",
    "FRESH_OFFSET",
    "GENERATION",
    "GENERATION_END",
    "GENERATION_OFFSET",
    "GUARD_SIZE",
    "HEADER",
    "HEADER_SIZE",
    "LEASE_PREFIX",
    "LEASE_SIZE",
    "MAGIC",
    "SIGNED_MAGIC",
    "TAGGED",
    "UNSIGNED",
    "EntrySigner",
    "Opened",
    "encode_entry",
    "entry_tags",
    "examine",
    "finish",
    "fresh_until",
    "generation_of",
    "is_lease",
    "new_lease",
    "new_stamp",
)

MAGIC: Final = 0xC1
SIGNED_MAGIC: Final = 0xC2
LEASE_PREFIX: Final = b"\xc3\xff"
FORMAT: Final = 3
TAGGED: Final = 0x01
"""Flag bit: the entry records the stamps of its tags after the header."""
_U16: Final = struct.Struct("<H")
_STAMP_BYTES: Final = 8
HEADER: Final = struct.Struct("<BBBBQddf8s")
HEADER_SIZE: Final = HEADER.size
_TAG_SIZE: Final = 32
GUARD_SIZE: Final = HEADER_SIZE + _TAG_SIZE
"""Leading bytes of a stored entry that identify it: its header, and its signature if signed.

A conditional write compares these, not the whole value: the header's random nonce tells any
two entries at one key apart, whatever their clocks said and whatever they hold.
"""
_MIN_KEY_BYTES: Final = 16
# Fields the read path reads without unpacking the whole header: bound structs at their offsets.
GENERATION: Final = struct.Struct("<Q")
GENERATION_OFFSET: Final = 4
GENERATION_END: Final = 12
FRESH: Final = struct.Struct("<d")
FRESH_OFFSET: Final = 20
DELTA: Final = struct.Struct("<f")
DELTA_OFFSET: Final = 28
LEASE_SIZE: Final = len(LEASE_PREFIX) + 16
COUNTER: Final = re.compile(rb"-?[0-9]{1,20}")
"""A counter as `Cache.incr` stores it: a plain decimal integer."""
UNSIGNED: Final = "its signature does not verify (unsigned, tampered, or written under another key)"


def encode_entry(
    payload: bytes,
    *,
    created: float,
    fresh_until: float,
    delta: float = 0.0,
    generation: int = 0,
    tags: Sequence[tuple[str, bytes]] = (),
) -> bytes:
    """Returns the stored form of ``payload``; ``fresh_until=0.0`` means it never goes stale.

    ``tags`` are (tag key, stamp) pairs: the stamps the tags held when the value's
    computation began.
    """
    header = HEADER.pack(
        MAGIC,
        FORMAT,
        TAGGED if tags else 0,
        0,
        generation & 0xFFFFFFFFFFFFFFFF,
        created,
        fresh_until,
        delta,
        os.urandom(8),
    )
    if not tags:
        return header + payload
    records = bytearray()
    for key, stamp in tags:
        name = key.encode("utf-8", "surrogatepass")
        records += _U16.pack(len(name)) + name + bytes((len(stamp),)) + stamp
    return header + _U16.pack(len(records)) + bytes(records) + payload


def entry_tags(data: bytes) -> tuple[list[str], list[bytes], int]:
    """Returns the tag keys and stamps an unsigned entry records, and where its payload starts.

    Raises:
        ValueError: the tag section is cut short or malformed.
    """
    if not data[2] & TAGGED:
        return [], [], HEADER_SIZE
    (length,) = _U16.unpack_from(data, HEADER_SIZE)
    position = HEADER_SIZE + 2
    end = position + length
    if end > len(data):
        raise ValueError("the tag section runs past the end of the entry")
    keys: list[str] = []
    stamps: list[bytes] = []
    while position < end:
        (size,) = _U16.unpack_from(data, position)
        position += 2
        keys.append(data[position : position + size].decode("utf-8", "surrogatepass"))
        position += size
        stamp_size = data[position]
        position += 1
        stamps.append(data[position : position + stamp_size])
        position += stamp_size
    if position != end:
        raise ValueError("the tag section is malformed")
    return keys, stamps, end


def new_stamp() -> bytes:
    """Returns a tag stamp that no earlier stamp of any tag equals, but by a 2**-64 chance."""
    return secrets.token_bytes(_STAMP_BYTES)


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


def is_lease(data: bytes) -> bool:
    """Returns whether ``data`` is a lease rather than a value."""
    return len(data) == LEASE_SIZE and data[:2] == LEASE_PREFIX


def fresh_until(data: bytes) -> float:
    """Returns when the unsigned entry ``data`` goes stale (unix seconds; 0.0: never)."""
    return float(FRESH.unpack_from(data, FRESH_OFFSET)[0])


def generation_of(data: bytes) -> int:
    """Returns the generation the entry ``data`` (signed or not) was written at."""
    return int(GENERATION.unpack_from(data, GENERATION_OFFSET)[0])


_NO_TAGS: Final[list[str]] = []
_NO_STAMPS: Final[list[bytes]] = []


@final
class Opened:
    """An entry opened by `examine`: unsigned, with its tags parsed."""

    __slots__ = ("data", "offset", "stamps", "tag_keys")

    def __init__(self, data: bytes, tag_keys: list[str], stamps: list[bytes], offset: int):
        self.data = data
        self.tag_keys = tag_keys
        self.stamps = stamps
        self.offset = offset


def examine(
    full: str, data: bytes, signer: EntrySigner | None, current: Callable[[bytes], bool]
) -> Opened | tuple[Outcome, object]:
    """Opens stored ``data`` as far as it can be without decoding its value.

    ``current`` tells whether an entry (header checked) is of the current generation. Returns
    the entry (signature checked and removed, tags parsed), or the final outcome: (HIT, int)
    for a counter, (MISS, `MISSING`) for a lease, an entry of another generation or, in a
    signed cache, a plain integer, or (DECODE_ERROR, the reason).
    """
    # An unsigned entry, the common case, is told apart by its first byte alone.
    if signer is not None or not data or data[0] != MAGIC:
        if is_lease(data):
            return Outcome.MISS, MISSING
        if COUNTER.fullmatch(data):
            if signer is not None:
                # A plain integer cannot be told from a counter (INCRBY needs them
                # unsigned), and anyone who can write to the store can write one: a signed
                # cache serves none, and drops none either. `incr(key, 0)` reads a counter.
                return Outcome.MISS, MISSING
            return Outcome.HIT, int(data)
        if signer is not None:
            opened = signer.open(full, data)
            if opened is None:
                return Outcome.DECODE_ERROR, UNSIGNED
            data = opened
    if len(data) < HEADER_SIZE or data[0] != MAGIC or data[1] != FORMAT:
        return Outcome.DECODE_ERROR, "not a cachetier entry (foreign or corrupt value)"
    if not current(data):
        return Outcome.MISS, MISSING
    if not data[2]:
        return Opened(data, _NO_TAGS, _NO_STAMPS, HEADER_SIZE)
    try:
        keys, stamps, offset = entry_tags(data)
    except (ValueError, IndexError, struct.error) as exc:
        return Outcome.DECODE_ERROR, f"its tag section is unreadable: {exc}"
    return Opened(data, keys, stamps, offset)


def finish(opened: Opened, loads: Callable[[bytes], object], now: float) -> tuple[Outcome, object]:
    """Decodes an entry whose tags hold: (HIT or STALE, value) or (DECODE_ERROR, reason)."""
    data = opened.data
    until = FRESH.unpack_from(data, FRESH_OFFSET)[0]
    try:
        value = loads(data[opened.offset :])
    except SerializationError as exc:
        return Outcome.DECODE_ERROR, str(exc)
    if not (not until or now < until):  # as in the read-through: NaN is never fresh
        return Outcome.STALE, value
    return Outcome.HIT, value
