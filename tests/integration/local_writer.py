"""Process A of the two-tier tests: changes keys on command, through its own `Cache`.

Run as ``python local_writer.py URL NAMESPACE``; reads commands from stdin, one per line
(``set KEY VALUE``, ``delete KEY``, ``tag TAG``, ``bump``, ``pattern GLOB``), carries each out and
answers ``done`` with the wall-clock time it finished, so the test can time process B.
"""

from __future__ import annotations

import asyncio
import sys
import time

from cachetier import Cache
from cachetier.backends import RedisBackend


async def main(url: str, namespace: str) -> None:
    loop = asyncio.get_running_loop()
    async with Cache(
        RedisBackend.from_url(url, command_timeout=2.0), namespace=namespace, default_ttl=60
    ) as cache:
        print("ready", flush=True)
        while line := (await loop.run_in_executor(None, sys.stdin.readline)).strip():
            command, *args = line.split()
            if command == "set":
                await cache.set(args[0], args[1], tags=["group"])
            elif command == "delete":
                await cache.delete(args[0])
            elif command == "tag":
                await cache.invalidate_tags(args[0])
            elif command == "bump":
                await cache.bump_version()
            elif command == "pattern":
                await cache.delete_pattern(args[0])
            print(f"done {time.time()}", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
