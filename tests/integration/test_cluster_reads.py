"""A cluster's held reads (`backends.redis.slots`): routing by slot, and what happens to reads
while slots move between primaries.

These tests move slots, so they run on a cluster of their own rather than the session's.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as redis_asyncio
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from cachetier import BackendError, Cache
from cachetier.backends import RedisBackend, RedisClusterBackend

from ..conftest import need_redis_server
from ..servers import RedisClusterServers, record_commands, running_cluster

pytestmark = pytest.mark.redis


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    need_redis_server(cli=True)
    with running_cluster(Path(tmp_path_factory.mktemp("slot-cluster"))) as servers:
        yield servers


@pytest.fixture
async def backend(cluster: RedisClusterServers) -> AsyncIterator[RedisClusterBackend]:
    # Generous timeouts: these tests check routing, not speed, on a machine that may stall.
    backend = RedisBackend.from_url(cluster.url, connect_timeout=2.0, command_timeout=2.0)
    assert isinstance(backend, RedisClusterBackend)
    yield backend
    await backend.aclose()


@pytest.fixture
async def raw(cluster: RedisClusterServers) -> AsyncIterator[RedisCluster]:
    client = RedisCluster(host="127.0.0.1", port=cluster.ports[0])
    await client.initialize()
    yield client
    await client.aclose()


class _Nodes:
    """Plain clients of every node, by port, for the CLUSTER commands that move a slot."""

    def __init__(self, ports: list[int]) -> None:
        self.clients = {port: redis_asyncio.Redis(host="127.0.0.1", port=port) for port in ports}

    async def ids(self) -> dict[int, str]:
        return {
            port: (await client.execute_command("CLUSTER", "MYID")).decode()
            for port, client in self.clients.items()
        }

    async def start_moving(self, slot: int, source: int, target: int) -> None:
        """Marks ``slot`` migrating from ``source`` and importing at ``target``, and moves its
        keys: ``source`` answers ASK for them from now on."""
        ids = await self.ids()
        await self.clients[target].execute_command(
            "CLUSTER", "SETSLOT", slot, "IMPORTING", ids[source]
        )
        await self.clients[source].execute_command(
            "CLUSTER", "SETSLOT", slot, "MIGRATING", ids[target]
        )
        keys = await self.clients[source].execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000)
        if keys:
            await self.clients[source].execute_command(
                "MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *keys
            )

    async def finish_moving(self, slot: int, target: int) -> None:
        """Gives ``slot`` to ``target`` on every node: the others answer MOVED from now on."""
        target_id = (await self.ids())[target]
        for port in [target, *(p for p in self.clients if p != target)]:
            await self.clients[port].execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)

    async def aclose(self) -> None:
        for client in self.clients.values():
            await client.aclose()


@pytest.fixture
async def nodes(cluster: RedisClusterServers) -> AsyncIterator[_Nodes]:
    nodes = _Nodes(cluster.ports)
    yield nodes
    await nodes.aclose()


def _slot(key: str) -> int:
    return key_slot(key.encode())


async def _owner(raw: RedisCluster, key: str) -> int:
    node = raw.get_node_from_key(key)
    assert node is not None
    return int(node.port)


async def test_reads_of_every_primary_go_over_held_connections(
    backend: RedisClusterBackend, raw: RedisCluster, namespace: str
) -> None:
    keys = [f"{namespace}:{index}" for index in range(60)]
    assert len({await _owner(raw, key) for key in keys}) == 3
    await backend.set_many({key: key.encode() for key in keys[::2]})
    sent = record_commands(backend._client)
    for key in keys:
        assert await backend.get(key) == (key.encode() if key in keys[::2] else None)
    assert await backend.get_many(keys) == [
        key.encode() if key in keys[::2] else None for key in keys
    ]
    assert await backend.get_many(list(reversed(keys))) == [
        key.encode() if key in keys[::2] else None for key in reversed(keys)
    ]
    assert sent == []


async def test_concurrent_reads_of_many_slots_each_get_their_own_value(
    backend: RedisClusterBackend, namespace: str
) -> None:
    keys = [f"{namespace}:{index}" for index in range(300)]
    await backend.set_many({key: key.encode() for key in keys})
    rng = random.Random(7)

    async def one() -> None:
        picked = rng.sample(keys, rng.randint(1, 8))
        if len(picked) == 1:
            assert await backend.get(picked[0]) == picked[0].encode()
        else:
            assert await backend.get_many(picked) == [key.encode() for key in picked]

    await asyncio.gather(*(one() for _ in range(2000)))


async def test_a_read_of_a_slot_that_moved_is_answered_by_its_new_primary(
    backend: RedisClusterBackend, raw: RedisCluster, nodes: _Nodes, namespace: str
) -> None:
    key, other = f"{namespace}:moving", f"{namespace}:other"
    await backend.set_many({key: b"v1", other: b"o"})
    assert await backend.get_many([key, other]) == [b"v1", b"o"]
    source = await _owner(raw, key)
    target = next(port for port in nodes.clients if port != source)
    await nodes.start_moving(_slot(key), source, target)
    # Migrating: the old primary answers ASK, the client asks the new one.
    assert await backend.get(key) == b"v1"
    assert await backend.get_many([key, other]) == [b"v1", b"o"]
    await nodes.finish_moving(_slot(key), target)
    # Moved: the old primary answers MOVED; the client follows and refreshes its map.
    assert await backend.get(key) == b"v1"
    await raw.set(key, b"v2")
    assert await backend.get_many([other, key]) == [b"o", b"v2"]
    sent = record_commands(backend._client)
    assert await backend.get(key) == b"v2"
    assert sent == [], "once the map is refreshed, reads of the moved slot are held again"
    await nodes.start_moving(_slot(key), target, source)
    await nodes.finish_moving(_slot(key), source)
    assert await backend.get(key) == b"v2"


async def test_the_cache_keeps_serving_through_a_slot_move(
    cluster: RedisClusterServers, raw: RedisCluster, nodes: _Nodes, namespace: str
) -> None:
    async with Cache(
        RedisBackend.from_url(cluster.url, connect_timeout=2.0, command_timeout=2.0),
        namespace=namespace,
        strict=True,
    ) as cache:
        await cache.set("k", {"n": 1})
        full = cache.keys.full("k")
        source = await _owner(raw, full)
        target = next(port for port in nodes.clients if port != source)
        stop = asyncio.Event()
        seen: list[object] = []

        async def reader() -> None:
            while not stop.is_set():
                seen.append(await cache.get("k"))

        readers = [asyncio.create_task(reader()) for _ in range(4)]
        try:
            await asyncio.sleep(0.05)
            await nodes.start_moving(_slot(full), source, target)
            await asyncio.sleep(0.05)
            await nodes.finish_moving(_slot(full), target)
            await asyncio.sleep(0.05)
        finally:
            stop.set()
            await asyncio.gather(*readers)
        assert seen
        assert all(value == {"n": 1} for value in seen)
        assert cache.stats.backend_errors == 0
        await nodes.start_moving(_slot(full), target, source)
        await nodes.finish_moving(_slot(full), source)


async def test_a_stalled_primary_fails_only_the_reads_it_holds_then_recovers(
    cluster: RedisClusterServers, raw: RedisCluster, namespace: str
) -> None:
    """CLIENT PAUSE stalls one primary: a read spanning every primary fails at the command
    timeout, not retried even with ``retries`` (which the cluster client spends on timeouts
    too), a read of the other primaries' keys is answered, and all works again after."""
    keys = [f"{namespace}:{index}" for index in range(30)]
    await raw.mset_nonatomic({key: key.encode() for key in keys})
    owners = {key: await _owner(raw, key) for key in keys}
    stalled = owners[keys[0]]
    elsewhere = [key for key in keys if owners[key] != stalled]
    backend = RedisBackend.from_url(
        cluster.url, connect_timeout=2.0, command_timeout=0.5, retries=2
    )
    pauser = redis_asyncio.Redis(host="127.0.0.1", port=stalled)
    try:
        assert await backend.get_many(keys) == [key.encode() for key in keys]
        await pauser.execute_command("CLIENT", "PAUSE", "3000", "ALL")
        started = time.monotonic()
        with pytest.raises(BackendError, match="timed out after 500 ms"):
            await backend.get_many(keys)
        # One timeout: a retry would take another 500 ms at least.
        assert time.monotonic() - started < 0.95
        assert await backend.get_many(elsewhere) == [key.encode() for key in elsewhere]
        deadline = asyncio.get_running_loop().time() + 10
        while True:
            try:
                assert await backend.get_many(keys) == [key.encode() for key in keys]
                break
            except BackendError:
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.1)
    finally:
        await pauser.aclose()
        await backend.aclose()


