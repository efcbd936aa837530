"""Measures cachetier against bare redis-py and its peers, side by side, against SPEC §5.

Run from the repository root with the project's virtualenv::

    python benchmarks/run.py            # about 1-2 minutes on 2 cores
    python benchmarks/run.py --quick    # about 30 s, fewer and shorter rounds

Missing benchmark-only packages (aiocache, cashews, async-lru, hiredis, orjson) are installed
into the running interpreter first. Results are printed and written to ``benchmarks/results/``
as ``latest.json`` and ``latest.md``. Redis must answer at 127.0.0.1:6379; database 14 is
flushed before and after the run (override with ``CACHETIER_BENCH_REDIS_*``).

Timing (see ``_harness.py``): every case is warmed up, then the cases of one table run in
rounds of short batches that alternate between the cases in a random order, so slow drift and
noise from other processes spread evenly. Batches are timed with ``perf_counter_ns``; the median
of the rounds' per-call means is reported, ratios are medians of same-round ratios, and single
calls timed one by one give the p99. Plain asyncio, default event loop.
"""

import argparse
import asyncio
import contextlib
import functools
import gc
import json
import logging
import multiprocessing
import os
import socket
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _common
from _common import (
    BENCH_DIR,
    DOCUMENT,
    DOWN_URL,
    PROFILE,
    REDIS_DB,
    REDIS_HOST,
    REDIS_PORT,
    REDIS_URL,
    SHORT_STRING,
    CommandCounter,
    Profile,
    locking_note,
)
from _harness import Call, Case, Section, Settings, describe, measure
from _plot import plot
from _report import environment, render, targets, to_json

RESULTS_DIR = _common.BENCH_DIR / "results"
HIT_TTL = 600
STAMPEDE_CALLS = 1000
STAMPEDE_PROCESSES = 4
STAMPEDE_FETCH_SECONDS = 0.05
CONCURRENCY = 100
MANY_KEYS = 100


class RedisUnavailable(Exception):
    """The benchmark Redis did not answer, or cachetier failed to set up; nothing can run."""


# -- building the cases -----------------------------------------------------------------------


