"""Following changes of keys with Redis's server-assisted client-side caching, for `LocalTier`.

Each server gets one connection of its own: RESP2 (so that invalidations arrive as pub/sub
messages whatever protocol the pool speaks), no read timeout (it idles between changes), its
tracking redirected to itself in BCAST mode for a prefix, and subscribed to
``__redis__:invalidate``. A PING goes out every heartbeat, and a connection that leaves two
unanswered is closed. `RedisBackend` follows its one server this way and
`RedisClusterBackend` every primary; `follow` merges them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, final

from ..._errors import BackendError

if TYPE_CHECKING:
    from redis.asyncio.connection import AbstractConnection

    from .errors import RedisErrors

__all__ = ("TrackingChannel", "decode_keys", "follow", "tracking_options")

# Options of redis-py 8's maintenance notifications, which a pool hands to the connections it
# makes. Those need a RESP3 or hiredis parser; a RESP2 connection without hiredis refuses them
# at construction, so the tracking connection (RESP2 on purpose) must not inherit them.
_MAINTENANCE_OPTIONS: Final = (
    "maint_notifications_config",
    "maint_notifications_pool_handler",
    "oss_cluster_maint_notifications_handler",
)


def tracking_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Returns a pool's connection options adapted for a tracking connection.

    RESP2, so that invalidations arrive as pub/sub messages whatever protocol the pool speaks;
    no read timeout, as the channel idles between changes and the PINGs watch over it instead;
    no maintenance notifications, which RESP2 without hiredis cannot parse (redis-py 8).
    """
    adapted = {name: value for name, value in options.items() if name not in _MAINTENANCE_OPTIONS}
    adapted.update(protocol=2, health_check_interval=0, socket_timeout=None)
    return adapted


def decode_keys(raw_keys: list[bytes]) -> list[str]:
    """Returns keys as text, leaving out any that is not UTF-8 (cachetier never writes one)."""
    try:
        return [raw.decode() for raw in raw_keys]
    except UnicodeDecodeError:
        return [key for key in map(_decode_or_none, raw_keys) if key is not None]


def _decode_or_none(raw: bytes) -> str | None:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return None


async def follow(
    channels: Sequence[TrackingChannel],
    prefix: str,
    heartbeat: float,
    *,
    connect_timeout: float | None,
    errors: RedisErrors,
) -> AsyncIterator[list[str] | None]:
    """Opens ``channels``, yields ``[]`` once all are subscribed, then every reported batch.

    ``None`` is yielded when a server was flushed or dropped its tracking state. When any
    channel fails or goes silent, all are closed and `BackendError` is raised (``errors``
    describes the failure).
    """
    # Batches from every server, in the order they were read, and the followers that ended
    # (which they only do by failing).
    reports: asyncio.Queue[list[str] | asyncio.Task[None] | None] = asyncio.Queue()
    followers: list[asyncio.Task[None]] = []
    try:
        await _open(channels, prefix, heartbeat, connect_timeout, errors)
        yield []
        for channel in channels:
            follower = asyncio.ensure_future(channel.follow(heartbeat, reports.put_nowait))
            follower.add_done_callback(reports.put_nowait)
            followers.append(follower)
        while True:
            report = await reports.get()
            if not isinstance(report, asyncio.Task):
                yield report
                continue
            ended = None if report.cancelled() else report.exception()
            if ended is not None:
                errors.throw("invalidation channel", ended)
            raise BackendError("an invalidation channel stopped")
    finally:
        for follower in followers:
            follower.cancel()
        await asyncio.gather(*followers, return_exceptions=True)
        await asyncio.gather(*(channel.close() for channel in channels))


async def _open(
    channels: Sequence[TrackingChannel],
    prefix: str,
    heartbeat: float,
    connect_timeout: float | None,
    errors: RedisErrors,
) -> None:
    """Opens every channel at once; raises `BackendError` if any fails or stays silent."""
    # The handshake has no read timeout either, so it is bounded here, as a PING would be:
    # two heartbeats, after the time the connection itself may take.
    limit = 2 * heartbeat + (connect_timeout or 0.0)
    results = await asyncio.gather(
        *(asyncio.wait_for(channel.open(prefix), limit) for channel in channels),
        return_exceptions=True,
    )
    for result in results:
        # Before `errors.throw`: from 3.11 on, asyncio's timeout is the builtin, an OSError,
        # which it would take for a failed command.
        if isinstance(result, asyncio.TimeoutError):
            raise BackendError(
                f"CLIENT TRACKING was not answered within {limit * 1000:g} ms"
            ) from result
        if isinstance(result, BaseException):
            errors.throw("CLIENT TRACKING", result)


@final
class TrackingChannel:
    """One server's tracking connection: the changes of its keys under a prefix, as pub/sub."""

    __slots__ = ("_answered", "_connection", "_failures")

    def __init__(
        self, connection: AbstractConnection, failures: tuple[type[BaseException], ...]
    ) -> None:
        self._connection = connection
        self._failures = failures
        # Event-loop time of the last message read, whatever it was.
        self._answered = 0.0

    async def open(self, prefix: str) -> None:
        """Connects, has the server track ``prefix`` for this connection, and subscribes."""
        connection = self._connection
        await connection.connect()  # type: ignore[no-untyped-call]  # unannotated in redis-py
        await connection.send_command("CLIENT", "ID")
        client_id = await connection.read_response()
        # Redirected to the connection's own id: in RESP2, invalidations then arrive on it as
        # messages of the __redis__:invalidate channel.
        await connection.send_command(
            "CLIENT", "TRACKING", "ON", "REDIRECT", client_id, "BCAST", "PREFIX", prefix
        )
        await connection.read_response()
        await connection.send_command("SUBSCRIBE", "__redis__:invalidate")
        await connection.read_response()

    async def follow(self, heartbeat: float, deliver: Callable[[list[str] | None], object]) -> None:
        """Passes each reported batch of keys to ``deliver`` until the connection fails.

        ``None`` is passed when the server was flushed or dropped its tracking state. A PING
        goes out every ``heartbeat`` seconds, and the connection is closed once two went
        unanswered. Never returns: raises what the failed read raised.
        """
        loop = asyncio.get_running_loop()
        self._answered = loop.time()
        pinger = loop.create_task(self._ping(heartbeat))
        try:
            while True:
                message = await self._connection.read_response()
                self._answered = loop.time()
                # Also read: PONGs (["pong", ""]) and the subscription's confirmation.
                if isinstance(message, list) and len(message) == 3 and message[0] == b"message":
                    keys = message[2]
                    # A null list: the server flushed, or dropped tracking state.
                    deliver(None if keys is None else decode_keys(keys))
        finally:
            pinger.cancel()
            await asyncio.gather(pinger, return_exceptions=True)

    async def _ping(self, heartbeat: float) -> None:
        """Sends PINGs; closes the connection, failing the read in `follow`, when unanswered."""
        loop = asyncio.get_running_loop()
        connection = self._connection
        while True:
            await asyncio.sleep(heartbeat)
            # A closed connection is not pinged: redis-py would open a new one to send the
            # PING, and a new connection tracks nothing.
            if not connection.is_connected or loop.time() - self._answered > 2 * heartbeat:
                break
            try:
                await connection.send_command("PING")
            except self._failures:
                break
        with contextlib.suppress(*self._failures):
            await connection.disconnect()

    async def close(self) -> None:
        """Closes the connection, if it is open."""
        with contextlib.suppress(*self._failures):
            await self._connection.disconnect()
