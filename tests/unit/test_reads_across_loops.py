"""Merged reads and event loops: a reader joins only a read of its own loop (issue 17's
burst path takes the read's loop to be the reader's, and learns otherwise at its await)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

from cachetier import Cache
from cachetier.backends import MemoryBackend


class _FirstGetHeld(MemoryBackend):
    """A backend whose first GET once ``armed`` waits until ``release`` is set; the others
    answer a loop turn later, as across a network (so concurrent readers merge)."""

    in_process = False  # its reads wait as a network's do: the cache merges them

    def __init__(self) -> None:
        super().__init__()
        self.armed = False
        self.gets = 0  # reads (GET or MGET) since armed
        self.entered = threading.Event()
        self.release = threading.Event()

    async def get(self, key: str) -> bytes | None:
        if not self.armed:
            return await super().get(key)
        self.gets += 1
        if self.gets == 1:
            self.entered.set()
            # Released from another thread, where an asyncio.Event cannot be set: polled.
            while not self.release.is_set():  # noqa: ASYNC110
                await asyncio.sleep(0.001)
        else:
            await asyncio.sleep(0)
        return await super().get(key)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if self.armed:
            self.gets += 1  # one read, as a GET is
            await asyncio.sleep(0)
        return await super().get_many(keys)


def test_a_reader_on_another_threads_loop_reads_alone_while_that_loops_read_waits() -> None:
    backend = _FirstGetHeld()
    cache = Cache(backend)
    asyncio.run(cache.set("k", "v"))
    backend.armed = True
    answers: dict[str, object] = {}

    def first_reader() -> None:
        answers["first"] = asyncio.run(cache.get("k"))

    thread = threading.Thread(target=first_reader)
    thread.start()
    try:
        assert backend.entered.wait(5)
        # The first read is under way on the other thread's loop, and listed for joining.
        answers["second"] = asyncio.run(asyncio.wait_for(cache.get("k"), 5))
        assert "first" not in answers  # answered without waiting for the other loop's read
    finally:
        backend.release.set()
        thread.join(5)
    assert answers == {"first": "v", "second": "v"}
    assert backend.gets == 2


def test_a_read_cut_off_by_its_loop_closing_is_never_joined_again() -> None:
    backend = _FirstGetHeld()
    cache = Cache(backend)
    asyncio.run(cache.set("k", "v"))
    backend.armed = True
    abandoned = asyncio.new_event_loop()
    task = abandoned.create_task(cache.get("k"))
    abandoned.run_until_complete(asyncio.sleep(0.01))
    assert backend.entered.is_set()
    assert not task.done()
    abandoned.close()  # the read never ends: its loop is gone

    async def burst() -> list[object]:
        first = await asyncio.wait_for(cache.get("k"), 5)  # finds the dead read, reads alone
        gets = backend.gets
        rest = await asyncio.wait_for(asyncio.gather(*(cache.get("k") for _ in range(10))), 5)
        assert backend.gets == gets + 1  # the dead read was dropped: these share one read again
        return [first, *rest]

    assert asyncio.run(burst()) == ["v"] * 11


def test_a_reader_on_another_threads_loop_never_waits_on_that_loops_filling_batch() -> None:
    backend = _FirstGetHeld()
    cache = Cache(backend)

    async def fill() -> None:
        await cache.set_many({"held": "h", "x": "vx", "y": "vy"})

    asyncio.run(fill())
    backend.armed = True
    window = threading.Event()
    other_done = threading.Event()
    answers: dict[str, object] = {}

    def hold_the_loop() -> None:
        # Runs after the batch of "x" formed and before it is sent: the batch stays open
        # while the other thread reads.
        window.set()
        other_done.wait(5)

    async def first_loop() -> None:
        held = asyncio.create_task(cache.get("held"))
        while not backend.entered.is_set():  # noqa: ASYNC110  # a threading.Event
            await asyncio.sleep(0.001)
        batched = asyncio.create_task(cache.get("x"))  # a read is in flight: this one batches
        asyncio.get_running_loop().call_soon(hold_the_loop)
        answers["x"] = await batched
        backend.release.set()
        answers["held"] = await held

    thread = threading.Thread(target=lambda: asyncio.run(first_loop()))
    thread.start()
    try:
        assert window.wait(5)
        answers["y"] = asyncio.run(asyncio.wait_for(cache.get("y"), 5))
    finally:
        other_done.set()
        backend.release.set()
        thread.join(5)
    assert answers == {"y": "vy", "x": "vx", "held": "h"}


def test_a_batch_cut_off_by_its_loop_closing_is_never_joined_again() -> None:
    backend = _FirstGetHeld()
    cache = Cache(backend)

    async def fill() -> None:
        await cache.set_many({"held": "h", "x": "vx", "y": "vy", "z": "vz"})

    asyncio.run(fill())
    backend.armed = True
    abandoned = asyncio.new_event_loop()
    # Kept referenced: tasks of a loop that closes under them, never to finish.
    held = abandoned.create_task(cache.get("held"))
    abandoned.run_until_complete(asyncio.sleep(0.01))
    assert backend.entered.is_set()
    batched = abandoned.create_task(cache.get("x"))  # batches behind the held read ...
    abandoned.call_soon(abandoned.stop)  # ... and the loop stops before the batch is sent
    abandoned.run_forever()
    abandoned.close()
    assert not held.done()
    assert not batched.done()

    async def readers() -> list[object]:
        first = await asyncio.wait_for(cache.get("y"), 5)  # finds the dead batch, reads alone
        reads = backend.gets
        rest = await asyncio.wait_for(asyncio.gather(*(cache.get("z") for _ in range(10))), 5)
        assert backend.gets == reads + 1  # the dead batch was dropped: these share one read
        return [first, *rest]

    assert asyncio.run(readers()) == ["vy"] + ["vz"] * 10
