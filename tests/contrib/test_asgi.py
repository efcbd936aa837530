"""`ResponseCacheMiddleware` on Starlette and on a bare ASGI callable, through httpx."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from cachetier import Cache
from cachetier.backends import RedisBackend
from cachetier.contrib.asgi import (
    ResponseCacheMiddleware,
    ResponseCachePolicy,
    invalidate_responses,
    response_key_prefix,
)
from cachetier.testing import FakeClock

from ..servers import REDIS_SERVER, RedisServer

pytest.importorskip("starlette")
httpx = pytest.importorskip("httpx")

# After the importorskip calls, so that the module skips when the frameworks are missing.
from starlette.applications import Starlette  # noqa: E402
from starlette.background import BackgroundTask  # noqa: E402
from starlette.middleware import Middleware  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import (  # noqa: E402
    FileResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
)
from starlette.routing import Route  # noqa: E402


def build_app(cache: Cache, calls: Counter[str], state: dict[str, Any]) -> Starlette:
    """A Starlette app whose routes each exercise one rule; ``calls`` counts the runs."""

    async def tasks(request: Request) -> Response:
        calls["tasks"] += 1
        if state.get("fail"):
            return PlainTextResponse("database down", status_code=503)
        return JSONResponse({"tasks": state["tasks"], "q": dict(request.query_params)})

    async def create_task(request: Request) -> Response:
        state["tasks"].append(request.query_params["title"])
        await invalidate_responses(cache, "/api/tasks")
        return JSONResponse({"ok": True}, status_code=201)

    async def greeting(request: Request) -> Response:
        calls["greeting"] += 1
        french = request.headers.get("accept-language", "").startswith("fr")
        return PlainTextResponse("bonjour" if french else "hello")

    async def me(request: Request) -> Response:
        calls["me"] += 1
        return JSONResponse({"user": request.headers.get("authorization", "anonymous")})

    async def login(request: Request) -> Response:
        calls["login"] += 1
        response = PlainTextResponse("welcome")
        response.set_cookie("session", f"s{calls['login']}")
        return response

    async def binary(request: Request) -> Response:
        calls["binary"] += 1
        return Response(bytes(range(256)), media_type="application/octet-stream")

    async def file(request: Request) -> Response:
        calls["file"] += 1
        return FileResponse(state["file"])

    async def later(request: Request) -> Response:
        calls["later"] += 1
        return PlainTextResponse("done", background=BackgroundTask(calls.update, ["later_bg"]))

    async def uncached(request: Request) -> Response:
        calls["uncached"] += 1
        return PlainTextResponse("plain")

    return Starlette(
        routes=[
            Route("/api/tasks", tasks),
            Route("/api/tasks", create_task, methods=["POST"]),
            Route("/api/greeting", greeting),
            Route("/api/me", me),
            Route("/api/login", login),
            Route("/api/binary", binary),
            Route("/api/file", file),
            Route("/api/later", later),
            Route("/other", uncached),
        ],
        middleware=[
            Middleware(
                ResponseCacheMiddleware,
                cache=cache,
                paths={
                    "/api": ResponseCachePolicy(ttl=30),
                    "/api/greeting": ResponseCachePolicy(ttl=30, vary=("Accept-Language",)),
                    "/api/tasks": ResponseCachePolicy(ttl=30, stale_if_error=300),
                },
            )
        ],
    )


@pytest.fixture
def calls() -> Counter[str]:
    return Counter()


@pytest.fixture
def state(tmp_path: Path) -> dict[str, Any]:
    file = tmp_path / "report.txt"
    file.write_text("a file body\n")
    return {"tasks": ["write tests"], "file": file}


@pytest.fixture
async def client(
    cache: Cache, calls: Counter[str], state: dict[str, Any]
) -> AsyncIterator[httpx.AsyncClient]:
    app = build_app(cache, calls, state)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as client:
        yield client


async def test_hit_after_miss(client: httpx.AsyncClient, calls: Counter[str]) -> None:
    first, second = await client.get("/api/tasks?b=2&a=1"), await client.get("/api/tasks?a=1&b=2")
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    assert first.json() == second.json()
    assert calls["tasks"] == 1


async def test_paths_outside_the_prefixes_pass_through(
    client: httpx.AsyncClient, calls: Counter[str]
) -> None:
    for _ in range(2):
        response = await client.get("/other")
        assert "x-cache" not in response.headers
    assert calls["uncached"] == 2


async def test_if_none_match_gets_304(client: httpx.AsyncClient) -> None:
    etag = (await client.get("/api/tasks")).headers["etag"]
    not_modified = await client.get("/api/tasks", headers={"If-None-Match": f'W/{etag}, "x"'})
    assert not_modified.status_code == 304
    assert not_modified.content == b""
    assert not_modified.headers["etag"] == etag


async def test_vary_on_configured_headers(client: httpx.AsyncClient, calls: Counter[str]) -> None:
    answers = [
        await client.get("/api/greeting", headers={"Accept-Language": language})
        for language in ("en", "fr", "en", "fr")
    ]
    assert [r.text for r in answers] == ["hello", "bonjour", "hello", "bonjour"]
    assert [r.headers["x-cache"] for r in answers] == ["MISS", "MISS", "HIT", "HIT"]
    assert calls["greeting"] == 2


async def test_no_store_and_no_cache(client: httpx.AsyncClient, calls: Counter[str]) -> None:
    assert (await client.get("/api/tasks", headers={"Cache-Control": "no-store"})).headers[
        "x-cache"
    ] == "BYPASS"
    assert (await client.get("/api/tasks")).headers["x-cache"] == "MISS"
    assert (await client.get("/api/tasks", headers={"Cache-Control": "max-age=0"})).headers[
        "x-cache"
    ] == "MISS"
    assert (await client.get("/api/tasks")).headers["x-cache"] == "HIT"
    assert calls["tasks"] == 3


async def test_authorization_keyed_per_credential(
    client: httpx.AsyncClient, calls: Counter[str]
) -> None:
    alice = await client.get("/api/me", headers={"Authorization": "Basic YWxpY2U6cHc="})
    bob = await client.get("/api/me", headers={"Authorization": "Basic Ym9iOnB3"})
    again = await client.get("/api/me", headers={"Authorization": "Basic YWxpY2U6cHc="})
    assert alice.json()["user"] != bob.json()["user"]
    assert again.json() == alice.json()
    assert again.headers["x-cache"] == "HIT"
    assert again.headers["cache-control"] == "private, max-age=30"


async def test_set_cookie_is_never_stored(client: httpx.AsyncClient, calls: Counter[str]) -> None:
    first, second = await client.get("/api/login"), await client.get("/api/login")
    assert (first.cookies["session"], second.cookies["session"]) == ("s1", "s2")
    assert calls["login"] == 2


async def test_binary_and_file_bodies_round_trip(
    client: httpx.AsyncClient, calls: Counter[str]
) -> None:
    for _ in range(2):
        assert (await client.get("/api/binary")).content == bytes(range(256))
        assert (await client.get("/api/file")).text == "a file body\n"
    assert calls["binary"] == calls["file"] == 1


async def test_background_task_runs_on_miss_only(
    client: httpx.AsyncClient, calls: Counter[str]
) -> None:
    await client.get("/api/later")
    await client.get("/api/later")
    assert calls["later_bg"] == 1


async def test_post_invalidates_the_next_get(
    client: httpx.AsyncClient, calls: Counter[str]
) -> None:
    assert (await client.get("/api/tasks")).json()["tasks"] == ["write tests"]
    assert (await client.get("/api/tasks?page=2")).headers["x-cache"] == "MISS"
    await client.post("/api/tasks", params={"title": "ship it"})
    after = await client.get("/api/tasks")
    assert after.headers["x-cache"] == "MISS"
    assert after.json()["tasks"] == ["write tests", "ship it"]
    assert (await client.get("/api/tasks?page=2")).headers["x-cache"] == "MISS"


async def test_stale_response_served_when_the_route_fails(
    cachetier_memory_cache: Cache,
    cachetier_clock: FakeClock,
    calls: Counter[str],
    state: dict[str, Any],
) -> None:
    app = build_app(cachetier_memory_cache, calls, state)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        good = await c.get("/api/tasks")
        cachetier_clock.advance(60)  # past the 30 s TTL, inside the 300 s stale_if_error window
        state["fail"] = True
        stale = await c.get("/api/tasks")
        assert stale.status_code == 200
        assert stale.headers["x-cache"] == "STALE"
        assert stale.json() == good.json()
        assert "age" in stale.headers
        cachetier_clock.advance(600)  # past the window: the failure shows
        assert (await c.get("/api/tasks")).status_code == 503


async def test_bare_asgi_app_with_streamed_body(cache: Cache) -> None:
    runs = Counter[str]()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        runs["app"] += 1
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-a", b"1")]})
        await send({"type": "http.response.body", "body": b"part one, ", "more_body": True})
        await send({"type": "http.response.body", "body": b"part two"})

    wrapped = ResponseCacheMiddleware(app, cache=cache, paths={"/": ResponseCachePolicy(ttl=5)})
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=wrapped), base_url="http://t"
    ) as c:
        first, second = await c.get("/anything"), await c.get("/anything")
    assert first.text == second.text == "part one, part two"
    assert second.headers["x-a"] == "1"
    assert second.headers["x-cache"] == "HIT"
    assert runs["app"] == 1


async def test_concurrent_misses_run_the_route_once(cache: Cache) -> None:
    import asyncio

    runs = Counter[str]()
    release = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        runs["app"] += 1
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"slow"})

    wrapped = ResponseCacheMiddleware(app, cache=cache, paths={"/": ResponseCachePolicy(ttl=5)})
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=wrapped), base_url="http://t"
    ) as c:
        pending = [asyncio.ensure_future(c.get("/slow")) for _ in range(10)]
        # Released once every request has missed and joined the one run of the route: on a
        # loaded machine, 10 requests took up to 300 ms to get that far (a fixed 50 ms wait).
        deadline = time.monotonic() + 5
        while cache.stats.misses < 10:
            assert time.monotonic() < deadline, "the requests never all reached the cache"
            await asyncio.sleep(0.001)
        release.set()
        answers = await asyncio.gather(*pending)
    assert {r.text for r in answers} == {"slow"}
    assert runs["app"] == 1
    assert sorted(r.headers["x-cache"] for r in answers) == ["MISS"] + ["SHARED"] * 9


def test_key_prefix_encodes_glob_characters() -> None:
    assert response_key_prefix("/api/tasks") == "http:GET:/api/tasks"
    assert response_key_prefix("/a*b?c[d]") == "http:GET:/a%2Ab%3Fc%5Bd%5D"


@pytest.mark.redis
@pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed")
async def test_serves_with_redis_stopped(
    tmp_path: Path, calls: Counter[str], state: dict[str, Any]
) -> None:
    server = RedisServer(tmp_path)
    server.start()
    # Timeouts a loaded CI machine does not trip while warming up; once the server is stopped,
    # connections are refused at once, whatever the timeouts.
    backend = RedisBackend.from_url(server.url, connect_timeout=2.0, command_timeout=2.0)
    cache = Cache(backend, namespace="asgi-stopped")
    try:
        app = build_app(cache, calls, state)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as c:
            warm = await c.get("/api/tasks")
            server.stop()
            for _ in range(8):
                down = await c.get("/api/tasks")
                assert down.status_code == 200
                assert down.json() == warm.json()
    finally:
        await cache.aclose()
        server.stop()
