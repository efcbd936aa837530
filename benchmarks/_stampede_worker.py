"""One process of the cross-process stampede benchmark: concurrent misses of one shared key.

``run.py`` starts several of these with the ``spawn`` method; each waits on a barrier so that
all processes miss at the same moment, then reports how often its body ran and which Redis
commands it sent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from _common import DOCUMENT, REDIS_URL, CommandCounter, ensure_src_importable, locking_note

FETCH_SECONDS = 0.05


def run_worker(library: str, arg: int, calls: int, barrier: Any, results: Any) -> None:
    """Process entry point: puts a result dict (or ``{"error": ...}``) on ``results``."""
    try:
        ensure_src_importable()
        result = asyncio.run(_worker(library, arg, calls, barrier))
    except Exception as exc:
        result = {"error": f"{type(exc).__name__}: {exc}"}
    results.put(result)


async def _worker(library: str, arg: int, calls: int, barrier: Any) -> dict[str, Any]:
    logging.getLogger("cachetier").addHandler(logging.NullHandler())
    logging.getLogger("cachetier").propagate = False
    runs = 0

    async def shared_profile(user_id: int) -> dict[str, Any]:
        nonlocal runs
        runs += 1
        await asyncio.sleep(FETCH_SECONDS)
        return DOCUMENT

    note = ""
    if library == "cachetier":
        from cachetier import Cache
        from cachetier.backends.redis import RedisBackend

        cache = Cache(RedisBackend.from_url(REDIS_URL), namespace="bench-stampede")
        function: Any = cache.cached(ttl=600, lock=True)(shared_profile)
        close: Any = cache.aclose
        note = locking_note(cache.backend)
    elif library == "cashews":
        import cashews

        cashews_cache = cashews.Cache()
        cashews_cache.setup(REDIS_URL, pickle_type="json", client_side=False)
        function = cashews_cache(ttl=600, lock=True)(shared_profile)
        close = cashews_cache.close
    else:
        raise ValueError(f"unknown library {library!r}")

    # All processes start missing together; the barrier is the only blocking call, made
    # before the event loop has anything else to do.
    barrier.wait(timeout=60)
    started = time.perf_counter()
    try:
        with CommandCounter() as counter:
            outcomes = await asyncio.gather(
                *(function(arg) for _ in range(calls)), return_exceptions=True
            )
    finally:
        await close()
    failed = [o for o in outcomes if isinstance(o, BaseException)]
    wrong = sum(1 for o in outcomes if not isinstance(o, BaseException) and o != DOCUMENT)
    stats = getattr(function, "stats", None)
    return {
        "backend_errors": getattr(stats, "backend_errors", None),
        "locking_note": note,
        "runs": runs,
        "commands": counter.total,
        "by_command": dict(counter.by_name),
        "errors": len(failed),
        "first_error": f"{type(failed[0]).__name__}: {failed[0]}" if failed else None,
        "wrong_values": wrong,
        "seconds": time.perf_counter() - started,
    }
