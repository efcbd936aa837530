"""`SlotReads`: a Redis Cluster's cache reads (GET, MGET) over held connections, routed by slot.

The cluster counterpart of `pipeline.HeldReads` (issue 17): each primary gets a `HeldReads` of
its own, whose connections are made as the cluster client makes its own to that node (same
connection class and options: credentials, TLS, timeouts, RESP version). A read goes to the
primary that the client's slot map names for its key's hash slot; an MGET is split into one
MGET per slot (the cluster refuses keys of several slots in one command), and those of one
turn share their node's write.

The slot map stays the cluster client's: this module only looks it up. Whenever a held read
cannot be answered where the map sends it, the read is handed to the cluster client itself,
which follows redirections, refreshes the map and retries as configured:

- no map yet (before the first command), or a slot no primary covers;
- a MOVED or ASK reply (a slot migrated, or is migrating), TRYAGAIN or CLUSTERDOWN;
- a connection error (a primary that died or failed over).

A timeout is not handed over: it fails the read at once, as on a single server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, cast, final

from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot

from .errors import PROTOCOL_ERROR, REROUTED_ERRORS, RETRIED_ERRORS, rerouted
from .pipeline import GET, HeldReads, mget_command

if TYPE_CHECKING:
    from redis.asyncio.cluster import ClusterNode, RedisCluster
    from redis.asyncio.connection import AbstractConnection

__all__ = ("SlotReads",)


@final
class _NodePool:
    """What `HeldReads` takes of a pool, for one cluster node: connections made as the
    cluster client makes its own to that node, never retried by the connection itself."""

    __slots__ = ("_class", "_encoder", "connection_kwargs")

    def __init__(self, node: ClusterNode, encoder: Any) -> None:
        options = dict(node.connection_kwargs)
        # As the cluster client's own node connections: a failure goes back to the caller,
        # which hands the read to the client (and its topology refresh), not to a reconnect.
        options["retry"] = Retry(NoBackoff(), 0)
        self.connection_kwargs = options
        self._class = node.connection_class
        self._encoder = encoder

    def make_connection(self) -> AbstractConnection:
        return cast("AbstractConnection", self._class(**self.connection_kwargs))

    def get_encoder(self) -> Any:
        return self._encoder


@final
class SlotReads:
    """GET and MGET of a Redis Cluster over held, auto-pipelined connections per primary.

    Raises what the cluster client raises, and a held connection's timeout.
    """

    __slots__ = ("_client", "_encoding", "_encoding_errors", "_held")

    def __init__(self, client: RedisCluster) -> None:
        """Reads through ``client``'s slot map; hands it what the map cannot route."""
        self._client = client
        encoder = client.encoder
        self._encoding: str = encoder.encoding
        self._encoding_errors: str = encoder.encoding_errors
        self._held: dict[str, HeldReads] = {}

    def _node_reads(self, slot: int) -> HeldReads | None:
        """The held reads of the primary serving ``slot``; ``None`` while the map has none."""
        # The client's map (slot -> [primary, replicas...]), looked up on every read: the client
        # replaces it when it refreshes it.
        nodes = self._client.nodes_manager.slots_cache.get(slot)
        if not nodes:
            return None
        node = nodes[0]
        held = self._held.get(node.name)
        if held is None:
            held = self._held[node.name] = HeldReads(
                _NodePool(node, self._client.encoder),
                retries=0,
                fallback=self._client.mget_nonatomic,
                sentinel=False,
            )
        return held

    def get(self, key: str) -> Awaitable[bytes | None]:
        """GET ``key`` on the primary of its slot."""
        name = key.encode(self._encoding, self._encoding_errors)
        held = self._node_reads(key_slot(name))
        if held is None:
            return cast("Awaitable[bytes | None]", self._ask_client(self._client.get, key))
        return self._get(held.send_now(GET % (len(name), name)), key)

    async def _get(self, waiter: asyncio.Future[Any] | None, key: str) -> bytes | None:
        if waiter is not None:
            try:
                return cast("bytes | None", await waiter)
            except REROUTED_ERRORS as exc:
                if not rerouted(exc):
                    raise
        return cast("bytes | None", await self._ask_client(self._client.get, key))

    async def mget(self, keys: Sequence[str]) -> list[bytes | None]:
        """MGET ``keys`` (at least one): one MGET per hash slot, all sent at once."""
        encoding, errors = self._encoding, self._encoding_errors
        slots: dict[int, tuple[list[int], list[bytes]]] = {}
        for index, key in enumerate(keys):
            name = key.encode(encoding, errors)
            indexes, names = slots.setdefault(key_slot(name), ([], []))
            indexes.append(index)
            names.append(name)
        # Every slot's MGET is queued before any is awaited: those of one primary go out in
        # one write, and the primaries answer concurrently.
        sent: list[tuple[list[int], asyncio.Future[Any] | None]] = []
        for slot, (indexes, names) in slots.items():
            held = self._node_reads(slot)
            sent.append((indexes, None if held is None else held.send_now(mget_command(names))))
        values: list[bytes | None] = [None] * len(keys)
        try:
            for indexes, waiter in sent:
                answer: list[bytes | None] | None = None
                if waiter is not None:
                    try:
                        answer = await waiter
                    except REROUTED_ERRORS as exc:
                        if not rerouted(exc):
                            raise
                if answer is None:
                    answer = cast(
                        "list[bytes | None]",
                        await self._ask_client(
                            self._client.mget_nonatomic, [keys[index] for index in indexes]
                        ),
                    )
                if len(answer) != len(indexes):
                    # Never seen: a connection out of step. A backend failure, not a crash.
                    raise PROTOCOL_ERROR("an MGET was answered with the wrong number of values")
                for index, value in zip(indexes, answer, strict=True):
                    values[index] = value
        finally:
            # After a failure or a cancellation: replies still due are dropped when they come,
            # failures already in are taken, so that none is logged as never retrieved.
            for _, waiter in sent:
                if waiter is None:
                    continue
                if not waiter.done():
                    waiter.cancel()
                elif not waiter.cancelled():
                    waiter.exception()
        return values

    @staticmethod
    async def _ask_client(command: Callable[[Any], Awaitable[Any]], argument: Any) -> Any:
        """``command(argument)`` through the cluster client, sent again once after a connection
        error: a primary that restarted or lost a failover closed its connections, and by the
        second try the client has refreshed its map. A read is safe to send twice; one server's
        reads are retried the same way (`pipeline`)."""
        try:
            return await command(argument)
        except RETRIED_ERRORS:
            return await command(argument)

    async def aclose(self) -> None:
        """Closes every held connection; new reads open new ones."""
        held, self._held = self._held, {}
        await asyncio.gather(*(reads.aclose() for reads in held.values()))
