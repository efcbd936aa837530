"""The contract of `Backend.scan`: Redis's glob patterns, escaping, batches and expired keys."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from ..._glob import glob_escape
from ...backends._protocol import Backend
from ._support import (
    LONG_TTL,
    PAST_SHORT_TTL,
    SHORT_TTL,
    _scanned,
)

if TYPE_CHECKING:
    from ._support import BackendFactory

__all__ = ("ScanTests",)


class ScanTests:
    """Tests of scanning keys by pattern; part of `BackendContract`."""

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