class Runs:
    """How many times each benchmark function's body ran (a hit must not run it)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def source(self, name: str, value: Any, returns: Any) -> Callable[[int], Awaitable[Any]]:
        """Returns an ``async def name(user_id) -> returns`` that counts its runs."""
        counts = self.counts
        counts[name] = 0

        async def fetch(user_id: int) -> Any:
            counts[name] += 1
            return value

        fetch.__annotations__["return"] = returns
        fetch.__name__ = fetch.__qualname__ = name
        return fetch

    def expect_one(self, name: str) -> Callable[[], str | None]:
        def check() -> str | None:
            n = self.counts.get(name, 0)
            return None if n <= 1 else f"body ran {n} times: not every call was a hit"

        return check


def stats_check(function: Any) -> Callable[[], str | None]:
    """Flags backend or decode errors a cachetier function met while being timed."""

    def check() -> str | None:
        stats = function.stats
        if stats.backend_errors or stats.decode_errors:
            return f"{stats.backend_errors} backend and {stats.decode_errors} decode errors"
        return None

    return check


@dataclass(frozen=True)
class Payload:
    slug: str
    title: str
    value: Any
    returns: Any


PAYLOADS = (
    Payload("doc", "1 KB JSON document", DOCUMENT, dict[str, Any]),
    Payload("short", "short string", SHORT_STRING, str),
)


class World:
    """Every client of the run, created once and closed at the end."""

    def __init__(self, stack: contextlib.AsyncExitStack, failures: dict[str, str]) -> None:
        self.stack = stack
        self.failures = failures
        self.runs = Runs()
        self.raw: Any = None
        self.redis_cache: Any = None
        self.memory_cache: Any = None
        self.tiered_cache: Any = None
        self.embedded_cache: Any = None
        self.redis_cache_untimed: Any = None
        self.functions: dict[str, Any] = {}
        self.peer_errors: dict[str, str] = {}

    def unavailable(self, module: str) -> str | None:
        if module in self.failures:
            return self.failures[module]
        try:
            __import__(module)
        except Exception as exc:
            return f"import {module} failed: {describe(exc)}"
        return None

    async def start(self) -> None:
        import redis.asyncio as redis_asyncio

        from cachetier import Cache, LocalTier
        from cachetier.backends.memory import MemoryBackend
        from cachetier.backends.redis import RedisBackend

        self.raw = redis_asyncio.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB)
        self.stack.push_async_callback(self.raw.aclose)
        try:
            await self.raw.flushdb()
        except Exception as exc:
            raise RedisUnavailable(
                f"Redis at {REDIS_HOST}:{REDIS_PORT}/{REDIS_DB} did not answer ({describe(exc)})"
            ) from exc
        self.stack.push_async_callback(self.raw.flushdb)  # runs before aclose (LIFO)
        self.redis_cache = Cache(RedisBackend.from_url(REDIS_URL), namespace="bench")
        self.stack.push_async_callback(self.redis_cache.aclose)
        self.redis_cache_untimed = Cache(
            RedisBackend.from_url(REDIS_URL), namespace="bench-untimed", latency_stats=False
        )
        self.stack.push_async_callback(self.redis_cache_untimed.aclose)
        self.memory_cache = Cache(MemoryBackend(), namespace="bench")
        self.stack.push_async_callback(self.memory_cache.aclose)
        self.tiered_cache = Cache(
            RedisBackend.from_url(REDIS_URL), namespace="bench-tiered", local=LocalTier()
        )
        self.stack.push_async_callback(self.tiered_cache.aclose)

    async def embedded(self) -> Any:
        """The embedded default with a local tier: ``Cache.from_settings`` without a Redis URL.

        The settings are given in full rather than read: ``REDIS_URL`` or any ``CACHE_*``
        variable in the environment or a ``.env`` file would otherwise change what is measured.
        """
        if self.embedded_cache is not None:
            return self.embedded_cache
        from cachetier import Cache, CacheSettings
        from cachetier.backends.memory import MemoryBackend

        settings = CacheSettings(local_tier=True, redis_url=None, _env_file=None)
        changed = sorted(
            name
            for name, field in CacheSettings.model_fields.items()
            if name != "local_tier" and getattr(settings, name) != field.default
        )
        if changed:
            # Names only: a value could be a URL with a password.
            raise RuntimeError(f"the environment sets {', '.join(changed)}; not the default")
        cache = Cache.from_settings(settings)
        self.stack.push_async_callback(cache.aclose)
        if not isinstance(cache.backend, MemoryBackend):
            raise RuntimeError(f"embedded default built {type(cache.backend).__name__}")
        if cache._engine.local_settings is None:
            raise RuntimeError("embedded default has no local tier")
        self.embedded_cache = cache
        return cache

    async def case(
        self, key: str, label: str, build: Callable[[], Awaitable[Case | Call]], *, peer: str = ""
    ) -> Case:
        """Builds one case; a failure to build becomes an n/a line with its reason."""
        try:
            built = await build()
        except Exception as exc:
            return Case(key, label, error=describe(exc), peer=peer or None)
        if isinstance(built, Case):
            built.key, built.label = key, label
            built.peer = built.peer or peer or None
            return built
        return Case(key, label, built, peer=peer or None)

    # cachetier ---------------------------------------------------------------------------

    async def cachetier_cached(
        self, cache: Any, name: str, value: Any, returns: Any, **options: Any
    ) -> Case:
        function = cache.cached(ttl=HIT_TTL, **options)(self.runs.source(name, value, returns))
        first = await function(42)
        second = await function(42)
        case = Case(name, name, functools.partial(function, 42))
        if isinstance(value, Profile) and not isinstance(second, Profile):
            case.notes.append(f"typed decode not applied: a hit returned {type(second).__name__}")
        if first != second:
            case.notes.append("a hit returned a different value than the fetch")
        case.checks += [self.runs.expect_one(name), stats_check(function)]
        self.functions[name] = function
        return case

    # aiocache ----------------------------------------------------------------------------

    async def aiocache_cached(self, name: str, value: Any, *, redis: bool, orjson: bool) -> Case:
        reason = self.unavailable("aiocache")
        if reason:
            raise RuntimeError(reason)
        from aiocache import Cache as AioCache
        from aiocache import cached as aio_cached

        options: dict[str, Any] = {}
        if redis:
            from aiocache.serializers import JsonSerializer

            serializer: Any = JsonSerializer()
            if orjson:
                serializer = _aiocache_orjson_serializer()
            options = {
                "cache": AioCache.REDIS,
                "serializer": serializer,
                "endpoint": REDIS_HOST,
                "port": REDIS_PORT,
                "db": REDIS_DB,
                "namespace": "bench-aiocache",
            }
        function = aio_cached(ttl=HIT_TTL, **options)(self.runs.source(name, value, Any))
        self.stack.push_async_callback(function.cache.close)
        await function(42)
        case = Case(name, name, functools.partial(function, 42))
        case.checks.append(self.runs.expect_one(name))
        self.functions[name] = function
        return case

    # cashews -----------------------------------------------------------------------------

    async def cashews_cache(self, url: str, **options: Any) -> Any:
        reason = self.unavailable("cashews")
        if reason:
            raise RuntimeError(reason)
        import cashews

        instance = cashews.Cache()
        instance.setup(url, **options)
        self.stack.push_async_callback(instance.close)
        return instance

    async def cashews_cached(self, name: str, value: Any, *, redis: bool) -> Case:
        if redis:
            instance = await self.cashews_cache(REDIS_URL, pickle_type="json", client_side=False)
        else:
            instance = await self.cashews_cache("mem://")
        function = instance(ttl=HIT_TTL)(self.runs.source(name, value, Any))
        await function(42)
        case = Case(name, name, functools.partial(function, 42))
        case.checks.append(self.runs.expect_one(name))
        self.functions[name] = function
        return case


def _aiocache_orjson_serializer() -> Any:
    import orjson
    from aiocache.serializers import BaseSerializer

    class OrjsonSerializer(BaseSerializer):
        DEFAULT_ENCODING = None  # bytes in, bytes out

        def dumps(self, value: Any) -> bytes:
            return orjson.dumps(value)

        def loads(self, value: bytes | None) -> Any:
            return None if value is None else orjson.loads(value)

    return OrjsonSerializer()


# -- sections ---------------------------------------------------------------------------------


async def redis_hits(world: World, payload: Payload) -> Section:
    import orjson

    raw = world.raw
    slug = payload.slug
    raw_key = f"bench:raw:{slug}"
    await raw.set(raw_key, orjson.dumps(payload.value))
    get, orjson_loads, json_loads = raw.get, orjson.loads, json.loads

    async def bare_orjson() -> object:
        return orjson_loads(await get(raw_key))

    async def bare_json() -> object:
        return json_loads(await get(raw_key))

    cache = world.redis_cache
    aio_key = f"redis.{slug}.aiocache"

    async def cache_get() -> Call:
        await cache.set(f"profile:{slug}", payload.value, ttl=HIT_TTL)
        return functools.partial(cache.get, f"profile:{slug}")

    typed_name = "dict[str, Any]" if slug == "doc" else "str"

    cases = [
        Case(f"redis.{slug}.bare_orjson", "bare redis-py GET + orjson.loads", bare_orjson),
        Case(f"redis.{slug}.bare_json", "bare redis-py GET + json.loads", bare_json),
        await world.case(
            f"redis.{slug}.cachetier",
            f"cachetier @cached -> {typed_name}",
            lambda: world.cachetier_cached(
                cache, f"ct_redis_{slug}", payload.value, payload.returns
            ),
            peer=aio_key,
        ),
    ]
    if slug == "doc":
        cases.append(
            await world.case(
                "redis.doc.cachetier_pydantic",
                "cachetier @cached -> pydantic Profile",
                lambda: world.cachetier_cached(cache, "ct_redis_doc_model", PROFILE, Profile),
                peer=aio_key,
            )
        )
    cases += [
        await world.case(
            f"redis.{slug}.cachetier_no_latency",
            f"cachetier @cached -> {typed_name}, latency_stats=False",
            lambda: world.cachetier_cached(
                world.redis_cache_untimed,
                f"ct_redis_{slug}_untimed",
                payload.value,
                payload.returns,
            ),
            peer=f"redis.{slug}.cachetier",
        ),
        await world.case(
            f"redis.{slug}.cachetier_untyped",
            "cachetier @cached(typed=False)",
            lambda: world.cachetier_cached(
                cache, f"ct_redis_{slug}_untyped", payload.value, payload.returns, typed=False
            ),
            peer=aio_key,
        ),
        await world.case(
            f"redis.{slug}.cachetier_get", "cachetier cache.get", cache_get, peer=aio_key
        ),
        await world.case(
            aio_key,
            "aiocache @cached RedisCache + JsonSerializer",
            lambda: world.aiocache_cached(
                f"aio_redis_{slug}", payload.value, redis=True, orjson=False
            ),
        ),
        await world.case(
            f"redis.{slug}.aiocache_orjson",
            "aiocache @cached RedisCache + orjson serializer",
            lambda: world.aiocache_cached(
                f"aio_redis_{slug}_orjson", payload.value, redis=True, orjson=True
            ),
        ),
        await world.case(
            f"redis.{slug}.cashews",
            "cashews @cache redis:// pickle_type=json",
            lambda: world.cashews_cached(f"cw_redis_{slug}", payload.value, redis=True),
        ),
    ]
    return Section(
        f"redis_hit_{slug}",
        f"Decorated hit on Redis, {payload.title} ({_size(payload.value)} B as JSON)",
        f"redis.{slug}.bare_orjson",
        "bare GET + orjson",
        cases,
        note="peer: aiocache @cached on Redis with its JsonSerializer (stdlib json).",
    )


async def memory_hits(world: World, payload: Payload) -> Section:
    slug = payload.slug
    cache = world.memory_cache
    aio_key = f"memory.{slug}.aiocache"

    async def cache_get() -> Call:
        await cache.set(f"profile:{slug}", payload.value, ttl=HIT_TTL)
        return functools.partial(cache.get, f"profile:{slug}")

    async def lru() -> Case:
        reason = world.unavailable("async_lru")
        if reason:
            raise RuntimeError(reason)
        from async_lru import alru_cache

        name = f"lru_{slug}"
        function = alru_cache(maxsize=1024)(world.runs.source(name, payload.value, Any))
        await function(42)
        case = Case(name, name, functools.partial(function, 42))
        case.checks.append(world.runs.expect_one(name))
        return case

    import orjson

    encoded, loads = orjson.dumps(payload.value), orjson.loads

    async def decode_only() -> object:
        return loads(encoded)

    typed_name = "dict[str, Any]" if slug == "doc" else "str"

    async def local_hit(tier: Any, name: str, behind: str) -> Case:
        case = await world.cachetier_cached(tier, name, payload.value, payload.returns)
        # Served locally once the invalidation subscription is confirmed and a read kept it.
        for _ in range(500):
            if tier._engine.local is not None and tier._engine.local.live:
                break
            await asyncio.sleep(0.01)
        else:
            case.notes.append("the local tier never went live")
        assert case.call is not None
        first = await case.call()
        calls = tier.stats.backend_calls
        second = await case.call()
        # The local tier hands out the object it keeps; a read of the backend decodes a new one
        # (and, on Redis, counts a backend call).
        if tier.stats.backend_calls != calls or first is not second:
            case.notes.append(f"a hit reached {behind}: not served by the local tier")
        return case

    async def tiered() -> Case:
        return await local_hit(world.tiered_cache, f"ct_tier_{slug}", "Redis")

    async def embedded() -> Case:
        return await local_hit(await world.embedded(), f"ct_embedded_{slug}", "the backend")

    cases = [
        await world.case(
            f"memory.{slug}.cachetier",
            f"cachetier @cached -> {typed_name}, MemoryBackend",
            lambda: world.cachetier_cached(cache, f"ct_mem_{slug}", payload.value, payload.returns),
            peer=aio_key,
        ),
        await world.case(
            f"memory.{slug}.cachetier_untyped",
            "cachetier @cached(typed=False), MemoryBackend",
            lambda: world.cachetier_cached(
                cache, f"ct_mem_{slug}_untyped", payload.value, payload.returns, typed=False
            ),
            peer=aio_key,
        ),
        await world.case(
            f"memory.{slug}.cachetier_get",
            "cachetier cache.get, MemoryBackend",
            cache_get,
            peer=aio_key,
        ),
        await world.case(
            aio_key,
            "aiocache @cached SimpleMemoryCache (default serializer)",
            lambda: world.aiocache_cached(
                f"aio_mem_{slug}", payload.value, redis=False, orjson=False
            ),
        ),
        await world.case(
            f"memory.{slug}.cashews",
            "cashews @cache mem://",
            lambda: world.cashews_cached(f"cw_mem_{slug}", payload.value, redis=False),
        ),
        await world.case(
            f"memory.{slug}.tiered",
            f"cachetier @cached -> {typed_name}, LocalTier over Redis",
            tiered,
            peer=f"memory.{slug}.async_lru",
        ),
        await world.case(
            f"memory.{slug}.embedded",
            f"cachetier @cached -> {typed_name}, embedded default: "
            "Cache.from_settings(CacheSettings(local_tier=True)) with no redis_url",
            embedded,
            peer=f"memory.{slug}.async_lru",
        ),
        await world.case(f"memory.{slug}.async_lru", "async_lru.alru_cache", lru),
        Case(
            f"memory.{slug}.decode_floor",
            "reference: an async def returning orjson.loads(payload)",
            decode_only,
            peer=aio_key,
        ),
    ]
    return Section(
        f"memory_hit_{slug}",
        f"Decorated hit in process memory, {payload.title}",
        None,
        "",
        cases,
        note=(
            "peer: aiocache @cached with SimpleMemoryCache as configured by default (it keeps "
            "the object itself, no serialization). cachetier's MemoryBackend stores bytes and "
            "decodes on every hit; the reference row is that decode alone, the floor of such a hit. "
            "The LocalTier and embedded-default rows keep decoded objects in their local tier "
            "and are compared with async_lru; the embedded default is what "
            "Cache.from_settings builds with local_tier=True and no Redis URL: a MemoryBackend "
            "with a LocalTier in front (the environment and .env files are not read)."
        ),
    )


async def distinct_calls(world: World, cache: Any, name: str) -> Case:
    """100 gathered calls over 100 keys, all hits: no two calls share a read, so none is
    merged away."""
    await world.cachetier_cached(cache, name, DOCUMENT, dict[str, Any])
    function = world.functions[name]
    for i in range(CONCURRENCY):
        await function(i)

    async def hundred() -> object:
        return await asyncio.gather(*[function(i) for i in range(CONCURRENCY)])

    case = Case(name, name, hundred)
    case.checks.append(stats_check(function))
    return case


async def concurrent_hits(world: World) -> Section:
    import orjson

    raw = world.raw
    raw_key = "bench:raw:doc"  # written by the Redis hit section
    await raw.set(raw_key, orjson.dumps(DOCUMENT))
    get, loads = raw.get, orjson.loads

    def gathered(function: Any) -> Call:
        async def hundred() -> object:
            return await asyncio.gather(*[function(42) for _ in range(CONCURRENCY)])

        return hundred

    async def raw_gets_decoded() -> object:
        return [loads(v) for v in await asyncio.gather(*[get(raw_key) for _ in range(CONCURRENCY)])]

    encoded = orjson.dumps(DOCUMENT)

    async def decode_only() -> object:
        return loads(encoded)

    async def no_io() -> object:
        return await asyncio.gather(*[decode_only() for _ in range(CONCURRENCY)])

    async def raw_gets() -> object:
        return await asyncio.gather(*[get(raw_key) for _ in range(CONCURRENCY)])

    async def pipeline(decode: bool) -> object:
        pipe = raw.pipeline(transaction=False)
        for _ in range(CONCURRENCY):
            pipe.get(raw_key)
        values = await pipe.execute()
        return [loads(v) for v in values] if decode else values

    distinct_keys = [f"{raw_key}:{i}" for i in range(CONCURRENCY)]
    await raw.mset(dict.fromkeys(distinct_keys, encoded))

    async def pipeline_distinct() -> object:
        pipe = raw.pipeline(transaction=False)
        for name in distinct_keys:
            pipe.get(name)
        return [loads(v) for v in await pipe.execute()]

    builders: dict[str, Callable[[], Awaitable[Case]]] = {
        "ct_redis_doc": lambda: world.cachetier_cached(
            world.redis_cache, "ct_redis_doc", DOCUMENT, dict[str, Any]
        ),
        "cw_redis_doc": lambda: world.cashews_cached("cw_redis_doc", DOCUMENT, redis=True),
        "aio_redis_doc": lambda: world.aiocache_cached(
            "aio_redis_doc", DOCUMENT, redis=True, orjson=False
        ),
    }

    async def from_section(name: str) -> Call:
        # The Redis hit table made these functions; a run without that table makes them here.
        if name not in world.functions:
            await builders[name]()
        return gathered(world.functions[name])

    cases = [
        await world.case(
            "concurrent.cachetier",
            "cachetier @cached, 100 gathered calls",
            lambda: from_section("ct_redis_doc"),
            peer="concurrent.cashews",
        ),
        await world.case(
            "concurrent.cashews",
            "cashews @cache, 100 gathered calls",
            lambda: from_section("cw_redis_doc"),
        ),
        await world.case(
            "concurrent.aiocache",
            "aiocache @cached, 100 gathered calls",
            lambda: from_section("aio_redis_doc"),
        ),
        await world.case(
            "concurrent.cachetier_distinct",
            "cachetier @cached, 100 gathered calls over 100 keys",
            lambda: distinct_calls(world, world.redis_cache, "ct_redis_doc_distinct"),
            peer="concurrent.pipeline_distinct_orjson",
        ),
        Case(
            "concurrent.raw_gets_orjson", "100 gathered raw GETs + orjson.loads", raw_gets_decoded
        ),
        Case("concurrent.raw_gets", "100 gathered raw GETs (no decode)", raw_gets),
        Case(
            "concurrent.pipeline_orjson",
            "one 100-GET pipeline + orjson.loads",
            functools.partial(pipeline, decode=True),
        ),
        Case(
            "concurrent.pipeline_distinct_orjson",
            "one 100-GET pipeline over 100 keys + orjson.loads",
            pipeline_distinct,
        ),
        Case(
            "concurrent.pipeline",
            "one 100-GET pipeline (no decode)",
            functools.partial(pipeline, decode=False),
        ),
        Case(
            "concurrent.floor",
            "reference: 100 gathered async defs returning orjson.loads, no I/O",
            no_io,
        ),
    ]
    for case in cases:
        case.ops = CONCURRENCY
    return Section(
        "concurrent_hits",
        "100 concurrent hits of one key, and of 100 keys (1 KB document), asyncio.gather",
        "concurrent.raw_gets_orjson",
        "100 gathered GETs + orjson",
        cases,
        note="times are per batch of 100 calls; calls/s = 100 / batch time.",
        throughput=True,
    )


class Cluster:
    """A private Redis Cluster of three primaries (the test suite's), started on first use."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.url: str | None = None
        self.raw: Any = None
        self.held: Any = None
        self.pooled: Any = None

    async def start(self) -> None:
        if self.url is not None:
            return
        import tempfile

        from redis.asyncio.cluster import RedisCluster

        from cachetier import Cache
        from cachetier.backends.redis import RedisBackend

        root = str(BENCH_DIR.parent)
        if root not in sys.path:
            sys.path.append(root)  # the suite's server helpers: one way to start a cluster
        from tests.servers import running_cluster

        stack = self.world.stack
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-cluster")))
        servers = stack.enter_context(running_cluster(directory))
        self.url = servers.url
        self.raw = RedisCluster(host="127.0.0.1", port=servers.ports[0])
        await self.raw.initialize()
        stack.push_async_callback(self.raw.aclose)
        self.held = Cache(RedisBackend.from_url(self.url), namespace="bench")
        stack.push_async_callback(self.held.aclose)
        # A health check interval keeps reads on the cluster client's per-command path: the
        # path every cluster read took before issue 17's held reads.
        self.pooled = Cache(
            RedisBackend.from_url(self.url, health_check_interval=3600), namespace="bench-pooled"
        )
        stack.push_async_callback(self.pooled.aclose)
        if getattr(self.held.backend, "_reads", None) is None:
            raise RuntimeError("the cluster backend does not hold its reads")


async def cluster_hits(world: World, cluster: Cluster) -> Section:
    import orjson

    await cluster.start()
    raw = cluster.raw
    raw_key = "bench:raw:doc"
    await raw.set(raw_key, orjson.dumps(DOCUMENT))
    get, loads = raw.get, orjson.loads

    async def bare() -> object:
        return loads(await get(raw_key))

    async def cache_get(cache: Any) -> Call:
        await cache.set("profile:doc", DOCUMENT, ttl=HIT_TTL)
        return functools.partial(cache.get, "profile:doc")

    cases = [
        Case("cluster.bare_orjson", "bare redis-py RedisCluster.get + orjson.loads", bare),
        await world.case(
            "cluster.cachetier",
            "cachetier @cached -> dict[str, Any]",
            lambda: world.cachetier_cached(
                cluster.held, "ct_cluster_doc", DOCUMENT, dict[str, Any]
            ),
            peer="cluster.cachetier_pooled",
        ),
        await world.case(
            "cluster.cachetier_get",
            "cachetier cache.get",
            lambda: cache_get(cluster.held),
            peer="cluster.cachetier_get_pooled",
        ),
        await world.case(
            "cluster.cachetier_pooled",
            "cachetier @cached -> dict[str, Any], through the cluster client",
            lambda: world.cachetier_cached(
                cluster.pooled, "ct_cluster_doc_pooled", DOCUMENT, dict[str, Any]
            ),
        ),
        await world.case(
            "cluster.cachetier_get_pooled",
            "cachetier cache.get, through the cluster client",
            lambda: cache_get(cluster.pooled),
        ),
    ]
    return Section(
        "cluster_hit_doc",
        f"Decorated hit on a Redis Cluster of three primaries, 1 KB JSON document "
        f"({_size(DOCUMENT)} B as JSON)",
        "cluster.bare_orjson",
        "bare GET + orjson",
        cases,
        note=(
            "peer: the same cache reading through redis-py's cluster client, per command (a "
            "health_check_interval keeps it there), as every cluster read did before issue 17; "
            "aiocache and cashews are not measured on a cluster."
        ),
    )


async def cluster_concurrent(world: World, cluster: Cluster) -> Section:
    import orjson

    await cluster.start()
    raw = cluster.raw
    encoded = orjson.dumps(DOCUMENT)
    keys = [f"bench:raw:doc:{i}" for i in range(CONCURRENCY)]
    await raw.mset_nonatomic(dict.fromkeys(keys, encoded))
    get, loads = raw.get, orjson.loads

    async def pipeline() -> object:
        pipe = raw.pipeline(transaction=False)
        for name in keys:
            pipe.get(name)
        return [loads(v) for v in await pipe.execute()]

    async def gathered_gets() -> object:
        return [loads(v) for v in await asyncio.gather(*[get(name) for name in keys])]

    cases = [
        await world.case(
            "cluster_concurrent.cachetier",
            "cachetier @cached, 100 gathered calls over 100 keys",
            lambda: distinct_calls(world, cluster.held, "ct_cluster_distinct"),
            peer="cluster_concurrent.cachetier_pooled",
        ),
        await world.case(
            "cluster_concurrent.cachetier_pooled",
            "cachetier @cached, 100 gathered calls over 100 keys, through the cluster client",
            lambda: distinct_calls(world, cluster.pooled, "ct_cluster_distinct_pooled"),
        ),
        Case(
            "cluster_concurrent.pipeline",
            "one RedisCluster pipeline of 100 GETs + orjson.loads",
            pipeline,
        ),
        Case(
            "cluster_concurrent.gets",
            "100 gathered RedisCluster GETs + orjson.loads",
            gathered_gets,
        ),
    ]
    for case in cases:
        case.ops = CONCURRENCY
    return Section(
        "cluster_concurrent",
        "100 concurrent hits over 100 keys on a Redis Cluster of three primaries (1 KB document)",
        "cluster_concurrent.pipeline",
        "one cluster pipeline + orjson",
        cases,
        note="times are per batch of 100 calls; calls/s = 100 / batch time.",
        throughput=True,
    )


async def many_keys(world: World) -> Section:
    import orjson

    raw, cache = world.raw, world.redis_cache
    relative = [f"item:{i}" for i in range(MANY_KEYS)]
    await cache.set_many(dict.fromkeys(relative, DOCUMENT), ttl=HIT_TTL)
    raw_keys = [f"bench:raw:item:{i}" for i in range(MANY_KEYS)]
    await raw.mset(dict.fromkeys(raw_keys, orjson.dumps(DOCUMENT)))
    get, mget, loads = raw.get, raw.mget, orjson.loads

    async def sequential() -> object:
        return [loads(await get(k)) for k in raw_keys]

    async def one_mget() -> object:
        return [loads(v) for v in await mget(raw_keys)]

    async def get_many() -> Case:
        found = await cache.get_many(relative)
        if len(found) != MANY_KEYS:
            raise RuntimeError(f"get_many found {len(found)} of {MANY_KEYS} keys")
        with CommandCounter() as counter:
            await cache.get_many(relative)
        case = Case("many.cachetier", "cachetier get_many(100 keys)")
        case.call = functools.partial(cache.get_many, relative)
        case.extra["redis_commands"] = counter.total
        case.extra["by_command"] = dict(counter.by_name)
        return case

    cases = [
        await world.case("many.cachetier", "cachetier get_many(100 keys)", get_many),
        Case("many.sequential", "100 sequential raw GETs + orjson.loads", sequential),
        Case("many.mget", "one raw MGET of 100 keys + orjson.loads", one_mget),
    ]
    cases[1].extra["redis_commands"] = MANY_KEYS
    cases[2].extra["redis_commands"] = 1
    return Section(
        "get_many",
        "Reading 100 keys (1 KB documents)",
        "many.mget",
        "MGET + orjson",
        cases,
        note="times are per batch of 100 keys.",
    )


async def stampede_one_process(world: World) -> list[dict[str, Any]]:
    """1,000 concurrent misses of one key in one process, per library and option."""
    from cachetier import Cache
    from cachetier.backends.redis import RedisBackend

    results = []
    variants: list[tuple[str, str, dict[str, Any]]] = [
        ("cachetier", "cachetier @cached (default)", {}),
        ("cachetier", "cachetier @cached(lock=True)", {"lock": True}),
        ("cashews", "cashews @cache (default, protected=True)", {}),
        ("cashews", "cashews @cache(lock=True)", {"lock": True}),
    ]
    for index, (library, label, options) in enumerate(variants):
        row: dict[str, Any] = {"case": label, "library": library, "processes": 1}
        runs = 0

        async def fetch(user_id: int) -> dict[str, Any]:
            nonlocal runs
            runs += 1
            await asyncio.sleep(STAMPEDE_FETCH_SECONDS)
            return DOCUMENT

        fetch.__name__ = fetch.__qualname__ = f"stampede_{index}"
        try:
            if library == "cachetier":
                cache = Cache(RedisBackend.from_url(REDIS_URL), namespace="bench-stampede")
                world.stack.push_async_callback(cache.aclose)
                function: Any = cache.cached(ttl=HIT_TTL, **options)(fetch)
                if options.get("lock"):
                    row["note"] = locking_note(cache.backend)
            else:
                reason = world.unavailable("cashews")
                if reason:
                    raise RuntimeError(reason)
                instance = await world.cashews_cache(
                    REDIS_URL, pickle_type="json", client_side=False
                )
                function = instance(ttl=HIT_TTL, **options)(fetch)
            arg = time.time_ns()
            before = await _server_commands(world.raw)
            started = time.perf_counter()
            with CommandCounter() as counter, _CapturedLog("cachetier") as log:
                outcomes = await asyncio.gather(
                    *[function(arg) for _ in range(STAMPEDE_CALLS)], return_exceptions=True
                )
            row["wall_ms"] = round((time.perf_counter() - started) * 1000, 1)
            row["server_commands"] = await _server_commands(world.raw) - before - 1
            row["fetches"] = runs
            row["commands"] = counter.total
            row["by_command"] = dict(counter.by_name)
            failed = [o for o in outcomes if isinstance(o, BaseException)]
            row["errors"] = len(failed)
            if failed:
                row["note"] = (row.get("note", "") + f" first error: {describe(failed[0])}").strip()
            if library == "cachetier":
                row["backend_errors"] = function.stats.backend_errors
                if log.messages:
                    row["note"] = (row.get("note", "") + f" first log: {log.messages[0]}").strip()
        except Exception as exc:
            row["error"] = describe(exc)
        results.append(row)
    return results


def stampede_processes(world: World) -> list[dict[str, Any]]:
    """1,000 concurrent misses of one key spread over 4 processes with ``lock=True``."""
    results = []
    for library in ("cachetier", "cashews"):
        row: dict[str, Any] = {
            "case": f"{library} lock=True, {STAMPEDE_PROCESSES} processes x "
            f"{STAMPEDE_CALLS // STAMPEDE_PROCESSES} calls",
            "library": library,
            "processes": STAMPEDE_PROCESSES,
        }
        reason = world.unavailable(library)
        if reason:
            row["error"] = reason
            results.append(row)
            continue
        try:
            row.update(_spawn_stampede(library))
        except Exception as exc:
            row["error"] = describe(exc)
        results.append(row)
    return results


def _spawn_stampede(library: str) -> dict[str, Any]:
    import _stampede_worker
    import redis

    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(STAMPEDE_PROCESSES)
    queue = context.Queue()
    arg = time.time_ns()
    calls = STAMPEDE_CALLS // STAMPEDE_PROCESSES
    processes = [
        context.Process(
            target=_stampede_worker.run_worker, args=(library, arg, calls, barrier, queue)
        )
        for _ in range(STAMPEDE_PROCESSES)
    ]
    with redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB) as client:
        before = int(client.info("stats")["total_commands_processed"])
        for process in processes:
            process.start()
        reports = [queue.get(timeout=90) for _ in processes]
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
        after = int(client.info("stats")["total_commands_processed"])
    errors = [r["error"] for r in reports if "error" in r]
    if errors:
        raise RuntimeError(errors[0])
    by_command: dict[str, int] = {}
    for report in reports:
        for name, count in report["by_command"].items():
            by_command[name] = by_command.get(name, 0) + count
    row: dict[str, Any] = {
        "fetches": sum(r["runs"] for r in reports),
        "commands": sum(r["commands"] for r in reports),
        "server_commands": after - before - 1,
        "by_command": by_command,
        "errors": sum(r["errors"] for r in reports),
        "backend_errors": (
            sum(r["backend_errors"] for r in reports) if library == "cachetier" else None
        ),
        "wall_ms": round(max(r["seconds"] for r in reports) * 1000, 1),
    }
    first = next((r["first_error"] for r in reports if r["first_error"]), None)
    if first:
        row["note"] = f"first error: {first}"
    notes = {r["locking_note"] for r in reports if r.get("locking_note")}
    if notes:
        row["note"] = (row.get("note", "") + " " + " ".join(sorted(notes))).strip()
    return row


