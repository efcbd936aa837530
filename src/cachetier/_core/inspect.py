"""`Inspection`: what one key holds and why a read would or would not serve it, changing nothing.

`Cache.get` reports every kind of absence the same way (a miss) and removes an entry it cannot
decode; an operator looking at a key wants the opposite: the reason, and the entry left alone.
`Cache.inspect` and the ``cachetier get`` command answer with an `Inspection`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Literal

from .._types import MISSING, Outcome
from .entry import (
    FORMAT,
    MAGIC,
    SIGNED_MAGIC,
    finish,
    fresh_until,
    generation_of,
    is_lease,
)
from .lookups import Lookups

__all__ = ("Inspection", "InspectionState", "inspect_entry")

InspectionState = Literal[
    "value",
    "counter",
    "absent",
    "other_type",
    "leased",
    "signed",
    "other_format",
    "unreadable",
    "unsigned_integer",
    "other_generation",
    "invalidated_by_tag",
    "stale",
]


@dataclass(frozen=True, slots=True)
class Inspection:
    """What `Cache.inspect` found at one key.

    ``state`` says what the key holds; ``value`` is what a read would return (`MISSING` when
    a read would miss); ``reason`` is a sentence for people: why there is no value, or a note
    on the value. Added in 0.2.
    """

    key: str
    state: InspectionState
    value: object = MISSING
    reason: str = ""

    @property
    def served(self) -> bool:
        """Whether a read now would return ``value``."""
        return self.value is not MISSING


async def inspect_entry(
    lookups: Lookups, key: str, full: str, loads: Callable[[bytes], object]
) -> Inspection:
    """Reads the stored key ``full`` (relative: ``key``) and says what it holds.

    Raises:
        BackendError: the backend failed.
    """
    # The first read of a process fetches the namespace generation in the same MGET, so the
    # entry is judged against the generation the store holds now.
    data = await lookups.reader.fetch_one(full)
    if data is None:
        if await lookups.guard.backend.exists(full):
            # MGET answers nil for a key of another Redis type.
            return Inspection(
                key,
                "other_type",
                reason="the key holds a Redis type other than a string (data another program "
                "wrote), not a cache entry",
            )
        return Inspection(key, "absent", reason="absent or expired")
    if is_lease(data):
        return Inspection(
            key,
            "leased",
            reason="a computation in progress holds it (a lease); its result is stored when "
            "it finishes, and reads treat the key as absent until then",
        )
    if lookups.signer is None and data[:1] == bytes((SIGNED_MAGIC,)):
        # The application, holding the key, may well read it: this is no fault of the entry.
        return Inspection(
            key,
            "signed",
            reason="it is a signed entry (Cache(signing_key=...)) and no signing key is set "
            "here (CACHE_SIGNING_KEY); set it as the application does to read the entry",
        )
    if data[:1] == bytes((MAGIC,)) and len(data) >= 2 and data[1] != FORMAT:
        return _unreadable(
            key,
            f"it has entry format {data[1]}, from another version of cachetier (this one "
            f"reads format {FORMAT})",
            "other_format",
        )
    now = lookups.clock()
    opened = lookups.examine(full, data)
    if isinstance(opened, tuple):
        outcome, value = opened
        if outcome is Outcome.DECODE_ERROR:
            return _unreadable(key, str(value))
        if outcome is Outcome.HIT:
            return Inspection(key, "counter", value, "a counter (written by cache.incr)")
        if data[:1] not in (bytes((MAGIC,)), bytes((SIGNED_MAGIC,))) and not is_lease(data):
            return Inspection(
                key,
                "unsigned_integer",
                reason="it holds a plain integer, which a signed cache never serves: read a "
                "counter with cache.incr(key, 0)",
            )
        generation = generation_of(data)
        return Inspection(
            key,
            "other_generation",
            reason=f"it was written at generation {generation}, but this namespace and version "
            f"are at generation {lookups.generation.value} (bump-version, or a store that lost its "
            "generation); reads treat it as absent, and it stays until it expires or is "
            "overwritten",
        )
    if opened.tag_keys and not await lookups.tags.hold(opened.tag_keys, opened.stamps):
        return Inspection(
            key,
            "invalidated_by_tag",
            reason="one of its tags was invalidated after it was computed; reads treat it as "
            "absent, and it stays until it expires or is overwritten",
        )
    outcome, value = finish(opened, loads, now)
    if outcome is Outcome.DECODE_ERROR:
        return _unreadable(key, str(value))
    if outcome is Outcome.HIT:
        return Inspection(key, "value", value)
    until = fresh_until(opened.data)
    stale_since = datetime.fromtimestamp(until, timezone.utc)
    return Inspection(
        key,
        "stale",
        reason=f"its value went stale {now - until:.0f} s ago (at "
        f"{stale_since:%Y-%m-%d %H:%M:%S} UTC); it is kept only for stale-while-revalidate "
        "or stale-if-error, and a plain read treats it as absent",
    )


def _unreadable(key: str, reason: str, state: InspectionState = "unreadable") -> Inspection:
    return Inspection(
        key,
        state,
        reason=f"the entry could not be decoded: {reason}. It was left in place; the "
        "application removes it on its next read of the key",
    )
