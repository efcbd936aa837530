"""Concurrent identical requests answered by one run of the route say `X-Cache: SHARED`, not HIT."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import pytest

from cachetier import Cache
from cachetier.backends import MemoryBackend, NullBackend
from cachetier.contrib.asgi import ResponseCacheMiddleware, ResponseCachePolicy

httpx = pytest.importorskip("httpx")


async def _twelve_concurrent_requests(cache: Cache) -> tuple[list[str], int]:
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
    ) as client:
        pending = [asyncio.ensure_future(client.get("/slow")) for _ in range(12)]
        # Released once every request has missed and joined the one run of the route: on a
        # loaded machine, 12 requests took up to 300 ms to get that far (a fixed 50 ms wait).
        deadline = time.monotonic() + 5
        while cache.stats.misses < 12:
            assert time.monotonic() < deadline, "the requests never all reached the cache"
            await asyncio.sleep(0.001)
        release.set()
        answers = await asyncio.gather(*pending)
        assert {answer.text for answer in answers} == {"slow"}
        after = await client.get("/slow")
    outcomes = sorted(answer.headers["x-cache"] for answer in answers)
    return [*outcomes, "then:" + after.headers["x-cache"]], runs["app"]


async def test_disabled_cache_reports_shared_answers_not_hits() -> None:
    async with Cache(NullBackend()) as cache:
        outcomes, runs = await _twelve_concurrent_requests(cache)
    assert outcomes == ["MISS"] + ["SHARED"] * 11 + ["then:MISS"]
    assert runs == 2


async def test_enabled_cache_reports_shared_answers_then_hits() -> None:
    async with Cache(MemoryBackend()) as cache:
        outcomes, runs = await _twelve_concurrent_requests(cache)
    assert outcomes == ["MISS"] + ["SHARED"] * 11 + ["then:HIT"]
    assert runs == 1
