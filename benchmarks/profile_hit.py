"""Shows where a cachetier decorated hit spends its time, on Redis and on the memory backend.

Run from the repository root::

    python benchmarks/profile_hit.py              # cProfile, top 25 by own and cumulative time
    python benchmarks/profile_hit.py --pyinstrument   # a sampling call tree, when installed

Three views for each backend:

1. The hit path layer by layer, without a profiler: a bare read + ``orjson.loads``, the same
   read + pydantic's ``validate_json`` (what typed decode costs), ``cache.get``, and the whole
   decorated call untyped and typed, timed together in the interleaved rounds of
   ``_harness.py``.
2. The plain steps (key building, decode) alone in tight loops.
3. A cProfile of many hits (and, on Redis, of 100 concurrent calls); times are divided by the
   number of hits, so each row reads as "µs per hit". cProfile adds roughly 0.3-1 µs to every
   Python call it records, so the profile shows the shape; views 1 and 2 give magnitudes.

Last, a decorated call with Redis refusing connections is timed and profiled, after enough calls
for a circuit breaker to open.

Views 1 and 2 use public APIs only; a step that fails prints ``n/a`` with the reason.
"""

import argparse
import asyncio
import cProfile
import functools
import logging
import pstats
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import _common
from _common import DOCUMENT, REDIS_URL

ROUNDS = 5


async def per_call_us(call: Callable[[], Awaitable[object]], seconds: float) -> float:
    """Median over ``ROUNDS`` rounds of the mean µs per awaited call."""
    count = 0
    started = time.perf_counter_ns()
    while time.perf_counter_ns() - started < seconds * 2e8 or count < 20:
        await call()
        count += 1
    n = max(10, count)
    means = []
    for _ in range(ROUNDS):
        started = time.perf_counter_ns()
        for _ in range(n):
            await call()
        means.append((time.perf_counter_ns() - started) / n / 1000)
    return statistics.median(means)


def sync_per_call_us(call: Callable[[], object], seconds: float) -> float:
    """Median over ``ROUNDS`` rounds of the mean µs per plain call."""
    count = 0
    started = time.perf_counter_ns()
    while time.perf_counter_ns() - started < seconds * 2e8 or count < 20:
        call()
        count += 1
    means = []
    for _ in range(ROUNDS):
        started = time.perf_counter_ns()
        for _ in range(count):
            call()
        means.append((time.perf_counter_ns() - started) / count / 1000)
    return statistics.median(means)


async def components(
    function: Any, untyped: Any, cache: Any, raw: Any, seconds: float
) -> list[tuple[str, str]]:
    """Times the hit path of ``function(42)`` layer by layer, then its plain steps alone.

    The awaited layers are timed together by the interleaved harness of ``_harness.py``, so
    load from other processes does not favour one of them. They use public APIs only (plus
    pydantic's `TypeAdapter`, which typed decode uses), so they survive changes inside
    cachetier. The plain steps are timed alone in tight loops, where their code stays in the
    CPU caches: between network round trips they cost more than these figures.
    """
    import _harness as harness
    import orjson
    from pydantic import TypeAdapter

    # The entry format's one owner says where the payload starts (a plain entry, untagged).
    from cachetier._core.entry import HEADER_SIZE

    header_size = HEADER_SIZE

    relative = function.key_for(42)
    full = cache.keys.full(relative)
    backend = cache.backend
    data = await backend.get(full)
    payload = data[header_size:]
    adapter: TypeAdapter[dict[str, Any]] = TypeAdapter(dict[str, Any])
    reader = raw if raw is not None else backend
    where = "client" if raw is not None else "backend"

    async def base() -> object:
        return orjson.loads((await reader.get(full))[header_size:])

    async def typed() -> object:
        return adapter.validate_json((await reader.get(full))[header_size:])

    layers: list[tuple[str, Callable[[], Callable[[], Awaitable[object]]]]] = [
        (f"bare: {where}.get(key) + orjson.loads", lambda: base),
        (f"bare: {where}.get(key) + TypeAdapter(dict[str, Any]).validate_json", lambda: typed),
        (
            "cache.get(key): key, coalescing, header, stats, orjson",
            lambda: _partial(cache.get, relative),
        ),
        ("whole decorated hit, typed=False", lambda: functools.partial(untyped, 42)),
        ("whole decorated hit, typed (the default)", lambda: functools.partial(function, 42)),
    ]
    cases = []
    for index, (label, build) in enumerate(layers):
        cases.append(_case(harness, str(index), label, build))
    await harness.measure(cases, harness.Settings.normal())
    rows: list[tuple[str, str]] = []
    for case in cases:
        if case.median_ns is None:
            rows.append((case.label, f"n/a ({case.error})"))
            continue
        added = (case.median_ns - cases[0].median_ns) / 1000 if cases[0].median_ns else 0.0
        ratio = case.ratio_to(cases[0]) or 0.0
        rows.append((case.label, f"{case.median_ns / 1000:8.2f}  {ratio:5.3f}x  {added:+7.2f}"))

    plain: list[tuple[str, Callable[[], Callable[[], object]]]] = [
        ("key: function.key_for(42)", lambda: functools.partial(function.key_for, 42)),
        ("key: cache.keys.full(relative)", lambda: functools.partial(cache.keys.full, relative)),
        (
            "functools.partial(function, 42)",
            lambda: functools.partial(functools.partial, function, 42),
        ),
        ("payload slice data[HEADER_SIZE:]", lambda: lambda: data[header_size:]),
        (
            "TypeAdapter(dict[str, Any]).validate_json(payload)",
            lambda: functools.partial(adapter.validate_json, payload),
        ),
        ("orjson.loads(payload)", lambda: functools.partial(orjson.loads, payload)),
        ("clock: time.time()", lambda: time.time),
    ]
    rows += [(label, _time_plain(build, seconds)) for label, build in plain]
    return rows


