"""Unit tests of `MemoryBackend`: expiry, LRU and byte bounds, counters, scan and memory cost."""

from __future__ import annotations

import asyncio
import gc
import math
import tracemalloc
from collections import OrderedDict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cachetier import BackendError, ConfigurationError
from cachetier._errors import ValueRejected
from cachetier.backends.memory import MemoryBackend
from cachetier.testing import FakeClock

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def backend(clock: FakeClock) -> MemoryBackend:
    return MemoryBackend(max_entries=None, max_bytes=None, clock=clock)


async def entry_size(key: str, value: bytes) -> int:
    """Returns the bytes one entry counts against ``max_bytes``, measured on a spare backend."""
    probe = MemoryBackend(max_entries=None, max_bytes=None)
    await probe.set(key, value)
    return probe.used_bytes


async def scan_all(backend: MemoryBackend, pattern: str, count: int = 500) -> list[str]:
    return [key async for batch in backend.scan(pattern, count=count) for key in batch]


# --- construction ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["max_entries", "max_bytes"])
@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "10"])
def test_invalid_limit_raises_configuration_error_naming_it(name: str, bad: object) -> None:
    with pytest.raises(ConfigurationError, match=name):
        MemoryBackend(**{name: bad})  # type: ignore[arg-type]  # a wrong type on purpose


def test_configuration_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        MemoryBackend(max_entries=0)


def test_non_callable_clock_raises_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="clock"):
        MemoryBackend(clock=3.0)  # type: ignore[arg-type]  # a wrong type on purpose


def test_limits_may_be_none() -> None:
    backend = MemoryBackend(max_entries=None, max_bytes=None)
    assert backend.entry_count == 0
    assert backend.used_bytes == 0


async def test_kind_is_memory_and_repr_shows_limits_and_usage() -> None:
    backend = MemoryBackend(max_entries=7, max_bytes=100_000)
    await backend.set("k", b"v")
    assert backend.kind == "memory"
    text = repr(backend)
    assert text.startswith("MemoryBackend(")
    assert "max_entries=7" in text
    assert "max_bytes=100000" in text
    assert "entries=1" in text
    assert f"used_bytes={backend.used_bytes}" in text


# --- values and keys ------------------------------------------------------------------------


async def test_get_returns_the_stored_bytes_object(backend: MemoryBackend) -> None:
    value = b"payload"
    await backend.set("k", value)
    assert await backend.get("k") is value


async def test_get_of_absent_key_returns_none(backend: MemoryBackend) -> None:
    assert await backend.get("nope") is None


async def test_bytearray_value_is_copied_so_later_mutation_does_not_reach_cache(
    backend: MemoryBackend,
) -> None:
    value = bytearray(b"abc")
    await backend.set("k", value)  # type: ignore[arg-type]  # a wrong type on purpose
    value[0] = ord("z")
    assert await backend.get("k") == b"abc"
    assert type(await backend.get("k")) is bytes


async def test_non_str_key_raises_type_error(backend: MemoryBackend) -> None:
    with pytest.raises(TypeError, match="str"):
        await backend.set(b"k", b"v")  # type: ignore[arg-type]  # a wrong type on purpose
    with pytest.raises(TypeError, match="str"):
        await backend.incr(1)  # type: ignore[arg-type]  # a wrong type on purpose
    assert backend.entry_count == 0


async def test_non_bytes_value_raises_type_error_naming_key(backend: MemoryBackend) -> None:
    with pytest.raises(TypeError, match=r"'k'.*str"):
        await backend.set("k", "text")  # type: ignore[arg-type]  # a wrong type on purpose
    with pytest.raises(TypeError, match="int"):
        await backend.set("k", 5)  # type: ignore[arg-type]  # a wrong type on purpose
    assert await backend.get("k") is None


async def test_set_many_and_get_many_keep_order_and_report_absent_keys(
    backend: MemoryBackend,
) -> None:
    await backend.set_many({"a": b"1", "b": b"2"})
    assert await backend.get_many(["b", "missing", "a"]) == [b"2", None, b"1"]


