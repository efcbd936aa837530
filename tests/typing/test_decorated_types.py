"""User-style code whose types mypy checks: a decorated function keeps its signature and result."""

from __future__ import annotations

import datetime as dt

import pydantic
from typing_extensions import assert_type

from cachetier import TTL, Cache, CachedFunction

cache = Cache(namespace="typing")


class User(pydantic.BaseModel):
    id: int
    name: str


@cache.cached(ttl=TTL.USER, key="user:{user_id}")
async def get_user(user_id: int, *, active: bool = True) -> User:
    return User(id=user_id, name="n")


@cache.cached
async def today() -> dt.date:
    return dt.date(2026, 1, 1)


class Repository:
    def __cache_key__(self) -> str:
        return "default"

    @cache.cached(ttl=60)
    async def count(self, table: str) -> int:
        return len(table)


async def test_decorated_functions_keep_parameter_and_return_types() -> None:
    assert isinstance(get_user, CachedFunction)
    user = await get_user(1, active=False)
    assert_type(user, User)
    assert_type(await today(), dt.date)
    assert_type(get_user.key_for(1), str)
    assert_type(await get_user.invalidate(1), bool)
    assert_type(await get_user.refresh(2), User)
    assert_type(await Repository().count("tasks"), int)
    assert_type(Repository().count.key_for("tasks"), str)
    assert isinstance(user, User)


async def test_get_or_set_returns_what_fetch_fn_produces() -> None:
    async def load() -> list[int]:
        return [1]

    assert_type(await cache.get_or_set("a", load), list[int])
    assert_type(await cache.get_or_set("b", lambda: {"k": 1.5}), dict[str, float])
    assert_type(await cache.get_or_set("c", lambda: load()), list[int])


async def check_misuse_is_reported() -> None:
    """Never run; each ignore below is unused, and so an error under --strict, if mypy accepts the call."""
    await get_user("1")  # type: ignore[arg-type]
    await get_user(1, activ=True)  # type: ignore[call-arg]
    get_user.key_for()  # type: ignore[call-arg]
    await Repository().count(3)  # type: ignore[arg-type]
    name: str = await today()  # type: ignore[assignment]
    del name
    assert await Repository().count("ab") == 2
