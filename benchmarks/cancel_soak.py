"""A long cancellation soak (issue 17): no cancelled call may make any call see another key's value.

Run from the repository root with the project's virtualenv::

    python benchmarks/cancel_soak.py                        # 400,000 calls on Redis, about a minute
    python benchmarks/cancel_soak.py --calls 400000 --cancel-rate 0.37 --backend redis \\
        --seed 1 --url redis://127.0.0.1:6379/11
    python benchmarks/cancel_soak.py --backend memory-remote --seed 5 --calls 50000   # replay

It runs the storm of ``tests/integration/test_cancellation.py`` for longer: concurrent calls over
a small key set whose values encode their key, half decorated calls (hits, misses,
invalidations) and half `Cache.get`, `get_many`, `set` and `delete`, each cancelled or not
after a random number of event-loop turns or a random time, so cancellations land at every await
point. It prints the calls made, completed and cancelled (and where the cancellations landed),
the wrong values, the timeouts, and the throughput, then checks every key once more with no
cancellation. Exits 1 on any wrong value, failed or hung call, undecodable entry, failed last
pass, or cancellation lost where Python's `asyncio.wait_for` does not explain it (see the test).

``--backend`` is redis, local (Redis with a `LocalTier`), cluster (a Redis Cluster), fakeredis,
memory (a bare `MemoryBackend`) or memory-remote (one seen as a remote store: reads merged,
pauses around each call). Redis is ``--url`` (database 14 by default, or
``CACHETIER_BENCH_REDIS_*``); only this run's namespace is written, and it is removed at the
end: nothing is flushed. For cluster, ``--url`` is a ``redis+cluster://`` URL, or, left out, a
cluster of three primaries started for the run (redis-server and redis-cli on PATH)::

    python benchmarks/cancel_soak.py --backend cluster --calls 400000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from _common import REDIS_URL, ensure_src_importable

ROOT = Path(__file__).resolve().parent.parent
ensure_src_importable()
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the storm lives in the test suite: one storm, two sizes

from tests.integration.test_cancellation import (  # noqa: E402
    KINDS,
    REDIS_KINDS,
    Decorated,
    Op,
    Reads,
    Tally,
    last_pass,
    open_cache,
    storm,
    verdict,
)
from tests.servers import running_cluster  # noqa: E402

PROGRESS_EVERY = 10.0


class TimeoutCounter:
    """Counts the redis-py commands that timed out while active (reads and writes of a reply)."""

    def __init__(self) -> None:
        self.count = 0
        self._originals: dict[str, Any] = {}

    def __enter__(self) -> TimeoutCounter:
        from redis.asyncio.connection import AbstractConnection
        from redis.exceptions import TimeoutError as RedisTimeoutError

        for name in ("read_response", "send_packed_command"):
            original = self._originals[name] = getattr(AbstractConnection, name)

            def counted(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
                async def run() -> Any:
                    try:
                        return await _original(*args, **kwargs)
                    except (RedisTimeoutError, asyncio.TimeoutError):
                        self.count += 1
                        raise

                return run()

            setattr(AbstractConnection, name, counted)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        from redis.asyncio.connection import AbstractConnection

        for name, original in self._originals.items():
            setattr(AbstractConnection, name, original)


def mixed(decorated: Decorated, reads: Reads) -> Callable[[random.Random], Op]:
    """Half decorated calls, half `get`/`get_many`/`set`/`delete`, over one cache."""

    def next_op(rng: random.Random) -> Op:
        return decorated.next_op(rng) if rng.random() < 0.5 else reads.next_op(rng)

    return next_op


async def report(tally: Tally) -> None:
    """Prints the progress every `PROGRESS_EVERY` seconds."""
    started = time.perf_counter()
    while True:
        await asyncio.sleep(PROGRESS_EVERY)
        rate = tally.calls / (time.perf_counter() - started)
        print(
            f"  {tally.calls:>9,} calls  {tally.cancelled:>8,} cancelled  "
            f"{len(tally.wrong)} wrong  {len(tally.errors)} failed  {rate:,.0f} calls/s",
            flush=True,
        )


async def main(args: argparse.Namespace, url: str | None) -> int:
    print(
        f"cancel soak: backend {args.backend}{f' at {url}' if url else ''}, seed {args.seed}, "
        f"{args.calls:,} calls, cancel rate {args.cancel_rate}, concurrency {args.concurrency}, "
        f"command timeout {args.command_timeout} s",
        flush=True,
    )
    with TimeoutCounter() as timeouts:
        async with open_cache(
            args.backend,
            args.seed,
            url,
            connect_timeout=max(args.command_timeout, 0.25),
            command_timeout=args.command_timeout,
        ) as cache:
            decorated = Decorated(cache, args.seed)
            reads = Reads(cache, args.seed)
            assert await reads.fill(), "the backend took no write"
            tally = Tally(args.seed)
            reporter = asyncio.create_task(report(tally))
            await storm(
                mixed(decorated, reads),
                seed=args.seed,
                calls=args.calls,
                concurrency=args.concurrency,
                cancel_rate=args.cancel_rate,
                state=decorated.state,
                tally=tally,
            )
            reporter.cancel()
            final = await last_pass(decorated) + await last_pass(reads)
            stats = cache.stats
            problems = verdict(tally, cache, final)

    def listed(counts: dict[str, int]) -> str:
        ordered = sorted(counts.items(), key=lambda item: -item[1])
        return ", ".join(f"{name} {count:,}" for name, count in ordered) or "-"

    rows = [
        ("calls made", f"{tally.calls:,}"),
        ("completed", f"{tally.completed:,}"),
        ("cancelled", f"{tally.cancelled:,} ({tally.cancelled / max(tally.calls, 1):.1%})"),
        ("cancelled at", listed(tally.phases)),
        ("cancel lost", f"{sum(tally.swallowed.values()):,} at {listed(tally.swallowed)}"),
        ("cancel too late", f"{tally.late:,} (the call had finished)"),
        ("wrong values", f"{len(tally.wrong):,}"),
        ("failed calls", f"{len(tally.errors):,}"),
        ("undecodable reads", f"{stats.decode_errors:,}"),
        ("last pass", "ok" if not final else f"{len(final)} problems"),
        ("timeouts", f"{timeouts.count:,} (backend errors, failed open: {stats.backend_errors:,})"),
        ("hits / misses", f"{stats.hits:,} / {stats.misses:,}"),
        ("throughput", f"{tally.calls / tally.seconds:,.0f} calls/s over {tally.seconds:.1f} s"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    for problem in problems:
        print(f"  {problem}")
    if problems:
        print(f"FAILED: replay with --backend {args.backend} --seed {args.seed}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=400_000)
    parser.add_argument("--cancel-rate", type=float, default=0.37)
    parser.add_argument("--backend", choices=KINDS, default="redis")
    parser.add_argument("--seed", type=int, default=None, help="a random one when omitted")
    parser.add_argument("--url", default=REDIS_URL, help=f"for redis and local; {REDIS_URL}")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument(
        "--command-timeout", type=float, default=0.1, help="RedisBackend's (0.1 s by default)"
    )
    arguments = parser.parse_args()
    if arguments.seed is None:
        arguments.seed = random.SystemRandom().randrange(1_000_000)
    with contextlib.ExitStack() as stack:
        url = arguments.url if arguments.backend in REDIS_KINDS else None
        if arguments.backend == "cluster" and not (url or "").startswith("redis+cluster"):
            directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="soak-cluster"))
            url = stack.enter_context(running_cluster(Path(directory))).url
        status = asyncio.run(main(arguments, url))
    sys.exit(status)