async def test_set_many_with_an_invalid_item_stores_nothing(backend: MemoryBackend) -> None:
    with pytest.raises(TypeError):
        await backend.set_many({"a": b"1", "b": "not bytes"})  # type: ignore[dict-item]  # a wrong type on purpose
    assert backend.entry_count == 0


async def test_set_many_applies_ttl_to_every_item(backend: MemoryBackend, clock: FakeClock) -> None:
    await backend.set_many({"a": b"1", "b": b"2"}, ttl=5)
    assert await backend.ttl("a") == pytest.approx(5)
    clock.advance(5)
    assert await backend.get_many(["a", "b"]) == [None, None]


async def test_delete_counts_only_live_keys(backend: MemoryBackend, clock: FakeClock) -> None:
    await backend.set("live", b"1")
    await backend.set("short", b"2", ttl=1)
    clock.advance(1)
    assert await backend.delete("live", "short", "missing") == 1
    assert backend.entry_count == 0
    assert backend.used_bytes == 0


async def test_exists_reports_live_keys_only(backend: MemoryBackend, clock: FakeClock) -> None:
    await backend.set("live", b"1")
    await backend.set("short", b"2", ttl=1)
    assert await backend.exists("live")
    assert await backend.exists("short")
    clock.advance(1)
    assert not await backend.exists("short")
    assert not await backend.exists("missing")


async def test_ping_succeeds_and_aclose_keeps_entries(backend: MemoryBackend) -> None:
    await backend.set("k", b"v")
    await backend.ping()
    await backend.aclose()
    assert await backend.get("k") == b"v"


# --- expiry ---------------------------------------------------------------------------------


async def test_entry_expires_once_its_ttl_has_passed(
    backend: MemoryBackend, clock: FakeClock
) -> None:
    await backend.set("k", b"v", ttl=10)
    clock.advance(9.999)
    assert await backend.get("k") == b"v"
    clock.advance(0.001)
    assert await backend.get("k") is None


async def test_reading_an_expired_entry_reclaims_it(
    backend: MemoryBackend, clock: FakeClock
) -> None:
    await backend.set("k", b"v", ttl=1)
    clock.advance(2)
    assert await backend.get("k") is None
    assert backend.entry_count == 0
    assert backend.used_bytes == 0


async def test_ttl_reports_remaining_seconds_infinity_or_none(
    backend: MemoryBackend, clock: FakeClock
) -> None:
    await backend.set("forever", b"v")
    await backend.set("short", b"v", ttl=10)
    assert await backend.ttl("forever") == math.inf
    assert await backend.ttl("short") == pytest.approx(10)
    clock.advance(2.5)
    assert await backend.ttl("short") == pytest.approx(7.5)
    clock.advance(7.5)
    assert await backend.ttl("short") is None
    assert await backend.ttl("missing") is None


async def test_set_replaces_value_and_expiry(backend: MemoryBackend, clock: FakeClock) -> None:
    await backend.set("k", b"old", ttl=1)
    await backend.set("k", b"new")
    clock.advance(5)
    assert await backend.get("k") == b"new"
    assert await backend.ttl("k") == math.inf
    await backend.set("k", b"newer", ttl=3)
    assert await backend.ttl("k") == pytest.approx(3)


@pytest.mark.parametrize("bad_ttl", [0, -1, math.nan])
async def test_write_with_non_positive_ttl_raises_backend_error(
    backend: MemoryBackend, bad_ttl: float
) -> None:
    with pytest.raises(BackendError, match="'k'"):
        await backend.set("k", b"v", ttl=bad_ttl)
    with pytest.raises(BackendError):
        await backend.set_many({"k": b"v"}, ttl=bad_ttl)
    with pytest.raises(BackendError, match="'k'"):
        await backend.incr("k", ttl=bad_ttl)
    assert backend.entry_count == 0


