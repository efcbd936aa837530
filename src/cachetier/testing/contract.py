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
"""

from __future__ import annotations

import asyncio
import math
import re
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, ClassVar, Final, TypeVar, final

import hypothesis.strategies as st
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, settings
from hypothesis.stateful import (
    RuleBasedStateMachine,
    precondition,
    rule,
    run_state_machine_as_test,
)

from .._errors import BackendError
from .._glob import glob_escape
from ..backends._protocol import Backend, GuardedBackend

__all__ = ("BackendContract", "BackendFactory")

SHORT_TTL: Final = 0.05
"""Seconds a short-lived entry lives in expiry tests."""

PAST_SHORT_TTL: Final = 0.15
"""Seconds the expiry tests let pass (by clock or by sleeping) after setting `SHORT_TTL`."""

LONG_TTL: Final = 3600.0
"""Seconds an entry lives when a test must see it live."""

_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1

# What Redis's INCRBY takes for an integer (string2ll): "-" as the only sign, no leading zeros,
# no "-0", no spaces, and a 64-bit range checked separately.
_REDIS_INTEGER: Final = re.compile(rb"-?[1-9][0-9]{0,19}|0")

_T = TypeVar("_T")


@final
@dataclass(frozen=True)
class BackendFactory:
    """Makes fresh backends for the contract suite, and moves their clock when it can.

    Attributes:
        make: Returns a new backend. It is called inside the event loop the backend will run
            on, once per test and once per example of the stateful test, and must do no I/O
            (constructors of backends never do). Backends it returns may share one store: tests stay apart by
            key prefix.
        advance: Moves the clock of every backend ``make`` returns forward by the given
            seconds; ``None`` when the backends run on real time.
    """

    make: Callable[[], Backend]
    advance: Callable[[float], None] | None = None

    @property
    def can_control_time(self) -> bool:
        """Whether expiry is tested by moving a clock rather than by sleeping."""
        return self.advance is not None

    async def let_time_pass(self, seconds: float) -> None:
        """Moves the clock by ``seconds``, or sleeps that long on real time."""
        if self.advance is None:
            await asyncio.sleep(seconds)
        else:
            self.advance(seconds)


async def _delete_prefixed(backend: Backend, prefix: str) -> None:
    """Deletes every key under ``prefix``, so tests on a shared server leave nothing behind."""
    keys = [key async for batch in backend.scan(glob_escape(prefix) + "*") for key in batch]
    if keys:
        await backend.delete(*keys)


async def _scanned(backend: Backend, pattern: str, count: int = 500) -> set[str]:
    """Returns every key a scan of ``pattern`` yields, checking each batch on the way."""
    found: set[str] = set()
    async for batch in backend.scan(pattern, count=count):
        assert isinstance(batch, list)
        assert batch, "scan yielded an empty batch"
        assert all(isinstance(key, str) for key in batch)
        found.update(batch)
    return found


def _guarded(backend: Backend) -> GuardedBackend:
    """Returns ``backend`` as a `GuardedBackend`, or skips the test when it offers none of it."""
    if not hasattr(backend, "set_if"):
        pytest.skip(f"{type(backend).__name__} is not a GuardedBackend: it keeps no tags")
    # Guarded writes without the tag methods fail rather than skip: the cache would take such
    # a backend for one that cannot keep tags at all.
    assert isinstance(backend, GuardedBackend), (
        f"{type(backend).__name__} has set_if but not every GuardedBackend method"
    )
    return backend


async def _seconds_left(backend: Backend, key: str) -> float:
    """Returns the seconds ``key`` has left, failing the test if it is absent."""
    left = await backend.ttl(key)
    assert left is not None, f"{key!r} is absent"
    return left


def _redis_integer(value: bytes) -> int | None:
    """Returns the integer Redis's INCRBY reads in ``value``, or ``None`` if it reads none."""
    if _REDIS_INTEGER.fullmatch(value) is None:
        return None
    number = int(value)
    return number if _INT64_MIN <= number <= _INT64_MAX else None


