"""`RedisClusterBackend`: the `Backend` protocol over redis-py's asyncio Redis Cluster client.

Reached through `RedisBackend.from_url` with a ``redis+cluster://`` or ``rediss+cluster://``
URL, or built over a ``redis.asyncio.cluster.RedisCluster`` the caller already has.

Redis Cluster refuses a command whose keys lie in different hash slots (CROSSSLOT), so every
operation on several keys is split here, never left to fail:

- `get` and `get_many` (cache reads): over held, auto-pipelined connections to each primary,
  routed by the client's slot map (`slots.SlotReads`), one MGET per slot, all sent at once;
  a read the map routes wrong (MOVED, ASK) or whose primary is gone goes to the client. A
  client given to ``RedisClusterBackend(client)``, or one with a health check interval, reads
  through the client: one MGET per slot, all pipelined, one round trip per primary.
- `set_many`: one SET (with ``PX`` when there is a ttl) per key in one pipeline, grouped by
  node: one round trip per primary.
- `delete`: one UNLINK per slot, pipelined per node.
- `scan`: SCAN on every primary in turn, each to its own cursor's end.
- scripts (lock release, guarded writes, counters with a ttl) touch one key each, and tag
  stamps one slot each: one script per slot of the tag keys, the slots concurrently.
- `invalidations` (for a `LocalTier`): each primary reports changes of its own keys only, so
  it follows one tracking connection per primary.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, ClassVar, Final, cast, final

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import Connection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from ..._errors import BackendError, ConfigurationError
from ..._redact import redact_url
from .._protocol import Notifications
from .commands import SingleKeyCommands, Subscription
from .commands import px as _px
from .errors import CLUSTER_FAILURES as _CLUSTER_FAILURES
from .errors import CLUSTER_URL_ERRORS, RedisErrors
from .scripts import INCR_WITH_TTL, RELEASE_LOCK, SET_IF, TAG_BUMP, TAG_STAMPS
from .slots import SlotReads
from .tracking import TrackingChannel, follow
from .tracking import decode_keys as _decode_keys
from .urls import split_hosts

__all__ = ("RedisClusterBackend",)

_INFO_SUMS: Final = (
    ("connected_clients", "connected_clients"),
    ("instantaneous_ops_per_sec", "ops_per_sec"),
)

_MEBIBYTE: Final = 1024 * 1024

_CLUSTER_PORT: Final = 6379

# The connection options of the cluster's nodes that a plain connection to one node takes as
# well: credentials, timeouts and keepalive (TLS options, ``ssl_*``, are added to them). Used by
# the client that lock wake-ups are published and subscribed on, and by tracking connections.
_NODE_CLIENT_OPTIONS: Final = frozenset(
    {
        "username",
        "password",
        "credential_provider",
        "client_name",
        "socket_timeout",
        "socket_connect_timeout",
        "socket_keepalive",
        "socket_keepalive_options",
        "health_check_interval",
    }
)


@final
class RedisClusterBackend(SingleKeyCommands):
    """A backend storing bytes in a Redis Cluster through redis-py's asyncio cluster client.

    Build one with `RedisBackend.from_url` and a ``redis+cluster://`` URL (it owns its client
    then), or wrap a ``RedisCluster`` you already have with ``RedisClusterBackend(client)``. The
    client must return ``bytes``.

    It offers what `RedisBackend` offers (locks and wake-ups, guarded writes and tags, server
    facts, and the change reports a `LocalTier` needs), with every multi-key operation split by
    hash slot (see the module docstring). Lock wake-ups are published to, and received from,
    one primary through a plain client of this backend's own; the cluster forwards every
    PUBLISH to every node.
    """

    failures: ClassVar[tuple[type[BaseException], ...]] = _CLUSTER_FAILURES
    _client: RedisCluster

    __slots__ = (
        "_client",
        "_errors",
        "_get",
        "_incr_with_ttl",
        "_label",
        "_node_client",
        "_owns_client",
        "_reads",
        "_release",
        "_scripts_loaded",
        "_set_if",
        "_tag_bump",
        "_tag_stamps",
    )

    def __init__(self, client: RedisCluster, *, owns_client: bool = False) -> None:
        """Wraps ``client``; `aclose` closes it only when ``owns_client`` is true.

        Raises:
            ConfigurationError: ``client`` decodes responses to ``str``.
        """
        connection_kwargs = client.get_connection_kwargs()
        if connection_kwargs.get("decode_responses"):
            raise ConfigurationError(
                "RedisClusterBackend needs a client that returns bytes; create it without "
                "decode_responses=True"
            )
        self._client = client
        self._owns_client = owns_client
        self._label = f"client={type(client).__name__}"
        self._errors = RedisErrors(
            connection_kwargs,
            cluster=True,
            # The per-node pool size.
            pool_size=lambda: client.get_connection_kwargs().get("max_connections"),
        )
        # Checked above not to decode, so GET returns bytes or None.
        self._get = cast("Callable[[str], Awaitable[bytes | None]]", client.get)
        self._reads: SlotReads | None = None
        self._release = client.register_script(RELEASE_LOCK)
        self._set_if = client.register_script(SET_IF)
        self._incr_with_ttl = client.register_script(INCR_WITH_TTL)
        self._tag_stamps = client.register_script(TAG_STAMPS)
        self._tag_bump = client.register_script(TAG_BUMP)
        # A plain client of one primary, for PUBLISH and SUBSCRIBE; made on first use.
        self._node_client: Redis | None = None
        self._scripts_loaded = False

    @classmethod
    def _from_url(
        cls,
        url: str,
        *,
        connect_timeout: float,
        command_timeout: float,
        max_connections: int,
        retries: int,
        health_check_interval: float,
        client_name: str | None,
        tls: Mapping[str, object],
    ) -> RedisClusterBackend:
        """Returns a backend owning a new cluster client for ``url``; see `RedisBackend.from_url`.

        Raises:
            ValueError: ``url`` is malformed; the message never quotes it.
        """
        base_scheme = "rediss" if url.lower().startswith("rediss") else "redis"
        parts = split_hosts(url, base_scheme=base_scheme, default_port=_CLUSTER_PORT)
        if parts.path.strip("/") not in ("", "0"):
            raise ValueError("a cluster has only database 0; give no database after the hosts")
        startup_nodes = [ClusterNode(host, port) for host, port in parts.hosts[1:]]
        try:
            client = RedisCluster.from_url(
                parts.single(""),
                startup_nodes=startup_nodes,
                max_connections=max_connections,
                socket_timeout=command_timeout,
                socket_connect_timeout=connect_timeout,
                # The cluster client retries timeouts as well as connection errors (each after a
                # topology refresh), and its pipelines sleep 250 ms before a retry; so no retry
                # at all unless asked, unlike RedisBackend's one retry after a connection error.
                retry=Retry(NoBackoff(), retries),
                health_check_interval=health_check_interval,
                client_name=client_name,
                **tls,
            )
        except CLUSTER_URL_ERRORS as exc:
            # An option redis-py refuses (``?db=2``, an unknown name); its text names the option.
            raise ValueError(str(exc)) from None
        if hasattr(client, "cluster_error_retry_attempts"):
            # redis-py 5 counts cluster retries apart from ``retry`` (three by default,
            # timeouts included) and gives a pipeline that many attempts in all: one at least.
            client.cluster_error_retry_attempts = max(retries, 1)
        backend = cls(client, owns_client=True)
        backend._label = f"url={redact_url(url)!r}"
        if not health_check_interval:
            # Held connections send no PING before a command; with a health check interval
            # reads keep the client's per-command path, which does (as `RedisBackend` does).
            backend._reads = SlotReads(client)
            backend._get = backend._reads.get
        return backend

    def __repr__(self) -> str:
        return f"RedisClusterBackend({self._label})"

    @property
    def kind(self) -> str:
        """Always ``"redis-cluster"``."""
        return "redis-cluster"

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """Returns the values of ``keys`` in order; one MGET per hash slot, one round trip per node."""
        if not keys:
            return []
        with self._errors.on("MGET"):
            if self._reads is not None:
                return await self._reads.mget(keys)
            values = await self._client.mget_nonatomic(list(keys))
        return cast("list[bytes | None]", values)

    async def set_many(self, items: Mapping[str, bytes], ttl: float | None = None) -> None:
        """Stores every item with a pipeline of SET (``PX`` with a ttl): one round trip per node.

        The pipeline is not a transaction: on failure some items may be stored and others not.
        """
        if not items:
            return
        px = None if ttl is None else _px(ttl)
        pipeline = self._client.pipeline()
        for key, value in items.items():
            pipeline.set(key, value, px=px)
        with self._errors.on("SET pipeline"):
            await pipeline.execute()

    async def delete(self, *keys: str) -> int:
        """Removes ``keys`` with one UNLINK per hash slot; returns how many existed."""
        if not keys:
            return 0
        with self._errors.on("UNLINK"):
            return int(await self._client.unlink(*keys))

    async def exists(self, key: str) -> bool:
        """Returns whether ``key`` exists (EXISTS)."""
        with self._errors.on("EXISTS"):
            return bool(await self._client.execute_command("EXISTS", key))

    async def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        """Adds ``amount`` to the integer at ``key`` (INCRBY) and returns the result.

        With a ``ttl``, a one-key script runs ``SET key 0 NX PX ttl`` then ``INCRBY``
        atomically, so the key is created with its expiry only when absent; an existing key
        keeps its expiry.

        Raises:
            CounterError: the value at ``key`` is not a 64-bit integer, or the result would
                overflow.
            BackendError: the cluster failed.
        """
        with self._errors.on_incr(key, amount):
            if ttl is None:
                value = await self._client.incrby(key, amount)
            else:
                await self._scripts_ready()
                value = await self._incr_with_ttl(keys=[key], args=[amount, _px(ttl)])
        return int(value)

    async def scan(self, pattern: str, *, count: int = 500) -> AsyncIterator[list[str]]:
        """Yields batches of keys matching ``pattern``: SCAN MATCH COUNT on every primary in turn.

        A key present on one primary for the whole scan is yielded at least once. Slots that
        migrate between primaries while the scan runs (resharding) may make it miss keys.
        Empty batches are not yielded, and keys that are not UTF-8 are skipped.
        """
        with self._errors.on("SCAN"):
            await self._client.initialize()
        for node in self._client.get_primaries():
            cursor = 0
            while True:
                with self._errors.on("SCAN"):
                    answer = await self._client.scan(
                        cursor, match=pattern, count=count, target_nodes=node
                    )
                    # For one target node the cluster client answers ({node name: cursor}, keys),
                    # not the (cursor, keys) its annotation gives.
                    cursors, raw_keys = cast("tuple[dict[str, int], list[bytes]]", answer)
                cursor = int(cursors[node.name])
                if raw_keys:
                    keys = _decode_keys(raw_keys)
                    if keys:
                        yield keys
                if cursor == 0:
                    break

    async def ping(self) -> None:
        """Sends PING to every primary; raises `BackendError` if any does not answer."""
        with self._errors.on("PING"):
            await self._client.ping(target_nodes=RedisCluster.PRIMARIES)

    async def server_info(self) -> dict[str, float | int | str]:
        """Returns facts from INFO on every primary, combined.

        ``connected_clients``, ``ops_per_sec`` and ``used_memory_mb`` (one decimal) are summed
        over the primaries, since each holds and serves its own share; ``uptime_seconds`` is
        the smallest (how long every primary has been up), ``redis_version`` the oldest, and
        ``primaries`` counts them.
        """
        with self._errors.on("INFO"):
            await self._client.initialize()
            primaries = self._client.get_primaries()
            answers = await asyncio.gather(
                *(self._client.info(target_nodes=node) for node in primaries),
                return_exceptions=True,
            )
        infos: list[dict[str, Any]] = []
        for answer in answers:
            if isinstance(answer, BaseException):
                self._errors.throw("INFO", answer)
            infos.append(answer)
        facts: dict[str, float | int | str] = {"primaries": len(infos)}
        for field, name in _INFO_SUMS:
            values = [int(info[field]) for info in infos if field in info]
            if values:
                facts[name] = sum(values)
        uptimes = [int(info["uptime_in_seconds"]) for info in infos if "uptime_in_seconds" in info]
        if uptimes:
            facts["uptime_seconds"] = min(uptimes)
        memory = [int(info["used_memory"]) for info in infos if "used_memory" in info]
        if memory:
            facts["used_memory_mb"] = round(sum(memory) / _MEBIBYTE, 1)
        versions = [str(info["redis_version"]) for info in infos if "redis_version" in info]
        if versions:
            facts["redis_version"] = min(versions, key=_version_order)
        return facts

    async def aclose(self) -> None:
        """Closes the connections to the wake-up node, and the cluster client if this backend owns it.

        Both reopen on next use.
        """
        node_client, self._node_client = self._node_client, None
        with self._errors.on("close"):
            if self._reads is not None:
                await self._reads.aclose()
            if node_client is not None:
                await node_client.aclose()
            if self._owns_client:
                await self._client.aclose()

    # -- locks and wake-ups (LockingBackend) ---------------------------------------------------

    async def publish(self, channel: str) -> None:
        """Sends an empty message on ``channel`` (PUBLISH) to one primary, which the cluster
        forwards to every node."""
        try:
            with self._errors.on("PUBLISH"):
                await (await self._get_node_client()).publish(channel, b"")
        except BackendError:
            # The node may have failed: the next wake-up picks a primary afresh.
            await self._drop_node_client()
            raise

    @contextlib.asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[Notifications]:
        """Subscribes to ``channel`` on a dedicated connection to one primary.

        A classic (not sharded) PUBLISH reaches every node of a cluster, so one node is
        enough. The connection is made with a plain client rather than the cluster client,
        whose asyncio pub/sub support depends on the redis-py version (5.x has none).
        """
        pubsub: PubSub | None = None
        try:
            try:
                with self._errors.on("SUBSCRIBE"):
                    pubsub = (await self._get_node_client()).pubsub(ignore_subscribe_messages=True)
                    await pubsub.subscribe(channel)
            except BackendError:
                # The node may have failed: the next subscription picks a primary afresh.
                await self._drop_node_client()
                raise
            yield Subscription(pubsub, self._errors)
        finally:
            if pubsub is not None:
                with contextlib.suppress(*_CLUSTER_FAILURES):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves PubSub.aclose unannotated

    async def _get_node_client(self) -> Redis:
        """Returns the plain client of one primary that wake-ups use; makes it if needed."""
        # Finds the nodes on first use, and returns at once after that.
        await self._client.initialize()
        # Checked after the await, so concurrent first uses make one client.
        if self._node_client is None:
            node = self._client.get_default_node()
            connection_class, options = self._node_options(node)
            pool = ConnectionPool(
                connection_class=connection_class,
                max_connections=node.max_connections,
                **options,
            )
            self._node_client = Redis.from_pool(pool)
        return self._node_client

    def _node_options(self, node: ClusterNode) -> tuple[type[Connection], dict[str, Any]]:
        """Returns the class and options of a plain connection to ``node``, as the cluster's own."""
        options = self._client.get_connection_kwargs()
        connection_class: type[Connection] = (
            options.get("connection_class") or node.connection_class
        )
        plain = {
            name: value
            for name, value in options.items()
            if name in _NODE_CLIENT_OPTIONS or name.startswith("ssl_")
        }
        plain.update(host=node.host, port=node.port)
        return connection_class, plain

    async def _drop_node_client(self) -> None:
        node_client, self._node_client = self._node_client, None
        if node_client is not None:
            with contextlib.suppress(*_CLUSTER_FAILURES):
                await node_client.aclose()

    async def _scripts_ready(self) -> None:
        """Loads every script on every primary once, before the first EVALSHA.

        redis-py's cluster client answers a NOSCRIPT by loading the script and retrying, but
        many concurrent first calls doing that tear down each other's connections (redis-py
        8.1: "Connection closed by server" for a burst of 20). Loaded up front, NOSCRIPT only
        follows a node's restart.
        """
        if self._scripts_loaded:
            return
        for script in (
            RELEASE_LOCK,
            SET_IF,
            TAG_STAMPS,
            TAG_BUMP,
            INCR_WITH_TTL,
        ):
            await self._client.script_load(script)
        self._scripts_loaded = True

    # -- guarded writes and tags (GuardedBackend) ------------------------------------------------

    def _key_groups(self, keys: Sequence[str]) -> list[list[int]]:
        """Groups the positions in ``keys`` by hash slot: a script may touch one slot only."""
        groups: dict[int, list[int]] = {}
        for position, key in enumerate(keys):
            groups.setdefault(self._client.keyslot(key), []).append(position)
        return list(groups.values())

    # -- invalidation messages for a local tier (TrackingBackend) ------------------------------

    async def invalidations(
        self, prefix: str, *, heartbeat: float
    ) -> AsyncIterator[list[str] | None]:
        """Follows changes under ``prefix`` with ``CLIENT TRACKING ... BCAST`` on every primary.

        A primary reports changes of its own keys only, so each one gets a connection of its
        own, as `RedisBackend.invalidations` opens to its one server: RESP2, no read timeout,
        tracking redirected to itself and a subscription to ``__redis__:invalidate``. ``[]`` is
        yielded once every primary's connection is subscribed, then each batch of keys any
        primary reports (``None`` when one was flushed). Each connection is sent a PING every
        ``heartbeat`` seconds and closed when two go unanswered; opening one must be answered
        within two heartbeats after the connect timeout. When any connection fails, all are
        closed and `BackendError` is raised.

        Changes of topology are not followed: the primaries are those the cluster client
        knows when this starts. Slots moving between them are safe, as MIGRATE reports a key
        it moves on both sides. A primary that fails closes or silences its connection, so
        this raises; the next call opens connections to the primaries the client knows then,
        which it learns again only after one of its own commands failed on a node (the
        bypassed tier's reads do that), and fails until then. So a primary shut down after
        its slots moved away keeps the tier bypassed until the client looks again. A primary
        added is not followed until the subscription is opened again for another reason:
        changes of keys in slots moved to it go unreported, and a local tier may serve their
        old values for up to its ``ttl``.
        """
        with self._errors.on("CLIENT TRACKING"):
            await self._client.initialize()
            channels = [
                TrackingChannel(self._tracking_connection(node), _CLUSTER_FAILURES)
                for node in self._client.get_primaries()
            ]
        connect = self._client.get_connection_kwargs().get("socket_connect_timeout")
        async for keys in follow(
            channels,
            prefix,
            heartbeat,
            connect_timeout=connect if isinstance(connect, (int, float)) else None,
            errors=self._errors,
        ):
            yield keys

    def _tracking_connection(self, node: ClusterNode) -> Connection:
        """Returns a new, unopened connection to ``node`` for `invalidations`."""
        connection_class, options = self._node_options(node)
        # RESP2, so that invalidations arrive as pub/sub messages whatever protocol the cluster
        # client speaks. No read timeout: the channel idles between changes, and the PINGs
        # watch over it instead.
        options.update(protocol=2, health_check_interval=0, socket_timeout=None)
        return connection_class(**options)


def _version_order(version: str) -> tuple[int, ...]:
    return tuple(int(part) if part.isdigit() else 0 for part in version.split("."))