async def test_expire_sets_expiry_of_existing_key(backend: MemoryBackend, clock: FakeClock) -> None:
    await backend.set("k", b"v")
    assert await backend.expire("k", 4)
    assert await backend.ttl("k") == pytest.approx(4)
    clock.advance(4)
    assert await backend.get("k") is None


async def test_expire_on_absent_or_expired_key_returns_false(
    backend: MemoryBackend, clock: FakeClock
) -> None:
    assert not await backend.expire("missing", 10)
    await backend.set("short", b"v", ttl=1)
    clock.advance(1)
    assert not await backend.expire("short", 10)
    assert await backend.get("short") is None


async def test_expire_with_non_positive_ttl_removes_key(backend: MemoryBackend) -> None:
    await backend.set("k", b"v")
    assert await backend.expire("k", 0)
    assert await backend.get("k") is None


async def test_add_stores_only_when_key_is_absent(backend: MemoryBackend) -> None:
    assert await backend.add("k", b"first", ttl=10)
    assert not await backend.add("k", b"second")
    assert await backend.get("k") == b"first"
    assert await backend.ttl("k") == pytest.approx(10)


async def test_add_on_expired_key_stores_new_value(
    backend: MemoryBackend, clock: FakeClock
) -> None:
    await backend.set("k", b"old", ttl=1)
    clock.advance(1)
    assert await backend.add("k", b"new")
    assert await backend.get("k") == b"new"
    assert await backend.ttl("k") == math.inf


async def test_expired_entries_are_reclaimed_by_writes_without_being_read(
    backend: MemoryBackend, clock: FakeClock
) -> None:
    """Within O(n) writes to other keys, every expired entry is dropped."""
    n = 1_000
    for i in range(n):
        await backend.set(f"old:{i}", b"v", ttl=1)
    clock.advance(2)
    for i in range(n + 10):
        await backend.set("hot", b"%d" % i)
    assert backend.entry_count == 1
    assert backend.used_bytes == await entry_size("hot", b"%d" % (n + 9))


# --- bounds and eviction --------------------------------------------------------------------


async def test_lru_entry_evicted_when_max_entries_exceeded() -> None:
    backend = MemoryBackend(max_entries=3, max_bytes=None)
    for key in "abcd":
        await backend.set(key, key.encode())
    assert await backend.get("a") is None
    assert await backend.get_many(["b", "c", "d"]) == [b"b", b"c", b"d"]
    assert backend.entry_count == 3


async def test_read_refreshes_recency_so_next_lru_entry_is_evicted() -> None:
    backend = MemoryBackend(max_entries=3, max_bytes=None)
    for key in "abc":
        await backend.set(key, key.encode())
    assert await backend.get("a") == b"a"
    await backend.set("d", b"d")
    assert await backend.get("b") is None
    assert await backend.get("a") == b"a"


async def test_get_many_refreshes_recency() -> None:
    backend = MemoryBackend(max_entries=3, max_bytes=None)
    for key in "abc":
        await backend.set(key, key.encode())
    await backend.get_many(["a"])
    await backend.set("d", b"d")
    assert await backend.exists("a")
    assert not await backend.exists("b")


async def test_overwrite_refreshes_recency() -> None:
    backend = MemoryBackend(max_entries=3, max_bytes=None)
    for key in "abc":
        await backend.set(key, key.encode())
    await backend.set("a", b"a2")
    await backend.set("d", b"d")
    assert await backend.get("a") == b"a2"
    assert await backend.get("b") is None


async def test_exists_and_ttl_do_not_refresh_recency() -> None:
    backend = MemoryBackend(max_entries=3, max_bytes=None)
    for key in "abc":
        await backend.set(key, key.encode())
    assert await backend.exists("a")
    assert await backend.ttl("a") == math.inf
    await backend.set("d", b"d")
    assert await backend.get("a") is None


