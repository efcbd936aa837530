"""Stores for the consistency model: one shared store, many backends, each with seeded delays.

Every backend a model run builds sits over one store (one `MemoryBackend`, one fakeredis
server, one Redis database or one Redis Cluster), as several processes share one Redis. Each
backend gets its own `Jitter`, which pauses before a command reaches the store and after its
reply arrives, so that the model's scheduler decides how commands and replies interleave:

- memory: a wrapper around the shared `MemoryBackend` that pauses around every call. It does
  not say ``in_process = True``, so the cache merges concurrent reads over it exactly as over
  Redis. ``memory-inproc`` is the bare `MemoryBackend` (no merging, no pauses).
- fakeredis, redis, cluster: redis-py connection classes whose ``send_packed_command`` pauses
  before writing and whose reads pause inside ``read_response`` (where a cancelled read closes
  the connection, as in redis-py itself), given to the client that
  `RedisBackend(client)` / `RedisClusterBackend(client)` wraps. Commands, Lua scripts,
  pipelines and pub/sub all go through them.

Only public cachetier API is used; the redis-py and fakeredis hooks are their public classes.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import random
import uuid
import warnings
from collections.abc import AsyncIterator, Callable
from typing import Any

# Imported here, not where a store is built: a first import deep in a model run's call stack
# trips CPython 3.11's AST recursion check under pytest's assertion rewriting.
from cachetier.backends import Backend, MemoryBackend, RedisClusterBackend

__all__ = ("STORE_KINDS", "Jitter", "ModelStore")

STORE_KINDS = ("memory", "memory-inproc", "fakeredis", "redis", "cluster")


class Jitter:
    """Seeded pauses: none, a few bare yields, or (``real=True``) a sleep of up to 3 ms.

    With ``real=False`` only ``sleep(0)`` is used, so a run over an in-process store is fully
    determined by its seed and replays exactly.
    """

    def __init__(self, rng: random.Random, *, real: bool) -> None:
        self.rng = rng
        self.real = real
        self.pauses = 0

    async def pause(self) -> None:
        roll = self.rng.random()
        if roll < 0.35:
            return
        self.pauses += 1
        if roll < 0.9 or not self.real:
            for _ in range(self.rng.randint(1, 4)):
                await asyncio.sleep(0)
        else:
            await asyncio.sleep(self.rng.random() * 0.003)


# -- memory ----------------------------------------------------------------------------------


def _paused_method(name: str) -> Callable[..., Any]:
    async def method(self: DelayedBackend, *args: Any, **kwargs: Any) -> Any:
        await self.jitter.pause()
        result = await getattr(self.inner, name)(*args, **kwargs)
        await self.jitter.pause()
        return result

    method.__name__ = method.__qualname__ = name
    return method


def _paused_generator(name: str) -> Callable[..., Any]:
    async def method(self: DelayedBackend, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        async for item in getattr(self.inner, name)(*args, **kwargs):
            await self.jitter.pause()
            yield item

    method.__name__ = method.__qualname__ = name
    return method


def _forwarded(name: str) -> Callable[..., Any]:
    def method(self: DelayedBackend, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.inner, name)(*args, **kwargs)

    method.__name__ = method.__qualname__ = name
    return method


class DelayedBackend:
    """A `MemoryBackend` seen as a remote store: each call pauses before and after it runs.

    The methods are copied from `MemoryBackend`'s public ones when this module loads, as real
    methods (not ``__getattr__``), so ``isinstance`` checks against the backend protocols see
    exactly the abilities the memory backend has, whatever the engine's version asks for.
    """

    in_process = False  # a remote store, as far as read merging is concerned

    def __init__(self, inner: MemoryBackend, jitter: Jitter) -> None:
        self.inner = inner
        self.jitter = jitter

    @property
    def kind(self) -> str:
        return self.inner.kind

    async def aclose(self) -> None:
        """Leaves the shared store open: the other "processes" still use it."""


for _name, _member in vars(MemoryBackend).items():
    if _name.startswith("_") or _name in vars(DelayedBackend):
        continue
    if inspect.isasyncgenfunction(_member):
        setattr(DelayedBackend, _name, _paused_generator(_name))
    elif inspect.iscoroutinefunction(_member):
        setattr(DelayedBackend, _name, _paused_method(_name))
    elif inspect.isfunction(_member):
        setattr(DelayedBackend, _name, _forwarded(_name))


# -- redis-py connections ----------------------------------------------------------------------


_HANDSHAKE = (b"HELLO", b"AUTH", b"SELECT", b"CLIENT", b"hello", b"auth", b"select", b"client")


def _is_handshake(command: Any) -> bool:
    """Whether a packed command is one redis-py sends while it sets a new connection up."""
    if isinstance(command, list | tuple):
        first = command[0] if command else b""
    elif isinstance(command, bytes | str):
        first = command
    else:
        return False  # an iterator: looking would consume it
    head = (first.encode() if isinstance(first, str) else bytes(first))[:40]
    return any(word in head for word in _HANDSHAKE)


def delayed_connection_class(base: type[Any], jitter: Jitter) -> type[Any]:
    """A subclass of the redis-py connection class ``base`` that pauses around each command."""

    class DelayedConnection(base):  # type: ignore[misc, valid-type]  # a class made at run time
        async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            # No pause inside the handshake of a new connection (HELLO, AUTH, SELECT, CLIENT
            # SETINFO): redis-py gives no cancellation point there, and a task cancelled at one
            # would leave a connection open without its SELECT, talking to database 0.
            if not _is_handshake(command):
                await jitter.pause()
            await super().send_packed_command(command, check_health)

        # The reply's delay is taken inside `read_response`, where redis-py closes the
        # connection if the read is cancelled, as a slow reply from the network would be. A pause
        # after `read_response` returned would be a cancellation point that redis-py does not
        # have: cancelling a pipeline there leaves its other replies unread on a connection that
        # goes back to the pool.
        async def _read_response_from_parser(self, *args: Any, **kwargs: Any) -> Any:
            await jitter.pause()
            return await super()._read_response_from_parser(*args, **kwargs)

    return DelayedConnection


# -- one store, many backends ----------------------------------------------------------------


class ModelStore:
    """Makes backends over one store; ``cleanup`` removes what the run left there."""

    def __init__(self, kind: str, *, url: str | None = None) -> None:
        if kind not in STORE_KINDS:
            raise ValueError(f"unknown store kind {kind!r}; one of {STORE_KINDS}")
        self.kind = kind
        self.url = url
        self.namespace = f"model-{uuid.uuid4().hex[:12]}"
        self.jitters: list[Jitter] = []
        self._memory = MemoryBackend() if kind.startswith("memory") else None
        self._fake_server: Any = None
        if kind == "fakeredis":
            import fakeredis

            self._fake_server = fakeredis.FakeServer()

    @property
    def deterministic(self) -> bool:
        """Whether a seed replays exactly (no socket, no real sleep)."""
        return self.kind.startswith("memory") or self.kind == "fakeredis"

    def backend(self, rng: random.Random) -> Backend:
        """A new backend over the shared store, standing for one more process."""
        jitter = Jitter(random.Random(rng.random()), real=not self.deterministic)
        self.jitters.append(jitter)
        if self.kind == "memory":
            assert self._memory is not None
            return DelayedBackend(self._memory, jitter)  # type: ignore[return-value]  # structural
        if self.kind == "memory-inproc":
            assert self._memory is not None
            return self._memory
        from cachetier.backends import RedisBackend

        if self.kind == "fakeredis":
            import fakeredis

            base = fakeredis.FakeAsyncRedis(server=self._fake_server).connection_pool
            client = fakeredis.FakeAsyncRedis(
                server=self._fake_server,
                connection_class=delayed_connection_class(base.connection_class, jitter),
            )
            return RedisBackend(client, owns_client=True)
        if self.kind == "redis":
            import redis.asyncio as redis_asyncio

            assert self.url is not None
            pool = redis_asyncio.ConnectionPool.from_url(
                self.url,
                connection_class=delayed_connection_class(redis_asyncio.Connection, jitter),
                socket_timeout=5.0,
                socket_connect_timeout=2.0,
            )
            return RedisBackend(redis_asyncio.Redis(connection_pool=pool), owns_client=True)
        return self._cluster_backend(jitter)

    def _cluster_backend(self, jitter: Jitter) -> Backend:
        from redis.asyncio import Connection
        from redis.asyncio.cluster import RedisCluster

        assert self.url is not None
        host, _, port = self.url.removeprefix("redis+cluster://").split(",")[0].partition(":")
        client = RedisCluster(host=host, port=int(port), socket_timeout=5.0)
        # RedisCluster takes no connection_class argument; its nodes read it from these
        # keyword arguments when they are made (topology refreshes included).
        connection_class = delayed_connection_class(Connection, jitter)
        client.connection_kwargs["connection_class"] = connection_class
        for node in client.nodes_manager.startup_nodes.values():
            node.connection_class = connection_class
        return RedisClusterBackend(client, owns_client=True)

    async def cleanup(self) -> None:
        """Deletes this run's keys (its namespace only) from a shared Redis or cluster."""
        # Connections redis-py closed without waiting (a cancelled read closes its connection)
        # finish closing in the next turns of the loop: let them, before the test's loop ends.
        for _ in range(3):
            await asyncio.sleep(0.01)
        # Collected here, with their warnings silenced, rather than by a later test's garbage
        # collection, where they would fail that test under filterwarnings=error.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()
        if self.kind == "redis":
            import redis.asyncio as redis_asyncio

            assert self.url is not None
            client = redis_asyncio.Redis.from_url(self.url, socket_timeout=5)
            try:
                keys = [k async for k in client.scan_iter(match=f"*{self.namespace}*", count=1000)]
                for start in range(0, len(keys), 500):
                    await client.unlink(*keys[start : start + 500])
            finally:
                await client.aclose()
        elif self.kind == "cluster":
            from redis.asyncio.cluster import RedisCluster

            assert self.url is not None
            host, _, port = self.url.removeprefix("redis+cluster://").split(",")[0].partition(":")
            cluster = RedisCluster(host=host, port=int(port), socket_timeout=5.0)
            try:
                async for key in cluster.scan_iter(match=f"*{self.namespace}*", count=1000):
                    await cluster.unlink(key)
            finally:
                await cluster.aclose()
