"""`RedisBackend`'s held connections against a scripted server: replies no real Redis sends.

The server answers every handshake command with ``+OK`` and each ``GET k`` as the test scripts
it: a value, an error reply, bytes that are no RESP reply, silence, or a close. What the held
connection must do with each: hand every waiter the reply to its own command, or fail it with
a `BackendError`, and never read a reply on a connection that has lost step.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from cachetier import BackendError
from cachetier.backends import RedisBackend
from cachetier.backends.redis.resp import Replies

from ..servers import serving


@dataclass
class Scripted:
    """A loopback server speaking just enough RESP; ``answers`` maps a key to its reply bytes."""

    answers: dict[bytes, bytes] = field(default_factory=dict)
    connections: int = 0
    gets: list[bytes] = field(default_factory=list)
    port: int = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        parser = Replies()  # a command is an array of bulk strings: a reply's shape
        try:
            while data := await reader.read(65536):
                parser.feed(data)
                while (command := parser.gets()) is not False:
                    if command[0].upper() != b"GET":
                        writer.write(b"+OK\r\n")
                        continue
                    key = command[1]
                    self.gets.append(key)
                    answer = self.answers.get(key, b"$%d\r\n%b\r\n" % (len(key), key))
                    if answer == b"close":
                        writer.close()
                        return
                    writer.write(answer)
                await writer.drain()
        finally:
            writer.close()


@pytest.fixture
async def scripted() -> AsyncIterator[Scripted]:
    server_state = Scripted()
    async with serving(server_state.serve) as server_state.port:
        yield server_state


@pytest.fixture
async def backend(scripted: Scripted) -> AsyncIterator[RedisBackend]:
    made = RedisBackend.from_url(
        f"redis://127.0.0.1:{scripted.port}/0", command_timeout=0.3, connect_timeout=1.0
    )
    assert isinstance(made, RedisBackend)
    try:
        yield made
    finally:
        await made.aclose()


async def test_an_error_reply_fails_its_own_read_and_no_other(
    backend: RedisBackend, scripted: Scripted
) -> None:
    scripted.answers[b"bad"] = b"-WRONGTYPE Operation against a key holding the wrong kind\r\n"
    keys = [b"a", b"bad", b"c", b"d"]
    results = await asyncio.gather(*(backend.get(k.decode()) for k in keys), return_exceptions=True)
    assert results[0] == b"a"
    assert results[2:] == [b"c", b"d"]
    assert isinstance(results[1], BackendError)
    assert "WRONGTYPE" in str(results[1])
    opened = scripted.connections
    assert await backend.get("e") == b"e"
    assert scripted.connections == opened  # the connection stayed in step: kept


async def test_bytes_that_are_no_reply_retire_the_connection_and_fail_only_its_reads(
    backend: RedisBackend, scripted: Scripted
) -> None:
    assert await backend.get("warm") == b"warm"
    opened = scripted.connections
    scripted.answers[b"garbage"] = b"@no such reply type\r\n"
    with pytest.raises(BackendError, match=r"^GET failed"):
        await backend.get("garbage")
    assert await backend.get("after") == b"after"  # its own value, on a new connection
    assert scripted.connections > opened


async def test_a_silent_server_times_out_the_read_and_the_connection_is_never_reused(
    backend: RedisBackend, scripted: Scripted
) -> None:
    assert await backend.get("warm") == b"warm"
    opened = scripted.connections
    scripted.answers[b"silent"] = b""
    with pytest.raises(BackendError, match=r"^GET timed out after 300 ms$"):
        await backend.get("silent")
    # Had the connection been kept, this read would wait behind the unanswered one.
    assert await backend.get("next") == b"next"
    assert scripted.connections > opened


async def test_a_connection_the_server_closes_is_retried_once_on_a_fresh_one(
    backend: RedisBackend, scripted: Scripted
) -> None:
    assert await backend.get("warm") == b"warm"
    scripted.answers[b"drop"] = b"close"
    gets_before = len(scripted.gets)
    with pytest.raises(BackendError, match=r"^GET failed"):
        await backend.get("drop")  # closed again on the retry: fails, once retried
    assert scripted.gets[gets_before:] == [b"drop", b"drop"]
    del scripted.answers[b"drop"]
    assert await backend.get("drop") == b"drop"


async def test_a_cancelled_waiter_leaves_the_replies_behind_it_in_step(
    backend: RedisBackend, scripted: Scripted
) -> None:
    assert await backend.get("warm") == b"warm"
    for round_ in range(20):
        tasks = [asyncio.create_task(backend.get(f"k{round_}-{i}")) for i in range(30)]
        await asyncio.sleep(0)
        for task in tasks[1::3]:
            task.cancel()
        for i, task in enumerate(tasks):
            if i % 3 == 1:
                with contextlib.suppress(asyncio.CancelledError):
                    assert await task == f"k{round_}-{i}".encode()
            else:
                assert await task == f"k{round_}-{i}".encode()