class _CapturedLog(logging.Handler):
    """Keeps the messages a logger emits while active (cachetier logs failures rate-limited)."""

    def __init__(self, name: str) -> None:
        super().__init__(logging.WARNING)
        self.logger = logging.getLogger(name)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage()[:200])

    def __enter__(self) -> "_CapturedLog":
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.logger.removeHandler(self)


async def _server_commands(raw: Any) -> int:
    return int((await raw.info("stats"))["total_commands_processed"])


async def redis_down(world: World) -> Section:
    from cachetier import Cache
    from cachetier.backends.redis import RedisBackend

    with socket.socket() as probe:
        probe.settimeout(0.5)
        if probe.connect_ex(("127.0.0.1", 1)) == 0:
            raise RuntimeError("something listens on 127.0.0.1:1; cannot simulate a dead Redis")
    cache = Cache(RedisBackend.from_url(DOWN_URL), namespace="bench-down")
    world.stack.push_async_callback(cache.aclose)
    body = world.runs.source("down_profile", DOCUMENT, dict[str, Any])
    function = cache.cached(ttl=HIT_TTL)(body)
    cases = [
        Case("down.bare", "bare function (no cache)", functools.partial(body, 42)),
        Case(
            "down.cachetier", "cachetier @cached, Redis refusing", functools.partial(function, 42)
        ),
        Case(
            "down.cachetier_get",
            "cachetier cache.get, Redis refusing",
            functools.partial(cache.get, "profile:42"),
        ),
    ]

    def errors_seen() -> str | None:
        stats = function.stats
        return f"{stats.backend_errors} backend errors counted, {stats.misses} misses"

    cases[1].checks.append(errors_seen)
    return Section(
        "redis_down",
        f"Redis down: connection refused at {DOWN_URL} ({_breaker_state()})",
        "down.bare",
        "bare function",
        cases,
        note=(
            "each decorated call tries GET (refused), counts a backend error, runs the body "
            "through single flight, then tries SET (refused). SPEC target applies with the "
            "breaker open: bare + 5 µs."
            if _breaker_state().startswith("no")
            else "the breaker opens after the first refusals; the median is of calls made while "
            "it stays open, with its periodic probes. SPEC target: bare + 5 µs."
        ),
    )


