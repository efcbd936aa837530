"""The local tier's bookkeeping, without a server: what it keeps, evicts and refuses."""

from __future__ import annotations

from typing import Any, cast

from cachetier import LocalTier
from cachetier._core.local import LocalState


def state(max_entries: int) -> LocalState:
    nothing = cast("Any", None)
    local = LocalState(
        nothing,
        LocalTier(max_entries=max_entries),
        prefix="ns:v1:",
        generation=nothing,
        reporter=nothing,
        clock=nothing,
        bypassing=nothing,
        track=nothing,
    )
    local.live = True
    return local


def test_eviction_gives_a_key_used_since_it_was_kept_a_second_chance() -> None:
    local = state(3)
    for key in ("hot", "a", "b"):
        local.keep(key, None, key, 1e18, local.seq)
    local.entries["hot"][3] = True  # what a hit does
    local.keep("c", None, "c", 1e18, local.seq)
    assert list(local.entries) == ["b", "c", "hot"]  # "a" went, "hot" got another round
    local.keep("d", None, "d", 1e18, local.seq)
    assert list(local.entries) == ["c", "hot", "d"]
    local.keep("e", None, "e", 1e18, local.seq)
    assert list(local.entries) == ["hot", "d", "e"]
    local.keep("f", None, "f", 1e18, local.seq)
    assert list(local.entries) == ["d", "e", "f"]  # unused since its second chance: it goes


def test_a_value_read_while_an_invalidation_arrived_is_not_kept() -> None:
    local = state(10)
    seq = local.seq
    local.drop(["k"])  # a message during the read
    local.keep("k", None, "old", 1e18, seq)
    assert "k" not in local.entries
    local.keep("k", None, "new", 1e18, local.seq)
    assert local.entries["k"][1] == "new"


def test_nothing_is_kept_while_the_subscription_is_down() -> None:
    local = state(10)
    local.live = False
    local.keep("k", None, "v", 1e18, local.seq)
    assert local.entries == {}


def test_drop_matching_uses_redis_globs() -> None:
    local = state(10)
    for key in ("ns:v1:tasks:1", "ns:v1:tasks:2", "ns:v1:users:1"):
        local.keep(key, None, key, 1e18, local.seq)
    local.drop_matching("ns:v1:tasks:*")
    assert list(local.entries) == ["ns:v1:users:1"]
