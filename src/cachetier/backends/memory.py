"""`MemoryBackend`: a process-local byte store with per-key expiry, bounded by entries and bytes.

Layout: one `collections.OrderedDict` maps each key to a ``(value, expires_at)`` tuple, in
least-recently-used-first order; ``expires_at`` is a clock reading, or ``None`` for no expiry.
Reads and writes move a key to the most-recent end, and eviction pops from the other end.

Expired entries go two ways. A read that meets one drops it. Entries that are never read again
are found by an incremental sweep: every write examines the next two keys of a snapshot of the
key list and drops those that have expired, taking a fresh snapshot when the last one is used
up. Each key present at snapshot time is examined within ``n / 2`` writes, so an expired entry
is reclaimed within O(n) writes at O(1) amortized cost per write, with no background task or
thread. The snapshot holds references to its keys until the sweep passes them, so up to one
snapshot's worth of removed key strings can outlive their entries for a while.

Every operation runs without awaiting, so each one is atomic within the event loop.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Final, TypeAlias, final

from .._errors import BackendError, ConfigurationError, CounterError
from .._glob import compile_glob
from .._types import Clock
from ._memory_rules import (
    CANONICAL_INT,
    ENTRY_OVERHEAD,
    INT64_MAX,
    INT64_MIN,
    check_limit,
    check_ttl,
    checked_item,
    too_large,
)

__all__ = ("MemoryBackend",)

_Entry: TypeAlias = "tuple[bytes, float | None]"

_SWEEP_STEP: Final = 2
"""Keys the expiry sweep examines on each write."""

_EVICTION_SWEEP_STEP: Final = 2
"""Keys examined for expired entries before a live entry is evicted to make room."""


@final
class _Watcher:
    """One follower of `MemoryBackend.invalidations`: its prefix and the changes not yet told."""

    __slots__ = ("keys", "prefix", "wake")

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.keys: list[str] = []
        self.wake = asyncio.Event()


@final
class MemoryBackend:
    """A process-local backend keeping values in memory, with TTLs and LRU eviction.

    Values are stored and returned as the very ``bytes`` objects given, which are immutable,
    so a caller cannot change what the cache holds. The store is bounded by ``max_entries``
    and by ``max_bytes``, where each entry counts ``len(key) + len(value) + 232``, the 232
    being the measured cost of an entry's structures and object headers. When a write goes
    over either bound, expired entries near the sweep cursor go first, then the least
    recently used ones. `get`, `set`, `add`, `incr` and `expire` make a key most recently
    used; `exists` and `ttl` do not, as in Redis.

    A value too large for ``max_bytes`` on its own is not stored, and any older value at its
    key is removed, so a read never returns a value older than the last write; `set`,
    `set_many` and `set_if` then raise `ValueRejected` (`add` returns ``False``).

    Tag stamps (`tag_stamps`, `tag_bump`) are ordinary entries, bounded and evicted like any
    other: an evicted stamp is created afresh, which makes the entries that recorded the old
    one miss.

    Args:
        max_entries: The most entries kept, or ``None`` for no bound.
        max_bytes: The most bytes accounted, or ``None`` for no bound; 64 MiB by default.
        clock: Returns seconds on a monotonic scale; expiry is measured with it.

    Raises:
        ConfigurationError: A limit is not a positive ``int`` or ``None``, or ``clock`` is
            not callable.
    """

    #: Calls never wait on I/O, so a cache skips merging concurrent reads of one key.
    in_process: Final = True

    __slots__ = (
        "_clock",
        "_data",
        "_lookup",
        "_max_bytes",
        "_max_entries",
        "_sweep_keys",
        "_sweep_pos",
        "_touch",
        "_used_bytes",
        "_watchers",
    )

    def __init__(
        self,
        *,
        max_entries: int | None = 10_000,
        max_bytes: int | None = 64 * 1024 * 1024,
        clock: Clock = time.monotonic,
    ) -> None:
        check_limit("max_entries", max_entries)
        check_limit("max_bytes", max_bytes)
        if not callable(clock):
            raise ConfigurationError(f"clock must be callable, got {type(clock).__name__}")
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._clock = clock
        self._data: OrderedDict[str, _Entry] = OrderedDict()
        # Bound once: the hit path then pays no attribute lookups on the dict.
        self._lookup = self._data.get
        self._touch = self._data.move_to_end
        self._used_bytes = 0
        self._sweep_keys: list[str] = []
        self._sweep_pos = 0
        # Followers of `invalidations` (a `LocalTier` over this backend), told of every change.
        self._watchers: list[_Watcher] = []

    def __repr__(self) -> str:
        return (
            f"MemoryBackend(max_entries={self._max_entries}, max_bytes={self._max_bytes}, "
            f"entries={len(self._data)}, used_bytes={self._used_bytes})"
        )

    @property
    def kind(self) -> str:
        """Always ``"memory"``."""
        return "memory"

    @property
    def entry_count(self) -> int:
        """Returns how many entries are held, including expired ones not yet reclaimed."""
        return len(self._data)

    @property
    def used_bytes(self) -> int:
        """Returns the bytes accounted against ``max_bytes``, including unreclaimed expired entries."""
        return self._used_bytes

    async def get(self, key: str) -> bytes | None:
        """Returns the value of ``key``, or ``None`` when it is absent or expired."""
        return self.get_nowait(key)

    def get_nowait(self, key: str) -> bytes | None:
        """`get` without a coroutine: the cache's hit path reads this way. Added in 0.2."""
        entry = self._lookup(key)
        if entry is None:
            return None
        value, expires_at = entry
        if expires_at is not None and expires_at <= self._clock():
            self._remove(key, value)
            return None
        self._touch(key)
        return value

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """Returns the values of ``keys`` in order, ``None`` for each absent or expired one."""
        lookup = self._lookup
        touch = self._touch
        now: float | None = None
        values: list[bytes | None] = []
        for key in keys:
            entry = lookup(key)
            if entry is None:
                values.append(None)
                continue
            value, expires_at = entry
            if expires_at is not None:
                if now is None:
                    now = self._clock()
                if expires_at <= now:
                    self._remove(key, value)
                    values.append(None)
                    continue
            touch(key)
            values.append(value)
        return values

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        """Stores ``value`` under ``key``, replacing any value and expiry it had.

        Raises:
            ValueRejected: ``value`` does not fit in ``max_bytes`` on its own; ``key`` then
                holds nothing.
        """
        now = self._clock()
        self._sweep(now, _SWEEP_STEP)
        if not self._store(key, value, ttl, now):
            # Reporting success would let a cache count as stored a value no read will see.
            raise too_large([key], self._max_bytes)

    async def set_many(self, items: Mapping[str, bytes], ttl: float | None = None) -> None:
        """Stores every item with the same ``ttl``, measured from one clock reading.

        Every key, value and the ``ttl`` are checked before anything is stored, so an invalid
        item stores nothing, as a failed Redis MSET stores nothing. A value too large for
        ``max_bytes`` on its own is handled as `set` handles it, after the other items are
        stored.

        Raises:
            ValueRejected: Some values do not fit in ``max_bytes`` on their own; their keys
                then hold nothing, and every other item is stored.
        """
        if ttl is not None and not ttl > 0:
            raise BackendError(f"invalid ttl {ttl!r} for set_many: it must be positive seconds")
        checked = [(key, checked_item(key, value)) for key, value in items.items()]
        now = self._clock()
        expires_at = None if ttl is None else now + ttl
        rejected = []
        for key, value in checked:
            self._sweep(now, _SWEEP_STEP)
            if not self._put(key, value, expires_at, now):
                rejected.append(key)
        if rejected:
            raise too_large(rejected, self._max_bytes)

    async def add(self, key: str, value: bytes, ttl: float | None = None) -> bool:
        """Stores ``value`` only if ``key`` is absent or expired; returns whether it was stored.

        A value too large for ``max_bytes`` is not stored, and ``False`` is returned.
        """
        now = self._clock()
        entry = self._lookup(key)
        if entry is not None:
            expires_at = entry[1]
            if expires_at is None or expires_at > now:
                return False
        self._sweep(now, _SWEEP_STEP)
        return self._store(key, value, ttl, now)

    async def delete(self, *keys: str) -> int:
        """Removes ``keys``; returns how many held a live value."""
        data = self._data
        now: float | None = None
        removed = 0
        for key in keys:
            entry = data.pop(key, None)
            if entry is None:
                continue
            value, expires_at = entry
            self._used_bytes -= len(key) + len(value) + ENTRY_OVERHEAD
            if self._watchers:
                self._changed(key)
            if expires_at is not None:
                if now is None:
                    now = self._clock()
                if expires_at <= now:
                    continue
            removed += 1
        return removed

    async def exists(self, key: str) -> bool:
        """Returns whether ``key`` holds a live value, without making it recently used."""
        return self._live_entry(key) is not None

    async def ttl(self, key: str) -> float | None:
        """Returns the seconds ``key`` has left, ``math.inf`` if it never expires, ``None`` if absent."""
        entry = self._lookup(key)
        if entry is None:
            return None
        expires_at = entry[1]
        if expires_at is None:
            return math.inf
        remaining = expires_at - self._clock()
        if remaining <= 0:
            self._remove(key, entry[0])
            return None
        return remaining

    async def expire(self, key: str, ttl: float) -> bool:
        """Sets the expiry of a live ``key`` to ``ttl`` seconds; returns ``False`` if it is absent.

        As with Redis PEXPIRE, a ``ttl`` of zero or less removes the key at once.
        """
        if math.isnan(ttl):
            raise BackendError(f"invalid ttl {ttl!r} for key {key!r}: it must be a number")
        now = self._clock()
        entry = self._live_entry(key, now)
        if entry is None:
            return False
        if ttl <= 0:
            self._remove(key, entry[0])
            return True
        self._sweep(now, _SWEEP_STEP)
        self._data[key] = (entry[0], now + ttl)
        self._touch(key)
        if self._watchers:
            self._changed(key)
        return True

    async def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        """Adds ``amount`` to the integer at ``key`` (absent counts as 0) and returns the result.

        The value is kept as ASCII decimal bytes (``b"13"``), as Redis INCRBY keeps it. When
        the increment creates the key, ``ttl`` is applied with it; an existing key keeps the
        expiry it had, including none.

        Raises:
            BackendError: The value at ``key`` is not the decimal of a signed 64-bit integer,
                the result would leave that range, or it does not fit in ``max_bytes``.
            TypeError: ``key`` is not a ``str`` or ``amount`` not an ``int``.
        """
        if type(key) is not str:
            raise TypeError(f"keys must be str, not {type(key).__name__}")
        if not isinstance(amount, int):
            raise TypeError(
                f"incr amount for key {key!r} must be an int, not {type(amount).__name__}"
            )
        now = self._clock()
        entry = self._live_entry(key, now)
        if entry is None:
            current = 0
            if ttl is not None:
                check_ttl(key, ttl)
                expires_at: float | None = now + ttl
            else:
                expires_at = None
        else:
            raw, expires_at = entry
            if CANONICAL_INT.fullmatch(raw) is None:
                raise CounterError(f"the value at key {key!r} is not an integer")
            current = int(raw)
            if not INT64_MIN <= current <= INT64_MAX:
                raise CounterError(f"the value at key {key!r} is out of the signed 64-bit range")
        result = current + amount
        if not INT64_MIN <= result <= INT64_MAX:
            raise CounterError(
                f"incrementing key {key!r} by {amount} would overflow a signed 64-bit integer"
            )
        encoded = str(result).encode("ascii")
        max_bytes = self._max_bytes
        if max_bytes is not None and len(key) + len(encoded) + ENTRY_OVERHEAD > max_bytes:
            # Checked before storing so that the failed increment leaves the old count in place.
            raise BackendError(f"the counter at key {key!r} does not fit in max_bytes")
        self._sweep(now, _SWEEP_STEP)
        self._put(key, encoded, expires_at, now)
        return result

    async def scan(self, pattern: str, *, count: int = 500) -> AsyncIterator[list[str]]:
        """Yields batches of at most ``count`` live keys matching a Redis glob ``pattern``.

        The keys are read from a snapshot taken when the scan starts, so writes between batches
        are safe; a key removed meanwhile is skipped, and one added meanwhile is not yielded.
        The scan gives the event loop a turn after every ``count`` keys it examines.

        Raises:
            ConfigurationError: ``count`` is not a positive ``int``.
        """
        if type(count) is not int or count <= 0:
            raise ConfigurationError(f"scan count must be a positive int, got {count!r}")
        match = compile_glob(pattern).fullmatch
        snapshot = list(dict.keys(self._data))  # order is irrelevant; see _sweep
        lookup = self._lookup
        batch: list[str] = []
        for start in range(0, len(snapshot), count):
            now = self._clock()
            for key in snapshot[start : start + count]:
                entry = lookup(key)
                if entry is None or match(key) is None:
                    continue
                expires_at = entry[1]
                if expires_at is None or expires_at > now:
                    batch.append(key)
            if len(batch) >= count:
                yield batch[:count]
                batch = batch[count:]
            else:
                # A selective pattern over a large store may match nothing for many chunks;
                # sleeping keeps one scan from holding the loop for the whole walk.
                await asyncio.sleep(0)
        if batch:
            yield batch

    async def set_if(self, key: str, expected: bytes, value: bytes, ttl: float | None) -> bool:
        """Stores ``value`` only if the live value at ``key`` starts with ``expected``.

        Raises:
            ValueRejected: The value at ``key`` matched, but ``value`` does not fit in
                ``max_bytes`` on its own; ``key`` then holds nothing.
        """
        now = self._clock()
        entry = self._live_entry(key, now)
        if entry is None or not entry[0].startswith(expected):
            return False
        self._sweep(now, _SWEEP_STEP)
        if not self._store(key, value, ttl, now):
            # Not False: that answer means an invalidation won, which is not what happened.
            raise too_large([key], self._max_bytes)
        return True

    async def delete_if(self, key: str, expected: bytes) -> bool:
        """Removes ``key`` only if its live value is exactly ``expected``."""
        entry = self._live_entry(key)
        if entry is None or entry[0] != expected:
            return False
        self._remove(key, entry[0])
        return True

    async def tag_stamps(self, keys: Sequence[str], fresh: bytes, ttl: float | None) -> list[bytes]:
        """Returns the stamp at each of ``keys`` in order, storing ``fresh`` where none is live.

        A key then lives at least ``ttl`` more seconds: one created here, or with less left,
        is given ``2 * ttl``, so that frequent callers rarely write; one with more keeps its
        expiry. ``None`` removes any expiry. Each key read is made most recently used, so a
        tag in use is among the last entries evicted. Nothing here awaits, so concurrent
        callers agree on one stamp.
        """
        if ttl is not None and not ttl > 0:
            raise BackendError(f"invalid ttl {ttl!r} for tag stamps: it must be positive seconds")
        now = self._clock()
        self._sweep(now, _SWEEP_STEP)
        data = self._data
        stamps: list[bytes] = []
        for key in keys:
            entry = self._live_entry(key, now)
            if entry is None:
                # If it does not fit, ``fresh`` is returned all the same: the key stays
                # absent, so the next call gives another stamp and what recorded this one
                # misses, which is safe.
                self._store(key, fresh, None if ttl is None else 2 * ttl, now)
                stamps.append(fresh)
                continue
            stamp, expires_at = entry
            if ttl is None:
                if expires_at is not None:
                    data[key] = (stamp, None)
            elif expires_at is not None and expires_at - now < ttl:
                data[key] = (stamp, now + 2 * ttl)
            self._touch(key)
            stamps.append(stamp)
        return stamps

    async def tag_bump(self, keys: Sequence[str], fresh: bytes, ttl: float) -> int:
        """Stores ``fresh`` at each of ``keys``, expiring in ``ttl`` seconds; returns how many
        held a live value before."""
        if not ttl > 0:
            raise BackendError(f"invalid ttl {ttl!r} for tag stamps: it must be positive seconds")
        now = self._clock()
        held = 0
        for key in keys:
            if self._live_entry(key, now) is not None:
                held += 1
            self._sweep(now, _SWEEP_STEP)
            # A stamp too large to store still removes the old one (see `_put`), which
            # invalidates as well: an absent key is given a stamp nobody recorded.
            self._store(key, fresh, ttl, now)
        return held

    async def ping(self) -> None:
        """Returns at once: memory always answers."""

    async def aclose(self) -> None:
        """Does nothing and keeps the data.

        A memory backend holds no connections to release, and ``async with cache:`` blocks in
        tests must not lose the entries written before them.
        """

    def _live_entry(self, key: str, now: float | None = None) -> _Entry | None:
        """Returns the entry of ``key`` if it has not expired, dropping it if it has."""
        entry = self._lookup(key)
        if entry is None:
            return None
        expires_at = entry[1]
        if expires_at is not None and expires_at <= (self._clock() if now is None else now):
            self._remove(key, entry[0])
            return None
        return entry

    def _remove(self, key: str, value: bytes) -> None:
        """Removes the entry of ``key``, whose value is ``value``, and its accounted bytes."""
        del self._data[key]
        self._used_bytes -= len(key) + len(value) + ENTRY_OVERHEAD
        if self._watchers:
            self._changed(key)

    def _changed(self, key: str) -> None:
        """Tells the followers of `invalidations` whose prefix ``key`` has that it changed."""
        for watcher in self._watchers:
            if key.startswith(watcher.prefix):
                watcher.keys.append(key)
                watcher.wake.set()

    async def invalidations(
        self, prefix: str, *, heartbeat: float
    ) -> AsyncIterator[list[str] | None]:
        """Follows changes of the keys starting with ``prefix`` made through this backend.

        Every write, delete, expiry change, eviction and expiry found is reported, so that a
        `LocalTier` over a shared `MemoryBackend` stays coherent between the caches using it:
        a change reaches the others when their event loop next runs the follower (the next
        turn of the loop). ``heartbeat`` is accepted for the protocol: nothing here can go
        silent. Added in 0.2.
        """
        watcher = _Watcher(prefix)
        self._watchers.append(watcher)
        try:
            yield []
            while True:
                await watcher.wake.wait()
                watcher.wake.clear()
                keys, watcher.keys = watcher.keys, []
                if keys:
                    yield keys
        finally:
            self._watchers.remove(watcher)

    def _store(self, key: str, value: bytes, ttl: float | None, now: float) -> bool:
        """Validates and stores one item as `set` does; returns whether it was stored."""
        if type(key) is not str or type(value) is not bytes:
            value = checked_item(key, value)
        if ttl is None:
            return self._put(key, value, None, now)
        if not ttl > 0:
            check_ttl(key, ttl)
        return self._put(key, value, now + ttl, now)

    def _put(self, key: str, value: bytes, expires_at: float | None, now: float) -> bool:
        """Stores ``value`` as the most recent entry, then evicts to fit; returns whether stored."""
        size = len(key) + len(value) + ENTRY_OVERHEAD
        data = self._data
        old = data.get(key)
        if old is not None:
            self._used_bytes -= len(key) + len(old[0]) + ENTRY_OVERHEAD
        max_bytes = self._max_bytes
        if max_bytes is not None and size > max_bytes:
            # Dropping the old value too: serving it after a newer write would be wrong.
            if old is not None:
                del data[key]
                if self._watchers:
                    self._changed(key)
            return False
        data[key] = (value, expires_at)
        if self._watchers:
            self._changed(key)
        if old is not None:
            # Assigning to an existing key keeps its place; a write makes it most recent.
            self._touch(key)
        self._used_bytes += size
        max_entries = self._max_entries
        if (max_entries is not None and len(data) > max_entries) or (
            max_bytes is not None and self._used_bytes > max_bytes
        ):
            self._evict(now)
        return True

    def _evict(self, now: float) -> None:
        """Removes entries until both limits hold: expired ones first where cheap, then LRU ones.

        The entry just written is the most recent one and fits on its own, so popping from
        the least-recently-used end stops before reaching it.
        """
        data = self._data
        max_entries = self._max_entries
        max_bytes = self._max_bytes
        self._sweep(now, _EVICTION_SWEEP_STEP)
        while (max_entries is not None and len(data) > max_entries) or (
            max_bytes is not None and self._used_bytes > max_bytes
        ):
            key, (value, _) = data.popitem(last=False)
            self._used_bytes -= len(key) + len(value) + ENTRY_OVERHEAD
            if self._watchers:
                self._changed(key)

    def _sweep(self, now: float, step: int) -> None:
        """Examines the next ``step`` keys of the sweep snapshot and drops the expired ones."""
        keys = self._sweep_keys
        pos = self._sweep_pos
        if pos >= len(keys):
            # The copy is O(n) but happens once per n / step writes, so it costs O(1) amortized.
            # dict.keys walks the underlying dict three times faster than the ordered-dict
            # iterator, and the sweep needs no particular order.
            keys = self._sweep_keys = list(dict.keys(self._data))
            pos = 0
        end = pos + step
        self._sweep_pos = end
        lookup = self._lookup
        for key in keys[pos:end]:
            entry = lookup(key)
            if entry is not None:
                expires_at = entry[1]
                if expires_at is not None and expires_at <= now:
                    self._remove(key, entry[0])
