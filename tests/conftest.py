"""Shared fixtures: the real Redis server the suite talks to, and unique namespaces."""

from __future__ import annotations

import gc
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

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


def need_redis_server(*, cli: bool = False) -> None:
    """Skips the test when redis-server (and, with ``cli``, redis-cli) is not installed, or
    fails it under CACHETIER_REQUIRE_REDIS=1, which CI sets."""
    if REDIS_SERVER is None or (cli and REDIS_CLI is None):
        tools = "redis-server or redis-cli" if cli else "redis-server"
        message = f"{tools} is not installed (apt-get install redis-server)"
        if REQUIRE_REDIS:
            pytest.fail(message + " [CACHETIER_REQUIRE_REDIS=1 makes this a failure]")
        pytest.skip(message)


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
    need_redis_server()
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, without persistence: the test may kill, freeze or
    restart it on its port, and it is stopped (thawed first) whatever happened."""
    need_redis_server()
    with running_redis(tmp_path) as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    """A Redis Cluster of three primaries on loopback ports, started once for the session."""
    need_redis_server(cli=True)
    with running_cluster(tmp_path_factory.mktemp("cluster")) as servers:
        yield servers


_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Iterator[pytest.TestReport]:
    report: pytest.TestReport = yield
    if report.when == "call" and report.failed:
        item.stash[_FAILED] = True
    return report


@pytest.fixture(autouse=True)
def _collect_after_a_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a test that failed, collects garbage before the next test starts.

    A test that fails before closing what it opened (a cache, a client) leaves objects whose
    ``__del__`` warns (``ResourceWarning``, an error in this suite); collected later, they
    would fail whichever test runs then, as an innocent second failure.
    """
    yield
    if request.node.stash.get(_FAILED, False):
        # pytest keeps the failure's traceback (for post-mortem debugging) until the next
        # test's call, and with it the frames holding what the test left open.
        for name in ("last_exc", "last_type", "last_value", "last_traceback"):
            if hasattr(sys, name):
                delattr(sys, name)
        gc.collect()


@pytest.fixture
def namespace() -> str:
    """A namespace no other test uses, so tests sharing one Redis never see each other's keys."""
    return f"t{uuid.uuid4().hex[:12]}"
