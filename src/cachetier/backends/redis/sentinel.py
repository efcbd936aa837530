"""The redis-py client of a ``redis+sentinel://`` URL, for `RedisBackend.from_url`.

The client is redis-py's own: ``Sentinel(...).master_for(service)``. Each new connection asks
the Sentinels for the master's address, so after a failover fresh connections reach the new
master; a connection still open to a demoted master fails its next write (READONLY) and is
dropped.
"""

from __future__ import annotations

from typing import Any, Final

from redis.asyncio import Redis
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff

from .urls import split_hosts

__all__ = ("SENTINEL_PORT", "sentinel_client")

SENTINEL_PORT: Final = 26379
"""The port of a Sentinel written without one."""


class _OwnedSentinelPool(SentinelConnectionPool):
    """A Sentinel pool that also closes the connections to the Sentinels when it is closed.

    ``master_for`` clients close their pool, but the Sentinel clients that find the master
    keep connections of their own, which nothing else would close. `RedisBackend.aclose`
    closes the client, the client its pool, and this pool the Sentinel clients too; they all
    reconnect on next use.
    """

    async def disconnect(self, inuse_connections: bool = True) -> None:
        await super().disconnect(inuse_connections)
        # redis-py itself calls disconnect(inuse_connections=False) when the master moves;
        # only a full close (the client's aclose) closes the Sentinel connections.
        if inuse_connections:
            for sentinel in self.sentinel_manager.sentinels:
                await sentinel.aclose()


def sentinel_client(url: str, **options: Any) -> Redis:
    """Returns a client of the master that the Sentinels in ``url`` name; does no I/O.

    ``url`` is ``redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db]``
    (Sentinels default to port 26379). The credentials, the database and the query options
    apply to the master; the Sentinels are asked without credentials. ``options`` (timeouts,
    retry, pool size, client name) apply to the master's connections; the socket timeouts
    and the client name apply to the Sentinel connections as well, which are never retried.

    Raises:
        ValueError: ``url`` names no service, or a host, port or database is malformed. The
            message never quotes the URL.
    """
    if url.lower().startswith("rediss"):
        raise ValueError(
            "TLS to Sentinel and its master is not supported yet; use redis+sentinel://"
        )
    parts = split_hosts(url, base_scheme="redis", default_port=SENTINEL_PORT)
    service, _, database = parts.path.strip("/").partition("/")
    if not service or service.isdigit():
        # "/0" alone is a database written where the service belongs.
        raise ValueError(
            "a Sentinel URL must name the service after the hosts, as in "
            "redis+sentinel://host:26379/mymaster"
        )
    if database and not database.isdigit():
        raise ValueError("the database after the service must be a number, as in /mymaster/0")
    connection = dict(parse_url(parts.single(f"/{database}" if database else "")))
    # The host and port redis-py read are the first Sentinel's; the master's come from it.
    connection.pop("host", None)
    connection.pop("port", None)
    sentinels = Sentinel(  # type: ignore[no-untyped-call]  # redis-py leaves Sentinel.__init__ unannotated
        list(parts.hosts),
        # Sentinels get the timeouts and the client name, and no password or pool size. Nor
        # any retry: redis-py's default (three, with backoff from 1 s) would stall every new
        # connection for seconds on a dead Sentinel, and the next Sentinel is asked anyway.
        sentinel_kwargs={
            **{
                name: options[name]
                for name in ("socket_timeout", "socket_connect_timeout", "client_name")
                if name in options
            },
            "retry": Retry(NoBackoff(), 0),
        },
    )
    # Options in the query string win over the arguments, as in redis-py's from_url.
    client: Redis = sentinels.master_for(
        service, connection_pool_class=_OwnedSentinelPool, **{**options, **connection}
    )
    return client
