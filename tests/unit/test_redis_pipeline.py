"""`RedisBackend`'s reads over held, auto-pipelined connections (issue 17) on a real server.

Every value encodes its key, so a reply handed to the wrong waiter shows as a wrong value. A
private server is frozen with SIGSTOP where replies must be held back, and killed where the
connections must die under the backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import random
import signal
import warnings
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as redis_asyncio

from cachetier import BackendError
from cachetier.backends import RedisBackend

from ..servers import RedisServer

pytestmark = pytest.mark.redis

KEYS = 40


def value_of(k: int) -> bytes:
    """The value of key ``k``: its number and a padding of its own length (one large)."""
    size = 300_000 if k == 7 else k * 37 % 900
    return f"{k}:".encode() + bytes([97 + k % 26]) * size


def key(k: int) -> str:
    return f"pipe:{k}"


@pytest.fixture
def server(private_redis: RedisServer) -> Iterator[RedisServer]:
    """The module's private server, resumed at the end in case a test left it frozen."""
    yield private_redis
    process = private_redis.process
    if process is not None and process.poll() is None:
        os.kill(process.pid, signal.SIGCONT)


async def fill(url: str) -> None:
    client = redis_asyncio.Redis.from_url(url)
    try:
        await client.mset({key(k): value_of(k) for k in range(KEYS)})
    finally:
        await client.aclose()


@pytest.fixture
async def backend(server: RedisServer) -> AsyncIterator[RedisBackend]:
    await fill(server.url)
    made = RedisBackend.from_url(server.url, command_timeout=2.0, connect_timeout=2.0)
    assert isinstance(made, RedisBackend)
    try:
        yield made
    finally:
        await made.aclose()


def freeze(server: RedisServer) -> None:
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGSTOP)


def thaw(server: RedisServer) -> None:
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGCONT)


async def turns(count: int) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


async def check_all(backend: RedisBackend) -> None:
    """Every key read alone and together returns its own value: the connections are in step."""
    for k in range(KEYS):
        assert await backend.get(key(k)) == value_of(k)
    assert await backend.get_many([key(k) for k in range(KEYS)]) == [
        value_of(k) for k in range(KEYS)
    ]


async def test_concurrent_reads_each_get_the_reply_to_their_own_command(
    backend: RedisBackend,
) -> None:
    rng = random.Random(17)
    for _ in range(20):
        picks = [rng.sample(range(KEYS), rng.randint(1, 5)) for _ in range(200)]
        calls = [
            backend.get(key(p[0])) if len(p) == 1 else backend.get_many([key(k) for k in p])
            for p in picks
        ]
        results = await asyncio.gather(*calls)
        for p, result in zip(picks, results, strict=True):
            expected = value_of(p[0]) if len(p) == 1 else [value_of(k) for k in p]
            assert result == expected


async def test_a_cancelled_waiter_leaves_its_reply_to_be_read_and_dropped(
    backend: RedisBackend, server: RedisServer
) -> None:
    await check_all(backend)  # connections open and idle
    freeze(server)
    try:
        tasks = [asyncio.create_task(backend.get(key(k))) for k in range(KEYS)]
        await turns(5)  # every command written; the replies are held back
        cancelled = set(range(1, KEYS, 3))
        for k in cancelled:
            tasks[k].cancel()
        await turns(2)
    finally:
        thaw(server)
    for k, task in enumerate(tasks):
        if k in cancelled:
            with pytest.raises(asyncio.CancelledError):
                await task
        else:
            assert await task == value_of(k)
    await check_all(backend)


async def test_a_task_cancelled_while_it_reads_its_own_reply_desynchronises_nothing(
    backend: RedisBackend,
) -> None:
    """Key 7's 300 KB reply arrives in many reads; the caller is cancelled between them."""
    for delay in range(1, 12):
        await check_all(backend)
        # Both held connections open (one was closed by the last cancellation), so that the
        # reads below queue behind the large one rather than wait for a connection.
        assert await asyncio.gather(*(backend.get(key(k)) for k in range(KEYS))) == [
            value_of(k) for k in range(KEYS)
        ]
        reader = asyncio.create_task(backend.get(key(7)))
        await turns(delay)
        # Reads pipelined behind it, on its connection too: their replies come after its own.
        others = [asyncio.create_task(backend.get(key(k))) for k in range(KEYS)]
        await turns(2)
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            assert await reader == value_of(7)  # it had finished before the cancellation
        assert await asyncio.gather(*others) == [value_of(k) for k in range(KEYS)]
    await check_all(backend)


