"""The stateful contract test: random operations on a backend agree with a dict model of it."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, ClassVar, Final, TypeVar

import hypothesis.strategies as st
import pytest
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule

from ..._errors import BackendError
from ...backends._protocol import Backend
from ._support import _INT64_MAX, _INT64_MIN, _delete_prefixed, _redis_integer

if TYPE_CHECKING:
    from ._support import BackendFactory

__all__ = ("_bound_machine",)

_T = TypeVar("_T")


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
