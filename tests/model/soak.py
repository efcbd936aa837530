"""Long soak of the consistency model, and the replay of one seed.

    .venv/bin/python -m tests.model.soak --store memory --seeds 500 --steps 400
    .venv/bin/python -m tests.model.soak --store fakeredis --seed 17 --steps 150   # replay
    .venv/bin/python -m tests.model.soak --store redis --seconds 600 --interval 1

``--store`` is one of memory, memory-inproc, fakeredis, redis (``--url``, DB 15 by default; only
this run's namespace is touched and removed) or cluster (three primaries started here on free
loopback ports, stopped at the end). Exits 1 when any seed finds a violation and prints, for
each, its report: the seed, the failing step and the tail of the operation log.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from .model import ModelConfig, ModelResult, run_model
from .stores import STORE_KINDS, ModelStore

DEFAULT_URL = "redis://127.0.0.1:6379/15"


@contextlib.contextmanager
def _cluster_url() -> Iterator[str]:
    from ..servers import running_cluster

    with tempfile.TemporaryDirectory() as directory, running_cluster(Path(directory)) as cluster:
        yield cluster.url


async def run_one(config: ModelConfig, url: str | None) -> ModelResult:
    store = ModelStore(config.store, url=url)
    try:
        return await run_model(config, store)
    finally:
        await store.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.model.soak", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--store", choices=STORE_KINDS, default="memory")
    parser.add_argument("--seed", type=int, default=None, help="run (replay) this seed only")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument(
        "--seconds", type=float, default=None, help="run seeds until this much time passed"
    )
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--interval", type=float, default=0.0, help="version_check_interval")
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument(
        "--keep-going", action="store_true", help="do not stop at the first failing seed"
    )
    args = parser.parse_args(argv)

    with contextlib.ExitStack() as stack:
        url: str | None = None
        if args.store == "redis":
            url = args.url
        elif args.store == "cluster":
            url = stack.enter_context(_cluster_url())
        seeds: Iterator[int]
        if args.seed is not None:
            seeds = iter([args.seed])
        elif args.seconds is not None:
            seeds = iter(range(args.first_seed, sys.maxsize))
        else:
            seeds = iter(range(args.first_seed, args.first_seed + args.seeds))
        started = time.monotonic()
        failed = ran = 0
        for seed in seeds:
            if args.seconds is not None and time.monotonic() - started > args.seconds:
                break
            config = ModelConfig(
                store=args.store, seed=seed, steps=args.steps, interval=args.interval
            )
            result = asyncio.run(run_one(config, url))
            ran += 1
            if result.violations or result.errors:
                failed += 1
                print(result.report(), flush=True)
                if not args.keep_going:
                    break
            elif args.seed is not None:
                print(f"seed {seed}: no violation; {dict(sorted(result.counts.items()))}")
        print(
            f"{ran} seeds on {args.store} (steps={args.steps}, interval={args.interval:g}) "
            f"in {time.monotonic() - started:.1f} s: {failed} failed"
        )
        return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
