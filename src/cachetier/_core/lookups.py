"""`Lookups`: what a stored entry means for a read that computes nothing — `Cache.get`,
`get_many`, `exists`, `inspect` and the lock's peek — and the drop of an undecodable entry."""

from __future__ import annotations

import contextvars
import math
from collections.abc import Callable
from typing import Any, final

from .._errors import BackendError
from .._types import MISSING, Clock, Outcome
from ..serializers import Serializer
from .entry import COUNTER, FRESH, FRESH_OFFSET, EntrySigner, Opened, examine, finish, is_lease
from .generation import Generation
from .guard import Guard
from .local import LocalState
from .reads import Later, Reader
from .stats import Reporter
from .tags import Tags

__all__ = ("Lookups",)


@final
class Lookups:
    """The reads of one `Cache` that take what is stored, and compute nothing."""

    __slots__ = (
        "bypassing",
        "clock",
        "generation",
        "guard",
        "local",
        "reader",
        "reporter",
        "signer",
        "stats",
        "tags",
    )

    def __init__(
        self,
        guard: Guard,
        reader: Reader,
        generation: Generation,
        tags: Tags,
        reporter: Reporter,
        *,
        signer: EntrySigner | None,
        clock: Clock,
        bypassing: contextvars.ContextVar[bool],
    ) -> None:
        self.guard = guard
        self.reader = reader
        self.generation = generation
        self.tags = tags
        self.reporter = reporter
        self.stats = reporter.stats
        self.signer = signer
        self.clock = clock
        self.bypassing = bypassing
        # Set with the backend (`Engine.use`): the local tier follows it.
        self.local: LocalState | None = None

    # -- what a stored entry means ------------------------------------------------------------

    def examine(self, full: str, data: bytes) -> Opened | tuple[Outcome, object]:
        """Opens stored ``data`` (see `entry.examine`) against the current generation."""
        return examine(full, data, self.signer, self.generation.current)

    async def decode(
        self, full: str, data: bytes, loads: Callable[[bytes], object], now: float
    ) -> tuple[Outcome, object]:
        """Returns what stored ``data`` means for a plain read: see `examine` and `finish`;
        an entry invalidated through one of its tags is (MISS, `MISSING`)."""
        opened = self.examine(full, data)
        if not isinstance(opened, Opened):
            return opened
        if opened.tag_keys and not await self.tags.hold(opened.tag_keys, opened.stamps):
            return Outcome.MISS, MISSING
        return finish(opened, loads, now)

    async def holds_value(self, full: str, data: bytes) -> bool:
        """Returns whether ``data`` stored at ``full`` is a value: not a lease, not of another
        generation, not invalidated through a tag."""
        opened = self.examine(full, data)
        if isinstance(opened, Opened):
            return not opened.tag_keys or await self.tags.hold(opened.tag_keys, opened.stamps)
        # A miss is a lease, an entry of another generation, or (signed cache) a plain integer,
        # which is still a counter that exists. Anything else a read would refuse is there.
        return opened[0] is not Outcome.MISS or (
            not is_lease(data) and COUNTER.fullmatch(data) is not None
        )

    async def drop_undecodable(self, full: str, reason: object) -> None:
        """Drops an entry that cannot be served, so the next read recomputes it."""
        guard = self.guard
        guard.log.warning("decode", "dropping unreadable cache entry %s: %s", full, reason)
        await guard.run("UNLINK", "delete", guard.backend.delete, full, fallback=0)

    async def peek(self, full: str, codec: Serializer) -> Any:
        """Returns the fresh value at ``full``, or `MISSING`; counts nothing."""
        if self.reader.journal.pending:
            await self.reader.replay()
        data = await self.guard.backend.get(full)
        if data is None:
            return MISSING
        outcome, value = await self.decode(full, data, codec.loads, self.clock())
        return value if outcome is Outcome.HIT else MISSING

    # -- plain reads (`Cache.get`) --------------------------------------------------------------

    async def read(self, full: str, codec: Serializer) -> tuple[Outcome, object]:
        """Reads and decodes one entry for `Cache.get`; counts the outcome."""
        count = self.reporter.count
        if self.bypassing.get():
            count(Outcome.BYPASSED, full)
            return Outcome.BYPASSED, MISSING
        local = self.local
        seq = 0
        if local is not None:
            value = local.get(full, codec, None)
            if value is not MISSING:
                return Outcome.HIT, value
            seq = local.seq
        reader = self.reader
        try:
            answer: bytes | Later | None = (
                reader.now(full) if self.guard.nowait is not None else Later.LATER
            )
            if answer is Later.LATER:
                data = await reader.get(full)
            else:
                data = answer
        except BackendError as exc:
            self.guard.failed("get", exc)
            count(Outcome.BACKEND_ERROR, full)
            return Outcome.BACKEND_ERROR, MISSING
        if data is None:
            count(Outcome.MISS, full)
            return Outcome.MISS, MISSING
        now = self.clock()
        opened = self.examine(full, data)
        if not isinstance(opened, Opened):
            outcome, value = opened
        elif opened.tag_keys and not await self.tags.hold(opened.tag_keys, opened.stamps):
            outcome, value = Outcome.MISS, MISSING
        else:
            outcome, value = finish(opened, codec.loads, now)
        if outcome is Outcome.HIT:
            count(outcome, full)
            if local is not None and isinstance(opened, Opened):
                until = FRESH.unpack_from(opened.data, FRESH_OFFSET)[0]
                local.keep(
                    full,
                    codec,
                    value,
                    min(until or math.inf, now + local.settings.ttl),
                    seq,
                    opened.tag_keys,
                )
            return outcome, value
        if outcome is Outcome.DECODE_ERROR:
            await self.drop_undecodable(full, value)
            value = MISSING
        elif outcome is Outcome.MISS:
            count(outcome, full)
            return outcome, value
        # A stale entry is served only by policies that ask for it; a plain read misses.
        count(Outcome.MISS if outcome is Outcome.STALE else outcome, full)
        return outcome, value

    async def read_many(self, keys: list[str], codec: Serializer) -> list[object]:
        """Reads and decodes ``keys`` in one MGET for `Cache.get_many`; counts each outcome.

        Returns each key's value, or `MISSING` where a plain read would miss.
        """
        count = self.reporter.count
        try:
            found = await self.reader.load_many(keys)
        except BackendError as exc:
            self.guard.failed("get_many", exc)
            for full in keys:
                count(Outcome.BACKEND_ERROR, full, None)
            return [MISSING] * len(keys)
        opened = [
            None if data is None else self.examine(full, data)
            for full, data in zip(keys, found, strict=True)
        ]
        invalidated = await self._invalidated(opened)
        values: list[object] = []
        now = self.clock()
        for full, entry in zip(keys, opened, strict=True):
            outcome: Outcome
            value: object
            if entry is None or id(entry) in invalidated:
                outcome, value = Outcome.MISS, MISSING
            elif isinstance(entry, Opened):
                outcome, value = finish(entry, codec.loads, now)
            else:
                outcome, value = entry
            if outcome is Outcome.DECODE_ERROR:
                await self.drop_undecodable(full, value)
            count(Outcome.MISS if outcome is Outcome.STALE else outcome, full, None)
            values.append(value if outcome is Outcome.HIT else MISSING)
        return values

    async def _invalidated(self, opened: list[Opened | tuple[Outcome, object] | None]) -> set[int]:
        """Returns the ids of the entries invalidated through a tag.

        The tags of every tagged entry are checked together: one more round trip, not one per
        entry.
        """
        tagged = [entry for entry in opened if isinstance(entry, Opened) and entry.tag_keys]
        invalidated: set[int] = set()
        if tagged:
            current = await self.tags.current([key for entry in tagged for key in entry.tag_keys])
            start = 0
            for one in tagged:
                end = start + len(one.stamps)
                if current is None or current[start:end] != one.stamps:
                    invalidated.add(id(one))
                start = end
        return invalidated