class BackendContract:
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

    # get and set

    @pytest.mark.parametrize(
        "value",
        [
            b"",
            b"plain ascii",
            "ünïcödé ✓".encode(),
            b"\x00\xff\xfe\x80 not utf-8",
            bytes(range(256)),
            b"\x00" * 100_000,
        ],
        ids=["empty", "ascii", "utf-8", "not-utf-8", "every-byte", "100-kB"],
    )
    async def test_set_then_get_returns_the_same_bytes(
        self, backend: Backend, prefix: str, value: bytes
    ) -> None:
        await backend.set(prefix + "value", value)
        stored = await backend.get(prefix + "value")
        assert stored == value
        assert type(stored) is bytes

    async def test_get_of_absent_key_returns_none(self, backend: Backend, prefix: str) -> None:
        assert await backend.get(prefix + "absent") is None

    async def test_set_replaces_the_value(self, backend: Backend, prefix: str) -> None:
        await backend.set(prefix + "k", b"first")
        await backend.set(prefix + "k", b"second")
        assert await backend.get(prefix + "k") == b"second"

    async def test_set_without_ttl_clears_an_earlier_expiry(
        self, backend: Backend, backend_factory: BackendFactory, prefix: str
    ) -> None:
        await backend.set(prefix + "k", b"first", ttl=SHORT_TTL)
        await backend.set(prefix + "k", b"second")
        assert await backend.ttl(prefix + "k") == math.inf
        await backend_factory.let_time_pass(PAST_SHORT_TTL)
        assert await backend.get(prefix + "k") == b"second"

    async def test_set_with_ttl_replaces_an_earlier_expiry(
        self, backend: Backend, backend_factory: BackendFactory, prefix: str
    ) -> None:
        await backend.set(prefix + "k", b"first")
        await backend.set(prefix + "k", b"second", ttl=SHORT_TTL)
        await backend_factory.let_time_pass(PAST_SHORT_TTL)
        assert await backend.get(prefix + "k") is None

    async def test_value_set_with_ttl_expires(
        self, backend: Backend, backend_factory: BackendFactory, prefix: str
    ) -> None:
        await backend.set(prefix + "k", b"value", ttl=SHORT_TTL)
        if backend_factory.can_control_time:
            # On real time the entry may already be gone on a loaded machine.
            assert await backend.get(prefix + "k") == b"value"
        await backend_factory.let_time_pass(PAST_SHORT_TTL)
        assert await backend.get(prefix + "k") is None
        assert await backend.exists(prefix + "k") is False
        assert await backend.ttl(prefix + "k") is None

    async def test_keys_with_colons_and_unicode_are_distinct(
        self, backend: Backend, prefix: str
    ) -> None:
        keys = ["a:b", "a", "a:b:", "ü", "u", "日本:🙂", " spaced key ", "a*b?[c]\\"]
        for index, key in enumerate(keys):
            await backend.set(prefix + key, str(index).encode())
        for index, key in enumerate(keys):
            assert await backend.get(prefix + key) == str(index).encode()

    # ttl and expire

    async def test_ttl_of_absent_key_is_none(self, backend: Backend, prefix: str) -> None:
        assert await backend.ttl(prefix + "absent") is None

    async def test_ttl_of_key_without_expiry_is_infinite(
        self, backend: Backend, prefix: str
    ) -> None:
        await backend.set(prefix + "k", b"v")
        assert await backend.ttl(prefix + "k") == math.inf

    async def test_ttl_reports_the_seconds_left(
        self, backend: Backend, backend_factory: BackendFactory, prefix: str
    ) -> None:
        await backend.set(prefix + "k", b"v", ttl=LONG_TTL)
        left = await backend.ttl(prefix + "k")
        assert left is not None
        assert LONG_TTL - 60 < left <= LONG_TTL
        if backend_factory.can_control_time:
            assert left == pytest.approx(LONG_TTL, abs=1e-3)
            await backend_factory.let_time_pass(100)
            assert await backend.ttl(prefix + "k") == pytest.approx(LONG_TTL - 100, abs=1e-3)

    async def test_ttl_keeps_millisecond_precision(self, backend: Backend, prefix: str) -> None:
        await backend.set(prefix + "k", b"v", ttl=2.5)
        left = await backend.ttl(prefix + "k")
        assert left is not None
        assert 2.0 < left <= 2.5

    async def test_expire_sets_the_expiry_of_an_existing_key(
        self, backend: Backend, prefix: str
    ) -> None:
        await backend.set(prefix + "k", b"v")
        assert await backend.expire(prefix + "k", LONG_TTL) is True
        left = await backend.ttl(prefix + "k")
        assert left is not None
        assert LONG_TTL - 60 < left <= LONG_TTL
        assert await backend.get(prefix + "k") == b"v"

    async def test_expire_makes_the_key_expire(
        self, backend: Backend, backend_factory: BackendFactory, prefix: str
    ) -> None:
        await backend.set(prefix + "k", b"v", ttl=LONG_TTL)
        assert await backend.expire(prefix + "k", SHORT_TTL) is True
        await backend_factory.let_time_pass(PAST_SHORT_TTL)
        assert await backend.get(prefix + "k") is None

    async def test_expire_of_absent_key_returns_false_and_creates_nothing(
        self, backend: Backend, prefix: str
    ) -> None:
        assert await backend.expire(prefix + "absent", LONG_TTL) is False
        assert await backend.exists(prefix + "absent") is False

    async def test_expire_of_expired_key_returns_false(
        self, backend: Backend, backend_factory: BackendFactory, prefix: str
    ) -> None:
        await backend.set(prefix + "k", b"v", ttl=SHORT_TTL)
        await backend_factory.let_time_pass(PAST_SHORT_TTL)
        assert await backend.expire(prefix + "k", LONG_TTL) is False
        assert await backend.get(prefix + "k") is None

    # add

    async def test_add_stores_a_value_when_the_key_is_absent(
        self, backend: Backend, prefix: str
    ) -> None:
        assert await backend.add(prefix + "k", b"v") is True
        assert await backend.get(prefix + "k") == b"v"
        assert await backend.ttl(prefix + "k") == math.inf

    async def test_add_leaves_an_existing_key_unchanged(
        self, backend: Backend, prefix: str
    ) -> None:
        await backend.set(prefix + "k", b"first")
        assert await backend.add(prefix + "k", b"second", ttl=LONG_TTL) is False
        assert await backend.get(prefix + "k") == b"first"
        assert await backend.ttl(prefix + "k") == math.inf

    async def test_add_with_ttl_sets_the_expiry(self, backend: Backend, prefix: str) -> None:
        assert await backend.add(prefix + "k", b"v", ttl=LONG_TTL) is True
        left = await backend.ttl(prefix + "k")
        assert left is not None
        assert LONG_TTL - 60 < left <= LONG_TTL

    async def test_add_succeeds_once_the_old_value_expired(
        self, backend: Backend, backend_factory: BackendFactory, prefix: str
    ) -> None:
        await backend.set(prefix + "k", b"old", ttl=SHORT_TTL)
        await backend_factory.let_time_pass(PAST_SHORT_TTL)
        assert await backend.add(prefix + "k", b"new") is True
        assert await backend.get(prefix + "k") == b"new"

    # delete and exists

    async def test_delete_returns_how_many_keys_existed(
        self, backend: Backend, prefix: str
    ) -> None:
        await backend.set(prefix + "a", b"1")
        await backend.set(prefix + "b", b"2")
        assert await backend.delete(prefix + "a", prefix + "b", prefix + "absent") == 2
        assert await backend.get(prefix + "a") is None
        assert await backend.get(prefix + "b") is None

    async def test_delete_of_no_keys_returns_zero(self, backend: Backend) -> None:
        assert await backend.delete() == 0

    async def test_delete_of_absent_key_returns_zero(self, backend: Backend, prefix: str) -> None:
        assert await backend.delete(prefix + "absent") == 0

    async def test_delete_counts_a_repeated_key_once(self, backend: Backend, prefix: str) -> None:
        await backend.set(prefix + "k", b"v")
        assert await backend.delete(prefix + "k", prefix + "k") == 1

    async def test_delete_does_not_count_an_expired_key(
        self, backend: Backend, backend_factory: BackendFactory, prefix: str
    ) -> None:
        await backend.set(prefix + "k", b"v", ttl=SHORT_TTL)
        await backend_factory.let_time_pass(PAST_SHORT_TTL)
        assert await backend.delete(prefix + "k") == 0

    async def test_exists_reports_whether_a_key_holds_a_value(
        self, backend: Backend, prefix: str
    ) -> None:
        assert await backend.exists(prefix + "k") is False
        await backend.set(prefix + "k", b"")
        assert await backend.exists(prefix + "k") is True
        await backend.delete(prefix + "k")
        assert await backend.exists(prefix + "k") is False

    # get_many and set_many

    async def test_get_many_returns_values_in_order_with_none_for_absent_keys(
        self, backend: Backend, prefix: str
    ) -> None:
        await backend.set(prefix + "a", b"1")
        await backend.set(prefix + "b", b"2")
        keys = [prefix + "b", prefix + "absent", prefix + "a", prefix + "b"]
        assert await backend.get_many(keys) == [b"2", None, b"1", b"2"]

    async def test_get_many_of_no_keys_returns_an_empty_list(self, backend: Backend) -> None:
        assert await backend.get_many([]) == []

    async def test_get_many_returns_none_for_expired_keys(
        self, backend: Backend, backend_factory: BackendFactory, prefix: str
    ) -> None:
        await backend.set(prefix + "short", b"1", ttl=SHORT_TTL)
        await backend.set(prefix + "long", b"2", ttl=LONG_TTL)
        await backend_factory.let_time_pass(PAST_SHORT_TTL)
        assert await backend.get_many([prefix + "short", prefix + "long"]) == [None, b"2"]

    async def test_set_many_stores_every_item(self, backend: Backend, prefix: str) -> None:
        items = {prefix + f"k{index}": f"v{index}".encode() for index in range(20)}
        await backend.set_many(items)
        assert await backend.get_many(list(items)) == list(items.values())
        assert await backend.ttl(prefix + "k0") == math.inf

    async def test_set_many_of_no_items_does_nothing(self, backend: Backend) -> None:
        await backend.set_many({})
        await backend.set_many({}, ttl=LONG_TTL)

    async def test_set_many_with_ttl_sets_the_expiry_of_every_item(
        self, backend: Backend, prefix: str
    ) -> None:
        items = {prefix + "a": b"1", prefix + "b": b"2"}
        await backend.set_many(items, ttl=LONG_TTL)
        for key in items:
            left = await backend.ttl(key)
            assert left is not None
            assert LONG_TTL - 60 < left <= LONG_TTL

    async def test_set_many_items_with_ttl_expire(
        self, backend: Backend, backend_factory: BackendFactory, prefix: str
    ) -> None:
        await backend.set_many({prefix + "a": b"1", prefix + "b": b"2"}, ttl=SHORT_TTL)
        await backend_factory.let_time_pass(PAST_SHORT_TTL)
        assert await backend.get_many([prefix + "a", prefix + "b"]) == [None, None]

    async def test_set_many_replaces_values_and_expiries(
        self, backend: Backend, prefix: str
    ) -> None:
        await backend.set(prefix + "a", b"old", ttl=LONG_TTL)
        await backend.set_many({prefix + "a": b"new"})
        assert await backend.get(prefix + "a") == b"new"
        assert await backend.ttl(prefix + "a") == math.inf

    # incr

    async def test_incr_of_absent_key_counts_from_zero(self, backend: Backend, prefix: str) -> None:
        assert await backend.incr(prefix + "n") == 1
        assert await backend.incr(prefix + "n", 5) == 6
        assert await backend.get(prefix + "n") == b"6"
        assert await backend.ttl(prefix + "n") == math.inf

    async def test_incr_adds_to_an_integer_stored_with_set(
        self, backend: Backend, prefix: str
    ) -> None:
        await backend.set(prefix + "n", b"41")
        assert await backend.incr(prefix + "n") == 42
        await backend.set(prefix + "m", b"-7")
        assert await backend.incr(prefix + "m", 2) == -5

    async def test_incr_by_negative_amounts_counts_down(
        self, backend: Backend, prefix: str
    ) -> None:
        assert await backend.incr(prefix + "n", -3) == -3
        assert await backend.incr(prefix + "n", -2) == -5
        assert await backend.incr(prefix + "n", 5) == 0
        assert await backend.get(prefix + "n") == b"0"

    async def test_incr_with_ttl_sets_the_expiry_when_it_creates_the_key(
        self, backend: Backend, prefix: str
    ) -> None:
        assert await backend.incr(prefix + "n", 1, ttl=LONG_TTL) == 1
        left = await backend.ttl(prefix + "n")
        assert left is not None
        assert LONG_TTL - 60 < left <= LONG_TTL

    async def test_incr_keeps_the_expiry_of_an_existing_key(
        self, backend: Backend, prefix: str
    ) -> None:
        await backend.incr(prefix + "n", 1, ttl=LONG_TTL)
        assert await backend.incr(prefix + "n", 1, ttl=10) == 2
        left = await backend.ttl(prefix + "n")
        assert left is not None
        assert left > 10
        await backend.set(prefix + "m", b"1")
        assert await backend.incr(prefix + "m", 1, ttl=LONG_TTL) == 2
        assert await backend.ttl(prefix + "m") == math.inf

    async def test_incr_with_ttl_starts_afresh_once_the_counter_expired(
        self, backend: Backend, backend_factory: BackendFactory, prefix: str
    ) -> None:
        await backend.incr(prefix + "n", 5, ttl=SHORT_TTL)
        await backend_factory.let_time_pass(PAST_SHORT_TTL)
        assert await backend.incr(prefix + "n", 1, ttl=LONG_TTL) == 1
        left = await backend.ttl(prefix + "n")
        assert left is not None
        assert left > LONG_TTL - 60

    @pytest.mark.parametrize(
        "value",
        [b"abc", b"1.5", b"", b" 1", b"1 ", b"01", b"+1", b"-0", b"9223372036854775808"],
        ids=["word", "float", "empty", "leading-space", "trailing-space", "leading-zero",
             "plus-sign", "minus-zero", "beyond-int64"],
    )  # fmt: skip
    @pytest.mark.parametrize("ttl", [None, LONG_TTL], ids=["no-ttl", "ttl"])
    async def test_incr_of_a_value_that_is_not_an_integer_raises_backend_error(
        self, backend: Backend, prefix: str, value: bytes, ttl: float | None
    ) -> None:
        await backend.set(prefix + "k", value)
        with pytest.raises(BackendError):
            await backend.incr(prefix + "k", 1, ttl=ttl)
        assert await backend.get(prefix + "k") == value
        assert await backend.ttl(prefix + "k") == math.inf

    async def test_incr_past_the_64_bit_range_raises_backend_error(
        self, backend: Backend, prefix: str
    ) -> None:
        await backend.set(prefix + "k", str(_INT64_MAX).encode())
        with pytest.raises(BackendError):
            await backend.incr(prefix + "k", 1)
        assert await backend.get(prefix + "k") == str(_INT64_MAX).encode()
        assert await backend.incr(prefix + "k", -1) == _INT64_MAX - 1

    # scan

    async def test_scan_with_star_finds_the_keys_under_a_prefix(
        self, backend: Backend, prefix: str
    ) -> None:
        for key in ("user:1", "user:2", "user:", "order:1", "users"):
            await backend.set(prefix + key, b"v")
        found = await _scanned(backend, glob_escape(prefix + "user:") + "*")
        assert found == {prefix + "user:1", prefix + "user:2", prefix + "user:"}

    async def test_scan_question_mark_matches_exactly_one_character(
        self, backend: Backend, prefix: str
    ) -> None:
        # ASCII only: Redis matches bytes, so "?" matches one byte of a multi-byte character.
        for key in ("a", "a1", "a:", "a12"):
            await backend.set(prefix + key, b"v")
        found = await _scanned(backend, glob_escape(prefix) + "a?")
        assert found == {prefix + "a1", prefix + "a:"}

    async def test_scan_character_set_matches_the_listed_characters(
        self, backend: Backend, prefix: str
    ) -> None:
        for key in ("ka", "kb", "kc", "kab"):
            await backend.set(prefix + key, b"v")
        assert await _scanned(backend, glob_escape(prefix) + "k[ab]") == {
            prefix + "ka",
            prefix + "kb",
        }
        assert await _scanned(backend, glob_escape(prefix) + "k[^ab]") == {prefix + "kc"}
        assert await _scanned(backend, glob_escape(prefix) + "k[a-b]*") == {
            prefix + "ka",
            prefix + "kb",
            prefix + "kab",
        }

    @pytest.mark.parametrize("literal", ["a*b", "a?b", "a[x]b", "a\\b"])
    async def test_scan_of_an_escaped_pattern_matches_only_the_literal_key(
        self, backend: Backend, prefix: str, literal: str
    ) -> None:
        for key in ("a*b", "a?b", "a[x]b", "axb", "a\\b", "ab", "a**b"):
            await backend.set(prefix + key, b"v")
        assert await _scanned(backend, glob_escape(prefix + literal)) == {prefix + literal}

    async def test_scan_finds_every_key_when_there_are_more_keys_than_count(
        self, backend: Backend, prefix: str
    ) -> None:
        expected = {prefix + f"many:{index}" for index in range(250)}
        await backend.set_many(dict.fromkeys(expected, b"v"))
        assert await _scanned(backend, glob_escape(prefix) + "many:*", count=10) == expected

    async def test_scan_handles_colons_and_unicode_in_keys(
        self, backend: Backend, prefix: str
    ) -> None:
        keys = {prefix + key for key in ("ns:ü:1", "ns:日本:2", "ns:🙂", "ns::")}
        for key in keys:
            await backend.set(key, b"v")
        assert await _scanned(backend, glob_escape(prefix) + "ns:*") == keys
        assert await _scanned(backend, glob_escape(prefix + "ns:日本:") + "*") == {
            prefix + "ns:日本:2"
        }

    async def test_scan_without_a_match_yields_nothing(self, backend: Backend, prefix: str) -> None:
        await backend.set(prefix + "k", b"v")
        assert [batch async for batch in backend.scan(glob_escape(prefix) + "nothing*")] == []

    async def test_scan_skips_expired_keys(
        self, backend: Backend, backend_factory: BackendFactory, prefix: str
    ) -> None:
        await backend.set(prefix + "short", b"v", ttl=SHORT_TTL)
        await backend.set(prefix + "long", b"v", ttl=LONG_TTL)
        await backend_factory.let_time_pass(PAST_SHORT_TTL)
        assert await _scanned(backend, glob_escape(prefix) + "*") == {prefix + "long"}

    # tag stamps (GuardedBackend)

    async def test_tag_stamps_gives_an_absent_key_the_fresh_stamp(
        self, backend: Backend, prefix: str
    ) -> None:
        guarded = _guarded(backend)
        assert await guarded.tag_stamps([prefix + "t"], b"fresh", LONG_TTL) == [b"fresh"]
        assert await backend.get(prefix + "t") == b"fresh"

    async def test_tag_stamps_returns_the_existing_stamp_and_ignores_fresh(
        self, backend: Backend, prefix: str
    ) -> None:
        guarded = _guarded(backend)
        await guarded.tag_stamps([prefix + "t"], b"first", LONG_TTL)
        assert await guarded.tag_stamps([prefix + "t"], b"second", LONG_TTL) == [b"first"]
        assert await backend.get(prefix + "t") == b"first"

    async def test_tag_stamps_and_tag_bump_answer_for_many_keys_in_order(
        self, backend: Backend, prefix: str
    ) -> None:
        """Twelve keys (on a cluster, several hash slots), a repeated one among them."""
        guarded = _guarded(backend)
        keys = [f"{prefix}t{index}" for index in range(12)]
        for index in range(0, 12, 2):
            await backend.set(keys[index], b"s%d" % index)
        expected = [b"s%d" % index if index % 2 == 0 else b"new" for index in range(12)]
        assert await guarded.tag_stamps([*keys, keys[1]], b"new", LONG_TTL) == [
            *expected,
            b"new",
        ]
        assert await guarded.tag_stamps(keys, b"newer", LONG_TTL) == expected
        assert await guarded.tag_bump(keys, b"bumped", LONG_TTL) == 12
        assert await guarded.tag_stamps(keys, b"newest", LONG_TTL) == [b"bumped"] * 12

    async def test_tag_stamps_and_tag_bump_of_no_keys_do_nothing(self, backend: Backend) -> None:
        guarded = _guarded(backend)
        assert await guarded.tag_stamps([], b"fresh", LONG_TTL) == []
        assert await guarded.tag_bump([], b"fresh", LONG_TTL) == 0

    async def test_concurrent_tag_stamps_of_an_absent_key_agree_on_one_stamp(
        self, backend: Backend, prefix: str
    ) -> None:
        guarded = _guarded(backend)
        fresh = [b"fresh-%d" % index for index in range(10)]
        answers = await asyncio.gather(
            *(guarded.tag_stamps([prefix + "t"], stamp, LONG_TTL) for stamp in fresh)
        )
        agreed = {answer[0] for answer in answers}
        assert len(agreed) == 1
        assert agreed <= set(fresh)
        assert await backend.get(prefix + "t") in agreed

    async def test_tag_stamps_creates_a_key_that_lives_twice_ttl(
        self, backend: Backend, prefix: str
    ) -> None:
        await _guarded(backend).tag_stamps([prefix + "t"], b"fresh", LONG_TTL)
        assert 2 * LONG_TTL - 60 < await _seconds_left(backend, prefix + "t") <= 2 * LONG_TTL

    async def test_tag_stamps_extends_a_key_with_less_than_ttl_left_to_twice_ttl(
        self, backend: Backend, prefix: str
    ) -> None:
        await backend.set(prefix + "t", b"stamp", ttl=LONG_TTL / 2)
        assert await _guarded(backend).tag_stamps([prefix + "t"], b"new", LONG_TTL) == [b"stamp"]
        assert 2 * LONG_TTL - 60 < await _seconds_left(backend, prefix + "t") <= 2 * LONG_TTL

    async def test_tag_stamps_extends_a_key_once_less_than_ttl_is_left(
        self, backend: Backend, backend_factory: BackendFactory, prefix: str
    ) -> None:
        if not backend_factory.can_control_time:
            pytest.skip("needs a clock the test can move")
        guarded = _guarded(backend)
        await guarded.tag_stamps([prefix + "t"], b"stamp", LONG_TTL)
        await backend_factory.let_time_pass(LONG_TTL / 2)
        await guarded.tag_stamps([prefix + "t"], b"new", LONG_TTL)
        # 1.5 ttl left is enough: no write.
        assert await _seconds_left(backend, prefix + "t") == pytest.approx(1.5 * LONG_TTL)
        await backend_factory.let_time_pass(LONG_TTL)
        assert await guarded.tag_stamps([prefix + "t"], b"new", LONG_TTL) == [b"stamp"]
        assert await _seconds_left(backend, prefix + "t") == pytest.approx(2 * LONG_TTL)

    async def test_tag_stamps_never_shortens_an_expiry(self, backend: Backend, prefix: str) -> None:
        """A key with at least ``ttl`` left, or with no expiry, keeps the expiry it had."""
        await backend.set(prefix + "enough", b"s1", ttl=1.5 * LONG_TTL)
        await backend.set(prefix + "long", b"s2", ttl=3 * LONG_TTL)
        await backend.set(prefix + "forever", b"s3")
        keys = [prefix + "enough", prefix + "long", prefix + "forever"]
        assert await _guarded(backend).tag_stamps(keys, b"new", LONG_TTL) == [b"s1", b"s2", b"s3"]
        assert 1.5 * LONG_TTL - 60 < await _seconds_left(backend, keys[0]) <= 1.5 * LONG_TTL
        assert 3 * LONG_TTL - 60 < await _seconds_left(backend, keys[1]) <= 3 * LONG_TTL
        assert await backend.ttl(keys[2]) == math.inf

    async def test_tag_stamps_without_ttl_removes_the_expiry(
        self, backend: Backend, prefix: str
    ) -> None:
        await backend.set(prefix + "t", b"stamp", ttl=LONG_TTL)
        keys = [prefix + "t", prefix + "absent"]
        assert await _guarded(backend).tag_stamps(keys, b"new", None) == [b"stamp", b"new"]
        assert await backend.ttl(keys[0]) == math.inf
        assert await backend.ttl(keys[1]) == math.inf

    async def test_tag_stamps_gives_an_expired_key_a_fresh_stamp(
        self, backend: Backend, backend_factory: BackendFactory, prefix: str
    ) -> None:
        await backend.set(prefix + "t", b"old", ttl=SHORT_TTL)
        await backend_factory.let_time_pass(PAST_SHORT_TTL)
        assert await _guarded(backend).tag_stamps([prefix + "t"], b"new", LONG_TTL) == [b"new"]

    async def test_tag_stamps_gives_a_deleted_key_a_fresh_stamp(
        self, backend: Backend, prefix: str
    ) -> None:
        guarded = _guarded(backend)
        await guarded.tag_stamps([prefix + "t"], b"old", LONG_TTL)
        await backend.delete(prefix + "t")
        assert await guarded.tag_stamps([prefix + "t"], b"new", LONG_TTL) == [b"new"]

    async def test_tag_bump_replaces_stamps_and_counts_those_that_held_one(
        self, backend: Backend, prefix: str
    ) -> None:
        guarded = _guarded(backend)
        keys = [prefix + "held", prefix + "absent"]
        await guarded.tag_stamps(keys[:1], b"old", None)
        assert await guarded.tag_bump(keys, b"new", LONG_TTL) == 1
        assert await backend.get_many(keys) == [b"new", b"new"]
        for key in keys:
            assert LONG_TTL - 60 < await _seconds_left(backend, key) <= LONG_TTL

    async def test_tag_stamps_returns_the_stamp_of_the_last_bump(
        self, backend: Backend, prefix: str
    ) -> None:
        guarded = _guarded(backend)
        await guarded.tag_stamps([prefix + "t"], b"first", LONG_TTL)
        await guarded.tag_bump([prefix + "t"], b"second", LONG_TTL)
        assert await guarded.tag_stamps([prefix + "t"], b"third", LONG_TTL) == [b"second"]

    async def test_a_bumped_stamp_expires_after_its_ttl(
        self, backend: Backend, backend_factory: BackendFactory, prefix: str
    ) -> None:
        guarded = _guarded(backend)
        await guarded.tag_bump([prefix + "t"], b"bumped", SHORT_TTL)
        await backend_factory.let_time_pass(PAST_SHORT_TTL)
        assert await guarded.tag_stamps([prefix + "t"], b"new", LONG_TTL) == [b"new"]

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