def _breaker_state() -> str:
    """Says whether this cachetier has a circuit breaker, as the Redis-down numbers depend on it."""
    import cachetier

    if not hasattr(cachetier, "CircuitBreaker"):
        return "no circuit breaker yet"
    return "with cachetier's circuit breaker at its defaults"


async def client_settings(world: World) -> Section:
    """What redis-py's timeout settings, as RedisBackend uses them, add to a GET + decode."""
    import orjson
    import redis.asyncio as redis_asyncio

    from cachetier.backends.redis import RedisBackend

    raw, loads = world.raw, orjson.loads
    key = "bench:raw:doc"
    await raw.set(key, orjson.dumps(DOCUMENT))
    where = {"host": REDIS_HOST, "port": REDIS_PORT, "db": REDIS_DB}
    timed = redis_asyncio.Redis(**where, socket_timeout=0.1)
    world.stack.push_async_callback(timed.aclose)
    pool = redis_asyncio.BlockingConnectionPool(**where, max_connections=64, timeout=0.1)
    blocking = redis_asyncio.Redis.from_pool(pool)
    world.stack.push_async_callback(blocking.aclose)
    backend = RedisBackend.from_url(REDIS_URL)
    world.stack.push_async_callback(backend.aclose)

    async def default() -> object:
        return loads(await raw.get(key))

    async def socket_timeout() -> object:
        return loads(await timed.get(key))

    async def blocking_pool() -> object:
        return loads(await blocking.get(key))

    async def via_backend() -> object:
        return loads(await backend.get(key))

    cases = [
        Case("client.default", "redis-py Redis(), no timeouts: GET + orjson.loads", default),
        Case(
            "client.socket_timeout", "Redis(socket_timeout=0.1): GET + orjson.loads", socket_timeout
        ),
        Case(
            "client.blocking_pool",
            "BlockingConnectionPool(timeout=0.1): GET + orjson.loads",
            blocking_pool,
        ),
        Case("client.backend", "RedisBackend.from_url(...).get + orjson.loads", via_backend),
    ]
    if sys.version_info >= (3, 11):

        async def one_deadline() -> object:
            async with asyncio.timeout(0.1):
                data = await raw.get(key)
            return loads(data)

        cases.append(
            Case(
                "client.asyncio_timeout",
                "Redis(), GET inside asyncio.timeout(0.1) + orjson.loads",
                one_deadline,
            )
        )
    return Section(
        "client_settings",
        "Diagnostic: what redis-py's timeout settings cost a GET + decode (1 KB document)",
        "client.default",
        "no-timeout client",
        cases,
        note=(
            "socket_timeout makes redis-py wrap every write in asyncio.wait_for (a task per "
            "write on Python 3.11) and every read in a timeout context; a BlockingConnectionPool "
            "adds an asyncio.Condition and a timeout per checkout and release. The RedisBackend "
            "row is the configuration cachetier uses."
        ),
    )


