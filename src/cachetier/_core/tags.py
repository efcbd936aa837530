"""`Tags`: versioned tags — the stamps entries record, and the check that they still hold.

Each tag key holds a random stamp, which `Cache.invalidate_tags` replaces. A computation reads
its tags' stamps before it starts and its entry records them; a read serves a tagged entry only
while every stamp is still the one at its key (one MGET for all of an entry's tags).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, cast, final

from .._errors import BackendError
from .._keys import KeyBuilder
from ..backends._protocol import GuardedBackend
from .entry import new_stamp
from .guard import Guard

__all__ = ("TAG_KEEP", "Tags", "check_tags")

TAG_KEEP: Final = 60.0
"""Seconds a tag's new stamp is kept after `Cache.invalidate_tags` unless an entry needs it
longer: its entries from before are invalid whatever happens to it, so it may expire."""


def check_tags(tags: Iterable[str]) -> tuple[str, ...]:
    """Returns ``tags`` as a tuple without repeats, checked to be non-empty ``str``.

    Raises:
        TypeError: ``tags`` is a single ``str`` (a common slip for a one-tag list), or a tag is
            not a ``str``.
        ValueError: a tag is empty.
    """
    if isinstance(tags, str):
        raise TypeError(f"tags must be a collection of str, not a str: write [{tags!r}]")
    checked: dict[str, None] = {}
    for tag in tags:
        if not isinstance(tag, str):
            raise TypeError(f"tags must be str, not {type(tag).__name__}")
        if not tag:
            raise ValueError("tags must not be empty strings")
        checked[tag] = None
    return tuple(checked)


@final
class Tags:
    """The tag stamps of one `Cache`: taken before a computation, checked on every read."""

    __slots__ = ("guard", "keys")

    def __init__(self, guard: Guard, keys: KeyBuilder) -> None:
        self.guard = guard
        self.keys = keys

    def tag_keys(self, tags: tuple[str, ...]) -> list[str]:
        """Returns the keys that hold the stamps of ``tags``."""
        return [self.keys.tag_key(tag) for tag in tags]

    async def hold(self, keys: list[str], stamps: list[bytes]) -> bool:
        """Returns whether every tag key still holds the stamp an entry recorded.

        A backend failure answers ``False``: an entry whose tags cannot be checked is a miss.
        """
        current = await self.current(keys)
        return current == stamps

    async def current(self, keys: list[str]) -> list[bytes | None] | None:
        """Returns the stamps the tag ``keys`` hold now, in one MGET; ``None`` when the backend
        failed (logged, counted)."""
        guard = self.guard
        return await guard.run("MGET (tags)", "tags", guard.backend.get_many, keys, fallback=None)

    async def stamp(
        self, full: str, tags: tuple[str, ...], seconds: float | None
    ) -> list[tuple[str, bytes]] | None:
        """Returns (tag key, stamp) for each of ``tags``, to record in the entry of ``full``.

        Taken before the value is computed, so that an invalidation of any of the tags from
        now on changes a stamp and the entry is never served. Each tag key is kept at least
        ``seconds``. Returns ``None`` when the stamps cannot be had (the backend failed, or
        keeps no tags): the value must then not be cached, since `Cache.invalidate_tags`
        could not reach it.
        """
        guard = self.guard
        if not guard.guarded:
            guard.log.warning(
                "tags",
                "not caching %s: its backend %s keeps no tags",
                full,
                guard.backend.kind,
            )
            return None
        keys = self.tag_keys(tags)
        try:
            guard.gate("tag stamps")
            stamps = await cast("GuardedBackend", guard.backend).tag_stamps(
                keys, new_stamp(), seconds
            )
        except BackendError as exc:
            guard.failed("tag stamps", exc)
            return None
        guard.succeeded()
        return list(zip(keys, stamps, strict=True))
