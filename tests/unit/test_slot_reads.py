"""`SlotReads` against a scripted node and a stand-in cluster client: which replies are the
node's answer, which go to the client, and which fail the read."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.connection import Connection
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse
from redis.exceptions import TimeoutError as RedisTimeoutError

from cachetier.backends.redis.resp import Replies
from cachetier.backends.redis.slots import SlotReads

from ..servers import serving


@dataclass
class Node:
    """A loopback "primary": ``+OK`` to the handshake, then each GET or MGET as scripted by
    its first key: ``moved`` (a MOVED reply), ``short`` (an MGET answered with one value too
    few), ``silent`` (no answer), else each key's own name as its value."""

    port: int = 0
    commands: list[list[bytes]] = field(default_factory=list)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parser = Replies()  # a command is an array of bulk strings: a reply's shape
        try:
            while data := await reader.read(65536):
                parser.feed(data)
                while (command := parser.gets()) is not False:
                    name = command[0].upper()
                    if name not in (b"GET", b"MGET"):
                        writer.write(b"+OK\r\n")
                        continue
                    self.commands.append(command)
                    keys = command[1:]
                    if keys[0] == b"moved":
                        writer.write(b"-MOVED 3999 127.0.0.1:1\r\n")
                    elif keys[0] == b"silent":
                        pass
                    elif name == b"GET":
                        writer.write(b"$%d\r\n%b\r\n" % (len(keys[0]), keys[0]))
                    else:
                        answered = keys[:-1] if keys[0] == b"short" else keys
                        writer.write(b"*%d\r\n" % len(answered))
                        for key in answered:
                            writer.write(b"$%d\r\n%b\r\n" % (len(key), key))
                await writer.drain()
        finally:
            writer.close()


class StandIn:
    """What `SlotReads` uses of a ``RedisCluster``: its encoder, its slot map (every slot on
    one node) and its own GET and MGET, which answer ``from the client`` after failing with a
    connection error as many times as ``dropping`` says."""

    def __init__(self, node: ClusterNode) -> None:
        self.encoder = type("Encoder", (), {"encoding": "utf-8", "encoding_errors": "strict"})()
        primaries = {slot: [node] for slot in range(16384)}
        self.nodes_manager = type("Nodes", (), {"slots_cache": primaries})()
        self.asked: list[Any] = []
        self.dropping = 0

    def _answer(self, asked: Any) -> None:
        self.asked.append(asked)
        if self.dropping:
            self.dropping -= 1
            raise RedisConnectionError("Connection closed by server.")

    async def get(self, key: str) -> bytes:
        self._answer(key)
        return b"from the client"

    async def mget_nonatomic(self, keys: list[str]) -> list[bytes]:
        self._answer(keys)
        return [b"from the client"] * len(keys)


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    state = Node()
    async with serving(state.serve) as state.port:
        yield state


@pytest.fixture
async def client(node: Node) -> StandIn:
    return StandIn(
        ClusterNode("127.0.0.1", node.port, connection_class=Connection, socket_timeout=0.3)
    )


@pytest.fixture
async def reads(client: StandIn) -> AsyncIterator[SlotReads]:
    made = SlotReads(client)  # type: ignore[arg-type]
    try:
        yield made
    finally:
        await made.aclose()


async def test_the_node_answers_reads_the_map_routes_right(
    reads: SlotReads, client: StandIn, node: Node
) -> None:
    assert await reads.get("a") == b"a"
    assert await reads.mget(["a", "b", "c"]) == [b"a", b"b", b"c"]
    assert client.asked == []
    assert len(node.commands) == 4, "one GET, and one MGET per slot of a, b and c"
    assert len({key_slot(key) for key in (b"a", b"b", b"c")}) == 3


async def test_a_moved_reply_hands_the_read_to_the_client(
    reads: SlotReads, client: StandIn
) -> None:
    assert await reads.get("moved") == b"from the client"
    assert await reads.mget(["a", "moved", "c"]) == [b"a", b"from the client", b"c"]
    assert client.asked == ["moved", ["moved"]]
    assert await reads.get("b") == b"b", "the connection stays in step"


async def test_an_mget_answered_with_too_few_values_fails_and_is_not_rerouted(
    reads: SlotReads, client: StandIn
) -> None:
    with pytest.raises(InvalidResponse):
        await reads.mget(["short"])
    with pytest.raises(InvalidResponse):
        await reads.mget(["a", "short", "c"])
    assert client.asked == []
    assert await reads.mget(["a", "c"]) == [b"a", b"c"], "the connection stays in step"


async def test_a_timeout_fails_the_read_at_once_and_is_not_rerouted(
    reads: SlotReads, client: StandIn
) -> None:
    with pytest.raises(RedisTimeoutError):
        await reads.get("silent")
    with pytest.raises(RedisTimeoutError):
        await reads.mget(["a", "silent"])
    assert client.asked == []


async def test_the_client_is_asked_again_once_after_a_connection_error(
    reads: SlotReads, client: StandIn
) -> None:
    """A primary that lost a failover closes its connections: the cluster client's first try
    fails, and by the second it has refreshed its map."""
    client.dropping = 1
    assert await reads.get("moved") == b"from the client"
    assert client.asked == ["moved", "moved"]
    client.dropping = 1
    assert await reads.mget(["a", "moved"]) == [b"a", b"from the client"]
    assert client.asked[2:] == [["moved"], ["moved"]]
    client.dropping = 2
    with pytest.raises(RedisConnectionError):
        await reads.get("moved")
    assert len(client.asked) == 6, "twice at most"