_KEYS: Final = st.sampled_from(["a", "b", "c:d", "ü"])
_VALUES: Final = st.one_of(
    st.binary(max_size=12),
    st.integers(_INT64_MIN, _INT64_MAX).map(lambda number: str(number).encode()),
    st.sampled_from([b"", b"01", b"+1", b"-0", b" 1", b"1.0", b"9223372036854775808"]),
)
_AMOUNTS: Final = st.integers(-1000, 1000)
# An index into the machine's TTL choices, which depend on whether time is controllable.
_TTL_CHOICES: Final = st.none() | st.integers(0, 3)


class _DictModelMachine(RuleBasedStateMachine):
    """Runs random operations on a backend and on a dict model; every answer must agree.

    The model maps each key to ``(value, expires_at)`` on a clock of its own that starts at 0
    and moves only in `advance_time`. Where the backend's time is real, TTLs are long (10 min
    to 1 h) so nothing expires during a run, and `ttl` is only checked to be at most what
    was set.

    Hypothesis builds machines from a class without arguments, so `_bound_machine` makes a
    subclass that carries the factory and the key prefix.
    """

    factory: ClassVar[BackendFactory]
    prefix: ClassVar[str]

    def __init__(self) -> None:
        super().__init__()
        self.ttls: tuple[float, ...] = (
            (0.5, 1.0, 2.0, 5.0)
            if self.factory.can_control_time
            else (600.0, 1200.0, 1800.0, 3600.0)
        )
        self.now = 0.0
        self.model: dict[str, tuple[bytes, float | None]] = {}
        self.loop = asyncio.new_event_loop()
        try:
            self.backend = self._run(self._make_backend())
        except BaseException:
            self.loop.close()
            raise

    async def _make_backend(self) -> Backend:
        return self.factory.make()

    def _run(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        return self.loop.run_until_complete(coroutine)

    def _ttl(self, choice: int | None) -> float | None:
        return None if choice is None else self.ttls[choice]

    def _live(self, key: str) -> tuple[bytes, float | None] | None:
        entry = self.model.get(key)
        if entry is not None and entry[1] is not None and entry[1] <= self.now:
            del self.model[key]
            return None
        return entry

    def _store(self, key: str, value: bytes, ttl: float | None) -> None:
        self.model[key] = (value, None if ttl is None else self.now + ttl)

    @rule(key=_KEYS, value=_VALUES, ttl_choice=_TTL_CHOICES)
    def set_value(self, key: str, value: bytes, ttl_choice: int | None) -> None:
        ttl = self._ttl(ttl_choice)
        self._run(self.backend.set(self.prefix + key, value, ttl))
        self._store(key, value, ttl)

    @rule(items=st.dictionaries(_KEYS, _VALUES, max_size=3), ttl_choice=_TTL_CHOICES)
    def set_many_values(self, items: dict[str, bytes], ttl_choice: int | None) -> None:
        ttl = self._ttl(ttl_choice)
        self._run(self.backend.set_many({self.prefix + k: v for k, v in items.items()}, ttl))
        for key, value in items.items():
            self._store(key, value, ttl)

    @rule(key=_KEYS, value=_VALUES, ttl_choice=_TTL_CHOICES)
    def add_value(self, key: str, value: bytes, ttl_choice: int | None) -> None:
        ttl = self._ttl(ttl_choice)
        stored = self._run(self.backend.add(self.prefix + key, value, ttl))
        assert stored is (self._live(key) is None)
        if stored:
            self._store(key, value, ttl)

    @rule(key=_KEYS)
    def get_value(self, key: str) -> None:
        entry = self._live(key)
        assert self._run(self.backend.get(self.prefix + key)) == (entry and entry[0])

    @rule(keys=st.lists(_KEYS, max_size=4))
    def get_many_values(self, keys: list[str]) -> None:
        expected = [entry and entry[0] for entry in map(self._live, keys)]
        assert self._run(self.backend.get_many([self.prefix + k for k in keys])) == expected

    @rule(keys=st.lists(_KEYS, max_size=4))
    def delete_keys(self, keys: list[str]) -> None:
        existing = {key for key in keys if self._live(key) is not None}
        assert self._run(self.backend.delete(*(self.prefix + k for k in keys))) == len(existing)
        for key in existing:
            del self.model[key]

    @rule(key=_KEYS)
    def check_exists(self, key: str) -> None:
        assert self._run(self.backend.exists(self.prefix + key)) is (self._live(key) is not None)

    @rule(key=_KEYS)
    def check_ttl(self, key: str) -> None:
        left = self._run(self.backend.ttl(self.prefix + key))
        entry = self._live(key)
        if entry is None:
            assert left is None
        elif entry[1] is None:
            assert left == math.inf
        else:
            expected = entry[1] - self.now
            assert left is not None
            if self.factory.can_control_time:
                assert left == pytest.approx(expected, abs=2e-3)
            else:
                assert expected - 60 < left <= expected

    @rule(key=_KEYS, ttl_choice=st.integers(0, 3))
    def expire_key(self, key: str, ttl_choice: int) -> None:
        ttl = self.ttls[ttl_choice]
        entry = self._live(key)
        assert self._run(self.backend.expire(self.prefix + key, ttl)) is (entry is not None)
        if entry is not None:
            self._store(key, entry[0], ttl)

    @rule(key=_KEYS, amount=_AMOUNTS, ttl_choice=_TTL_CHOICES)
    def incr_value(self, key: str, amount: int, ttl_choice: int | None) -> None:
        ttl = self._ttl(ttl_choice)
        entry = self._live(key)
        if entry is None:
            expected: int | None = amount
        else:
            current = _redis_integer(entry[0])
            expected = None if current is None else current + amount
            if expected is not None and not _INT64_MIN <= expected <= _INT64_MAX:
                expected = None
        if expected is None:
            with pytest.raises(BackendError):
                self._run(self.backend.incr(self.prefix + key, amount, ttl))
            return
        assert self._run(self.backend.incr(self.prefix + key, amount, ttl)) == expected
        if entry is None:
            self._store(key, str(expected).encode(), ttl)
        else:
            self.model[key] = (str(expected).encode(), entry[1])

    @precondition(lambda self: self.factory.can_control_time)
    @rule(seconds=st.sampled_from([0.1, 0.4, 1.3, 3.0]))
    def advance_time(self, seconds: float) -> None:
        target = self.now + seconds
        # Never stop within 5 ms of an expiry: whether a key is live at the very instant it
        # expires is a detail where Redis (ms ticks) and a float clock may differ.
        while any(
            expires_at is not None and abs(expires_at - target) < 0.005
            for _, expires_at in self.model.values()
        ):
            target += 0.01
        assert self.factory.advance is not None
        self.factory.advance(target - self.now)
        self.now = target

    def teardown(self) -> None:
        try:
            self._run(self._close_backend())
        finally:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    async def _close_backend(self) -> None:
        try:
            await _delete_prefixed(self.backend, self.prefix)
        finally:
            await self.backend.aclose()


def _bound_machine(factory: BackendFactory, prefix: str) -> type[_DictModelMachine]:
    """Returns a `_DictModelMachine` subclass whose machines use ``factory`` and ``prefix``."""

    class BoundDictModelMachine(_DictModelMachine):
        pass

    BoundDictModelMachine.factory = factory
    BoundDictModelMachine.prefix = prefix
    return BoundDictModelMachine
