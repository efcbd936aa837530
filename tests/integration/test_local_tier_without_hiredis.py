"""The local tier on a default install: redis-py without hiredis (its pure-Python parsers).

The suite usually runs with hiredis installed, which hides how a plain ``pip install cachetier``
behaves, so each test runs a child interpreter in which ``import hiredis`` fails, as it does
when the package is absent.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

# Reads until the local tier serves them (it needs its invalidation channel first), then
# counts what 50 more reads cost; asyncio's "Task exception was never retrieved" goes to stderr.
CHILD = textwrap.dedent(
    """
    import asyncio, gc, sys
    sys.modules["hiredis"] = None  # as on an install without hiredis
    from cachetier import Cache, LocalTier
    from cachetier.backends import RedisBackend

    async def main(url, namespace):
        # Timeouts a loaded CI machine does not trip: a read that timed out fails open as a miss.
        backend = RedisBackend.from_url(url, connect_timeout=2.0, command_timeout=2.0)
        cache = Cache(backend, namespace=namespace, local=LocalTier(ttl=60))
        async with cache:
            await cache.set("k", "v")
            for _ in range(200):
                before = cache.stats.backend_calls
                assert await cache.get("k") == "v"
                if cache.stats.backend_calls == before:
                    break
                await asyncio.sleep(0.02)
                gc.collect()
            before = cache.stats.backend_calls
            for _ in range(50):
                assert await cache.get("k") == "v"
            print(cache.stats.backend_calls - before)
            await cache.clear()
        gc.collect()

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


@pytest.mark.redis
@pytest.mark.parametrize("protocol", [2, 3], ids=["resp2", "resp3"])
def test_local_tier_serves_reads_without_hiredis(
    redis_url: str, namespace: str, protocol: int
) -> None:
    """Without hiredis the tracking connection opens, so repeated reads never reach Redis."""
    url = f"{redis_url}?protocol={protocol}"
    result = subprocess.run(  # our own interpreter and script
        [sys.executable, "-c", CHILD, url, namespace],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONWARNINGS": "error"},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0", result.stdout
    assert "never retrieved" not in result.stderr
    assert "Maintenance notifications" not in result.stderr
