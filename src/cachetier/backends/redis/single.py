"""`RedisBackend`: the `Backend` protocol over redis-py's asyncio client (one server, or Sentinel).

This package's modules are the only ones importing redis, and `errors` the only one knowing
its exceptions: the rest of cachetier never sees a redis-py type or exception.
"""

from __future__ import annotations

import contextlib
import math
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import ClassVar, Final, Literal, cast, final

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from ..._errors import ConfigurationError
from ..._redact import redact_url
from .._protocol import Notifications
from .cluster import RedisClusterBackend
from .commands import SingleKeyCommands, Subscription
from .commands import px as _px
from .errors import FAILURES as _FAILURES
from .errors import RETRIED_ERRORS, RedisErrors
from .pipeline import HeldReads
from .scripts import RELEASE_LOCK, SET_IF, TAG_BUMP, TAG_STAMPS
from .sentinel import sentinel_client
from .tracking import TrackingChannel, follow, tracking_options
from .tracking import decode_keys as _decode_keys
from .urls import MAX_RETRIES, misplaced_at_problem

__all__ = ("RedisBackend",)

# The INFO fields `server_info` reports, under cachetier's names.
_INFO_INTEGERS: Final = (
    ("uptime_in_seconds", "uptime_seconds"),
    ("connected_clients", "connected_clients"),
    ("instantaneous_ops_per_sec", "ops_per_sec"),
)

_MEBIBYTE: Final = 1024 * 1024