async def test_reads_cancelled_anywhere_never_return_another_keys_value(
    backend: RedisClusterBackend, namespace: str
) -> None:
    """Values encode their keys and vary in size; reads of one key or of many slots are
    cancelled after a random number of loop turns or a random time within a round's length.
    Every read that completes gets its own keys' values, and a last pass over all keys,
    uncancelled, is exact: no connection was left out of step."""
    keys = [f"{namespace}:{index}" for index in range(40)]
    values = {key: (key * (1 + index % 7 * 300)).encode() for index, key in enumerate(keys)}
    await backend.set_many(values)
    rng = random.Random(int.from_bytes(namespace.encode()[-4:], "big"))
    wrong: list[str] = []
    completed = cancelled = attempts = 0

    async def read(picked: list[str]) -> None:
        if len(picked) == 1:
            got = [await backend.get(picked[0])]
        else:
            got = await backend.get_many(picked)
        if got != [values[key] for key in picked]:
            wrong.append(f"{picked} got {[value[:20] if value else value for value in got]}")

    def reads() -> list[asyncio.Task[None]]:
        return [
            asyncio.create_task(read(rng.sample(keys, rng.choice((1, 1, 2, 5, 12)))))
            for _ in range(50)
        ]

    # A round's length on this machine now, so that timed cancellations land while reads are
    # under way whether the machine is idle or loaded.
    started = time.monotonic()
    await asyncio.gather(*reads())
    length = time.monotonic() - started

    async def cancel_later(task: asyncio.Task[None]) -> None:
        if rng.random() < 0.5:
            for _ in range(rng.randint(0, 3)):
                await asyncio.sleep(0)
        else:
            await asyncio.sleep(rng.random() * length)
        task.cancel()

    for _ in range(40):
        tasks = reads()
        killers = [asyncio.create_task(cancel_later(task)) for task in tasks if rng.random() < 0.4]
        attempts += len(killers)
        results = await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*killers)
        for result in results:
            if isinstance(result, asyncio.CancelledError):
                cancelled += 1
            elif isinstance(result, BaseException):
                raise result
            else:
                completed += 1
    assert wrong == []
    # Most cancellations land in flight, and most reads complete.
    assert cancelled > attempts * 0.2, (cancelled, attempts)
    assert completed > 1000, completed
    assert await backend.get_many(keys) == [values[key] for key in keys]
    for key in keys:
        assert await backend.get(key) == values[key]


