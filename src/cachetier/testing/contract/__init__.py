"""The backend contract suite: the tests every `Backend` must pass, for reuse by backend authors.

Subclass `BackendContract` in a test module and provide a ``backend_factory`` fixture that
returns a `BackendFactory`; every test of the suite then runs against backends it makes::

    import pytest
    from cachetier.testing.contract import BackendContract, BackendFactory

    class TestMyBackend(BackendContract):
        @pytest.fixture
        def backend_factory(self) -> BackendFactory:
            return BackendFactory(make=lambda: MyBackend(...))

A backend whose clock is injected passes ``advance=`` as well (for example a `FakeClock`'s
``advance``), and expiry is then tested by moving that clock. Without it, expiry tests use
short real TTLs (50 ms) and sleep past them (150 ms), and TTLs in the stateful test are long
enough never to expire while it runs.

Each test writes only keys that start with the ``prefix`` fixture (``contract:<uuid>:`` unless
overridden), and the ``backend`` fixture deletes those keys and closes the backend afterwards,
so runs against a shared server do not collide. The suite needs pytest-asyncio; its tests are
all coroutines and carry the ``asyncio`` mark.

Redis is the reference for details the `Backend` protocol leaves open: an integer value is
what Redis's INCRBY accepts (canonical decimal, 64-bit), `delete` counts a repeated key once,
`set` without a ttl clears an earlier expiry, and `get_many` answers a repeated key each time.

The tests live in private modules by theme (values, scan, tag stamps, the stateful dict model);
`BackendContract` gathers them and adds the fixtures and the lifecycle tests.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from typing import ClassVar

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

from ...backends._protocol import Backend
from ._model import _bound_machine
from ._scan import ScanTests
from ._support import LONG_TTL as LONG_TTL
from ._support import PAST_SHORT_TTL as PAST_SHORT_TTL
from ._support import SHORT_TTL as SHORT_TTL
from ._support import BackendFactory as BackendFactory
from ._support import _delete_prefixed
from ._tags import TagTests
from ._values import ValueTests

__all__ = ("BackendContract", "BackendFactory")


class BackendContract(ValueTests, ScanTests, TagTests):
    """The tests every `Backend` must pass; subclass it and provide ``backend_factory``.

    Fixtures a subclass may override: ``prefix`` (the string every key in a test starts with)
    and ``backend`` (a fresh backend, cleaned up and closed afterwards).
    """

    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [pytest.mark.asyncio]

    @pytest.fixture
    def prefix(self) -> str:
        """The start of every key a test writes; unique per test."""
        return f"contract:{uuid.uuid4().hex}:"

    @pytest_asyncio.fixture
    async def backend(self, backend_factory: BackendFactory, prefix: str) -> AsyncIterator[Backend]:
        """A fresh backend; afterwards the keys under ``prefix`` are deleted and it is closed."""
        backend = backend_factory.make()
        try:
            yield backend
        finally:
            try:
                await _delete_prefixed(backend, prefix)
            finally:
                await backend.aclose()

    # the rest of the protocol

    async def test_ping_succeeds(self, backend: Backend) -> None:
        await backend.ping()

    async def test_kind_is_a_short_name(self, backend: Backend) -> None:
        assert isinstance(backend.kind, str)
        assert re.fullmatch(r"[a-z][a-z0-9_-]*", backend.kind)

    async def test_backend_works_again_after_aclose(self, backend: Backend, prefix: str) -> None:
        await backend.set(prefix + "k", b"before")
        await backend.aclose()
        await backend.set(prefix + "k", b"after")
        assert await backend.get(prefix + "k") == b"after"

    async def test_aclose_twice_does_not_raise(self, backend: Backend) -> None:
        await backend.aclose()
        await backend.aclose()

    async def test_random_operations_agree_with_a_dict_model(
        self, backend_factory: BackendFactory, prefix: str
    ) -> None:
        """Sequences of get/set/add/delete/incr/expire/... match a dict model of the store."""
        # The machine drives its backends on an event loop of its own, which cannot run in
        # this thread while this test's loop does; so the machine runs in a worker thread.
        await asyncio.to_thread(
            run_state_machine_as_test,
            _bound_machine(backend_factory, prefix),
            settings=settings(
                max_examples=40,
                stateful_step_count=30,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
