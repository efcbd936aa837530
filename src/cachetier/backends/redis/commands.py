"""What `RedisBackend` and `RedisClusterBackend` share: the commands on one key, and wake-ups.

Each of these touches a single key (tag stamps: keys the backend groups by `_key_groups`),
so it reads the same over one server and over a cluster;
the two backends differ in what they catch and how they describe a failure (their
`RedisErrors`, ``_errors``) and in whether scripts must be loaded before their first use
(``_scripts_ready``).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, final

if TYPE_CHECKING:
    from redis.asyncio.client import PubSub

    from .errors import RedisErrors

__all__ = ("SingleKeyCommands", "Subscription", "px")


def px(ttl: float) -> int:
    """Returns ``ttl`` seconds as whole milliseconds for PX, rounded up and at least 1."""
    if not math.isfinite(ttl):
        raise ValueError(f"ttl must be a finite number of seconds or None, not {ttl!r}")
    return max(1, math.ceil(ttl * 1000))


class SingleKeyCommands:
    """The `Backend` commands on one key, over a redis-py client held as ``_client``."""

    __slots__ = ()

    #: The exceptions that mean "the backend failed", turned into `BackendError`.
    failures: ClassVar[tuple[type[BaseException], ...]]

    _client: Any
    _errors: RedisErrors
    _get: Callable[[str], Awaitable[bytes | None]]
    _release: Callable[..., Awaitable[Any]]
    _set_if: Callable[..., Awaitable[Any]]
    _tag_stamps: Callable[..., Awaitable[Any]]
    _tag_bump: Callable[..., Awaitable[Any]]

    async def _scripts_ready(self) -> None:
        """Makes sure the scripts are loaded where they run; redis-py reloads them on NOSCRIPT."""

    def _key_groups(self, keys: Sequence[str]) -> list[list[int]] | None:
        """Returns the positions in ``keys`` grouped so that one script may touch each group's
        keys together, or ``None`` when one script may touch them all (a single server)."""
        return None

    async def _run_grouped(
        self,
        script: Callable[..., Awaitable[Any]],
        command: str,
        keys: Sequence[str],
        args: list[bytes | int | str],
    ) -> list[tuple[list[int], Any]]:
        """Runs ``script`` over ``keys``, once per group of `_key_groups`, the groups
        concurrently; returns each group's positions with its answer."""
        groups = self._key_groups(keys)
        with self._errors.on(command):
            await self._scripts_ready()
            if groups is None:
                return [(list(range(len(keys))), await script(keys=list(keys), args=args))]
            answers = await asyncio.gather(
                *(script(keys=[keys[i] for i in group], args=args) for group in groups),
                return_exceptions=True,
            )
        self._errors.raise_first(command, answers)
        return list(zip(groups, answers, strict=True))

    async def get(self, key: str) -> bytes | None:
        """Returns the value of ``key`` (GET), or ``None`` when it is absent."""
        # The hit path: a try costs nothing until GET fails, where ``with self._errors.on``
        # would cost an object and two calls on every hit.
        try:
            return await self._get(key)
        except self.failures as exc:
            raise self._errors.failure("GET", exc) from exc

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        """Stores ``value`` with SET, and ``PX`` when ``ttl`` is given (rounded up to 1 ms)."""
        try:
            if ttl is None:
                await self._client.set(key, value)
            else:
                await self._client.set(key, value, px=px(ttl))
        except self.failures as exc:  # inline, as in get: a hot path
            raise self._errors.failure("SET", exc) from exc

    async def add(self, key: str, value: bytes, ttl: float | None = None) -> bool:
        """Stores ``value`` only if ``key`` is absent (SET NX); returns whether it was stored."""
        with self._errors.on("SET NX"):
            if ttl is None:
                stored = await self._client.set(key, value, nx=True)
            else:
                stored = await self._client.set(key, value, nx=True, px=px(ttl))
        return bool(stored)

    async def ttl(self, key: str) -> float | None:
        """Returns the seconds ``key`` has left (PTTL), ``math.inf`` if none, ``None`` if absent."""
        with self._errors.on("PTTL"):
            milliseconds = int(await self._client.pttl(key))
        if milliseconds == -2:  # Redis: no such key
            return None
        if milliseconds == -1:
            return math.inf
        return milliseconds / 1000

    async def expire(self, key: str, ttl: float) -> bool:
        """Sets the expiry of an existing ``key`` (PEXPIRE); returns ``False`` if it is absent."""
        milliseconds = px(ttl)
        with self._errors.on("PEXPIRE"):
            return bool(await self._client.pexpire(key, milliseconds))

    async def acquire_lock(self, name: str, token: str, ttl: float) -> bool:
        """Takes the lock ``name`` with ``SET NX PX``; returns whether this call took it."""
        with self._errors.on("SET NX (lock)"):
            return bool(await self._client.set(name, token, nx=True, px=px(ttl)))

    async def release_lock(self, name: str, token: str) -> bool:
        """Deletes the lock ``name`` only if ``token`` still holds it (a Lua compare-and-delete)."""
        with self._errors.on("EVALSHA (lock release)"):
            await self._scripts_ready()
            return bool(await self._release(keys=[name], args=[token]))

    async def set_if(self, key: str, expected: bytes, value: bytes, ttl: float | None) -> bool:
        """Stores ``value`` only if the value at ``key`` starts with ``expected`` (a Lua script)."""
        with self._errors.on("EVALSHA (set_if)"):
            await self._scripts_ready()
            stored = await self._set_if(
                keys=[key], args=[expected, value, "0" if ttl is None else px(ttl)]
            )
        return bool(stored)

    async def tag_stamps(self, keys: Sequence[str], fresh: bytes, ttl: float | None) -> list[bytes]:
        """Returns the stamp at each of ``keys``, storing ``fresh`` where none is (a Lua script).

        A key created here, or with less than ``ttl`` left, is given twice ``ttl``; ``None``
        removes any expiry. See `GuardedBackend.tag_stamps`.
        """
        if not keys:
            return []
        if ttl is None:
            args: list[bytes | int | str] = [fresh, "0", "0"]
        else:
            milliseconds = px(ttl)
            args = [fresh, milliseconds, 2 * milliseconds]
        stamps: list[bytes] = [b""] * len(keys)
        for positions, answer in await self._run_grouped(
            self._tag_stamps, "EVALSHA (tag_stamps)", keys, args
        ):
            for position, stamp in zip(positions, answer, strict=True):
                stamps[position] = stamp
        return stamps

    async def tag_bump(self, keys: Sequence[str], fresh: bytes, ttl: float) -> int:
        """Replaces the stamp at each of ``keys`` with ``fresh`` for ``ttl`` seconds (a Lua
        script); returns how many held one before."""
        if not keys:
            return 0
        answers = await self._run_grouped(
            self._tag_bump, "EVALSHA (tag_bump)", keys, [fresh, px(ttl)]
        )
        return sum(int(held) for _, held in answers)

    async def delete_if(self, key: str, expected: bytes) -> bool:
        """Removes ``key`` only if its value is exactly ``expected`` (a Lua compare-and-delete)."""
        with self._errors.on("EVALSHA (delete_if)"):
            await self._scripts_ready()
            return bool(await self._release(keys=[key], args=[expected]))


@final
class Subscription:
    """The `Notifications` of one ``subscribe`` block of either Redis backend."""

    __slots__ = ("_errors", "_pubsub")

    def __init__(self, pubsub: PubSub, errors: RedisErrors) -> None:
        self._pubsub = pubsub
        self._errors = errors

    async def wait(self, timeout: float) -> bool:
        """Waits up to ``timeout`` seconds for a published message; returns whether one came."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (remaining := deadline - loop.time()) > 0:
            with self._errors.on("SUBSCRIBE (wait)"):
                message = await self._pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=remaining
                )
            if message is not None and message.get("type") == "message":
                return True
        return False
