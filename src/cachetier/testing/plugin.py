"""The cachetier pytest plugin: cache fixtures for memory, fakeredis and real Redis, and assertions.

Installed with cachetier, pytest loads it through the ``pytest11`` entry point; without the
installed entry point, add ``pytest_plugins = ["cachetier.testing.plugin"]`` to a conftest or
run ``pytest -p cachetier.testing.plugin``. The fixtures are async and need pytest-asyncio.

Fixtures (each fresh per test, closed after it):

- ``cachetier_clock``: the `FakeClock` the memory cache runs on; ``advance`` it to expire entries.
- ``cachetier_memory_cache``: a `Cache` on a `MemoryBackend`, both on ``cachetier_clock``.
- ``cachetier_fakeredis_cache``: a `Cache` on fakeredis, a server of its own per test; skipped
  with a reason when fakeredis is not installed.
- ``cachetier_redis_cache``: a `Cache` on the real Redis at ``CACHETIER_TEST_REDIS_URL``
  (default ``redis://127.0.0.1:6379/15``), in a namespace of its own that is cleared after the
  test; skipped with a reason when no server answers, a failure instead under
  ``CACHETIER_REQUIRE_REDIS=1``.
- ``cachetier_swap``: ``cachetier_swap(cache)`` routes a cache the code under test holds (a
  module-level one, say) to a fresh `MemoryBackend`, or to the backend given, until the test
  ends; returns that backend.

Assertions, usable with or without the fixtures: `assert_hits` and `expect_reads`, on a `Cache`
or a decorated function (anything with a ``stats`` property).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack
from typing import Any, Final, NoReturn, Protocol, TypeVar, cast, final

import pytest

from .._cache import Cache
from .._core.stats import CacheStats
from .._errors import BackendError
from ..backends._protocol import Backend
from ..backends.memory import MemoryBackend
from ._clock import FakeClock

# This module is loaded into every pytest run where cachetier is installed: it must never break
# a run that uses another async plugin (anyio) or none, so pytest-asyncio is optional here.
_asyncio_fixture: Callable[..., Any] | None
try:
    from pytest_asyncio import fixture as _pytest_asyncio_fixture
except ImportError:  # pragma: no cover - depends on the user's environment
    _asyncio_fixture = None
else:
    _asyncio_fixture = _pytest_asyncio_fixture

__all__ = (
    "HasStats",
    "Swap",
    "assert_hits",
    "cachetier_clock",
    "cachetier_fakeredis_cache",
    "cachetier_memory_cache",
    "cachetier_redis_cache",
    "cachetier_swap",
    "expect_reads",
)

F = TypeVar("F", bound=Callable[..., Any])

_NEEDS_PYTEST_ASYNCIO: Final = (
    "cachetier's async cache fixtures need pytest-asyncio (pip install pytest-asyncio)"
)


def _async_fixture(func: F) -> F:
    """Registers an async fixture with pytest-asyncio, or one that skips when it is missing."""
    if _asyncio_fixture is not None:
        return cast("F", _asyncio_fixture(func))

    def unavailable(*args: object, **kwargs: object) -> NoReturn:
        pytest.skip(_NEEDS_PYTEST_ASYNCIO)

    # Same name, arguments and doc, but not __wrapped__: pytest must see a plain function.
    unavailable.__name__ = unavailable.__qualname__ = func.__name__
    unavailable.__doc__ = func.__doc__
    unavailable.__signature__ = inspect.signature(func)  # type: ignore[attr-defined]  # read by pytest

    return cast("F", pytest.fixture(unavailable))  # same name and arguments, so same fixture


DEFAULT_REDIS_URL: Final = "redis://127.0.0.1:6379/15"
"""The server ``cachetier_redis_cache`` uses when ``CACHETIER_TEST_REDIS_URL`` is not set."""


class HasStats(Protocol):
    """Anything with a `CacheStats` snapshot: a `Cache` or a decorated function."""

    @property
    def stats(self) -> CacheStats:
        """The counters now."""
        ...


class Swap(Protocol):
    """The callable ``cachetier_swap`` provides."""

    def __call__(self, cache: Cache, backend: Backend | None = None) -> Backend:
        """Routes ``cache`` to ``backend`` (a fresh `MemoryBackend` by default) until the test ends."""
        ...


def _namespace() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


# -- assertions -------------------------------------------------------------------------------


def assert_hits(target: HasStats, hits: int) -> None:
    """Asserts that ``target`` has counted exactly ``hits`` hits since it was made (or reset).

    Raises:
        AssertionError: the count differs; the message shows every read counter.
    """
    stats = target.stats
    if stats.hits != hits:
        raise AssertionError(f"expected {hits} hits, counted {_describe(stats)}")


def expect_reads(
    target: HasStats,
    *,
    hits: int | None = None,
    misses: int | None = None,
    stale: int | None = None,
    errors: int | None = None,
    bypassed: int | None = None,
) -> ReadExpectation:
    """Asserts how many reads of each outcome ``target`` counts during the ``with`` block.

    Only the counts given are checked; ``errors`` counts backend and decode errors together.
    Nothing is checked when the block raises, so its own exception is what the test reports.
    Called without ``with``, it would check nothing: the object it returns refuses to be
    tested for truth, and warns (``RuntimeWarning``, an error under ``-W error``) when it is
    dropped without ever being entered.

    Raises:
        AssertionError: a count differs; the message shows every counter's change.
    """
    return ReadExpectation(
        target, hits=hits, misses=misses, stale=stale, errors=errors, bypassed=bypassed
    )


@final
class ReadExpectation:
    """The context manager `expect_reads` returns; checks the counts when its block ends."""

    __slots__ = ("_before", "_entered", "_expected", "_target")

    def __init__(
        self,
        target: HasStats,
        *,
        hits: int | None,
        misses: int | None,
        stale: int | None,
        errors: int | None,
        bypassed: int | None,
    ) -> None:
        self._target = target
        self._expected = (
            ("hits", hits),
            ("misses", misses),
            ("stale", stale),
            ("errors", errors),
            ("bypassed", bypassed),
        )
        self._entered = False
        self._before: CacheStats | None = None

    def __enter__(self) -> None:
        if self._entered:
            raise RuntimeError("an expect_reads(...) block cannot be entered twice")
        self._entered = True
        self._before = self._target.stats

    def __exit__(self, exc_type: object, exc: object, traceback: object) -> None:
        if exc_type is not None or self._before is None:
            return
        before, after = self._before, self._target.stats
        delta = CacheStats(
            hits=after.hits - before.hits,
            misses=after.misses - before.misses,
            stale_served=after.stale_served - before.stale_served,
            backend_errors=after.backend_errors - before.backend_errors,
            decode_errors=after.decode_errors - before.decode_errors,
            bypassed=after.bypassed - before.bypassed,
        )
        counted = {
            "hits": delta.hits,
            "misses": delta.misses,
            "stale": delta.stale_served,
            "errors": delta.backend_errors + delta.decode_errors,
            "bypassed": delta.bypassed,
        }
        wrong = [
            f"{name}={counted[name]} (expected {want})"
            for name, want in self._expected
            if want is not None and want != counted[name]
        ]
        if wrong:
            raise AssertionError(
                f"unexpected reads in the block: {', '.join(wrong)}; all reads: {_describe(delta)}"
            )

    def __bool__(self) -> NoReturn:
        # `assert expect_reads(...)` would pass without counting anything.
        raise TypeError("expect_reads(...) checks nothing by itself: use `with expect_reads(...):`")

    def __del__(self) -> None:
        if not self._entered:
            # As CPython does for a coroutine never awaited: the misuse is a bare call.
            warnings.warn(
                "expect_reads(...) was never entered, so it checked nothing: use it as "
                "`with expect_reads(cache, ...):` around the reads",
                RuntimeWarning,
                stacklevel=1,
            )


def _describe(stats: CacheStats) -> str:
    return (
        f"hits={stats.hits} misses={stats.misses} stale={stats.stale_served} "
        f"backend_errors={stats.backend_errors} decode_errors={stats.decode_errors} "
        f"bypassed={stats.bypassed}"
    )


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def cachetier_clock() -> FakeClock:
    """A `FakeClock` for this test; the memory cache fixture runs on it."""
    return FakeClock()


@_async_fixture
async def cachetier_memory_cache(cachetier_clock: FakeClock) -> AsyncIterator[Cache]:
    """A `Cache` on a fresh `MemoryBackend`, both on ``cachetier_clock``."""
    cache = Cache(
        MemoryBackend(clock=cachetier_clock), namespace=_namespace(), clock=cachetier_clock
    )
    yield cache
    await cache.aclose()


@_async_fixture
async def cachetier_fakeredis_cache() -> AsyncIterator[Cache]:
    """A `Cache` on fakeredis with a server of its own; skipped when fakeredis is missing."""
    fakeredis = pytest.importorskip(
        "fakeredis", reason='fakeredis is not installed (pip install "cachetier[fakeredis]")'
    )
    from ..backends.redis import RedisBackend

    client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    cache = Cache(RedisBackend(client, owns_client=True), namespace=_namespace())
    yield cache
    await cache.aclose()


@pytest.fixture(scope="session")
def _cachetier_redis_url() -> str:
    """The URL of the real Redis the suite may use; skips (or fails) once when none answers."""
    url = os.environ.get("CACHETIER_TEST_REDIS_URL", DEFAULT_REDIS_URL)
    from ..backends.redis import RedisBackend

    async def probe() -> str | None:
        backend = RedisBackend.from_url(url, connect_timeout=0.5, command_timeout=0.5)
        try:
            await backend.ping()
        except BackendError as exc:
            return str(exc)  # never holds the URL's password
        finally:
            await backend.aclose()
        return None

    # A session fixture runs outside the tests' event loops: this loop is its own.
    reason = asyncio.run(probe())
    if reason is not None:
        # The URL may hold a password: name the variable, not its value.
        message = (
            f"no Redis answers at CACHETIER_TEST_REDIS_URL (or its default {DEFAULT_REDIS_URL}): "
            f"{reason}"
        )
        if os.environ.get("CACHETIER_REQUIRE_REDIS") == "1":
            pytest.fail(message + " [CACHETIER_REQUIRE_REDIS=1 makes this a failure]")
        pytest.skip(message)
    return url


@_async_fixture
async def cachetier_redis_cache(_cachetier_redis_url: str) -> AsyncIterator[Cache]:
    """A `Cache` on the real Redis, in a namespace of its own that is cleared after the test."""
    from ..backends.redis import RedisBackend

    cache = Cache(RedisBackend.from_url(_cachetier_redis_url), namespace=_namespace())
    yield cache
    # Not strict, so a server a test stopped makes this a logged no-op, not an error.
    await cache.clear()
    # clear() keeps the generation of bump_version on purpose; this namespace is done with.
    with contextlib.suppress(BackendError):
        await cache.backend.delete(cache.keys.generation_key())
    await cache.aclose()


@pytest.fixture
def cachetier_swap() -> Iterator[Swap]:
    """Returns ``swap(cache, backend=None)``: routes ``cache`` to another backend for the test."""
    with ExitStack() as stack:

        def swap(cache: Cache, backend: Backend | None = None) -> Backend:
            return stack.enter_context(
                cache.use(backend if backend is not None else MemoryBackend())
            )

        yield swap
