"""`Cache.delete_pattern` over 1,000,000 keys, with a PING loop watching Redis stay responsive.

Run from the repository root with the project's virtualenv::

    python benchmarks/delete_pattern.py              # 1,000,000 keys, about a minute
    python benchmarks/delete_pattern.py --keys 100000

It starts a redis-server of its own on a free loopback port (nothing else is touched), fills it
with ``--keys`` entries under the cache's namespace plus as many keys the pattern must not
reach, and then, while a second connection sends PING back to back and times each answer:

1. ``cache.delete_pattern("item:*")``: SCAN + UNLINK in batches, as cachetier does it;
2. for contrast, the same deletion done the naive way, ``KEYS`` then ``UNLINK`` in batches.

It prints how long each took and the largest, p99 and median PING latency seen meanwhile, and
writes them to ``benchmarks/results/delete_pattern.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as redis_asyncio

from cachetier import Cache
from cachetier.backends import RedisBackend

RESULTS = Path(__file__).resolve().parent / "results" / "delete_pattern.md"
NAMESPACE = "bench"
FILL_BATCH = 10_000


@dataclass
class Run:
    name: str
    seconds: float
    deleted: int
    pings: list[float]

    def row(self) -> str:
        pings = sorted(self.pings)
        p99 = pings[min(len(pings) - 1, int(len(pings) * 0.99))]
        return (
            f"| {self.name} | {self.deleted:,} | {self.seconds:.2f} s "
            f"| {self.deleted / self.seconds:,.0f} | {len(pings):,} | {max(pings) * 1e3:.2f} ms "
            f"| {p99 * 1e3:.2f} ms | {statistics.median(pings) * 1e3:.3f} ms |"
        )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def fill(client: redis_asyncio.Redis, keys: int) -> None:
    """Writes ``keys`` cache keys and as many keys outside the pattern, in pipelined MSETs."""
    value = b"x" * 100
    for start in range(0, keys, FILL_BATCH):
        stop = min(start + FILL_BATCH, keys)
        pipe = client.pipeline(transaction=False)
        pipe.mset({f"{NAMESPACE}:v1:item:{i}": value for i in range(start, stop)})
        pipe.mset({f"{NAMESPACE}:v1:other:{i}": value for i in range(start, stop)})
        await pipe.execute()


async def watched(name: str, url: str, work: Callable[[], Awaitable[int]]) -> Run:
    """Runs ``work`` while another connection PINGs in a loop; returns the timings."""
    pinger = redis_asyncio.Redis.from_url(url)
    await pinger.ping()
    pings: list[float] = []
    done = asyncio.Event()

    async def ping_loop() -> None:
        while not done.is_set():
            started = time.perf_counter()
            await pinger.ping()
            pings.append(time.perf_counter() - started)

    task = asyncio.create_task(ping_loop())
    await asyncio.sleep(0.05)
    started = time.perf_counter()
    deleted = await work()
    seconds = time.perf_counter() - started
    done.set()
    await task
    await pinger.aclose()
    return Run(name, seconds, deleted, pings)


async def naive(client: redis_asyncio.Redis) -> int:
    keys = await client.keys(f"{NAMESPACE}:v1:item:*")
    deleted = 0
    for start in range(0, len(keys), 500):
        deleted += await client.unlink(*keys[start : start + 500])
    return deleted


async def main(keys: int) -> int:
    server = shutil.which("redis-server")
    if server is None:
        print("redis-server is not installed", file=sys.stderr)
        return 2
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    with tempfile.TemporaryDirectory() as directory:
        process = subprocess.Popen(  # noqa: ASYNC220  # started once, before any timing
            [server, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
             "--appendonly", "no", "--dir", directory],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            client = redis_asyncio.Redis.from_url(url)
            for _ in range(100):
                try:
                    await client.ping()
                    break
                except (redis_asyncio.ConnectionError, OSError):
                    await asyncio.sleep(0.05)
            runs: list[Run] = []
            for name in ("cachetier delete_pattern (SCAN + UNLINK)", "naive KEYS + UNLINK"):
                await client.flushdb()
                started = time.perf_counter()
                await fill(client, keys)
                print(f"filled {2 * keys:,} keys in {time.perf_counter() - started:.1f} s")
                if name.startswith("cachetier"):
                    # The cache's own timeouts would count a slow SCAN as an outage; give the
                    # benchmark room, since what is measured is the server's responsiveness.
                    cache = Cache(
                        RedisBackend.from_url(url, command_timeout=5.0), namespace=NAMESPACE
                    )
                    run = await watched(
                        name, url, lambda cache=cache: cache.delete_pattern("item:*")
                    )
                    await cache.aclose()
                else:
                    run = await watched(name, url, lambda: naive(client))
                left = await client.dbsize()
                assert left == keys, f"{left} keys left, expected the {keys} outside the pattern"
                runs.append(run)
                print(run.row())
            await client.aclose()
        finally:
            process.terminate()
            process.wait(10)
    header = (
        "| deletion | keys | took | keys/s | PINGs meanwhile | max PING | p99 PING | median PING |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|"
    )
    table = "\n".join([header, *(run.row() for run in runs)])
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        "# delete_pattern over a large keyspace\n\n"
        f"`python benchmarks/delete_pattern.py --keys {keys}`: {keys:,} matching keys among "
        f"{2 * keys:,}, a private redis-server, a second connection PINGing back to back.\n\n"
        + table
        + "\n"
    )
    print(table)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_000_000, help="keys matching the pattern")
    sys.exit(asyncio.run(main(parser.parse_args().keys)))
