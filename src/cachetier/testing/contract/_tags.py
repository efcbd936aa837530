"""The contract of a `GuardedBackend`'s tag stamps: `tag_stamps`, `tag_bump` and their expiry."""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING

import pytest

from ...backends._protocol import Backend
from ._support import (
    LONG_TTL,
    PAST_SHORT_TTL,
    SHORT_TTL,
    _guarded,
    _seconds_left,
)

if TYPE_CHECKING:
    from ._support import BackendFactory

__all__ = ("TagTests",)


class TagTests:
    """Tests of tag stamps, skipped for a backend that is no `GuardedBackend`; part of `BackendContract`."""

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
