"""A Redis Cluster failover under held reads (`backends.redis.slots`): once a replica takes its
primary's place, reads of its slots follow it, and no read returns a wrong value."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as redis_asyncio

from cachetier import BackendError
from cachetier.backends import RedisBackend, RedisClusterBackend

from ..conftest import need_redis_server
from ..servers import RedisClusterServers, record_commands, running_cluster

pytestmark = [
    pytest.mark.redis,
    pytest.mark.skipif(
        int(redis.__version__.split(".")[0]) < 6,
        reason="redis-py 5's cluster client drops the node objects of the old topology with "
        "their connections open across a failover (ResourceWarning from ClusterNode.__del__)",
    ),
]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    """Three primaries with one replica each."""
    need_redis_server(cli=True)
    with running_cluster(Path(tmp_path_factory.mktemp("failover")), replicas=1) as servers:
        yield servers


async def _info(client: redis_asyncio.Redis) -> dict[str, str]:
    """INFO replication, every value as text."""
    return {name: str(value) for name, value in (await client.info("replication")).items()}


async def _until(condition: Callable[[], Awaitable[bool]], within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not await condition():
        assert time.monotonic() < deadline, "the cluster did not get there in time"
        await asyncio.sleep(0.05)


async def test_reads_follow_a_failover_to_the_promoted_replica(
    cluster: RedisClusterServers, namespace: str
) -> None:
    keys = [f"{namespace}:{index}" for index in range(60)]
    values = {key: key.encode() for key in keys}
    backend = RedisBackend.from_url(cluster.url, connect_timeout=2.0, command_timeout=2.0)
    assert isinstance(backend, RedisClusterBackend)
    nodes = {port: redis_asyncio.Redis(host="127.0.0.1", port=port) for port in cluster.ports}
    try:
        await backend.set_many(values)
        assert await backend.get_many(keys) == [values[key] for key in keys]
        # The primary of the first key, and its replica once it has every write.
        primary = backend._client.get_node_from_key(keys[0])
        assert primary is not None
        replicas = [
            client
            for client in nodes.values()
            if (info := await _info(client)).get("role") == "slave"
            and int(info["master_port"]) == primary.port
        ]
        assert len(replicas) == 1
        replica = replicas[0]

        async def replica_in_step() -> bool:
            mine, theirs = await _info(replica), await _info(nodes[primary.port])
            return (
                mine.get("master_link_status") == "up"
                and mine["master_repl_offset"] == theirs["master_repl_offset"]
            )

        await _until(replica_in_step)
        wrong: list[str] = []
        stop = asyncio.Event()

        async def reader() -> None:
            while not stop.is_set():
                try:
                    found = await backend.get_many(keys)
                except BackendError:
                    # The demoted primary closes its connections: a read under way then fails
                    # open (the cluster client retries nothing with the default retries=0).
                    await asyncio.sleep(0.01)
                    continue
                if found != [values[key] for key in keys]:
                    wrong.append(repr(found[:3]))

        readers = [asyncio.create_task(reader()) for _ in range(3)]
        try:
            await asyncio.sleep(0.05)
            await replica.execute_command("CLUSTER", "FAILOVER")

            async def promoted() -> bool:
                return (await _info(replica)).get("role") == "master"

            await _until(promoted)
            await asyncio.sleep(0.2)
        finally:
            stop.set()
            await asyncio.gather(*readers)
        assert wrong == []
        deadline = time.monotonic() + 10
        while True:
            try:
                assert await backend.get_many(keys) == [values[key] for key in keys]
                break
            except BackendError:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
        # Once the map is refreshed, reads of the promoted replica's slots are held again.
        sent = record_commands(backend._client)
        assert await backend.get_many(keys) == [values[key] for key in keys]
        assert await backend.get(keys[0]) == values[keys[0]]
        assert sent == []
    finally:
        for client in nodes.values():
            await client.aclose()
        await backend.aclose()