async def test_expired_entries_are_evicted_before_live_ones(clock: FakeClock) -> None:
    backend = MemoryBackend(max_entries=4, max_bytes=None, clock=clock)
    await backend.set("live1", b"1")
    await backend.set("live2", b"2")
    await backend.set("short1", b"3", ttl=1)
    await backend.set("short2", b"4", ttl=1)
    clock.advance(2)
    await backend.set("new1", b"5")
    await backend.set("new2", b"6")
    assert await backend.get_many(["live1", "live2", "new1", "new2"]) == [
        b"1",
        b"2",
        b"5",
        b"6",
    ]
    assert backend.entry_count == 4


async def test_used_bytes_counts_key_and_value_lengths_plus_a_fixed_overhead(
    backend: MemoryBackend,
) -> None:
    await backend.set("k", b"")
    overhead = backend.used_bytes - len("k")
    assert overhead > 0
    await backend.set("k", b"x" * 100)
    assert backend.used_bytes == overhead + 1 + 100
    await backend.set("key2", b"yy")
    assert backend.used_bytes == 2 * overhead + 1 + 100 + 4 + 2
    await backend.delete("k", "key2")
    assert backend.used_bytes == 0


async def test_lru_entries_evicted_when_max_bytes_exceeded() -> None:
    size = await entry_size("k0", b"x" * 100)
    backend = MemoryBackend(max_entries=None, max_bytes=3 * size)
    for i in range(3):
        await backend.set(f"k{i}", b"x" * 100)
    assert backend.entry_count == 3
    await backend.set("k3", b"x" * 100)
    assert backend.entry_count == 3
    assert backend.used_bytes <= 3 * size
    assert await backend.get("k0") is None
    assert await backend.get("k3") == b"x" * 100


async def test_large_value_evicts_as_many_lru_entries_as_needed() -> None:
    size = await entry_size("k0", b"x")
    backend = MemoryBackend(max_entries=None, max_bytes=4 * size)
    for i in range(4):
        await backend.set(f"k{i}", b"x")
    await backend.set("big", b"x" * (2 * size))
    assert backend.used_bytes <= 4 * size
    assert await backend.get("big") == b"x" * (2 * size)
    assert await backend.get_many(["k0", "k1", "k2"]) == [None, None, None]
    assert await backend.get("k3") == b"x"


async def test_value_larger_than_max_bytes_is_not_stored_and_removes_old_value() -> None:
    size = await entry_size("k", b"small")
    backend = MemoryBackend(max_entries=None, max_bytes=3 * size)
    await backend.set("k", b"small")
    await backend.set("other", b"")
    assert backend.entry_count == 2
    with pytest.raises(ValueRejected, match=r"'k' is larger than max_bytes"):
        await backend.set("k", b"x" * (3 * size))
    assert await backend.get("k") is None
    assert await backend.get("other") == b""
    assert backend.used_bytes == await entry_size("other", b"")


async def test_set_many_stores_what_fits_and_raises_for_values_larger_than_max_bytes() -> None:
    backend = MemoryBackend(max_entries=None, max_bytes=1_000)
    await backend.set("big", b"old")
    with pytest.raises(ValueRejected, match="'big'"):
        await backend.set_many({"small": b"s", "big": b"x" * 1_000})
    assert await backend.get_many(["small", "big"]) == [b"s", None]


async def test_set_if_of_value_larger_than_max_bytes_raises_rather_than_returning_false() -> None:
    """``False`` from set_if means an invalidation won; a rejected value is another outcome."""
    backend = MemoryBackend(max_entries=None, max_bytes=1_000)
    await backend.set("k", b"lease")
    with pytest.raises(ValueRejected):
        await backend.set_if("k", b"lease", b"x" * 1_000, None)
    assert await backend.get("k") is None


async def test_add_of_value_larger_than_max_bytes_returns_false() -> None:
    backend = MemoryBackend(max_entries=None, max_bytes=1_000)
    assert not await backend.add("k", b"x" * 1_000)
    assert backend.entry_count == 0


# --- tag stamps -----------------------------------------------------------------------------


async def test_tag_stamps_are_entries_bounded_by_max_entries() -> None:
    """Per-entity tags cannot outgrow the store, as the tag indexes once did."""
    backend = MemoryBackend(max_entries=100, max_bytes=None)
    for index in range(10_000):
        await backend.tag_stamps([f"tag:{index}"], b"stamp", 60)
    assert backend.entry_count == 100