async def test_a_killed_primary_fails_its_reads_and_they_recover_after_its_restart(
    cluster: RedisClusterServers, raw: RedisCluster, namespace: str
) -> None:
    """kill -9 of one primary: reads of its keys fail (and fail open in a cache), reads of the
    others' keys are still answered over held connections; once it is back (empty: nothing
    persists), every read is answered again."""
    keys = [f"{namespace}:{index}" for index in range(30)]
    await raw.mset_nonatomic({key: key.encode() for key in keys})
    owners = {key: await _owner(raw, key) for key in keys}
    victim = next(node for node in cluster.nodes if node.port == owners[keys[0]])
    mine = [key for key in keys if owners[key] == victim.port]
    others = [key for key in keys if owners[key] != victim.port]
    backend = RedisBackend.from_url(cluster.url, connect_timeout=1.0, command_timeout=1.0)
    try:
        assert await backend.get_many(keys) == [key.encode() for key in keys]
        # Restarted well within the cluster's node timeout (5 s), so that no other node marks
        # it failed and the cluster stays up for the others' keys.
        victim.kill()
        try:
            with pytest.raises(BackendError):
                await backend.get(mine[0])
            with pytest.raises(BackendError):
                await backend.get_many(keys)
            assert await backend.get_many(others) == [key.encode() for key in others]
        finally:
            victim.start()
        deadline = asyncio.get_running_loop().time() + 20
        while True:
            try:
                found = await backend.get_many(keys)
                break
            except BackendError:
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.1)
        assert found == [None if key in mine else key.encode() for key in keys]
        await backend.set_many(dict.fromkeys(mine, b"again"))
        assert await backend.get_many(mine) == [b"again"] * len(mine)
    finally:
        await backend.aclose()
