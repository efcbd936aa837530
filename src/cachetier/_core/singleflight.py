"""`SingleFlight`: one in-process computation per key while other callers wait for its result;
`Flights`: the single flights of a `Cache`, which invalidations can overtake."""

from __future__ import annotations

import asyncio
import functools
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, Generic, TypeVar, final

__all__ = ("Flights", "SingleFlight")

T = TypeVar("T")


@final
class SingleFlight(Generic[T]):
    """Runs at most one computation per key at a time; concurrent callers share its outcome.

    The computation runs in its own task, so cancelling one caller (a client hung up) does not
    cancel the work others wait for; each caller waits through `asyncio.shield`. The outcome,
    value or exception, reaches every caller; nothing is remembered once the task ends.
    """

    __slots__ = ("_flights", "_on_start")

    def __init__(self, on_start: Callable[[asyncio.Task[Any]], None] | None = None) -> None:
        """Args:
        on_start: called with each new task, so an owner can track it and cancel it on close.
        """
        self._flights: dict[str, asyncio.Task[T]] = {}
        self._on_start = on_start

    def detach(self, keys: Iterable[str] | None = None) -> None:
        """Lets no later caller join the computations of ``keys`` (all: ``None``) under way.

        They run on for the callers already waiting; a caller arriving afterwards starts a
        computation of its own. Used when a key is invalidated: a computation under way may
        have read the data before the change that caused the invalidation.
        """
        if keys is None:
            self._flights.clear()
            return
        flights = self._flights
        for key in keys:
            flights.pop(key, None)

    def forget(self, key: str, task: asyncio.Task[T]) -> None:
        """Lets no later caller join ``task`` for ``key``, if it is still the one listed."""
        if self._flights.get(key) is task:
            del self._flights[key]

    def running(self) -> list[str]:
        """Returns the keys of the computations under way."""
        return list(self._flights)

    def is_running(self, key: str) -> bool:
        """Returns whether a computation for ``key`` is under way."""
        return key in self._flights

    def start(
        self, key: str, compute: Callable[[], Coroutine[Any, Any, T]]
    ) -> tuple[asyncio.Task[T], bool]:
        """Returns the task computing ``key``, starting it unless one runs in this event loop.

        The second item says whether this call started it.
        """
        task = self._flights.get(key)
        loop = asyncio.get_running_loop()
        if task is not None and task.get_loop() is loop:
            return task, False
        task = loop.create_task(compute())
        self._flights[key] = task
        task.add_done_callback(functools.partial(self._forget, key))
        if self._on_start is not None:
            self._on_start(task)
        return task, True

    async def run(self, key: str, compute: Callable[[], Coroutine[Any, Any, T]]) -> tuple[T, bool]:
        """Returns the result of ``compute()`` for ``key`` and whether this call started it.

        A caller arriving while a computation for ``key`` runs in the same event loop waits for
        that one instead of starting another.
        """
        task, leader = self.start(key, compute)
        return await asyncio.shield(task), leader

    def _forget(self, key: str, task: asyncio.Task[T]) -> None:
        if self._flights.get(key) is task:
            del self._flights[key]
        if not task.cancelled():
            # Mark the exception retrieved: when every waiter was cancelled nobody else will.
            task.exception()


@final
class Flights:
    """The computations of one `Cache` under way, and the invalidations that overtook them.

    A caller that joins a computation already under way gets its result only if no
    invalidation overtook it: one from another process (which this process cannot see coming)
    removes its lease or replaces the stamps of its tags, and its result, read from the
    database before that invalidation, is then no answer for a call that may have started
    after it. Such callers compute again, together. The caller that started the computation
    takes its result either way: it started before the invalidation.
    """

    __slots__ = ("flights", "overtaken", "stamps", "tags_hold")

    def __init__(
        self,
        *,
        on_start: Callable[[asyncio.Task[Any]], None],
        tags_hold: Callable[[list[str], list[bytes]], Awaitable[bool]],
    ) -> None:
        self.flights: SingleFlight[Any] = SingleFlight(on_start=on_start)
        # Whether the tag stamps a computation recorded still hold.
        self.tags_hold = tags_hold
        # Computations an invalidation overtook, and the tag stamps each recorded: what a
        # caller that joined one checks before taking its result (`run`).
        self.overtaken: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()
        self.stamps: weakref.WeakKeyDictionary[asyncio.Task[Any], list[tuple[str, bytes]]] = (
            weakref.WeakKeyDictionary()
        )

    async def run(self, full: str, compute: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
        """Returns the result of the one computation of ``full`` in this process, joining it."""
        flights = self.flights
        task, leader = flights.start(full, compute)
        value = await asyncio.shield(task)
        if leader or not await self.was_overtaken(task):
            return value
        flights.forget(full, task)
        task, _ = flights.start(full, compute)
        return await asyncio.shield(task)

    def overtaken_now(self) -> None:
        """Marks the computation running in the current task as overtaken by an invalidation."""
        task = asyncio.current_task()
        if task is not None:
            self.overtaken.add(task)

    def recorded(self, stamps: list[tuple[str, bytes]]) -> None:
        """Notes the tag stamps the computation running in the current task recorded."""
        task = asyncio.current_task()
        if task is not None:
            self.stamps[task] = stamps

    async def was_overtaken(self, task: asyncio.Task[Any]) -> bool:
        """Whether an invalidation overtook the computation ``task`` ran (see `run`)."""
        if task in self.overtaken:
            return True
        stamps = self.stamps.get(task)
        if not stamps:
            return False
        return not await self.tags_hold([key for key, _ in stamps], [s for _, s in stamps])
