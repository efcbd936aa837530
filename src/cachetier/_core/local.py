"""`LocalTier`: a process-local tier of decoded values in front of Redis, kept coherent by Redis.

How coherence works. Redis's server-assisted client-side caching (``CLIENT TRACKING ... BCAST
PREFIX namespace:version:``) sends a message naming each key of the namespace that any client
changes, deletes, expires or evicts. One connection per cache subscribes to those messages
(`TrackingBackend.invalidations`), and each message drops the named keys from this tier; a
change of the generation counter (`Cache.bump_version`) or a flush of the database drops
everything. Tracking reports changes made by any client, cachetier or not, with nothing to do
on writes.

Bounded staleness. While the subscription is up, another process's change reaches this tier
as soon as Redis has applied it and this event loop has read the message: about a millisecond
(measured in ``tests/integration/test_local_tier.py``). A value read from Redis just before
a change is not kept if any message arrives while the read is under way, so a message can
never be overtaken by the value it invalidates. The subscription answers a PING every
``heartbeat`` seconds, and is given up once its last answer is more than two heartbeats old
(checked every heartbeat, so within three of a silent server); when it fails or is given up,
the tier is emptied and bypassed (every read goes to Redis) until a new subscription is confirmed, and
emptied again then. A value is never trusted without a live subscription; ``ttl`` caps how
long any value stays in the tier whatever happens.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
from collections.abc import Callable, Sequence
from typing import Any, Final, final

from .._errors import BackendError, ConfigurationError
from .._glob import compile_glob
from .._log import LOGGER
from .._types import MISSING, Clock, Outcome
from ..backends._protocol import TrackingBackend
from .generation import Generation
from .stats import ReadEvent, Reporter, StatsRecorder, debug_enabled

__all__ = ("LocalState", "LocalTier")

_RETRY_FIRST: Final = 0.05
_RETRY_MAX: Final = 2.0


@final
class LocalTier:
    """Settings of the process-local tier: ``Cache(backend, local=LocalTier(...))``.

    Hot keys are then served from this process's memory as decoded objects, without a round
    trip, and invalidated through Redis as soon as any process changes them (see the module
    documentation for the staleness bound). Values are shared, not copied: do not mutate what a
    cached function returns.

    Args:
        max_entries: the most values kept; the least recently used go first.
        ttl: the longest a value stays in this tier, in seconds, whatever its TTL in Redis.
        heartbeat: seconds between PINGs on the invalidation subscription; a subscription that
            stops answering is given up within three of them.

    Raises:
        ConfigurationError: a value is out of range.
    """

    __slots__ = ("heartbeat", "max_entries", "ttl")

    def __init__(self, *, max_entries: int = 10_000, ttl: float = 60.0, heartbeat: float = 0.5):
        if type(max_entries) is not int or max_entries <= 0:
            raise ConfigurationError(f"max_entries must be a positive int, got {max_entries!r}")
        if not (ttl > 0 and math.isfinite(ttl)):
            raise ConfigurationError(f"ttl must be a positive number of seconds, got {ttl!r}")
        if not (heartbeat > 0 and math.isfinite(heartbeat)):
            raise ConfigurationError(
                f"heartbeat must be a positive number of seconds, got {heartbeat!r}"
            )
        self.max_entries = max_entries
        self.ttl = float(ttl)
        self.heartbeat = float(heartbeat)

    def __repr__(self) -> str:
        return f"LocalTier(max_entries={self.max_entries}, ttl={self.ttl:g}, heartbeat={self.heartbeat:g})"


@final
class LocalState:
    """The tier of one `Cache` at run time: its values and the subscription that keeps them."""

    __slots__ = (
        "backend",
        "by_tag",
        "bypassing",
        "clock",
        "emptied",
        "entries",
        "generation",
        "live",
        "loop",
        "prefix",
        "reporter",
        "seq",
        "settings",
        "task",
        "track",
    )

    def __init__(
        self,
        backend: TrackingBackend,
        settings: LocalTier,
        *,
        prefix: str,
        generation: Generation,
        reporter: Reporter,
        clock: Clock,
        bypassing: contextvars.ContextVar[bool],
        track: Callable[[asyncio.Task[Any]], None],
    ) -> None:
        self.backend = backend
        self.settings = settings
        self.prefix = prefix
        # Told to check again when a message says the generation may have changed.
        self.generation = generation
        self.reporter = reporter
        self.clock = clock
        self.bypassing = bypassing
        self.track = track
        # Stored key -> [the codec that decoded it, the value, clock reading it expires at,
        # whether a hit used it since it was last passed over for eviction]. Eviction is
        # second-chance (CLOCK), close to LRU: a hit sets a flag instead of reordering a dict,
        # which is the most a hit should cost.
        self.entries: dict[str, list[Any]] = {}
        # Tag key -> the stored keys kept here whose entries recorded that tag: a message
        # that the tag key changed (`Cache.invalidate_tags` anywhere) drops them.
        self.by_tag: dict[str, set[str]] = {}
        # True while a subscription is confirmed: only then are values served or kept.
        self.live = False
        # Counts invalidations; a read that saw it change does not keep its value.
        self.seq = 0
        # Times the channel emptied the whole tier (lost, subscribed again, a flush, a bump):
        # tests tell a hit that reached Redis by design from one that should not have.
        self.emptied = 0
        self.task: asyncio.Task[None] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        """Starts the subscription in this event loop unless it runs already."""
        loop = asyncio.get_running_loop()
        if self.task is not None and not self.task.done() and self.loop is loop:
            return
        self.loop = loop
        self.task = loop.create_task(self._follow())
        self.track(self.task)

    def get(self, full: str, codec: object, function_stats: StatsRecorder | None) -> Any:
        """Returns this tier's value of ``full`` as ``codec`` decoded it, counted as a hit, or
        `MISSING` (not live yet, bypassed, absent, another codec's or expired).

        Callers ask this before the read-through, which then only reads the backend: a
        decorated call inlines no coroutine for a local hit.
        """
        if not self.live:
            self.start()
            return MISSING
        found = self.entries.get(full)
        if (
            found is None
            or found[0] is not codec
            or not self.clock() < found[2]
            or self.bypassing.get()
        ):
            return MISSING
        found[3] = True
        reporter = self.reporter
        reporter.stats.hits += 1
        if function_stats is not None:
            function_stats.hits += 1
        if reporter.hooks:
            reporter.notify(ReadEvent(full, Outcome.HIT, function_stats and function_stats.name))
        if debug_enabled(logging.DEBUG):
            LOGGER.debug("cache hit (local): %s", full)
        return found[1]

    def stop(self) -> None:
        """Stops following the backend (its cache switched backends): nothing is trusted."""
        self.live = False
        self.clear()
        if self.task is not None:
            self.task.cancel()

    def keep(
        self,
        full: str,
        codec: object,
        value: Any,
        expires_at: float,
        seq: int,
        tag_keys: list[str] | tuple[str, ...] = (),
    ) -> None:
        """Keeps a value read from Redis, unless an invalidation arrived since ``seq``.

        ``tag_keys`` are the keys of the tags its entry recorded.
        """
        if not self.live or seq != self.seq:
            return
        entries = self.entries
        self._remove(full)  # a new value goes to the back, as a new key does
        entries[full] = [codec, value, expires_at, False, tag_keys]
        for tag_key in tag_keys:
            self.by_tag.setdefault(tag_key, set()).add(full)
        while len(entries) > self.settings.max_entries:
            oldest = next(iter(entries))
            entry = entries.pop(oldest)
            if entry[3]:
                entry[3] = False
                entries[oldest] = entry  # used since last time: another round at the back
            else:
                self._untag(oldest, entry[4])

    def _remove(self, key: str) -> None:
        entry = self.entries.pop(key, None)
        if entry is not None and entry[4]:
            self._untag(key, entry[4])

    def _untag(self, key: str, tag_keys: list[str] | tuple[str, ...]) -> None:
        by_tag = self.by_tag
        for tag_key in tag_keys:
            holders = by_tag.get(tag_key)
            if holders is not None:
                holders.discard(key)
                if not holders:
                    del by_tag[tag_key]

    def drop(self, keys: Sequence[str]) -> None:
        """Forgets ``keys`` (changed here or elsewhere), and the values tagged with any of
        them that are tag keys."""
        self.seq += 1
        for key in keys:
            self._remove(key)
            for tagged in self.by_tag.pop(key, ()):
                self._remove(tagged)

    def drop_matching(self, pattern: str) -> None:
        """Forgets the keys matching a Redis glob."""
        self.seq += 1
        matches: Callable[[str], object] = compile_glob(pattern).fullmatch
        for key in [key for key in self.entries if matches(key)]:
            self._remove(key)

    def clear(self) -> None:
        """Forgets everything."""
        self.seq += 1
        self.entries.clear()
        self.by_tag.clear()

    def _empty(self) -> None:
        self.emptied += 1
        self.clear()

    async def _follow(self) -> None:
        """Applies invalidation messages; on losing them, empties and bypasses the tier."""
        generation = self.generation
        generation_key = generation.key
        prefix = self.prefix
        retry = _RETRY_FIRST
        try:
            while True:
                try:
                    async for keys in self.backend.invalidations(
                        prefix, heartbeat=self.settings.heartbeat
                    ):
                        if keys is None:
                            # The server flushed, or lost track: trust nothing.
                            generation.recheck()
                            self._empty()
                        elif not keys:
                            # Subscribed: whatever changed before is unknown, so start empty
                            # and learn the generation again.
                            generation.recheck()
                            self._empty()
                            self.live = True
                            retry = _RETRY_FIRST
                        elif generation_key in keys:
                            # bump_version elsewhere: learn the generation with the next read.
                            generation.recheck()
                            self._empty()
                        else:
                            self.drop(keys)
                except BackendError as exc:
                    self.reporter.log.warning(
                        "local",
                        "local tier bypassed, its invalidation channel failed: %s",
                        exc,
                    )
                self.live = False
                self._empty()
                await asyncio.sleep(retry)
                retry = min(retry * 2, _RETRY_MAX)
        finally:
            # Cancelled (`Cache.aclose`, or a swapped backend): nothing is trusted any more.
            self.live = False
            self.clear()
            LOGGER.debug("local tier of %s stopped", prefix)