async def test_tag_stamps_make_a_tag_recently_used() -> None:
    backend = MemoryBackend(max_entries=3, max_bytes=None)
    assert await backend.tag_stamps(["tag"], b"stamp", 60) == [b"stamp"]
    await backend.set("a", b"1")
    await backend.set("b", b"2")
    await backend.tag_stamps(["tag"], b"other", 60)
    await backend.set("c", b"3")
    assert await backend.get_many(["tag", "a", "b", "c"]) == [b"stamp", None, b"2", b"3"]


async def test_tag_bump_of_a_stamp_larger_than_max_bytes_still_invalidates() -> None:
    backend = MemoryBackend(max_entries=None, max_bytes=1_000)
    await backend.tag_stamps(["tag"], b"old", 60)
    assert await backend.tag_bump(["tag"], b"x" * 1_000, 60) == 1
    assert await backend.tag_stamps(["tag"], b"new", 60) == [b"new"]


# --- incr -----------------------------------------------------------------------------------


async def test_incr_on_absent_key_starts_from_zero_and_stores_ascii(
    backend: MemoryBackend,
) -> None:
    assert await backend.incr("n") == 1
    assert await backend.get("n") == b"1"
    assert await backend.incr("m", 5) == 5


async def test_incr_adds_to_existing_ascii_integer(backend: MemoryBackend) -> None:
    await backend.set("n", b"12")
    assert await backend.incr("n") == 13
    assert await backend.get("n") == b"13"


async def test_incr_with_negative_amount_decrements_below_zero(backend: MemoryBackend) -> None:
    await backend.set("n", b"2")
    assert await backend.incr("n", -5) == -3
    assert await backend.get("n") == b"-3"
    assert await backend.incr("n", 3) == 0
    assert await backend.get("n") == b"0"


async def test_incr_applies_ttl_only_when_it_creates_the_key(
    backend: MemoryBackend, clock: FakeClock
) -> None:
    assert await backend.incr("n", ttl=10) == 1
    clock.advance(4)
    assert await backend.incr("n", ttl=100) == 2
    assert await backend.ttl("n") == pytest.approx(6)
    clock.advance(6)
    assert await backend.get("n") is None


async def test_incr_keeps_no_expiry_of_existing_key(backend: MemoryBackend) -> None:
    await backend.set("n", b"1")
    assert await backend.incr("n", ttl=10) == 2
    assert await backend.ttl("n") == math.inf


async def test_incr_on_expired_key_restarts_with_new_ttl(
    backend: MemoryBackend, clock: FakeClock
) -> None:
    await backend.set("n", b"41", ttl=1)
    clock.advance(1)
    assert await backend.incr("n", ttl=30) == 1
    assert await backend.ttl("n") == pytest.approx(30)


@pytest.mark.parametrize(
    "stored",
    [b"abc", b"1.5", b" 12", b"12 ", b"12\n", b"+1", b"01", b"-0", b"1_000", b"", b"0x10"],
)
async def test_incr_on_non_integer_value_raises_backend_error_naming_key(
    backend: MemoryBackend, stored: bytes
) -> None:
    await backend.set("counter", stored)
    with pytest.raises(BackendError, match="'counter'"):
        await backend.incr("counter")
    assert await backend.get("counter") == stored


@pytest.mark.parametrize(
    ("stored", "amount"),
    [
        (str(INT64_MAX).encode(), 1),
        (str(INT64_MIN).encode(), -1),
        (b"0", INT64_MAX + 1),
        (b"5", INT64_MAX),
        (b"99999999999999999999", 1),
    ],
)
async def test_incr_beyond_signed_64_bits_raises_and_keeps_value(
    backend: MemoryBackend, stored: bytes, amount: int
) -> None:
    await backend.set("counter", stored)
    with pytest.raises(BackendError, match="'counter'"):
        await backend.incr("counter", amount)
    assert await backend.get("counter") == stored


