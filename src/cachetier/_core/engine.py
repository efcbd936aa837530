"""`Engine`: the parts of one `Cache`, built and wired once, and switched together by `use`.

Each rule lives in the part that owns it: `Guard` (every backend call), `Generation`
(`bump_version`), `Reader` (merged reads), `Tags`, `Writer` (entries and leases), `Flights`
(single flight), `Invalidations` (what a change means here, and the journal's replay),
`Lookups` (reads that compute nothing), `ReadThrough` (computing on a miss) and `LocalState` (the local tier). The engine only holds
them, tracks background tasks, and hands the façade the few it calls.
"""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any, final

from .._keys import KeyBuilder
from .._log import LOGGER
from .._types import Clock
from ..backends._protocol import Backend, TrackingBackend
from ..serializers import Serializer
from .breaker import CircuitBreaker
from .entry import EntrySigner
from .generation import Generation
from .guard import Guard
from .invalidation import Invalidations
from .journal import Journal
from .local import LocalState, LocalTier
from .lookups import Lookups
from .reads import Reader
from .singleflight import Flights
from .stats import ReadHook, Reporter, StatsRecorder
from .tags import Tags
from .through import ReadThrough
from .writes import Writer

__all__ = ("Engine",)


@final
class Engine:
    """The parts shared by every operation of one `Cache`; private to the package."""

    __slots__ = (
        "bypassing",
        "clock",
        "flights",
        "generation",
        "guard",
        "invalidations",
        "journal",
        "keys",
        "local",
        "local_settings",
        "lookups",
        "reader",
        "reporter",
        "serializer",
        "stats",
        "tags",
        "tasks",
        "through",
        "timing_wanted",
        "writer",
    )

    def __init__(
        self,
        backend: Backend,
        *,
        serializer: Serializer,
        strict: bool,
        max_value_bytes: int | None,
        jitter: float,
        hooks: tuple[ReadHook, ...],
        breaker: CircuitBreaker,
        signer: EntrySigner | None,
        keys: KeyBuilder,
        clock: Clock,
        generation_interval: float,
        local: LocalTier | None = None,
        latency_stats: bool = True,
        journal_limit: int = 1000,
    ) -> None:
        self.keys = keys
        self.serializer = serializer
        self.clock = clock
        self.timing_wanted = latency_stats
        self.local_settings = local
        self.local: LocalState | None = None
        self.tasks: set[asyncio.Task[Any]] = set()
        # True inside `Cache.bypass()` blocks of the current task (and tasks it starts).
        self.bypassing: contextvars.ContextVar[bool] = contextvars.ContextVar(
            "cachetier_bypass", default=False
        )
        self.stats = StatsRecorder()
        self.journal = Journal(journal_limit)
        self.guard = guard = Guard(backend, breaker, strict=strict, timing=latency_stats)
        self.reporter = Reporter(self.stats, hooks, guard.log)
        # The generation tells the invalidations when it changes, which need the reader,
        # which reads the generation: wired once the three exist.
        self.generation = generation = Generation(
            guard,
            keys.generation_key(),
            clock=clock,
            interval=generation_interval,
            on_change=_nothing,
        )
        self.tags = tags = Tags(guard, keys)
        self.flights = flights = Flights(on_start=self.track, tags_hold=tags.hold)
        self.reader = reader = Reader(
            guard, generation, self.journal, self.stats, replay=_unwired, track=self.track
        )
        self.invalidations = invalidations = Invalidations(
            guard,
            self.journal,
            keys,
            generation,
            tags,
            self.stats,
            reader=reader,
            flights=flights.flights,
            track=self.track,
        )
        generation.on_change = invalidations.changed_all
        reader.replay = invalidations.replay
        self.writer = writer = Writer(
            guard,
            generation,
            flights,
            self.stats,
            self.journal,
            tags,
            trusted=invalidations.trusted,
            changed=invalidations.changed,
            signer=signer,
            clock=clock,
            jitter=jitter,
            max_value_bytes=max_value_bytes,
        )
        self.lookups = lookups = Lookups(
            guard,
            reader,
            generation,
            tags,
            self.reporter,
            signer=signer,
            clock=clock,
            bypassing=self.bypassing,
        )
        self.through = ReadThrough(
            guard,
            reader,
            generation,
            tags,
            writer,
            flights,
            self.reporter,
            lookups,
            keys=keys,
            signer=signer,
            clock=clock,
            bypassing=self.bypassing,
        )
        self.use(backend)

    def use(self, backend: Backend) -> None:
        """Makes ``backend`` the one every operation uses from now on."""
        self.guard.use(backend, timing=self.timing_wanted)
        # The generation of this store is unknown until a read or a write learns it; until
        # then every read asks for it.
        self.generation.forget()
        if self.local is not None:
            self.local.stop()
        self.local = None
        if self.local_settings is not None:
            if isinstance(backend, TrackingBackend):
                self.local = LocalState(
                    backend,
                    self.local_settings,
                    prefix=self.keys.prefix,
                    generation=self.generation,
                    reporter=self.reporter,
                    clock=self.clock,
                    bypassing=self.bypassing,
                    track=self.track,
                )
            else:
                LOGGER.info(
                    "local tier off: the %s backend cannot report changes of its keys",
                    backend.kind,
                )
        self.invalidations.local = self.lookups.local = self.through.local = self.local

    def track(self, task: asyncio.Task[Any]) -> None:
        """Keeps ``task`` until it ends, so `cancel_background` can stop it."""
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def cancel_background(self) -> None:
        """Cancels and awaits every background computation."""
        tasks = [task for task in self.tasks if not task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


def _nothing() -> None:
    """Stands for a callback until `Engine.__init__` wires the real one."""


async def _unwired() -> None:
    """Stands for `Invalidations.replay` until `Engine.__init__` wires it."""
