"""The two-tier cache over Redis Cluster: one tracking connection per primary.

Process B is this test; process A (``local_writer.py``, given the ``redis+cluster://`` URL)
changes keys on command. The keys are chosen so that every primary holds one, since each
primary reports changes of its own keys only. As in ``test_local_tier.py``, windows are
asserted against two heartbeats and the measured figures are printed (``-s`` shows them).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as redis_asyncio
from redis.asyncio.cluster import RedisCluster

from cachetier import Cache, LocalTier
from cachetier.backends import RedisBackend

from ..servers import RedisClusterServers
from .test_local_tier import (
    HEARTBEAT,
    WINDOW,
    Writer,
    cached_locally,
    live,
    served_locally,
    stops_serving,
    until,
)

pytestmark = pytest.mark.redis


@pytest.fixture(scope="module")
def cluster(redis_cluster: RedisClusterServers) -> RedisClusterServers:
    """Three primaries, no replicas, started once for the session (see conftest)."""
    return redis_cluster


@pytest.fixture
def writer(cluster: RedisClusterServers, namespace: str) -> Iterator[Writer]:
    process = Writer(cluster.url, namespace)
    yield process
    process.close()


@pytest.fixture
async def cache(cluster: RedisClusterServers, namespace: str) -> AsyncIterator[Cache]:
    # Generous timeouts: these tests check windows, not a stalled CI machine's latency.
    async with Cache(
        RedisBackend.from_url(cluster.url, connect_timeout=2.0, command_timeout=2.0),
        namespace=namespace,
        local=LocalTier(heartbeat=HEARTBEAT),
    ) as cache:
        yield cache
        await cache.clear()


@pytest.fixture
async def by_primary(cluster: RedisClusterServers, cache: Cache) -> AsyncIterator[dict[int, str]]:
    """One key of ``cache`` on each primary, by the primary's port."""
    client = RedisCluster(host="127.0.0.1", port=cluster.ports[0])
    try:
        await client.initialize()
        wanted = {int(node.port) for node in client.get_primaries()}
        keys: dict[int, str] = {}
        index = 0
        while len(keys) < len(wanted):
            key = f"k{index}"
            index += 1
            node = client.get_node_from_key(cache.keys.full(key))
            assert node is not None
            keys.setdefault(int(node.port), key)
        yield keys
    finally:
        await client.aclose()


async def test_hits_on_every_primary_are_served_without_redis_calls(
    cache: Cache, writer: Writer, by_primary: dict[int, str], cluster: RedisClusterServers
) -> None:
    assert len(by_primary) == len(cluster.ports) >= 2
    for key in by_primary.values():
        await writer.do(f"set {key} v1")
    for port, key in by_primary.items():
        # The key is stored on the primary it was chosen for.
        node = redis_asyncio.Redis(host="127.0.0.1", port=port)
        try:
            assert await node.exists(cache.keys.full(key)) == 1
        finally:
            await node.aclose()
        await cached_locally(cache, key, "v1")

    async def reads() -> None:
        for _ in range(10):
            for key in by_primary.values():
                assert await cache.get(key) == "v1"

    await served_locally(cache, reads)


@pytest.mark.parametrize(("change", "expected"), [("set {key} v2", "v2"), ("delete {key}", None)])
async def test_a_change_on_any_primary_stops_being_served_within_the_window(
    cache: Cache, writer: Writer, by_primary: dict[int, str], change: str, expected: object
) -> None:
    for key in by_primary.values():
        await writer.do(f"set {key} v1")
    for port, key in by_primary.items():
        await cached_locally(cache, key, "v1")
        command = change.format(key=key)
        done_at = await writer.do(command)
        waited = await stops_serving(cache, key, "v1", done_at)
        assert await cache.get(key) == expected
        print(f"{command!r} on the primary at :{port}: old value gone {waited * 1e3:.2f} ms after")
        assert waited < WINDOW


@pytest.mark.parametrize("change", ["tag group", "bump"])
async def test_a_change_across_primaries_stops_being_served_within_the_window(
    cache: Cache, writer: Writer, by_primary: dict[int, str], change: str
) -> None:
    """A tag's keys are on every primary; the generation on one, which empties the whole tier."""
    for key in by_primary.values():
        await writer.do(f"set {key} v1")
        await cached_locally(cache, key, "v1")
    done_at = await writer.do(change)
    for port, key in by_primary.items():
        waited = await stops_serving(cache, key, "v1", done_at)
        assert await cache.get(key) is None
        print(f"{change!r}: old value on :{port} gone {waited * 1e3:.2f} ms after")
        assert waited < WINDOW


async def test_a_cut_channel_on_one_primary_bypasses_the_tier_until_it_is_restored(
    cache: Cache, writer: Writer, by_primary: dict[int, str]
) -> None:
    for key in by_primary.values():
        await writer.do(f"set {key} v1")
        await cached_locally(cache, key, "v1")
    (cut_port, cut_key), (_, other_key) = list(by_primary.items())[:2]
    admin = redis_asyncio.Redis(host="127.0.0.1", port=cut_port)
    try:
        cut_at = time.monotonic()
        # On that primary only: the tracking connections of the others stay up.
        assert await admin.client_kill_filter(_type="pubsub") >= 1
        await until(lambda: not live(cache))
        print(f"cut noticed after {(time.monotonic() - cut_at) * 1e3:.2f} ms")
        # Changes on both primaries land while the tier is bypassed, or after it was emptied
        # on restoring: the very first read after each must see it.
        for key in (cut_key, other_key):
            done_at = await writer.do(f"set {key} v2")
            assert await cache.get(key) == "v2"
            print(f"first read of {key}, {(time.time() - done_at) * 1e3:.2f} ms after, saw v2")
        await until(lambda: live(cache))
        print(f"tier live again {(time.monotonic() - cut_at) * 1e3:.0f} ms after the cut")
        # Restored on the cut primary too: its changes are reported again.
        await cached_locally(cache, cut_key, "v2")
        done_at = await writer.do(f"set {cut_key} v3")
        waited = await stops_serving(cache, cut_key, "v2", done_at)
        print(f"after restoring: old value gone {waited * 1e3:.2f} ms after the change")
        assert waited < WINDOW
        assert await cache.get(cut_key) == "v3"
    finally:
        await admin.aclose()


async def test_a_silent_primary_is_noticed_by_the_heartbeat(
    cache: Cache, writer: Writer, by_primary: dict[int, str], cluster: RedisClusterServers
) -> None:
    """One primary that stops answering (paused) sends no error: its PINGs notice."""
    for key in by_primary.values():
        await writer.do(f"set {key} v1")
        await cached_locally(cache, key, "v1")
    node = next(node for node in cluster.nodes if node.port == next(iter(by_primary)))
    assert node.process is not None
    os.kill(node.process.pid, signal.SIGSTOP)
    try:
        noticed = await until(lambda: not live(cache), timeout=5)
    finally:
        os.kill(node.process.pid, signal.SIGCONT)
    print(f"silent primary noticed after {noticed * 1e3:.0f} ms")
    # Checked once a heartbeat: the second unanswered PING can be seen late by up to one more
    # (the same rule as RedisBackend's), so under three heartbeats after the last answer.
    assert noticed < 3 * HEARTBEAT + HEARTBEAT / 2
    await until(lambda: live(cache))
    for key in by_primary.values():
        await cached_locally(cache, key, "v1")
