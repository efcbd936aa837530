"""A method's ``self`` enters its key through ``__cache_key__``; ``cls`` through its qualified name."""

from __future__ import annotations

from typing import Any

import pytest

from cachetier import Cache
from cachetier.backends import MemoryBackend


@pytest.fixture
async def cache() -> Any:
    async with Cache(MemoryBackend()) as cache:
        yield cache


async def test_two_instances_with_cache_keys_never_share_a_result(cache: Cache) -> None:
    runs: list[str] = []

    class Repository:
        def __init__(self, name: str) -> None:
            self.name = name

        def __cache_key__(self) -> str:
            return self.name

        @cache.cached(ttl=30)
        async def find(self, item_id: int) -> dict[str, Any]:
            runs.append(self.name)
            return {"id": item_id, "by": self.name}

    first, second = Repository("first"), Repository("second")
    assert await first.find(1) == {"id": 1, "by": "first"}
    assert await second.find(1) == {"id": 1, "by": "second"}
    assert await first.find(1) == {"id": 1, "by": "first"}
    assert await Repository("first").find(1) == {"id": 1, "by": "first"}
    assert runs == ["first", "second"]
    assert first.find.key_for(1) != second.find.key_for(1)
    assert "first" in first.find.key_for(1)
    assert await first.find.invalidate(1) is True
    assert await second.find.invalidate(1) is True


async def test_a_method_without_cache_key_is_refused_on_the_first_call(cache: Cache) -> None:
    runs: list[int] = []

    class Repository:
        @cache.cached(ttl=30)
        async def find(self, item_id: int) -> int:
            runs.append(item_id)
            return item_id

    with pytest.raises(TypeError, match=r"__cache_key__.*exclude=\[\"self\"\]"):
        await Repository().find(1)
    with pytest.raises(TypeError, match="__cache_key__"):
        Repository().find.key_for(1)
    assert runs == []


async def test_a_method_with_self_excluded_shares_its_result(cache: Cache) -> None:
    runs: list[int] = []

    class Settings:
        @cache.cached(ttl=30, exclude=["self"])
        async def flags(self) -> int:
            runs.append(1)
            return len(runs)

    assert await Settings().flags() == 1
    assert await Settings().flags() == 1
    assert runs == [1]


async def test_a_key_template_decides_alone_whether_self_is_keyed(cache: Cache) -> None:
    class Users:
        def __init__(self, tenant: str) -> None:
            self.tenant = tenant

        @cache.cached(ttl=30, key="users:{self.tenant}:{user_id}")
        async def name(self, user_id: int) -> str:
            return f"{self.tenant}-{user_id}"

    assert await Users("a").name(1) == "a-1"
    assert await Users("b").name(1) == "b-1"
    assert await cache.get("users:a:1") == "a-1"


async def test_cls_enters_the_key_as_its_qualified_name(cache: Cache) -> None:
    runs: list[str] = []

    class Base:
        @classmethod
        @cache.cached(ttl=30)
        async def label(cls, n: int) -> str:
            runs.append(cls.__name__)
            return f"{cls.__name__}-{n}"

    class Child(Base):
        pass

    assert await Base.label(1) == "Base-1"
    assert await Child.label(1) == "Child-1"
    assert await Base.label(1) == "Base-1"
    assert runs == ["Base", "Child"]
    assert Base.__qualname__ in Base.label.key_for(1)