def _partial(
    function: Callable[..., Awaitable[object]], *args: Any
) -> Callable[[], Awaitable[object]]:
    return functools.partial(function, *args)


def _case(harness: Any, key: str, label: str, build: Callable[[], Any]) -> Any:
    case = harness.Case(key, label)
    try:
        case.call = build()
    except Exception as exc:
        case.error = f"{type(exc).__name__}: {exc}"
    return case


def _time_plain(build: Callable[[], Callable[[], object]], seconds: float) -> str:
    try:
        return f"{sync_per_call_us(build(), seconds):8.2f}"
    except Exception as exc:
        return f"n/a ({type(exc).__name__}: {exc})"


async def _bare(raw: Any, key: str, skip: int, loads: Callable[[bytes], object]) -> object:
    data = await raw.get(key)
    return loads(data[skip:])


async def profile_hits(
    call: Callable[[], Awaitable[object]], hits: int, top: int, per: int = 1
) -> None:
    """Profiles ``hits`` awaited calls with cProfile; prints own-time and cumulative tops.

    Times are divided by ``hits * per``: ``per`` is the number of logical calls one awaited
    call makes (100 for a gathered batch).
    """
    hits_total = hits * per
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(hits):
        await call()
    profiler.disable()
    stats = pstats.Stats(profiler)
    entries = stats.stats  # type: ignore[attr-defined]  # pstats keeps its table here
    rows = []
    for (filename, line, name), (_, ncalls, tottime, cumtime, _) in entries.items():
        where = _short_path(filename, line)
        rows.append(
            (
                name,
                where,
                ncalls / hits_total,
                tottime / hits_total * 1e6,
                cumtime / hits_total * 1e6,
            )
        )
    for title, index in (("own time", 3), ("cumulative time", 4)):
        print(f"\n  top {top} by {title} (µs per hit; calls per hit)")
        print(f"  {'own µs':>8} {'cum µs':>8} {'calls':>6}  function")
        for name, where, calls, own, cumulative in sorted(rows, key=lambda r: -r[index])[:top]:
            print(f"  {own:8.2f} {cumulative:8.2f} {calls:6.2f}  {name}  ({where})")


async def pyinstrument_hits(call: Callable[[], Awaitable[object]], hits: int) -> None:
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.0001, async_mode="disabled")
    profiler.start()
    for _ in range(hits):
        await call()
    profiler.stop()
    print(profiler.output_text(unicode=True, color=False, show_all=False))


def _short_path(filename: str, line: int) -> str:
    for marker in ("/src/", "/site-packages/", "/lib/python"):
        if marker in filename:
            filename = filename.split(marker, 1)[1]
            break
    return f"{filename}:{line}" if line else filename