@final
class RedisBackend(SingleKeyCommands):
    """A backend storing bytes in Redis (or Valkey) through redis-py's asyncio client.

    Build one with `from_url`, which owns its connection pool, or wrap a client you already
    have with ``RedisBackend(client)`` (a ``fakeredis.FakeAsyncRedis`` included). The client must
    return ``bytes``: one created with ``decode_responses=True`` is refused.

    Why the defaults of `from_url` are tight: redis-py's own defaults (5 s socket timeouts and
    retries with backoff) suit a database client, whose caller has nothing better to do than
    wait. A cache call must cost far less than the work it saves, so a slow or absent server
    should turn into a fast miss rather than a stalled request. The defaults are:

    - ``connect_timeout=0.25``: opening a connection, TLS handshake included.
    - ``command_timeout=0.1``: writing a command and reading each reply.
    - ``max_connections=256``. When every connection is busy a call fails at once (a miss)
      rather than queueing: redis-py's waiting pool costs about 30 us per command on
      CPython 3.11, a quarter of a whole local GET, on every hit.
    - ``retries=0``: a call that times out is not retried, and the `Cache` counts it as a miss;
      its circuit breaker, not a retry loop, decides when to try the server again. A
      connection error is retried once at once (a pooled connection the server closed on a
      restart fails its first command), or ``retries`` times if that is more.
    - ``health_check_interval=0``: no PING before commands on idle connections.
    - ``client_name="cachetier"``, so the connections are recognisable in ``CLIENT LIST``.

    Every call is bounded by these timeouts alone (see `from_url`); the backend adds no timer
    of its own to the hit path.

    A backend built by `from_url` for one server or through Sentinel reads (GET, MGET) over up
    to two connections per event loop that it holds, made by its pool with the same options:
    a read finding one idle sends and reads at once, and reads issued while they are busy go
    out together, pipelined (see `pipeline`). Other commands, a client handed in, a
    ``health_check_interval`` and a cluster use redis-py's pool per command.
    """

    failures: ClassVar[tuple[type[BaseException], ...]] = _FAILURES
    _client: Redis

    __slots__ = (
        "_client",
        "_errors",
        "_get",
        "_held",
        "_label",
        "_mget",
        "_owns_client",
        "_release",
        "_set_if",
        "_tag_bump",
        "_tag_stamps",
    )

    def __init__(self, client: Redis, *, owns_client: bool = False) -> None:
        """Wraps ``client``; `aclose` closes it only when ``owns_client`` is true.

        Calls are then bounded by the client's own timeouts, which redis-py sets to 5 s unless
        told otherwise.

        Raises:
            ConfigurationError: ``client`` decodes responses to ``str``.
        """
        connection_kwargs = client.connection_pool.connection_kwargs
        if connection_kwargs.get("decode_responses"):
            raise ConfigurationError(
                "RedisBackend needs a client that returns bytes; create it without "
                "decode_responses=True"
            )
        self._client = client
        self._owns_client = owns_client
        self._label = f"client={type(client).__name__}"
        self._errors = RedisErrors(
            connection_kwargs,
            cluster=False,
            pool_size=lambda: client.connection_pool.max_connections,
        )
        # The hit path, bound once. redis-py types GET as ``bytes | str | None`` because a client
        # may decode; this one was just checked not to, so its GET returns ``bytes | None``.
        self._get = cast("Callable[[str], Awaitable[bytes | None]]", client.get)
        # MGET likewise: not decoded, as the client was just checked.
        self._mget = cast("Callable[[Sequence[str]], Awaitable[list[bytes | None]]]", client.mget)
        # Set by `from_url` only: a client handed in keeps redis-py's per-command path, as its
        # pool, retry policy or command callbacks may be the caller's own.
        self._held: HeldReads | None = None
        self._release = client.register_script(RELEASE_LOCK)
        self._set_if = client.register_script(SET_IF)
        self._tag_stamps = client.register_script(TAG_STAMPS)
        self._tag_bump = client.register_script(TAG_BUMP)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        connect_timeout: float = 0.25,
        command_timeout: float = 0.1,
        max_connections: int = 256,
        retries: int = 0,
        health_check_interval: float = 0,
        client_name: str | None = "cachetier",
        ssl_ca_certs: str | None = None,
        ssl_certfile: str | None = None,
        ssl_keyfile: str | None = None,
        ssl_cert_reqs: ssl.VerifyMode | Literal["none", "optional", "required"] | None = None,
    ) -> RedisBackend | RedisClusterBackend:
        """Returns a backend owning a new connection pool to ``url``; connects on first use.

        ``url`` is parsed by redis-py; the forms are:

        - ``redis://[[user]:password@]host[:port][/db]``: one server.
        - ``rediss://...``: the same over TLS (the ``ssl_*`` arguments apply only to TLS URLs).
        - ``unix://[[user]:password@]/path/to/socket?db=N``: one server on a Unix socket.
        - ``redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db]``: the
          master that the Sentinels (port 26379 unless given) name for ``service``, through
          redis-py's ``Sentinel(...).master_for(service)``. The credentials and database are
          the master's; Sentinels are asked without credentials and with the same timeouts.
          Each new connection asks them for the master, so after a failover new connections
          reach the new master. The backend is a `RedisBackend` of kind ``"redis"``.
        - ``redis+cluster://[[user]:password@]host[:port][,host[:port]...]``, and
          ``rediss+cluster://`` for TLS: a Redis Cluster found from these startup nodes (port
          6379 unless given), through redis-py's ``RedisCluster``. The backend is a
          ``RedisClusterBackend`` of kind ``"redis-cluster"``, which splits every multi-key
          operation by hash slot and scans every primary. Cache reads (GET, MGET) go over
          held, auto-pipelined connections to each primary, routed by the client's slot map;
          one that meets a redirection or a lost primary is handed to the client.
          ``max_connections`` applies per node, and ``retries`` counts retries after a
          connection error *or a timeout* (redis-py's cluster client does not tell them
          apart), each after a topology refresh; there is none by default. A read that times
          out on a held connection fails at once, whatever ``retries`` says.

        Options in the query string win over the arguments, as in redis-py. Credentials in
        ``url`` never appear in the backend's ``repr`` or in its errors.

        Args:
            connect_timeout: Seconds to open a connection, TLS handshake included.
            command_timeout: Seconds to write a command and to read each reply.
            max_connections: Connections the pool may open; past that a call fails at once.
            retries: Immediate retries after a connection error (at least one), at most 10;
                timeouts are never retried. Each retry can spend the connect timeout again.
            health_check_interval: Seconds a connection may idle before a PING checks it;
                ``0`` never checks.
            client_name: Sent with ``CLIENT SETNAME`` on each connection; ``None`` sends none.
            ssl_ca_certs: CA bundle that signs the server certificate (``rediss://``).
            ssl_certfile: Client certificate for mutual TLS (``rediss://``).
            ssl_keyfile: Key of ``ssl_certfile`` (``rediss://``).
            ssl_cert_reqs: Server certificate checking (``rediss://``); redis-py's default is
                ``"required"``.

        How every call is bounded: redis-py wraps the socket connect in ``connect_timeout``,
        and each socket write and each reply read in ``command_timeout`` (its
        ``socket_timeout``); a call finding every pooled connection busy fails at once. The handshake of a new
        connection (AUTH, CLIENT SETNAME, SELECT) is written and read under the same limits.
        So a dead, black-holed or saturated server fails a call after at most a few of these
        steps, never after redis-py's seconds-long defaults, and with no extra timer per call.

        Raises:
            ConfigurationError: ``url`` is not a Redis URL, an argument is out of range, or
                ``ssl_*`` arguments come with a URL other than ``rediss://`` or
                ``rediss+cluster://``.
        """
        _check_positive("connect_timeout", connect_timeout)
        _check_positive("command_timeout", command_timeout)
        if health_check_interval < 0 or not math.isfinite(health_check_interval):
            raise ConfigurationError(
                f"health_check_interval must be 0 or a positive number of seconds, "
                f"not {health_check_interval!r}"
            )
        if max_connections < 1:
            raise ConfigurationError(f"max_connections must be at least 1, not {max_connections}")
        if (
            isinstance(retries, bool)
            or not isinstance(retries, int)
            or not 0 <= retries <= MAX_RETRIES
        ):
            raise ConfigurationError(f"retries must be from 0 to {MAX_RETRIES}, not {retries!r}")
        tls: dict[str, object] = {
            name: value
            for name, value in (
                ("ssl_ca_certs", ssl_ca_certs),
                ("ssl_certfile", ssl_certfile),
                ("ssl_keyfile", ssl_keyfile),
                ("ssl_cert_reqs", ssl_cert_reqs),
            )
            if value is not None
        }
        misplaced = misplaced_at_problem(url)
        if misplaced is not None:
            # Checked before anything quotes the URL: its parse would expose the password.
            raise ConfigurationError(f"the Redis URL is invalid: {misplaced}")
        redacted = redact_url(url)
        scheme = url.partition("://")[0].lower()
        if tls and scheme not in ("rediss", "rediss+cluster"):
            # Only redis-py's TLS connection class accepts these; any other class would fail
            # on the first connection instead of here.
            raise ConfigurationError(
                f"{', '.join(sorted(tls))} apply to rediss:// and rediss+cluster:// URLs only, "
                f"not to {redacted}"
            )
        # No asyncio.timeout of our own wraps the calls: with socket_timeout set, redis-py
        # already bounds each step (asyncio/connection.py: `_connect` under the connect timeout,
        # `send_packed_command` under wait_for, `read_response` under a timeout context). A
        # second timer would add no bound and cost about 5-7 us per GET on CPython 3.11. The
        # worst case is the sum of the steps one call can take (connect, up to three handshake
        # replies, write, reply), times ``retries + 1``.
        if scheme in ("redis+cluster", "rediss+cluster"):
            try:
                return RedisClusterBackend._from_url(
                    url,
                    connect_timeout=connect_timeout,
                    command_timeout=command_timeout,
                    max_connections=max_connections,
                    retries=retries,
                    health_check_interval=health_check_interval,
                    client_name=client_name,
                    tls=tls,
                )
            except ValueError as exc:
                raise ConfigurationError(f"the Redis URL {redacted} is invalid: {exc}") from None
        if scheme in ("redis+sentinel", "rediss+sentinel"):
            try:
                client = sentinel_client(
                    url,
                    max_connections=max_connections,
                    socket_timeout=command_timeout,
                    socket_connect_timeout=connect_timeout,
                    retry=Retry(NoBackoff(), max(retries, 1), supported_errors=RETRIED_ERRORS),
                    health_check_interval=health_check_interval,
                    client_name=client_name,
                )
            except ValueError as exc:
                raise ConfigurationError(f"the Redis URL {redacted} is invalid: {exc}") from None
            backend = cls(client, owns_client=True)
            backend._label = f"url={redacted!r}"
            backend._hold_reads(retries=max(retries, 1), sentinel=True)
            return backend
        try:
            pool = ConnectionPool.from_url(
                url,
                max_connections=max_connections,
                socket_timeout=command_timeout,
                socket_connect_timeout=connect_timeout,
                # One retry on a connection error whatever ``retries`` says: after a server
                # restart every idle pooled connection fails its first command, and without
                # it a burst of those re-opens the breaker right after a successful probe.
                # Timeouts are never retried, so a silent server still costs one timeout.
                retry=Retry(NoBackoff(), max(retries, 1), supported_errors=RETRIED_ERRORS),
                health_check_interval=health_check_interval,
                client_name=client_name,
                **tls,
            )
        except ValueError as exc:
            # redis-py's parse errors name the scheme or option at fault, never the password.
            raise ConfigurationError(f"the Redis URL {redacted} is invalid: {exc}") from None
        backend = cls(Redis.from_pool(pool), owns_client=True)
        backend._label = f"url={redacted!r}"
        backend._hold_reads(retries=max(retries, 1), sentinel=False)
        return backend

    def _hold_reads(self, *, retries: int, sentinel: bool) -> None:
        """Sends GET and MGET over held, auto-pipelined connections (see `pipeline`; issue 17).

        Not with a health check interval: held connections send no PING before a command,
        so such a client keeps redis-py's per-command path, which does.
        """
        pool = self._client.connection_pool
        if pool.connection_kwargs.get("health_check_interval"):
            return
        self._held = HeldReads(pool, retries=retries, fallback=self._client.mget, sentinel=sentinel)
        self._get = self._held.get
        self._mget = self._held.mget

    def __repr__(self) -> str:
        return f"RedisBackend({self._label})"

    @property
    def kind(self) -> str:
        """Always ``"redis"``."""
        return "redis"

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """Returns the values of ``keys`` in order with one MGET; ``None`` for absent ones."""
        if not keys:
            return []
        # A hot path, so an inline try (free until MGET fails) rather than ``self._errors.on``.
        try:
            return await self._mget(keys)
        except _FAILURES as exc:
            raise self._errors.failure("MGET", exc) from exc

    async def set_many(self, items: Mapping[str, bytes], ttl: float | None = None) -> None:
        """Stores every item in one round trip: MSET, or a pipeline of ``SET PX`` with a ttl.

        The pipeline is not a transaction: on failure some items may be stored and others not.
        """
        if not items:
            return
        if ttl is None:
            with self._errors.on("MSET"):
                await self._client.mset(items)
            return
        px = _px(ttl)
        pipeline = self._client.pipeline(transaction=False)
        for key, value in items.items():
            pipeline.set(key, value, px=px)
        with self._errors.on("SET pipeline"):
            await pipeline.execute()

    async def delete(self, *keys: str) -> int:
        """Removes ``keys`` with UNLINK (memory is freed off the main thread); returns how many existed."""
        if not keys:
            return 0
        with self._errors.on("UNLINK"):
            return await self._client.unlink(*keys)

    async def exists(self, key: str) -> bool:
        """Returns whether ``key`` exists (EXISTS)."""
        with self._errors.on("EXISTS"):
            return bool(await self._client.exists(key))

    async def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        """Adds ``amount`` to the integer at ``key`` (INCRBY) and returns the result.

        With a ``ttl``, one MULTI/EXEC transaction runs ``SET key 0 NX PX ttl`` then ``INCRBY``:
        the SET creates the key with its expiry only when it is absent, and the transaction
        keeps any other client from seeing (or expiring) the key between the two commands. An
        existing key keeps its expiry.

        Raises:
            CounterError: the value at ``key`` is not a 64-bit integer, or the result would
                overflow.
            BackendError: the server failed.
        """
        with self._errors.on_incr(key, amount):
            if ttl is None:
                return await self._client.incrby(key, amount)
            pipeline = self._client.pipeline(transaction=True)
            pipeline.set(key, 0, nx=True, px=_px(ttl))
            pipeline.incrby(key, amount)
            _, value = await pipeline.execute()
        return int(value)

    async def scan(self, pattern: str, *, count: int = 500) -> AsyncIterator[list[str]]:
        """Yields batches of keys matching ``pattern`` with ``SCAN MATCH COUNT`` until it ends.

        Empty batches, which SCAN returns often, are not yielded. A key that is not UTF-8
        cannot have been written through a backend nor be deleted through one, so it is
        skipped.
        """
        cursor = 0
        while True:
            with self._errors.on("SCAN"):
                cursor, raw_keys = await self._client.scan(cursor, match=pattern, count=count)
            if raw_keys:
                keys = _decode_keys(cast("list[bytes]", raw_keys))
                if keys:
                    yield keys
            if cursor == 0:
                return

    async def ping(self) -> None:
        """Sends PING; raises `BackendError` if the server does not answer."""
        with self._errors.on("PING"):
            await self._client.ping()

    async def server_info(self) -> dict[str, float | int | str]:
        """Returns facts from INFO: ``uptime_seconds``, ``used_memory_mb`` (one decimal),
        ``connected_clients``, ``ops_per_sec`` and ``redis_version``, each where the server
        reports it."""
        with self._errors.on("INFO"):
            info = await self._client.info()
        facts: dict[str, float | int | str] = {}
        for field, name in _INFO_INTEGERS:
            if field in info:
                facts[name] = int(info[field])
        if "used_memory" in info:
            facts["used_memory_mb"] = round(int(info["used_memory"]) / _MEBIBYTE, 1)
        if "redis_version" in info:
            facts["redis_version"] = str(info["redis_version"])
        return facts

    async def aclose(self) -> None:
        """Closes the client's connections if this backend owns the client; reopens on next use."""
        if not self._owns_client:
            return
        with self._errors.on("close"):
            if self._held is not None:
                await self._held.aclose()
            await self._client.aclose()

    # -- invalidation messages for a local tier (TrackingBackend) ----------------------------

    async def invalidations(
        self, prefix: str, *, heartbeat: float
    ) -> AsyncIterator[list[str] | None]:
        """Follows changes under ``prefix`` with ``CLIENT TRACKING ... BCAST`` (see `tracking`).

        The connection is one of its own: RESP2, tracking redirected to itself, so
        invalidations arrive as ``__redis__:invalidate`` messages whatever protocol the pool
        speaks. A PING goes out every ``heartbeat`` seconds; two unanswered close it.
        """
        pool = self._client.connection_pool
        options = tracking_options(pool.connection_kwargs)
        channel = TrackingChannel(pool.connection_class(**options), _FAILURES)
        connect = options.get("socket_connect_timeout")
        async for keys in follow(
            [channel],
            prefix,
            heartbeat,
            connect_timeout=connect if isinstance(connect, (int, float)) else None,
            errors=self._errors,
        ):
            yield keys

    async def publish(self, channel: str) -> None:
        """Sends an empty message on ``channel`` (PUBLISH), waking its subscribers."""
        with self._errors.on("PUBLISH"):
            await self._client.publish(channel, b"")

    @contextlib.asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[Notifications]:
        """Subscribes to ``channel`` on a dedicated connection for the ``async with`` block."""
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        try:
            with self._errors.on("SUBSCRIBE"):
                await pubsub.subscribe(channel)
            yield Subscription(pubsub, self._errors)
        finally:
            with contextlib.suppress(*_FAILURES):
                await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves PubSub.aclose unannotated


def _check_positive(name: str, seconds: float) -> None:
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ConfigurationError(f"{name} must be a positive number of seconds, not {seconds!r}")
