"""Response caching, the lifespan and the dependency of `cachetier.contrib.fastapi`, through httpx."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import pytest

from cachetier import Cache, CacheSettings, ConfigurationError
from cachetier.backends import RedisBackend

from ..servers import REDIS_SERVER, RedisServer

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

# After the importorskip calls, so that the module skips when the frameworks are missing.
from fastapi import APIRouter, BackgroundTasks, FastAPI, Header, HTTPException, Response  # noqa: E402

from cachetier.contrib.fastapi import (  # noqa: E402
    CacheDependency,
    CachedRoute,
    cache_response,
    get_cache,
    invalidate_responses,
    lifespan,
    open_cache,
)


def build_app(cache: Cache | None, calls: Counter[str], items: dict[int, str]) -> FastAPI:
    """An app with one route per rule under test; ``calls`` counts how often each route ran."""
    app = FastAPI(lifespan=lifespan(cache))
    app.router.route_class = CachedRoute

    @app.api_route("/items", methods=["GET", "HEAD"])
    @cache_response(ttl=60)
    async def list_items(q: str = "", limit: int = 10) -> dict[str, Any]:
        calls["items"] += 1
        return {"items": [items[k] for k in sorted(items)][:limit], "q": q}

    @app.get("/items/{item_id}")
    @cache_response(ttl=60)
    async def get_item(item_id: int) -> dict[str, Any]:
        calls["item"] += 1
        if item_id not in items:
            raise HTTPException(status_code=404, detail="no such item")
        return {"id": item_id, "name": items[item_id]}

    @app.post("/items", status_code=201)
    async def create_item(name: str, cache: CacheDependency) -> dict[str, Any]:
        item_id = max(items, default=0) + 1
        items[item_id] = name
        await invalidate_responses(cache, "/items")
        return {"id": item_id}

    @app.put("/items/{item_id}")
    async def rename_item(item_id: int, name: str, cache: CacheDependency) -> dict[str, Any]:
        items[item_id] = name
        await invalidate_responses(cache, "/items", prefix=True)
        return {"id": item_id}

    @app.delete("/items/{item_id}")
    async def delete_item(item_id: int, cache: CacheDependency) -> dict[str, Any]:
        items.pop(item_id, None)
        await cache.delete_pattern("http:GET:/items*")
        return {"deleted": item_id}

    @app.get("/greeting")
    @cache_response(ttl=60, vary=["Accept-Language"])
    async def greeting(accept_language: Annotated[str, Header()] = "en") -> dict[str, str]:
        calls["greeting"] += 1
        return {"text": "bonjour" if accept_language.startswith("fr") else "hello"}

    @app.get("/me")
    @cache_response(ttl=60)
    async def me(authorization: Annotated[str, Header()] = "anonymous") -> dict[str, str]:
        calls["me"] += 1
        return {"user": authorization}

    @app.get("/public-stats")
    @cache_response(ttl=60, shared=True)
    async def public_stats() -> dict[str, int]:
        calls["public"] += 1
        return {"count": len(items)}

    @app.get("/session")
    @cache_response(ttl=60)
    async def session(response: Response) -> dict[str, str]:
        calls["session"] += 1
        response.set_cookie("session", f"s{calls['session']}")
        return {"hello": "cookie"}

    @app.get("/report")
    @cache_response(ttl=30, cache_control="public, max-age=30, stale-while-revalidate=5")
    async def report(background: BackgroundTasks) -> dict[str, str]:
        calls["report"] += 1
        background.add_task(calls.update, ["report_background"])
        return {"report": "ready"}

    return app


@pytest.fixture
def calls() -> Counter[str]:
    return Counter()


@pytest.fixture
def items() -> dict[int, str]:
    return {1: "one", 2: "two"}


@pytest.fixture
async def client(
    cache: Cache, calls: Counter[str], items: dict[int, str]
) -> AsyncIterator[httpx.AsyncClient]:
    app = build_app(cache, calls, items)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client,
    ):
        yield client


async def test_second_request_is_a_hit(client: httpx.AsyncClient, calls: Counter[str]) -> None:
    first = await client.get("/items")
    second = await client.get("/items")
    assert first.status_code == second.status_code == 200
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    assert first.json() == second.json() == {"items": ["one", "two"], "q": ""}
    assert calls["items"] == 1
    assert second.headers["etag"] == first.headers["etag"]
    assert second.headers["cache-control"] == "public, max-age=60"
    assert int(second.headers["age"]) >= 0
    assert second.headers["content-length"] == str(len(second.content))


async def test_query_parameters_are_keyed_in_any_order(
    client: httpx.AsyncClient, calls: Counter[str]
) -> None:
    a = await client.get("/items?q=x&limit=1")
    b = await client.get("/items?limit=1&q=x")
    c = await client.get("/items?limit=2&q=x")
    assert [r.headers["x-cache"] for r in (a, b, c)] == ["MISS", "HIT", "MISS"]
    assert c.json()["items"] == ["one", "two"]
    assert calls["items"] == 2


async def test_matching_etag_gets_304_without_body(client: httpx.AsyncClient) -> None:
    first = await client.get("/items")
    etag = first.headers["etag"]
    assert etag.startswith('"')  # strong: no W/ prefix
    assert etag.endswith('"')
    again = await client.get("/items", headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag
    assert again.headers["x-cache"] == "HIT"
    other = await client.get("/items", headers={"If-None-Match": '"something-else"'})
    assert other.status_code == 200


async def test_etag_is_a_digest_of_the_body_stable_across_apps(
    cache: Cache, calls: Counter[str], items: dict[int, str]
) -> None:
    etags = []
    for _ in range(2):
        app = build_app(cache, calls, items)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c,
        ):
            etags.append(
                (await c.get("/items", headers={"Cache-Control": "no-cache"})).headers["etag"]
            )
    assert etags[0] == etags[1]


async def test_vary_header_values_get_their_own_entries(
    client: httpx.AsyncClient, calls: Counter[str]
) -> None:
    en = await client.get("/greeting", headers={"Accept-Language": "en"})
    fr = await client.get("/greeting", headers={"Accept-Language": "fr"})
    fr_again = await client.get("/greeting", headers={"Accept-Language": "fr"})
    assert en.json() == {"text": "hello"}
    assert fr.json() == fr_again.json() == {"text": "bonjour"}
    assert [r.headers["x-cache"] for r in (en, fr, fr_again)] == ["MISS", "MISS", "HIT"]
    assert fr.headers["vary"] == "Accept-Language"
    assert calls["greeting"] == 2


async def test_no_store_bypasses_the_cache(client: httpx.AsyncClient, calls: Counter[str]) -> None:
    bypassed = await client.get("/items", headers={"Cache-Control": "no-store"})
    assert bypassed.headers["x-cache"] == "BYPASS"
    after = await client.get("/items")
    assert after.headers["x-cache"] == "MISS", "no-store must not have written an entry"
    again = await client.get("/items", headers={"Cache-Control": "no-store"})
    assert again.headers["x-cache"] == "BYPASS"
    assert calls["items"] == 3


async def test_no_cache_revalidates_and_stores(
    client: httpx.AsyncClient, calls: Counter[str], items: dict[int, str]
) -> None:
    await client.get("/items")
    items[3] = "three"  # changed behind the cache's back
    stale = await client.get("/items")
    assert stale.headers["x-cache"] == "HIT"
    assert stale.json()["items"] == ["one", "two"]
    fresh = await client.get("/items", headers={"Cache-Control": "no-cache"})
    assert fresh.headers["x-cache"] == "MISS"
    assert fresh.json()["items"] == ["one", "two", "three"]
    stored = await client.get("/items")
    assert stored.headers["x-cache"] == "HIT", "no-cache revalidates; it does not disable caching"
    assert stored.json()["items"] == ["one", "two", "three"]
    pragma = await client.get("/items", headers={"Pragma": "no-cache"})
    assert pragma.headers["x-cache"] == "MISS"
    assert calls["items"] == 3


async def test_authorization_is_not_shared_between_users(
    client: httpx.AsyncClient, calls: Counter[str]
) -> None:
    alice = await client.get("/me", headers={"Authorization": "Bearer alice"})
    bob = await client.get("/me", headers={"Authorization": "Bearer bob"})
    alice_again = await client.get("/me", headers={"Authorization": "Bearer alice"})
    anonymous = await client.get("/me")
    assert alice.json() == alice_again.json() == {"user": "Bearer alice"}
    assert bob.json() == {"user": "Bearer bob"}
    assert anonymous.json() == {"user": "anonymous"}
    assert [r.headers["x-cache"] for r in (alice, bob, alice_again, anonymous)] == [
        "MISS",
        "MISS",
        "HIT",
        "MISS",
    ]
    assert alice_again.headers["cache-control"].startswith("private")
    assert "Authorization" in alice_again.headers["vary"]
    assert anonymous.headers["cache-control"].startswith("public")


async def test_shared_route_serves_every_user_one_entry(
    client: httpx.AsyncClient, calls: Counter[str]
) -> None:
    first = await client.get("/public-stats", headers={"Authorization": "Bearer alice"})
    second = await client.get("/public-stats", headers={"Authorization": "Bearer bob"})
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    assert second.headers["cache-control"].startswith("public")
    assert calls["public"] == 1


async def test_credentials_never_appear_in_keys(cache: Cache, client: httpx.AsyncClient) -> None:
    await client.get("/me", headers={"Authorization": "Bearer secret-token-123"})
    keys = [key async for batch in cache.backend.scan("*") for key in batch]
    assert keys
    assert not any("secret-token" in key for key in keys)


async def test_response_setting_a_cookie_is_not_cached(
    client: httpx.AsyncClient, calls: Counter[str]
) -> None:
    first = await client.get("/session")
    second = await client.get("/session")
    assert [r.headers["x-cache"] for r in (first, second)] == ["MISS", "MISS"]
    assert first.cookies["session"] == "s1"
    assert second.cookies["session"] == "s2"
    assert calls["session"] == 2


async def test_error_responses_are_not_cached(
    client: httpx.AsyncClient, calls: Counter[str]
) -> None:
    first = await client.get("/items/99")
    second = await client.get("/items/99")
    assert first.status_code == second.status_code == 404
    assert calls["item"] == 2
    assert "etag" not in second.headers


async def test_configured_cache_control_and_background_tasks(
    client: httpx.AsyncClient, calls: Counter[str]
) -> None:
    await client.get("/report")
    second = await client.get("/report")
    assert second.headers["cache-control"] == "public, max-age=30, stale-while-revalidate=5"
    assert second.headers["x-cache"] == "HIT"
    assert calls["report_background"] == 1, "background tasks run on a miss, never on a hit"


async def test_head_is_answered_from_the_get_entry(
    client: httpx.AsyncClient, calls: Counter[str]
) -> None:
    cold = await client.head("/items")
    assert cold.headers["x-cache"] == "MISS"
    await client.get("/items")
    head = await client.head("/items")
    assert head.status_code == 200
    assert head.headers["x-cache"] == "HIT"
    assert head.content == b""


async def test_post_put_delete_invalidate_the_next_get(
    client: httpx.AsyncClient, calls: Counter[str]
) -> None:
    assert (await client.get("/items")).json()["items"] == ["one", "two"]
    assert (await client.get("/items/2")).json()["name"] == "two"

    assert (await client.post("/items", params={"name": "three"})).status_code == 201
    listed = await client.get("/items")
    assert listed.headers["x-cache"] == "MISS"
    assert listed.json()["items"] == ["one", "two", "three"]

    await client.put("/items/2", params={"name": "TWO"})
    assert (await client.get("/items")).json()["items"] == ["one", "TWO", "three"]
    renamed = await client.get("/items/2")
    assert renamed.headers["x-cache"] == "MISS"
    assert renamed.json()["name"] == "TWO"

    await client.delete("/items/1")
    assert (await client.get("/items")).json()["items"] == ["TWO", "three"]
    assert (await client.get("/items/1")).status_code == 404


async def test_dependency_hands_routes_the_open_cache(cache: Cache) -> None:
    app = FastAPI(lifespan=lifespan(cache))

    @app.get("/namespace")
    async def namespace(cache: CacheDependency) -> dict[str, str]:
        return {"namespace": cache.namespace}

    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c,
    ):
        assert (await c.get("/namespace")).json() == {"namespace": cache.namespace}


async def test_get_cache_without_lifespan_names_the_fix() -> None:
    app = FastAPI()

    @app.get("/x")
    async def route(cache: CacheDependency) -> None: ...

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=True)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        with pytest.raises(RuntimeError, match="lifespan"):
            await c.get("/x")
    assert get_cache.__name__ == "get_cache"


async def test_lifespan_refuses_marked_routes_that_are_not_cached_routes(cache: Cache) -> None:
    app = FastAPI(lifespan=lifespan(cache))

    @app.get("/forgotten")
    @cache_response(cache, ttl=10)
    async def forgotten() -> None: ...

    with pytest.raises(ConfigurationError, match="CachedRoute"):
        async with app.router.lifespan_context(app):
            pass


async def test_router_route_class_and_explicit_cache(cache: Cache) -> None:
    router = APIRouter(route_class=CachedRoute)
    ran = Counter[str]()

    @router.get("/value")
    @cache_response(cache, ttl=10)
    async def value() -> dict[str, int]:
        ran["value"] += 1
        return {"value": 7}

    app = FastAPI()  # no lifespan: the route names its cache
    app.include_router(router, prefix="/api")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        first, second = await c.get("/api/value"), await c.get("/api/value")
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    assert ran["value"] == 1
    assert await cache.delete_pattern("http:GET:/api/value*") == 1


async def test_lifespan_from_settings_logs_the_startup_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = CacheSettings(backend="memory", namespace="lifespan-test")
    app = FastAPI(lifespan=lifespan(settings=settings))
    with caplog.at_level(logging.INFO, logger="cachetier"):
        async with app.router.lifespan_context(app):
            opened = getattr(app.state, "cachetier_cache", None)
            assert isinstance(opened, Cache)
            assert opened.namespace == "lifespan-test"
    assert any("cache initialized" in record.getMessage() for record in caplog.records)
    assert not hasattr(app.state, "cachetier_cache")


async def test_open_cache_inside_an_application_lifespan(cache: Cache) -> None:
    app = FastAPI()
    async with open_cache(app, cache) as opened:
        assert opened is cache


@pytest.mark.redis
@pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed")
async def test_app_serves_correctly_with_redis_stopped(
    tmp_path: Path, calls: Counter[str], items: dict[int, str]
) -> None:
    server = RedisServer(tmp_path)
    server.start()
    try:
        # Timeouts a loaded CI machine does not trip while warming up; once the server is
        # stopped, connections are refused at once, whatever the timeouts.
        backend = RedisBackend.from_url(server.url, connect_timeout=2.0, command_timeout=2.0)
        cache = Cache(backend, namespace="stopped")
        app = build_app(cache, calls, items)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c,
        ):
            warm = await c.get("/items")
            assert (await c.get("/items")).headers["x-cache"] == "HIT"
            server.stop()
            for _ in range(8):  # through the failures that open the breaker, and past them
                down = await c.get("/items")
                assert down.status_code == 200
                assert down.json() == warm.json()
                assert down.headers["x-cache"] == "MISS"
            await c.post("/items", params={"name": "three"})  # invalidation fails open
            after_write = await c.get("/items")
            assert after_write.status_code == 200
            assert after_write.json()["items"] == ["one", "two", "three"]
    finally:
        server.stop()