async def test_incr_reaches_signed_64_bit_bounds_exactly(backend: MemoryBackend) -> None:
    await backend.set("hi", str(INT64_MAX - 1).encode())
    assert await backend.incr("hi") == INT64_MAX
    await backend.set("lo", str(INT64_MIN + 1).encode())
    assert await backend.incr("lo", -1) == INT64_MIN
    assert await backend.get("lo") == str(INT64_MIN).encode()


async def test_incr_with_non_int_amount_raises_type_error(backend: MemoryBackend) -> None:
    with pytest.raises(TypeError, match="float"):
        await backend.incr("n", 1.5)  # type: ignore[arg-type]  # a wrong type on purpose
    assert await backend.get("n") is None


async def test_incr_whose_result_does_not_fit_max_bytes_raises_and_keeps_count() -> None:
    size = await entry_size("n", b"9")
    backend = MemoryBackend(max_entries=None, max_bytes=size)
    assert await backend.incr("n", 9) == 9
    with pytest.raises(BackendError, match="'n'"):
        await backend.incr("n")
    assert await backend.get("n") == b"9"


# --- scan -----------------------------------------------------------------------------------

SCAN_KEYS = ["user:1", "user:2", "user:10", "user:x", "post:1", "a*b", "axb", "a?b", "[x]"]


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("*", SCAN_KEYS),
        ("user:*", ["user:1", "user:2", "user:10", "user:x"]),
        ("user:?", ["user:1", "user:2", "user:x"]),
        ("user:[12]", ["user:1", "user:2"]),
        ("user:[^12]", ["user:x"]),
        ("user:[0-9]*", ["user:1", "user:2", "user:10"]),
        ("a*b", ["a*b", "axb", "a?b"]),
        ("a\\*b", ["a*b"]),
        ("a\\?b", ["a?b"]),
        ("\\[x\\]", ["[x]"]),
        ("post:1", ["post:1"]),
        ("nothing*", []),
    ],
)
async def test_scan_yields_keys_matching_redis_glob(
    backend: MemoryBackend, pattern: str, expected: list[str]
) -> None:
    for key in SCAN_KEYS:
        await backend.set(key, b"v")
    assert sorted(await scan_all(backend, pattern)) == sorted(expected)


async def test_scan_batches_hold_at_most_count_keys(backend: MemoryBackend) -> None:
    keys = {f"k:{i}" for i in range(1_050)}
    await backend.set_many(dict.fromkeys(keys, b"v"))
    batches = [batch async for batch in backend.scan("k:*", count=100)]
    assert all(0 < len(batch) <= 100 for batch in batches)
    seen = [key for batch in batches for key in batch]
    assert len(seen) == len(keys)
    assert set(seen) == keys


async def test_scan_skips_expired_keys(backend: MemoryBackend, clock: FakeClock) -> None:
    await backend.set("live", b"v")
    await backend.set("short", b"v", ttl=1)
    clock.advance(1)
    assert await scan_all(backend, "*") == ["live"]


async def test_scan_survives_deletes_and_writes_between_batches(backend: MemoryBackend) -> None:
    """Keys present throughout are all yielded; deleted ones are not yielded after deletion."""
    keys = [f"k:{i}" for i in range(1_000)]
    await backend.set_many(dict.fromkeys(keys, b"v"))
    kept = set(keys[::2])
    deleted: set[str] = set()
    seen: set[str] = set()
    async for batch in backend.scan("k:*", count=50):
        assert not deleted & set(batch)
        seen.update(batch)
        doomed = [key for key in keys[1::2] if key not in seen][:60]
        await backend.delete(*doomed)
        deleted.update(doomed)
        await backend.set(f"new:{len(seen)}", b"v")
    assert kept <= seen


async def test_scan_with_non_positive_count_raises_configuration_error(
    backend: MemoryBackend,
) -> None:
    with pytest.raises(ConfigurationError, match="count"):
        await scan_all(backend, "*", count=0)


