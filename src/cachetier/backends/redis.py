"""`RedisBackend`: the `Backend` protocol over redis-py's asyncio client (one server, or Sentinel).

With `_cluster` (Redis Cluster), `_sentinel` and `_redis_common`, the only modules importing
redis: the rest of the package never sees a redis-py type or exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar, Final, Literal, cast, final

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import MasterNotFoundError
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, MaxConnectionsError, RedisError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .._errors import BackendError, ConfigurationError
from .._redact import redact_url
from ._hosts import MAX_RETRIES, misplaced_at_problem
from ._protocol import Notifications
from ._redis_common import SingleKeyCommands, Subscription
from ._redis_common import px as _px
from ._scripts import RELEASE_LOCK, SET_IF, TAG_BUMP, TAG_STAMPS
from ._tracking import TrackingChannel, follow, tracking_options
from ._tracking import decode_keys as _decode_keys

if TYPE_CHECKING:
    from ._cluster import RedisClusterBackend

__all__ = ("RedisBackend",)

# What a failed call can raise out of redis-py: its own errors, socket errors it did not wrap
# (TLS, DNS), and asyncio's timeout (a builtin TimeoutError from 3.11 on, its own class on 3.10).
# CancelledError is deliberately absent: cancellation always propagates untouched.
_FAILURES: Final = (RedisError, OSError, asyncio.TimeoutError)

_TIMEOUTS: Final = (RedisTimeoutError, asyncio.TimeoutError, socket.timeout)

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
    """

    failures: ClassVar[tuple[type[BaseException], ...]] = _FAILURES
    _client: Redis

    __slots__ = (
        "_client",
        "_command_ms",
        "_connect_ms",
        "_get",
        "_label",
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
        self._command_ms = _milliseconds(connection_kwargs.get("socket_timeout"))
        self._connect_ms = _milliseconds(connection_kwargs.get("socket_connect_timeout"))
        # The hit path, bound once. redis-py types GET as ``bytes | str | None`` because a client
        # may decode; this one was just checked not to, so its GET returns ``bytes | None``.
        self._get = cast("Callable[[str], Awaitable[bytes | None]]", client.get)
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
          operation by hash slot and scans every primary. ``max_connections`` applies per
          node, and ``retries`` counts retries after a connection error *or a timeout*
          (redis-py's cluster client does not tell them apart), each after a topology
          refresh; there is none by default.

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
            # Imported here: _cluster imports this module's helpers.
            from ._cluster import RedisClusterBackend

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
            from ._sentinel import sentinel_client

            try:
                client = sentinel_client(
                    url,
                    max_connections=max_connections,
                    socket_timeout=command_timeout,
                    socket_connect_timeout=connect_timeout,
                    retry=Retry(
                        NoBackoff(), max(retries, 1), supported_errors=(RedisConnectionError,)
                    ),
                    health_check_interval=health_check_interval,
                    client_name=client_name,
                )
            except ValueError as exc:
                raise ConfigurationError(f"the Redis URL {redacted} is invalid: {exc}") from None
            backend = cls(client, owns_client=True)
            backend._label = f"url={redacted!r}"
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
                retry=Retry(NoBackoff(), max(retries, 1), supported_errors=(RedisConnectionError,)),
                health_check_interval=health_check_interval,
                client_name=client_name,
                **tls,
            )
        except ValueError as exc:
            # redis-py's parse errors name the scheme or option at fault, never the password.
            raise ConfigurationError(f"the Redis URL {redacted} is invalid: {exc}") from None
        backend = cls(Redis.from_pool(pool), owns_client=True)
        backend._label = f"url={redacted!r}"
        return backend

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
        try:
            values = await self._client.mget(keys)
        except _FAILURES as exc:
            raise self._failure("MGET", exc) from exc
        # Not decoded: the constructor refused decode_responses clients.
        return cast("list[bytes | None]", values)

    async def set_many(self, items: Mapping[str, bytes], ttl: float | None = None) -> None:
        """Stores every item in one round trip: MSET, or a pipeline of ``SET PX`` with a ttl.

        The pipeline is not a transaction: on failure some items may be stored and others not.
        """
        if not items:
            return
        if ttl is None:
            try:
                await self._client.mset(items)
            except _FAILURES as exc:
                raise self._failure("MSET", exc) from exc
            return
        px = _px(ttl)
        pipeline = self._client.pipeline(transaction=False)
        for key, value in items.items():
            pipeline.set(key, value, px=px)
        try:
            await pipeline.execute()
        except _FAILURES as exc:
            raise self._failure("SET pipeline", exc) from exc

    async def delete(self, *keys: str) -> int:
        """Removes ``keys`` with UNLINK (memory is freed off the main thread); returns how many existed."""
        if not keys:
            return 0
        try:
            return await self._client.unlink(*keys)
        except _FAILURES as exc:
            raise self._failure("UNLINK", exc) from exc

    async def exists(self, key: str) -> bool:
        """Returns whether ``key`` exists (EXISTS)."""
        try:
            return bool(await self._client.exists(key))
        except _FAILURES as exc:
            raise self._failure("EXISTS", exc) from exc

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
        try:
            if ttl is None:
                return await self._client.incrby(key, amount)
            pipeline = self._client.pipeline(transaction=True)
            pipeline.set(key, 0, nx=True, px=_px(ttl))
            pipeline.incrby(key, amount)
            _, value = await pipeline.execute()
        except ResponseError as exc:
            raise self._incr_failure(key, amount, exc) from exc
        except _FAILURES as exc:
            raise self._failure("INCRBY", exc) from exc
        return int(value)

    async def scan(self, pattern: str, *, count: int = 500) -> AsyncIterator[list[str]]:
        """Yields batches of keys matching ``pattern`` with ``SCAN MATCH COUNT`` until it ends.

        Empty batches, which SCAN returns often, are not yielded. A key that is not UTF-8
        cannot have been written through a backend nor be deleted through one, so it is
        skipped.
        """
        cursor = 0
        while True:
            try:
                cursor, raw_keys = await self._client.scan(cursor, match=pattern, count=count)
            except _FAILURES as exc:
                raise self._failure("SCAN", exc) from exc
            if raw_keys:
                keys = _decode_keys(cast("list[bytes]", raw_keys))
                if keys:
                    yield keys
            if cursor == 0:
                return

    async def ping(self) -> None:
        """Sends PING; raises `BackendError` if the server does not answer."""
        try:
            await self._client.ping()
        except _FAILURES as exc:
            raise self._failure("PING", exc) from exc

    async def server_info(self) -> dict[str, float | int | str]:
        """Returns facts from INFO: ``uptime_seconds``, ``used_memory_mb`` (one decimal),
        ``connected_clients``, ``ops_per_sec`` and ``redis_version``, each where the server
        reports it."""
        try:
            info = await self._client.info()
        except _FAILURES as exc:
            raise self._failure("INFO", exc) from exc
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
        try:
            await self._client.aclose()
        except _FAILURES as exc:
            raise self._failure("close", exc) from exc

    # -- invalidation messages for a local tier (TrackingBackend) ----------------------------

    async def invalidations(
        self, prefix: str, *, heartbeat: float
    ) -> AsyncIterator[list[str] | None]:
        """Follows changes under ``prefix`` with ``CLIENT TRACKING ... BCAST`` (see `_tracking`).

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
            failure=self._failure,
            failures=_FAILURES,
        ):
            yield keys

    async def publish(self, channel: str) -> None:
        """Sends an empty message on ``channel`` (PUBLISH), waking its subscribers."""
        try:
            await self._client.publish(channel, b"")
        except _FAILURES as exc:
            raise self._failure("PUBLISH", exc) from exc

    @contextlib.asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[Notifications]:
        """Subscribes to ``channel`` on a dedicated connection for the ``async with`` block."""
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        try:
            try:
                await pubsub.subscribe(channel)
            except _FAILURES as exc:
                raise self._failure("SUBSCRIBE", exc) from exc
            yield Subscription(pubsub, self)
        finally:
            with contextlib.suppress(*_FAILURES):
                await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves PubSub.aclose unannotated

    def _failure(self, command: str, exc: BaseException) -> BackendError:
        """Returns the `BackendError` for ``command`` failing with ``exc``; never holds secrets."""
        if isinstance(exc, _TIMEOUTS):
            # redis-py's only connect-timeout message; any other timeout is a read or write.
            if str(exc).startswith("Timeout connecting") and self._connect_ms:
                return BackendError(f"{command} timed out connecting after {self._connect_ms} ms")
            if self._command_ms:
                return BackendError(f"{command} timed out after {self._command_ms} ms")
            return BackendError(f"{command} timed out")
        return BackendError(f"{command} failed: {self._reason(exc)}")

    def _reason(self, exc: BaseException) -> str:
        """Describes ``exc`` in words safe to log: no URL, password or stored value."""
        if isinstance(exc, AuthenticationError):
            return "the server refused the credentials"
        if isinstance(exc, ResponseError):
            # The server's own error text ("OOM ...", "READONLY ...", "NOPERM ..."). Only an
            # unknown command echoes its arguments, and that tail is cut.
            text = str(exc).split(", with args beginning with", 1)[0]
            return f"the server replied {text[:200]!r}"
        if isinstance(exc, MaxConnectionsError):
            return f"all {self._client.connection_pool.max_connections} pooled connections are busy"
        if isinstance(exc, MasterNotFoundError):
            # Its message names the service only: no host, port or password.
            return "no Sentinel named a master for the service (unknown service, or none answered)"
        # redis-py wraps socket errors in its ConnectionError, keeping the OSError as the
        # context; its own message would name the host and port, so it is described here.
        cause: BaseException | None = exc
        while cause is not None and not isinstance(cause, OSError):
            cause = cause.__cause__ or cause.__context__
        if cause is not None:
            return _describe_os_error(cause)
        if isinstance(exc, RedisConnectionError):
            return "the connection failed or was closed by the server"
        return type(exc).__name__


def _describe_os_error(exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset by the server"
    if isinstance(exc, (BrokenPipeError, ConnectionAbortedError)):
        return "connection closed by the server"
    if isinstance(exc, socket.gaierror):
        return "the host name did not resolve"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "the server's TLS certificate was not trusted"
    if isinstance(exc, ssl.SSLError):
        return "the TLS handshake failed"
    if isinstance(exc, FileNotFoundError):
        return "no Unix socket at that path"
    if exc.strerror:
        return exc.strerror[0].lower() + exc.strerror[1:]
    return type(exc).__name__


def _milliseconds(seconds: object) -> str | None:
    """Formats a redis-py timeout for messages: ``0.1`` -> ``"100"``; ``None`` when unset."""
    if isinstance(seconds, (int, float)) and seconds > 0:
        return f"{seconds * 1000:g}"
    return None


def _check_positive(name: str, seconds: float) -> None:
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ConfigurationError(f"{name} must be a positive number of seconds, not {seconds!r}")
