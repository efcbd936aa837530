"""``Cache(signing_key=...)``: entries others wrote, altered or moved are refused, never decoded."""

from __future__ import annotations

import asyncio

import pydantic
import pytest

from cachetier import MISSING, Cache, CacheSettings, ConfigurationError
from cachetier.backends import MemoryBackend
from cachetier.serializers import PickleSerializer
from cachetier.testing import FakeClock

KEY = b"0123456789abcdef-signing-key"


class Profile(pydantic.BaseModel):
    name: str
    admin: bool = False


@pytest.fixture
def backend() -> MemoryBackend:
    return MemoryBackend()


@pytest.fixture
def signed(backend: MemoryBackend) -> Cache:
    return Cache(backend, namespace="app", signing_key=KEY)


async def test_signed_values_round_trip(signed: Cache) -> None:
    await signed.set("k", {"a": [1, 2]})
    assert await signed.get("k") == {"a": [1, 2]}
    assert await signed.get_many(["k"]) == {"k": {"a": [1, 2]}}

    @signed.cached()
    async def profile(name: str) -> Profile:
        return Profile(name=name)

    assert await profile("ann") == Profile(name="ann")
    assert await profile("ann") == Profile(name="ann")
    assert profile.stats.hits == 1


async def test_value_written_without_the_key_is_refused(
    signed: Cache, backend: MemoryBackend
) -> None:
    intruder = Cache(backend, namespace="app")
    await intruder.set("user:1", {"name": "mallory", "admin": True})

    @signed.cached(key="user:{n}")
    async def user(n: int) -> Profile:
        return Profile(name="real")

    assert await signed.get("user:1", MISSING) is MISSING
    await intruder.set("user:1", {"name": "mallory", "admin": True})
    assert await user(1) == Profile(name="real")
    assert user.stats.decode_errors == 1


async def test_altered_entry_is_refused(signed: Cache, backend: MemoryBackend) -> None:
    await signed.set("k", {"admin": False})
    full = signed.keys.full("k")
    data = await backend.get(full)
    assert data is not None
    await backend.set(full, data.replace(b"false", b"true "))
    assert await signed.get("k", MISSING) is MISSING
    assert await backend.get(full) is None  # dropped, so the next read recomputes


async def test_entry_copied_to_another_key_is_refused(
    signed: Cache, backend: MemoryBackend
) -> None:
    await signed.set("role:guest", "guest")
    data = await backend.get(signed.keys.full("role:guest"))
    assert data is not None
    await backend.set(signed.keys.full("role:admin"), data)
    assert await signed.get("role:admin", MISSING) is MISSING


async def test_signed_entry_read_without_the_key_is_a_miss(
    signed: Cache, backend: MemoryBackend
) -> None:
    await signed.set("k", 1)
    reader = Cache(backend, namespace="app")
    assert await reader.get("k", MISSING) is MISSING
    assert reader.stats.decode_errors == 1


async def test_pickle_payload_from_an_intruder_is_never_unpickled(backend: MemoryBackend) -> None:
    signed = Cache(backend, namespace="app", serializer=PickleSerializer(), signing_key=KEY)
    intruder = Cache(backend, namespace="app", serializer=PickleSerializer())
    await intruder.set("k", Exploding())
    assert await signed.get("k", MISSING) is MISSING  # Exploding.__reduce__ never ran


class Exploding:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (_explode, ("unpickled",))


def _explode(text: str) -> None:
    raise AssertionError(f"an unsigned pickle was {text}")


async def test_counters_keep_working_with_signing(signed: Cache) -> None:
    assert await signed.incr("hits", 2) == 2
    assert await signed.incr("hits", 0) == 2


async def test_a_signed_cache_serves_no_plain_integer_and_drops_none(
    signed: Cache, backend: MemoryBackend
) -> None:
    """Anyone who can write to the store can write digits: they must not pass as a value."""
    await signed.set("user:1:role", "viewer")
    full = signed.keys.full("user:1:role")
    await backend.set(full, b"1")
    assert await signed.get("user:1:role") is None
    assert await signed.get_many(["user:1:role"]) == {}
    assert await backend.get(full) == b"1"  # a counter may look just like it: kept
    await signed.incr("hits")
    assert await signed.get("hits") is None
    assert await signed.incr("hits", 0) == 1


def test_short_signing_key_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="at least 16 bytes"):
        Cache(signing_key="short")


async def test_signing_key_comes_from_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object, backend: MemoryBackend
) -> None:
    monkeypatch.chdir(tmp_path)  # type: ignore[arg-type]
    for name in ("REDIS_URL", "REDIS_ENABLED", "CACHE_BACKEND"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CACHE_SIGNING_KEY", "env-secret-0123456789")
    monkeypatch.setenv("CACHE_BACKEND", "memory")
    settings = CacheSettings.load()
    assert "env-secret" not in repr(settings)
    cache = Cache.from_settings(settings)
    with cache.use(backend):
        await cache.set("k", 1)
        assert await Cache(backend, signing_key="env-secret-0123456789").get("k") == 1
        assert await Cache(backend, signing_key="another-secret-0123456").get("k") is None


async def test_a_signed_cache_stores_what_a_refresh_of_a_stale_entry_computes(
    backend: MemoryBackend,
) -> None:
    """The write of a refresh is guarded by the entry as stored, signature and all: a guard
    taken from the unsigned entry never matches, and the refreshed value would be lost."""
    clock = FakeClock()
    cache = Cache(backend, namespace="app", signing_key=KEY, clock=clock)
    runs = 0

    @cache.cached(ttl=10, stale_ttl=60)
    async def price() -> int:
        nonlocal runs
        runs += 1
        return runs

    assert await price() == 1
    clock.advance(11)
    assert await price() == 1  # stale, served while a refresh runs
    await asyncio.sleep(0.01)
    assert runs == 2
    assert await price() == 2, "the refreshed value was not stored"
    assert runs == 2
    assert cache.stats.stale_served == 1