async def test_scan_lets_other_tasks_run_while_matching_nothing() -> None:
    """A long scan that yields no batch still gives the event loop turns."""
    events: list[str] = []

    def clock() -> float:
        events.append("chunk")
        return 0.0

    backend = MemoryBackend(max_entries=None, max_bytes=None, clock=clock)
    await backend.set_many({f"k:{i}": b"v" for i in range(1_000)})

    async def other() -> None:
        events.append("other")

    events.clear()
    task = asyncio.get_running_loop().create_task(other())
    assert await scan_all(backend, "nothing*", count=100) == []
    await task
    assert events.index("other") < len(events) - 1


# --- memory ---------------------------------------------------------------------------------


async def test_small_entry_costs_at_most_200_bytes_beyond_key_and_value() -> None:
    """Traced memory of 20,000 entries with a TTL, keys and values created before tracing."""
    n = 20_000
    keys = [f"user:{i}" for i in range(n)]
    values = [b"%d" % i for i in range(n)]
    backend = MemoryBackend(max_entries=None, max_bytes=None)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for key, value in zip(keys, values, strict=True):
            await backend.set(key, value, ttl=600)
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert backend.entry_count == n
    assert (after - before) / n <= 200


# --- models ---------------------------------------------------------------------------------

KEYS = st.sampled_from(["a", "b", "c", "d"])
VALUES = st.one_of(
    st.integers(min_value=-10, max_value=10).map(lambda i: str(i).encode()),
    st.sampled_from([b"", b"x", b"01", b" 1", INT64_MAX.to_bytes(8, "big")]),
    st.just(str(INT64_MAX).encode()),
)
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("set"), KEYS, VALUES, st.sampled_from([None, 1.0, 5.0])),
        st.tuples(st.just("add"), KEYS, VALUES, st.sampled_from([None, 1.0, 5.0])),
        st.tuples(st.just("get"), KEYS),
        st.tuples(st.just("delete"), KEYS),
        st.tuples(st.just("incr"), KEYS, st.integers(-3, 3), st.sampled_from([None, 2.0])),
        st.tuples(st.just("advance"), st.sampled_from([0.5, 1.0, 3.0])),
    ),
    max_size=40,
)


def _model_int(value: bytes) -> int | None:
    """Returns the integer a canonical signed 64-bit decimal spells, else ``None``."""
    try:
        number = int(value)
    except ValueError:
        return None
    if str(number).encode() != value or not INT64_MIN <= number <= INT64_MAX:
        return None
    return number


async def _run_against_dict_model(ops: list[tuple[object, ...]]) -> None:
    clock = FakeClock()
    backend = MemoryBackend(max_entries=None, max_bytes=None, clock=clock)
    model: dict[str, tuple[bytes, float]] = {}  # key -> (value, expires_at)

    def live(key: str) -> bytes | None:
        if key in model and model[key][1] > clock():
            return model[key][0]
        model.pop(key, None)
        return None

    for op in ops:
        match op:
            case ("set", str(key), bytes(value), (None | float()) as ttl):
                await backend.set(key, value, ttl)
                model[key] = (value, math.inf if ttl is None else clock() + ttl)
            case ("add", str(key), bytes(value), (None | float()) as ttl):
                stored = await backend.add(key, value, ttl)
                assert stored == (live(key) is None)
                if stored:
                    model[key] = (value, math.inf if ttl is None else clock() + ttl)
            case ("get", str(key)):
                assert await backend.get(key) == live(key)
            case ("delete", str(key)):
                assert await backend.delete(key) == (live(key) is not None)
                model.pop(key, None)
            case ("incr", str(key), int(amount), (None | float()) as ttl):
                current = live(key)
                number = 0 if current is None else _model_int(current)
                if number is None or not INT64_MIN <= number + amount <= INT64_MAX:
                    with pytest.raises(BackendError):
                        await backend.incr(key, amount, ttl)
                    continue
                assert await backend.incr(key, amount, ttl) == number + amount
                expires_at = math.inf if ttl is None else clock() + ttl
                model[key] = (str(number + amount).encode(), model.get(key, (b"", expires_at))[1])
            case ("advance", float(seconds)):
                clock.advance(seconds)
            case _:  # pragma: no cover - the strategy makes no other shape
                raise AssertionError(op)
    for key in ["a", "b", "c", "d"]:
        assert await backend.get(key) == live(key)


