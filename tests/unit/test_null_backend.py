"""Unit tests of `NullBackend`'s tag stamps: every key is as if just expired."""

from __future__ import annotations

from cachetier.backends._protocol import GuardedBackend
from cachetier.backends.null import NullBackend


async def test_null_backend_is_a_guarded_backend() -> None:
    assert isinstance(NullBackend(), GuardedBackend)


async def test_tag_stamps_returns_fresh_for_every_key_and_keeps_nothing() -> None:
    backend = NullBackend()
    assert await backend.tag_stamps(["a", "b"], b"one", 60) == [b"one", b"one"]
    assert await backend.tag_stamps(["a"], b"two", None) == [b"two"]
    assert await backend.tag_stamps([], b"three", 60) == []


async def test_tag_bump_reports_no_key_held_a_stamp() -> None:
    backend = NullBackend()
    assert await backend.tag_bump(["a", "b"], b"one", 60) == 0
    assert await backend.get("a") is None
