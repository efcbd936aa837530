"""`NullBackend`: stores nothing, so every read misses; caching off with the app unchanged."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Final, final

__all__ = ("NullBackend",)


@final
class NullBackend:
    """A backend that stores nothing: reads miss, writes succeed and are dropped.

    `incr` returns ``amount`` each time, as if every count started afresh.
    """

    #: Calls never wait on I/O, so a cache skips merging concurrent reads of one key.
    in_process: Final = True

    __slots__ = ()

    def __repr__(self) -> str:
        return "NullBackend()"

    @property
    def kind(self) -> str:
        """Always ``"null"``."""
        return "null"

    async def get(self, key: str) -> bytes | None:
        """Returns ``None``."""
        return None

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """Returns ``None`` for every key."""
        return [None] * len(keys)

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        """Drops the value."""

    async def set_many(self, items: Mapping[str, bytes], ttl: float | None = None) -> None:
        """Drops the values."""

    async def add(self, key: str, value: bytes, ttl: float | None = None) -> bool:
        """Drops the value and reports it stored, as a store that forgot it at once would."""
        return True

    async def delete(self, *keys: str) -> int:
        """Returns 0."""
        return 0

    async def exists(self, key: str) -> bool:
        """Returns ``False``."""
        return False

    async def ttl(self, key: str) -> float | None:
        """Returns ``None``."""
        return None

    async def expire(self, key: str, ttl: float) -> bool:
        """Returns ``False``."""
        return False

    async def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        """Returns ``amount``."""
        return amount

    async def set_if(self, key: str, expected: bytes, value: bytes, ttl: float | None) -> bool:
        """Drops the value and reports it stored, as `add` does: no invalidation ever races a
        write here, so a computation is never taken for one an invalidation overtook."""
        return True

    async def delete_if(self, key: str, expected: bytes) -> bool:
        """Reports the value removed, as a store that forgot it at once would."""
        return True

    async def tag_stamps(self, keys: Sequence[str], fresh: bytes, ttl: float | None) -> list[bytes]:
        """Returns ``fresh`` for every key, as a store that forgot every stamp at once would."""
        return [fresh] * len(keys)

    async def tag_bump(self, keys: Sequence[str], fresh: bytes, ttl: float) -> int:
        """Returns 0: no key ever holds a stamp."""
        return 0

    async def scan(self, pattern: str, *, count: int = 500) -> AsyncIterator[list[str]]:
        """Yields nothing."""
        nothing: list[list[str]] = []
        for batch in nothing:
            yield batch

    async def ping(self) -> None:
        """Always succeeds."""

    async def aclose(self) -> None:
        """Does nothing."""