@settings(max_examples=200, deadline=None)
@given(ops=OPS)
def test_backend_agrees_with_a_dict_model(ops: list[tuple[object, ...]]) -> None:
    """get, set, add, delete and incr under a fake clock behave like a dict with expiries."""
    asyncio.run(_run_against_dict_model(ops))


async def _run_against_lru_model(ops: list[tuple[str, str]]) -> None:
    backend = MemoryBackend(max_entries=3, max_bytes=None)
    model: OrderedDict[str, bytes] = OrderedDict()
    for op, key in ops:
        if op == "set":
            await backend.set(key, key.encode())
            model[key] = key.encode()
            model.move_to_end(key)
            if len(model) > 3:
                model.popitem(last=False)
        else:
            expected = model.get(key)
            if expected is not None:
                model.move_to_end(key)
            assert await backend.get(key) == expected
    assert backend.entry_count == len(model)


@settings(max_examples=200, deadline=None)
@given(ops=st.lists(st.tuples(st.sampled_from(["set", "get"]), st.sampled_from("abcdef"))))
def test_eviction_order_agrees_with_an_lru_model(ops: list[tuple[str, str]]) -> None:
    """With max_entries, the entry evicted is always the least recently read or written."""
    asyncio.run(_run_against_lru_model(ops))


async def test_get_nowait_answers_as_get_does(backend: MemoryBackend, clock: FakeClock) -> None:
    await backend.set("kept", b"v")
    await backend.set("short", b"s", ttl=1.0)
    assert backend.get_nowait("kept") == await backend.get("kept") == b"v"
    assert backend.get_nowait("absent") is await backend.get("absent") is None
    clock.advance(2.0)
    assert backend.get_nowait("short") is None
    assert backend.entry_count == 1  # the expired entry was reclaimed on the way


class _AwaitedGetRefused(MemoryBackend):
    """Counts the reads answered without a coroutine; an awaited `get` is a failure."""

    def __init__(self) -> None:
        super().__init__()
        self.nowait_reads = 0
        self.awaited_reads = 0

    async def get(self, key: str) -> bytes | None:
        self.awaited_reads += 1
        return await super().get(key)

    def get_nowait(self, key: str) -> bytes | None:
        self.nowait_reads += 1
        return super().get_nowait(key)


async def test_a_hit_on_an_in_process_backend_reads_it_without_a_coroutine() -> None:
    from typing import Any

    from cachetier import Cache

    backend = _AwaitedGetRefused()
    cache = Cache(backend, version_check_interval=3600)

    @cache.cached()
    async def document(n: int) -> dict[str, Any]:
        return {"n": n}

    await cache.set("k", [1, 2])
    assert await document(1) == {"n": 1}  # a miss; the generation is read along
    awaited, nowait = backend.awaited_reads, backend.nowait_reads
    for _ in range(5):
        assert await document(1) == {"n": 1}
        assert await cache.get("k") == [1, 2]
    assert backend.nowait_reads == nowait + 10
    assert backend.awaited_reads == awaited
    assert cache.stats.hits == 10


class _GetSpy(MemoryBackend):
    """Overrides `get` only, as a test's spy or fault injector would."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    async def get(self, key: str) -> bytes | None:
        self.reads += 1
        return await super().get(key)


async def test_a_subclass_that_overrides_get_sees_every_hit() -> None:
    from cachetier import Cache

    backend = _GetSpy()
    cache = Cache(backend, version_check_interval=3600)
    await cache.set("k", 1)
    assert await cache.get("k") == 1
    reads = backend.reads
    for _ in range(5):
        assert await cache.get("k") == 1
    assert backend.reads == reads + 5  # no hit skipped its get through get_nowait
