"""`Generation`: the namespace generation that `Cache.bump_version` increments, as this process
knows it.

Entries record the generation they were written at; a read serves only entries of the current
one. The generation is learned with reads (one MGET carries it every ``interval`` seconds), so
keeping up with bumps in other processes costs no round trip of its own.

A generation is an epoch (its high 32 bits: random, drawn when a store has no generation) and
a count of bumps in that epoch (its low 32 bits; INCR adds to them). No two lifetimes of a
generation key (flushed, restarted, evicted) then share an epoch but by a 2**-31 chance, and
within one epoch the count only grows, so an entry of a later count proves a bump happened.
"""

from __future__ import annotations

import math
import secrets
import zlib
from collections.abc import Callable
from typing import Final, final

from .._types import Clock
from .entry import COUNTER, GENERATION, GENERATION_END, GENERATION_OFFSET
from .guard import Guard

__all__ = ("Generation",)

_EPOCH_SHIFT: Final = 32
_EPOCH_SPAN: Final = (1 << 31) - 1
_MASK: Final = (1 << 64) - 1


@final
class Generation:
    """The generation of one `Cache`'s namespace and version, and when to check it again."""

    __slots__ = (
        "clock",
        "due",
        "guard",
        "interval",
        "key",
        "on_change",
        "packed",
        "seen",
        "sent",
        "value",
    )

    def __init__(
        self,
        guard: Guard,
        key: str,
        *,
        clock: Clock,
        interval: float,
        on_change: Callable[[], None],
    ) -> None:
        self.guard = guard
        self.key = key
        self.clock = clock
        self.interval = interval
        # Called when the generation changes under this process: nothing it remembers from
        # before is current.
        self.on_change = on_change
        self.forget()

    def forget(self) -> None:
        """Forgets the generation (a new backend): every read asks for it until one is adopted."""
        self.value: int | None = None
        # The value as entries store it, compared on every read without unpacking.
        self.packed = b""
        self.due = -math.inf
        # Generation reads sent, and the latest one whose answer was adopted (see `learn`).
        self.sent = 0
        self.seen = 0

    def recheck(self) -> None:
        """Makes the next read learn the generation again (another process may have bumped)."""
        self.due = -math.inf

    def fresh(self) -> bool:
        """Whether the generation is known and was checked within ``interval``."""
        return self.value is not None and self.clock() < self.due

    def send(self) -> tuple[int, float]:
        """Numbers a generation read about to be sent: returns (its number, when it was sent)."""
        self.sent += 1
        return self.sent, self.clock()

    async def ensure(self) -> None:
        """Learns the generation unless known and checked within ``interval``.

        A write must record the generation readers check: one written under a generation
        another process has since bumped would be stored, and then never read.
        """
        if self.value is not None and self.clock() < self.due:
            return
        sent, sent_at = self.send()
        await self.learn(await self.guard.backend.get(self.key), sent, sent_at)

    async def learn(self, raw: bytes | None, sent: int, sent_at: float) -> None:
        """Adopts the generation as read by the ``sent``-th generation read, sent at ``sent_at``.

        It is then trusted for ``interval`` from when it was asked for, not from when the
        answer came: it may have been true only then.

        An answer older than one already adopted, or than this process's own `bump_version`,
        is ignored: replies on different connections arrive in any order, and adopting a
        stale one would make entries from before a bump current again. A store that holds
        no generation (new, flushed, restarted without persistence, or evicted it) is given
        a random one, never a fixed start: entries written under any earlier generation can
        then never match it by accident.
        """
        if raw is None or not COUNTER.fullmatch(raw):
            raw = await self.start()
        if sent <= self.seen:
            return
        self.seen = sent
        found = (int(raw) if COUNTER.fullmatch(raw) else zlib.crc32(raw)) & _MASK
        known = self.value
        if known is None or found >> _EPOCH_SHIFT != known >> _EPOCH_SHIFT or found > known:
            # Within an epoch the count only grows: a lower one is an answer overtaken by a
            # later count this process saw in an entry.
            self.adopt(found)
        self.due = sent_at + self.interval

    async def start(self) -> bytes:
        """Stores a random generation unless one is there; returns the one stored."""
        backend = self.guard.backend
        start = (secrets.randbelow(_EPOCH_SPAN) + 1) << _EPOCH_SHIFT
        if await backend.add(self.key, str(start).encode(), None):
            return str(start).encode()
        return await backend.get(self.key) or str(start).encode()

    def adopt(self, generation: int) -> None:
        """Makes ``generation`` the one entries are checked against and written with."""
        generation &= _MASK
        if generation != self.value and self.value is not None:
            # Another process bumped (or the store lost its generation): nothing this
            # process remembers from before is current.
            self.on_change()
        self.value = generation
        self.packed = GENERATION.pack(generation)

    def bumped(self, generation: int) -> None:
        """Adopts the generation this process's `bump_version` just set.

        Generation reads sent before it are answered with what was there before: ignored.
        """
        self.sent = self.seen = self.sent + 1
        self.adopt(generation)
        self.due = self.clock() + self.interval
        self.on_change()

    def current(self, data: bytes) -> bool:
        """Returns whether the entry ``data`` (header checked) is of the current generation.

        An entry of a later count in the same epoch proves that another process bumped the
        generation: it is adopted, and the entry is current. Any other generation is not: an
        earlier count was bumped away, and another epoch belongs to another life of the store,
        in which no order means anything. Such an entry also makes the next read learn the
        generation again, in case another process has just bumped it.
        """
        if data[GENERATION_OFFSET:GENERATION_END] == self.packed:
            return True
        known = self.value
        found = GENERATION.unpack_from(data, GENERATION_OFFSET)[0]
        if known is not None and found > known and found >> _EPOCH_SHIFT == known >> _EPOCH_SHIFT:
            # Newer than any generation read under way can answer: those answers are ignored.
            self.seen = self.sent
            self.adopt(found)
            return True
        self.due = -math.inf
        return False