async def memory_entry_overhead() -> dict[str, Any]:
    """Bytes the MemoryBackend spends per small entry beyond its key and value objects."""
    from cachetier.backends.memory import MemoryBackend

    count = 20_000
    keys = [f"bench:v1:item:{i:06d}" for i in range(count)]
    values = [b"v" * 32 + i.to_bytes(4, "little") for i in range(count)]
    result: dict[str, Any] = {"entries": count, "value_bytes": 36}
    for label, ttl in (("with_ttl", 600.0), ("without_ttl", None)):
        backend = MemoryBackend(max_entries=None, max_bytes=None)
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for key, value in zip(keys, values, strict=True):
                await backend.set(key, value, ttl)
            after = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        result[label] = round((after - before) / count, 1)
        await backend.aclose()
    return result


def _size(value: Any) -> int:
    import orjson

    return len(orjson.dumps(value))


# -- the run ----------------------------------------------------------------------------------


SECTIONS = (
    "redis",
    "memory",
    "concurrent",
    "get_many",
    "cluster",
    "down",
    "client",
    "stampede",
    "overhead",
)


async def run_all(
    settings: Settings,
    failures: dict[str, str],
    *,
    processes: bool,
    only: frozenset[str] = frozenset(SECTIONS),
) -> dict[str, Any]:
    logging.getLogger("cachetier").addHandler(logging.NullHandler())
    logging.getLogger("cachetier").propagate = False
    load_before = _load()
    if load_before is not None and load_before > 0.5:
        print(
            f"warning: load average {load_before:.2f} before the run: other processes use the "
            "CPU, so absolute times and p99 are inflated (ratios are interleaved and hold better)",
            flush=True,
        )
    sections: list[Section] = []
    stampede: list[dict[str, Any]] = []
    overhead: dict[str, Any] | None = None
    async with contextlib.AsyncExitStack() as stack:
        world = World(stack, failures)
        cluster = Cluster(world)
        try:
            await world.start()
        except RedisUnavailable:
            raise
        except Exception as exc:
            raise RedisUnavailable(f"cachetier could not be set up ({describe(exc)})") from exc
        loop_name = type(asyncio.get_running_loop()).__name__
        info = await world.raw.info("server")
        server = f"Redis {info.get('redis_version', '?')}"

        for name, title, build in (
            ("redis", "Redis hits, 1 KB document", lambda: redis_hits(world, PAYLOADS[0])),
            ("redis", "Redis hits, short string", lambda: redis_hits(world, PAYLOADS[1])),
            ("memory", "memory hits, 1 KB document", lambda: memory_hits(world, PAYLOADS[0])),
            ("memory", "memory hits, short string", lambda: memory_hits(world, PAYLOADS[1])),
            ("concurrent", "100 concurrent hits", lambda: concurrent_hits(world)),
            ("get_many", "get_many", lambda: many_keys(world)),
            ("cluster", "Redis Cluster hits", lambda: cluster_hits(world, cluster)),
            ("cluster", "Redis Cluster, 100 keys", lambda: cluster_concurrent(world, cluster)),
            ("down", "Redis down", lambda: redis_down(world)),
            ("client", "redis-py client settings", lambda: client_settings(world)),
        ):
            if name not in only:
                continue
            print(f"… {title}", flush=True)
            try:
                section = await build()
            except Exception as exc:
                print(f"   section failed: {describe(exc)}", flush=True)
                continue
            await measure(section.cases, settings)
            sections.append(section)

        if "stampede" in only:
            print("… 1,000 concurrent misses", flush=True)
            stampede = await stampede_one_process(world)
            if processes:
                print(f"… 1,000 concurrent misses over {STAMPEDE_PROCESSES} processes", flush=True)
                stampede += await asyncio.to_thread(stampede_processes, world)
        if "overhead" in only:
            print("… memory entry overhead", flush=True)
            try:
                overhead = await memory_entry_overhead()
            except Exception as exc:
                overhead = {"error": describe(exc)}
    by_key = {s.key: s for s in sections}
    return {
        "load_average": {"before": load_before, "after": _load()},
        "stampede_fetch_ms": STAMPEDE_FETCH_SECONDS * 1000,
        "server": server,
        "loop": loop_name,
        "sections": sections,
        "stampede": stampede,
        "overhead": overhead,
        "targets": targets(by_key, stampede, overhead, breaker=_breaker_state()),
    }