async def main(args: argparse.Namespace) -> None:
    import redis.asyncio as redis_asyncio

    from cachetier import Cache
    from cachetier.backends.memory import MemoryBackend
    from cachetier.backends.redis import RedisBackend

    logging.getLogger("cachetier").addHandler(logging.NullHandler())
    logging.getLogger("cachetier").propagate = False
    raw = redis_asyncio.Redis(host=_common.REDIS_HOST, port=_common.REDIS_PORT, db=_common.REDIS_DB)
    caches = {
        "Redis": Cache(RedisBackend.from_url(REDIS_URL), namespace="bench-profile"),
        "memory": Cache(MemoryBackend(), namespace="bench-profile"),
        "down": Cache(RedisBackend.from_url(_common.DOWN_URL), namespace="bench-profile"),
    }
    try:
        for label, cache in caches.items():
            if args.only and args.only != label.lower():
                continue
            if label == "down":
                await profile_down(cache, args)
                continue

            async def load_profile(user_id: int) -> dict[str, Any]:
                return DOCUMENT

            function = cache.cached(ttl=600)(load_profile)
            # Same function, so the same key: reads the entry the typed one wrote.
            untyped = cache.cached(ttl=600, typed=False)(load_profile)
            await function(42)
            await function(42)
            print(
                f"\n== cachetier @cached -> dict[str, Any] hit, {label} backend, 1 KB document =="
            )
            if not args.no_components:
                print("\n  hit path layer by layer (µs, ratio to the first line, µs over it)")
                rows = await components(
                    function, untyped, cache, raw if label == "Redis" else None, args.seconds
                )
                for number, (name, value) in enumerate(rows):
                    if number == 5:
                        print("\n  plain steps alone, in a tight loop (µs)")
                    print(f"  {value:<32}  {name}")
            hits = args.hits if label == "memory" else max(1, args.hits // 10)
            call = functools.partial(function, 42)
            for _ in range(200):
                await call()
            if args.pyinstrument:
                try:
                    await pyinstrument_hits(call, hits)
                    continue
                except ImportError:
                    print("  pyinstrument is not installed; using cProfile")
            await profile_hits(call, hits, args.top)
            print(f"\n  ({hits} hits profiled)")
            if label == "Redis" and not args.no_concurrent:

                async def hundred(function: Any = function) -> object:
                    return await asyncio.gather(*[function(42) for _ in range(100)])

                batches = max(1, hits // 100)
                print(f"\n== the same, 100 concurrent calls (asyncio.gather), {label} backend ==")
                print(f"  {await per_call_us(hundred, args.seconds) / 100:8.2f} µs per call")
                await profile_hits(hundred, batches, args.top, per=100)
                print(f"\n  ({batches} batches of 100 calls profiled; µs per call)")
    finally:
        for cache in caches.values():
            await cache.aclose()
        leftovers = [key async for key in raw.scan_iter("bench-profile:*")]
        if leftovers:
            await raw.delete(*leftovers)
        await raw.aclose()


async def profile_down(cache: Any, args: argparse.Namespace) -> None:
    """Profiles a decorated call while Redis refuses connections (the breaker, if any, open)."""

    async def load_profile(user_id: int) -> dict[str, Any]:
        return DOCUMENT

    function = cache.cached(ttl=600)(load_profile)
    call = functools.partial(function, 42)
    for _ in range(500):  # long enough for a breaker to open
        await call()
    print(f"\n== cachetier @cached call with Redis refusing connections ({_common.DOWN_URL}) ==")
    bare = await per_call_us(functools.partial(load_profile, 42), args.seconds)
    decorated = await per_call_us(call, args.seconds)
    print(f"  {bare:8.2f} µs  bare function\n  {decorated:8.2f} µs  decorated call")
    await profile_hits(call, args.hits, args.top)
    print(f"\n  ({args.hits} calls profiled)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--hits", type=int, default=20_000, help="memory hits to profile")
    parser.add_argument("--top", type=int, default=25, help="rows per profile table")
    parser.add_argument("--seconds", type=float, default=1.0, help="scale of component timings")
    parser.add_argument(
        "--only",
        choices=("redis", "memory", "down"),
        help="profile one case: a Redis hit, a memory hit, or a call with Redis down",
    )
    parser.add_argument("--pyinstrument", action="store_true", help="use pyinstrument")
    parser.add_argument("--no-components", action="store_true", help="skip component timings")
    parser.add_argument(
        "--no-concurrent", action="store_true", help="skip the 100-concurrent-calls profile"
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    _common.ensure_src_importable()
    failures = _common.install_missing()
    if "orjson" in failures:
        sys.exit(f"orjson is required: {failures['orjson']}")
    asyncio.run(main(arguments))
