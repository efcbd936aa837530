"""`Journal`: invalidations that could not reach the backend, replayed before it is trusted again.

A cache fails open: when Redis is down, a `Cache.delete` or `Cache.invalidate_tags` returns as
if nothing happened, so that the application keeps running. But the entries it meant to remove
are still in Redis, and once Redis answers again every process would serve them until their TTL
ends. So each failed invalidation is written down here, in this process, and the engine replays
the lot before it serves anything from the backend again (`Engine.replay`): until the replay
has gone through, reads are misses and the functions run.

The journal keeps what is needed, not a log: the set of keys, tags and patterns to remove (each
once, however often it failed), whether the namespace must be cleared or its generation bumped.
It is bounded: past ``limit`` items it keeps one bump of the generation instead, which
invalidates everything in the namespace and version at once: coarse, but never stale.

It lives in the process. An invalidation journaled by a process that dies before Redis comes
back is lost; a short TTL, or `Cache.bump_version` on deploy, bounds what that can cost.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import final

__all__ = ("Journal", "Pending")


@dataclass(slots=True)
class Pending:
    """What one replay must do: the union of the invalidations journaled before it."""

    keys: set[str] = field(default_factory=set)
    tags: set[str] = field(default_factory=set)
    patterns: set[str] = field(default_factory=set)
    clear: bool = False
    bump: bool = False

    def size(self) -> int:
        """Returns how many items the replay holds (a clear or a bump counts as one)."""
        return len(self.keys) + len(self.tags) + len(self.patterns) + self.clear + self.bump

    def merge(self, other: Pending) -> None:
        """Adds what ``other`` holds."""
        self.keys |= other.keys
        self.tags |= other.tags
        self.patterns |= other.patterns
        self.clear = self.clear or other.clear
        self.bump = self.bump or other.bump


@final
class Journal:
    """The invalidations of one cache that failed to reach its backend, awaiting replay."""

    __slots__ = ("_pending", "journaled", "limit", "overflows", "pending", "replayed")

    def __init__(self, limit: int = 1000) -> None:
        self.limit = limit
        self._pending = Pending()
        # True while anything awaits replay: read on every backend call, so a plain attribute.
        self.pending = False
        # Counters for `Cache.stats`: invalidations journaled, replays done, overflows to a bump.
        self.journaled = 0
        self.replayed = 0
        self.overflows = 0

    def record(
        self,
        *,
        keys: Iterable[str] = (),
        tags: Iterable[str] = (),
        patterns: Iterable[str] = (),
        clear: bool = False,
        bump: bool = False,
    ) -> None:
        """Writes down an invalidation that did not reach the backend (or may not have)."""
        self.journaled += 1
        self.pending = True
        pending = self._pending
        if pending.bump and pending.size() == 1:
            return  # a bump of the generation already stands for anything else
        pending.keys.update(keys)
        pending.tags.update(tags)
        pending.patterns.update(patterns)
        pending.clear = pending.clear or clear
        # One bump of the generation invalidates every entry of the namespace and version,
        # whatever the keys, tags and patterns were: it stands for all of them.
        if bump:
            self._pending = Pending(bump=True)
        elif pending.size() > self.limit:
            self._pending = Pending(bump=True)
            self.overflows += 1

    def take(self) -> Pending:
        """Returns what awaits replay and empties the journal (see `give_back`)."""
        pending, self._pending = self._pending, Pending()
        self.pending = False
        return pending

    def give_back(self, pending: Pending) -> None:
        """Puts back a replay that failed, merged with what was journaled meanwhile."""
        pending.merge(self._pending)
        self._pending = pending
        self.pending = pending.size() > 0
        if pending.bump:
            self._pending = Pending(bump=True)
        elif pending.size() > self.limit:
            self._pending = Pending(bump=True)
            self.overflows += 1