def _load() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds (~30 s)")
    parser.add_argument(
        "--no-install", action="store_true", help="do not pip-install missing benchmark packages"
    )
    parser.add_argument(
        "--no-processes", action="store_true", help="skip the multi-process stampede case"
    )
    parser.add_argument(
        "--only",
        metavar="NAMES",
        help=f"comma-separated subset to run: {', '.join(SECTIONS)} (default: all)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="directory for latest.json and latest.md (default: benchmarks/results; a run "
        "with --only writes nothing unless this is given)",
    )
    args = parser.parse_args(argv)

    failures = {} if args.no_install else _common.install_missing()
    _common.ensure_src_importable()
    for module, reason in failures.items():
        print(f"warning: {module} unavailable ({reason}); its cases report n/a", flush=True)
    if "orjson" in failures:
        print("orjson is required for the baseline; install it and run again", file=sys.stderr)
        return 2

    only = frozenset(SECTIONS)
    if args.only:
        only = frozenset(name.strip() for name in args.only.split(",") if name.strip())
        unknown = only - set(SECTIONS)
        if unknown:
            parser.error(
                f"unknown --only names {sorted(unknown)}; choose from {', '.join(SECTIONS)}"
            )
    settings = Settings.quick() if args.quick else Settings.normal()
    started = time.perf_counter()
    try:
        report = asyncio.run(
            run_all(settings, failures, processes=not args.no_processes, only=only)
        )
    except RedisUnavailable as exc:
        print(f"cannot benchmark: {exc}", file=sys.stderr)
        return 2
    env = environment(settings, args.quick)
    env["seconds"] = round(time.perf_counter() - started, 1)

    print()
    print(render(report, env, markdown=False))
    print(f"(run took {env['seconds']} s)")
    output = args.output or (None if args.only else RESULTS_DIR)
    if output is None:
        print("partial run (--only): results not written; give --output DIR to write them")
        return 0
    output.mkdir(parents=True, exist_ok=True)
    (output / "latest.json").write_text(
        json.dumps(to_json(report, env), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    (output / "latest.md").write_text(render(report, env, markdown=True), encoding="utf-8")
    print(f"wrote {output / 'latest.json'} and {output / 'latest.md'}")
    results = to_json(report, env)
    pictures = [output / "latest.svg"]
    if output == RESULTS_DIR:
        pictures.append(_common.BENCH_DIR.parent / "docs" / "assets" / "benchmark.svg")
    if all(plot(results, picture) for picture in pictures):
        print("drew " + " and ".join(str(picture) for picture in pictures))
    else:
        print("no picture: matplotlib is not installed (pip install --group bench)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
