"""The contract of storing values: get, set, ttl, expire, add, delete, exists, get_many, set_many and incr."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import pytest

from ..._errors import BackendError
from ...backends._protocol import Backend
from ._support import (
    _INT64_MAX,
    LONG_TTL,
    PAST_SHORT_TTL,
    SHORT_TTL,
)

if TYPE_CHECKING:
    from ._support import BackendFactory

__all__ = ("ValueTests",)


class ValueTests:
    """Tests of reading, writing, expiring and counting values; part of `BackendContract`."""

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
