"""Shared fixtures: the real Redis server the suite talks to, and unique namespaces."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from .servers import (
    REDIS_CLI,
    REDIS_SERVER,
    RedisClusterServers,
    RedisServer,
    running_cluster,
    running_redis,
)

REDIS_URL = os.environ.get("CACHETIER_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
REQUIRE_REDIS = os.environ.get("CACHETIER_REQUIRE_REDIS") == "1"


def _redis_answers(url: str) -> str | None:
    """Returns None when a server answers PING at ``url``, else the reason it does not."""
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            client.ping()
        finally:
            client.close()
    except (redis.RedisError, OSError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The URL of a real Redis server; skips (or fails under CACHETIER_REQUIRE_REDIS=1) without one."""
    reason = _redis_answers(REDIS_URL)
    if reason is not None:
        message = (
            f"no redis-server answers at {REDIS_URL} ({reason}); start one with "
            "`redis-server --daemonize yes --port 6379` or set CACHETIER_TEST_REDIS_URL"
        )
        if REQUIRE_REDIS:
            pytest.fail(message + " [CACHETIER_REQUIRE_REDIS=1 makes this a failure]")
        pytest.skip(message)
    return REDIS_URL


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server of this module's own, for tests that count its commands or stop it."""
    if REDIS_SERVER is None:
        message = "redis-server is not installed (apt-get install redis-server)"
        if REQUIRE_REDIS:
            pytest.fail(message + " [CACHETIER_REQUIRE_REDIS=1 makes this a failure]")
        pytest.skip(message)
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    """A Redis Cluster of three primaries on loopback ports, started once for the session."""
    if REDIS_SERVER is None or REDIS_CLI is None:
        message = "redis-server or redis-cli is not installed (apt-get install redis-server)"
        if REQUIRE_REDIS:
            pytest.fail(message + " [CACHETIER_REQUIRE_REDIS=1 makes this a failure]")
        pytest.skip(message)
    with running_cluster(tmp_path_factory.mktemp("cluster")) as servers:
        yield servers


@pytest.fixture
def namespace() -> str:
    """A namespace no other test uses, so tests sharing one Redis never see each other's keys."""
    return f"t{uuid.uuid4().hex[:12]}"
