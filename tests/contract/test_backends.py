"""Runs the backend contract suite on the memory backend, on fakeredis and on a real Redis."""

from __future__ import annotations

import sys

import fakeredis
import pytest

# The suite's asserts live in the package, which pytest does not rewrite unless asked before
# the import; rewritten, a failing check shows the values it compared.
if "cachetier.testing.contract" not in sys.modules:
    pytest.register_assert_rewrite("cachetier.testing.contract")

# Imported after the hook above.
from cachetier.backends.memory import MemoryBackend
from cachetier.backends.redis import RedisBackend
from cachetier.testing import FakeClock
from cachetier.testing.contract import BackendContract, BackendFactory


def _memory() -> BackendFactory:
    clock = FakeClock()
    return BackendFactory(make=lambda: MemoryBackend(clock=clock), advance=clock.advance)


def _fakeredis() -> BackendFactory:
    # A server of its own for every backend, so no state leaks between tests.
    return BackendFactory(
        make=lambda: RedisBackend(
            fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer()), owns_client=True
        )
    )


def _redis(url: str) -> BackendFactory:
    # Generous timeouts: this suite checks semantics, and a busy CI machine can stall a local
    # round trip past the 100 ms default. tests/unit/test_redis_backend.py checks the timeouts.
    return BackendFactory(
        make=lambda: RedisBackend.from_url(url, connect_timeout=2.0, command_timeout=2.0)
    )


class TestBackendContract(BackendContract):
    @pytest.fixture(params=["memory", "fakeredis", pytest.param("redis", marks=pytest.mark.redis)])
    def backend_factory(self, request: pytest.FixtureRequest) -> BackendFactory:
        if request.param == "memory":
            return _memory()
        if request.param == "fakeredis":
            return _fakeredis()
        return _redis(request.getfixturevalue("redis_url"))
