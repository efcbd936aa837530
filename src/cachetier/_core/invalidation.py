"""`Invalidations`: what a change of keys means for this process, and the replay of the journal.

After any write or invalidation returns (or fails, since a failed call may still have reached
the store), no caller may be handed a read or a computation that was under way before it:
`changed` and its siblings detach them, and empty the local tier of what changed. An
invalidation that failed to reach the backend is journaled (`Journal`) and replayed before
anything is read from the backend or written to it again (`replay`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any, Final, cast, final

from .._errors import BackendError
from .._glob import compile_glob
from .._keys import KeyBuilder
from .._log import LOGGER
from ..backends._protocol import GuardedBackend
from .entry import new_stamp
from .generation import Generation
from .guard import Guard
from .journal import Journal
from .local import LocalState
from .reads import Reader
from .singleflight import SingleFlight
from .stats import StatsRecorder
from .tags import TAG_KEEP, Tags

__all__ = ("BATCH", "Invalidations")

BATCH: Final = 500
"""Keys per UNLINK (and per SCAN step) of a pattern, a clear or a replay."""


@final
class Invalidations:
    """The changes one `Cache` makes, as its reads, computations and local tier see them."""

    __slots__ = (
        "flights",
        "generation",
        "guard",
        "journal",
        "keys",
        "local",
        "reader",
        "replaying",
        "stats",
        "tags",
        "track",
    )

    def __init__(
        self,
        guard: Guard,
        journal: Journal,
        keys: KeyBuilder,
        generation: Generation,
        tags: Tags,
        stats: StatsRecorder,
        *,
        reader: Reader,
        flights: SingleFlight[Any],
        track: Callable[[asyncio.Task[Any]], None],
    ) -> None:
        self.guard = guard
        self.journal = journal
        self.keys = keys
        self.reader = reader
        self.flights = flights
        self.track = track
        self.generation = generation
        self.tags = tags
        self.stats = stats
        # Set with the backend (`Engine.use`): the local tier follows it.
        self.local: LocalState | None = None
        self.replaying: asyncio.Task[None] | None = None

    def changed(self, keys: Sequence[str]) -> None:
        """Forgets what this process read or is computing of ``keys``: it changed them.

        Called when a write or an invalidation of ``keys`` has returned (or failed, since a
        failed call may still have reached the store): from then on, no caller may be handed
        a read or a computation that was under way before, since it may hold what the keys
        held before the change. Reads and computations under way finish for their own
        callers; the local tier keeps nothing they bring back.
        """
        self.reader.detach(keys)
        self.flights.detach(keys)
        if self.local is not None:
            self.local.drop(keys)

    def changed_matching(self, full_pattern: str) -> None:
        """Like `changed`, for the keys that match a Redis glob (`Cache.delete_pattern`)."""
        matches = compile_glob(full_pattern).fullmatch
        self.reader.detach([key for key in self.reader.reads if matches(key)])
        self.flights.detach([key for key in self.flights.running() if matches(key)])
        if self.local is not None:
            self.local.drop_matching(full_pattern)

    def changed_all(self) -> None:
        """Like `changed`, for every key of this cache (tags, patterns, versions, clear)."""
        self.reader.detach()
        self.flights.detach()
        if self.local is not None:
            self.local.clear()

    # -- the invalidations of `Cache` ----------------------------------------------------------

    async def delete(self, full: list[str]) -> int:
        """`Cache.delete`: removes the stored keys ``full``; journaled if the backend fails."""

        async def unlink() -> int:
            await self.trusted()
            return await self.guard.backend.delete(*full)

        try:
            deleted = await self.guard.run(
                "UNLINK",
                "delete",
                unlink,
                fallback=0,
                # It may have reached the store or not: the journal makes sure it does.
                on_failure=lambda: self.journal.record(keys=full),
            )
        finally:
            self.changed(full)
        self.stats.deletes += deleted
        return deleted

    async def delete_matching(
        self,
        full_pattern: str,
        *,
        tag_keys: bool,
        on_progress: Callable[[int, int], object] | None = None,
    ) -> int:
        """`Cache.delete_pattern` and `Cache.clear` (``tag_keys``): see `unlink_matching`."""
        guard = self.guard
        try:
            guard.gate("SCAN")
            await self.trusted()
            deleted, failure = await self.unlink_matching(
                full_pattern, tag_keys=tag_keys, on_progress=on_progress
            )
        except BackendError as exc:
            deleted, failure = 0, exc
        finally:
            self.changed_matching(full_pattern)
        self.stats.deletes += deleted
        if failure is None:
            guard.succeeded()
            return deleted
        if tag_keys:
            self.journal.record(clear=True)
        else:
            self.journal.record(patterns=(full_pattern,))
        guard.failed("delete_pattern", failure)
        return deleted

    async def invalidate_tags(self, names: tuple[str, ...]) -> int:
        """`Cache.invalidate_tags`: replaces the stamps of ``names``; journaled on failure."""
        guard = self.guard
        if not names or not guard.guarded:
            return 0
        backend = cast("GuardedBackend", guard.backend)
        tag_keys = self.tags.tag_keys(names)

        async def bump() -> int:
            await self.trusted()
            return await backend.tag_bump(tag_keys, new_stamp(), TAG_KEEP)

        try:
            return await guard.run(
                "tag bump",
                "invalidate_tags",
                bump,
                fallback=0,
                on_failure=lambda: self.journal.record(tags=tag_keys),
            )
        finally:
            # Which values in flight or in the local tier carry these tags is not known here.
            self.changed_all()

    async def bump_version(self) -> int:
        """`Cache.bump_version`: increments the generation; a failure is journaled and raised."""
        generation = self.generation

        async def bump() -> int:
            await self.trusted()
            # A store that lost its generation starts it at random (see `Generation.learn`),
            # never at the 1 a bare INCR would give: an earlier life of the key may have had 1.
            await generation.start()
            return await self.guard.backend.incr(generation.key)

        try:
            bumped = await self.guard.run(
                "INCR",
                "bump_version",
                bump,
                fallback=0,
                always_raise=True,
                # Raised, so the caller knows; and journaled, so it happens once the store is
                # back.
                on_failure=lambda: self.journal.record(bump=True),
            )
        finally:
            self.changed_all()
        generation.bumped(bumped)
        return bumped

    # -- invalidations that failed: the journal ----------------------------------------------

    async def trusted(self) -> None:
        """Replays the journal first if it holds anything (see `replay`)."""
        if self.journal.pending:
            await self.replay()

    async def replay(self) -> None:
        """Replays the invalidations that failed to reach the backend; one replay at a time.

        Every backend call asks for this first while the journal holds anything, so nothing is
        read from the backend, nor written to it, before the invalidations this process owes
        it have gone through: a read that finds the replay failing fails too (a miss, and the
        function runs), and the journal is kept for the next try.

        Raises:
            BackendError: the backend still fails; the journal keeps everything.
        """
        task = self.replaying
        if task is None or task.done():
            task = self.replaying = asyncio.get_running_loop().create_task(self._replay())
            self.track(task)
        # Shielded: a caller that gives up (a timeout, a client gone) leaves it running for
        # the others, and the journal is never half taken.
        await asyncio.shield(task)

    async def _replay(self) -> None:
        pending = self.journal.take()
        if not pending.size():
            return
        backend = self.guard.backend
        try:
            if pending.bump:
                # A bump stands for everything else the journal held.
                generation = self.generation
                await generation.start()
                generation.bumped(await backend.incr(generation.key))
            else:
                if pending.clear:
                    _, failure = await self.unlink_matching(self.keys.pattern("*"), tag_keys=True)
                    if failure is not None:
                        raise failure
                for pattern in sorted(pending.patterns):
                    _, failure = await self.unlink_matching(pattern, tag_keys=False)
                    if failure is not None:
                        raise failure
                keys = sorted(pending.keys)
                for start in range(0, len(keys), BATCH):
                    await backend.delete(*keys[start : start + BATCH])
                if pending.tags and self.guard.guarded:
                    await cast("GuardedBackend", backend).tag_bump(
                        sorted(pending.tags), new_stamp(), TAG_KEEP
                    )
        except BaseException:
            self.journal.give_back(pending)
            raise
        self.journal.replayed += 1
        self.changed_all()
        LOGGER.warning(
            "cache %s: replayed %d invalidations that failed while the backend was unreachable%s",
            self.keys.prefix.rstrip(":"),
            pending.size(),
            " (as one bump_version: more than the journal holds)" if pending.bump else "",
        )

    async def unlink_matching(
        self,
        full_pattern: str,
        *,
        tag_keys: bool,
        on_progress: Callable[[int, int], object] | None = None,
    ) -> tuple[int, BackendError | None]:
        """SCANs for the keys matching ``full_pattern`` and UNLINKs them in batches.

        Returns how many it removed and, if the backend failed part way, the failure. The
        generation is never removed: processes still reading at it would otherwise disagree
        with those that see it gone. Tag stamps go only when ``tag_keys`` (`Cache.clear`): a
        pattern may well match one by chance (``*:1`` and the stamp of tag ``project:1``).
        ``on_progress`` is called after each SCAN step with the keys scanned and removed so far.
        """
        generation_key = self.keys.generation_key()
        tag_prefix = self.keys.tag_key("")
        backend = self.guard.backend
        deleted = scanned = 0
        # Each batch's UNLINK runs while the next SCAN step is under way: one round trip per
        # batch instead of two, and still at most one batch of keys in flight.
        unlinking: asyncio.Future[int] | None = None
        try:
            async for batch in backend.scan(full_pattern, count=BATCH):
                scanned += len(batch)
                keys = [
                    key
                    for key in batch
                    if key != generation_key and (tag_keys or not key.startswith(tag_prefix))
                ]
                if unlinking is not None:
                    deleted += await unlinking
                    unlinking = None
                if keys:
                    unlinking = asyncio.ensure_future(backend.delete(*keys))
                if on_progress is not None:
                    on_progress(scanned, deleted)
            if unlinking is not None:
                deleted += await unlinking
                unlinking = None
        except BackendError as exc:
            return deleted, exc
        finally:
            if unlinking is not None:
                # The scan failed or was cancelled: let the batch under way finish, so that
                # what it removed is counted and no task is left behind.
                with contextlib.suppress(BackendError):
                    deleted += await asyncio.shield(unlinking)
        return deleted, None
