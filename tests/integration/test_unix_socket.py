"""``unix://`` URLs reach a redis-server listening on a Unix socket."""

from __future__ import annotations

from pathlib import Path

import pytest

from cachetier import Cache
from cachetier.backends import RedisBackend

from ..servers import REDIS_SERVER, running_redis

pytestmark = pytest.mark.redis


@pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed")
async def test_cache_round_trip_over_a_unix_socket(tmp_path: Path) -> None:
    socket_path = tmp_path / "redis.sock"
    with running_redis(tmp_path, "--unixsocket", str(socket_path), "--unixsocketperm", "700"):
        async with Cache(
            RedisBackend.from_url(
                f"unix://{socket_path}?db=2", connect_timeout=2.0, command_timeout=2.0
            ),
            namespace="unix",
        ) as cache:
            assert await cache.set("k", {"via": "socket"}) is True
            assert await cache.get("k") == {"via": "socket"}
            assert await cache.incr("n", ttl=10) == 1
            assert (await cache.health_check(degraded_after_ms=5_000)).status == "healthy"
            assert await cache.clear() == 2