async def test_a_timed_out_read_closes_its_connection_and_the_next_read_gets_its_own_value(
    server: RedisServer,
) -> None:
    await fill(server.url)
    backend = RedisBackend.from_url(server.url, command_timeout=0.05, connect_timeout=1.0)
    assert isinstance(backend, RedisBackend)
    try:
        await check_all(backend)
        freeze(server)
        try:
            with pytest.raises(BackendError, match=r"^GET timed out after 50 ms$"):
                await backend.get(key(1))
            results = await asyncio.gather(
                *(backend.get(key(k)) for k in range(5)), return_exceptions=True
            )
            assert all(isinstance(result, BackendError) for result in results)
            assert {str(result) for result in results} == {"GET timed out after 50 ms"}
        finally:
            thaw(server)
        # The replies to the timed-out commands arrive on closed connections, never read.
        for k in (2, 1, 0, 3):
            assert await backend.get(key(k)) == value_of(k)
        await check_all(backend)
    finally:
        await backend.aclose()


async def test_a_killed_server_fails_reads_until_it_is_back_then_they_reconnect(
    own_redis: RedisServer,
) -> None:
    await fill(own_redis.url)
    backend = RedisBackend.from_url(own_redis.url, command_timeout=0.5, connect_timeout=0.5)
    assert isinstance(backend, RedisBackend)
    try:
        await check_all(backend)
        await asyncio.to_thread(own_redis.kill)
        with pytest.raises(BackendError, match=r"^GET failed: connection refused$"):
            await backend.get(key(1))
        with pytest.raises(BackendError, match=r"^MGET failed: connection refused$"):
            await backend.get_many([key(1), key(2)])
        await asyncio.to_thread(own_redis.start)
        await fill(own_redis.url)
        await check_all(backend)
        # Held connections the restart closed fail no read: each is retried on a fresh one.
        await asyncio.to_thread(own_redis.kill)
        await asyncio.to_thread(own_redis.start)
        await fill(own_redis.url)
        assert await asyncio.gather(*(backend.get(key(k)) for k in range(KEYS))) == [
            value_of(k) for k in range(KEYS)
        ]
        await check_all(backend)
    finally:
        await backend.aclose()


def test_a_backend_serves_a_second_event_loop(server: RedisServer) -> None:
    asyncio.run(fill(server.url))
    backend = RedisBackend.from_url(server.url, command_timeout=2.0, connect_timeout=2.0)
    assert isinstance(backend, RedisBackend)

    async def reads() -> None:
        await check_all(backend)
        assert await asyncio.gather(*(backend.get(key(k)) for k in range(KEYS))) == [
            value_of(k) for k in range(KEYS)
        ]

    async def reads_then_close() -> None:
        await reads()
        await backend.aclose()

    asyncio.run(reads_then_close())
    asyncio.run(reads_then_close())
    # Reads only (writes go through redis-py's pool, which is bound to one loop): the held
    # connections of a loop that closed without `aclose` are dropped by the next loop.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        asyncio.run(reads())
        asyncio.run(reads_then_close())
        gc.collect()


async def test_aclose_closes_the_held_connections_and_reads_reopen_them(
    backend: RedisBackend, server: RedisServer
) -> None:
    admin = redis_asyncio.Redis.from_url(server.url)
    try:
        await asyncio.gather(*(backend.get(key(k)) for k in range(KEYS)))

        async def named() -> int:
            clients = await admin.client_list()
            return sum(1 for client in clients if client.get("name") == "cachetier")

        assert await named() >= 1
        await backend.aclose()
        for _ in range(50):
            if await named() == 0:
                break
            await asyncio.sleep(0.01)
        assert await named() == 0
        await check_all(backend)
    finally:
        await admin.aclose()


async def test_reads_under_way_when_aclose_runs_end_with_a_value_or_backend_error(
    backend: RedisBackend, server: RedisServer
) -> None:
    """None hangs or escapes: a read cut off by `aclose` is sent again on new connections."""
    await check_all(backend)
    freeze(server)
    try:
        tasks = [asyncio.create_task(backend.get(key(k))) for k in range(KEYS)]
        await turns(5)
        closing = asyncio.create_task(backend.aclose())
        await turns(5)
    finally:
        thaw(server)
    await asyncio.wait_for(closing, 5)
    results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5)
    for k, result in enumerate(results):
        assert result == value_of(k) or isinstance(result, BackendError), result
    await check_all(backend)


@pytest.mark.parametrize("protocol", [2, 3], ids=["resp2", "resp3"])
async def test_reads_parse_in_either_protocol_version(server: RedisServer, protocol: int) -> None:
    """RESP3 answers an absent key with its own null type; both parsers must read it."""
    await fill(server.url)
    backend = RedisBackend.from_url(
        f"{server.url}?protocol={protocol}", command_timeout=2.0, connect_timeout=2.0
    )
    assert isinstance(backend, RedisBackend)
    try:
        assert await backend.get(key(1)) == value_of(1)
        assert await backend.get("pipe:absent") is None
        assert await backend.get_many([key(2), "pipe:absent", key(7)]) == [
            value_of(2),
            None,
            value_of(7),
        ]
        assert await asyncio.gather(
            *(backend.get(key(k) if k % 3 else "pipe:absent") for k in range(KEYS))
        ) == [value_of(k) if k % 3 else None for k in range(KEYS)]
    finally:
        await backend.aclose()
