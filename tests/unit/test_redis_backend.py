"""Behaviour of `RedisBackend` beyond the backend contract: construction, timeouts and errors."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import fakeredis
import pytest
import redis.asyncio

from cachetier import BackendError, ConfigurationError
from cachetier.backends._protocol import Backend, ServerInfoBackend
from cachetier.backends.redis import RedisBackend

COMMAND_TIMEOUT = 0.1
# Room for a loaded machine on top of the timeout; still far below redis-py's 5 s defaults.
MARGIN = 0.4


def _closed_port() -> int:
    """Returns a loopback port nothing listens on (it was free a moment ago)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture
async def black_hole() -> AsyncIterator[str]:
    """The URL of a local server that accepts connections, reads everything and never answers."""
    handlers: set[asyncio.Task[None]] = set()
    writers: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        writers.append(writer)
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):
                pass
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.close()
        for writer in writers:
            writer.close()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()


@pytest.fixture
async def fake_client() -> AsyncIterator[redis.asyncio.Redis]:
    client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    try:
        yield client
    finally:
        await client.aclose()


async def _drain_scan(backend: RedisBackend) -> None:
    async for _ in backend.scan("*"):
        pass


# Every call of the backend, for the checks that each one is bounded and translated.
OPERATIONS: dict[str, Callable[[RedisBackend], Awaitable[object]]] = {
    "get": lambda backend: backend.get("k"),
    "get_many": lambda backend: backend.get_many(["a", "b"]),
    "set": lambda backend: backend.set("k", b"v"),
    "set-ttl": lambda backend: backend.set("k", b"v", ttl=10),
    "set_many": lambda backend: backend.set_many({"a": b"1", "b": b"2"}),
    "set_many-ttl": lambda backend: backend.set_many({"a": b"1", "b": b"2"}, ttl=10),
    "add": lambda backend: backend.add("k", b"v", ttl=10),
    "delete": lambda backend: backend.delete("a", "b"),
    "exists": lambda backend: backend.exists("k"),
    "ttl": lambda backend: backend.ttl("k"),
    "expire": lambda backend: backend.expire("k", 10),
    "incr": lambda backend: backend.incr("n"),
    "incr-ttl": lambda backend: backend.incr("n", 2, ttl=10),
    "scan": _drain_scan,
    "ping": lambda backend: backend.ping(),
    "server_info": lambda backend: backend.server_info(),
}


# construction


def test_from_url_needs_no_event_loop_and_opens_no_connection() -> None:
    """Nothing listens on the port, yet construction succeeds: it does no I/O."""
    backend = RedisBackend.from_url(f"redis://127.0.0.1:{_closed_port()}/0")
    assert backend.kind == "redis"


async def test_first_command_to_a_closed_port_fails_fast() -> None:
    backend = RedisBackend.from_url(f"redis://127.0.0.1:{_closed_port()}/0", connect_timeout=0.2)
    started = time.perf_counter()
    with pytest.raises(BackendError, match=r"^GET failed: connection refused$"):
        await backend.get("k")
    assert time.perf_counter() - started < 1.0
    await backend.aclose()


async def test_refused_connection_error_and_repr_hide_the_password() -> None:
    backend = RedisBackend.from_url("redis://user:s3cret-pw@127.0.0.1:1/0")
    with pytest.raises(BackendError) as caught:
        await backend.set("k", b"v")
    assert str(caught.value) == "SET failed: connection refused"
    for text in (str(caught.value), repr(caught.value), str(caught.value.__cause__), repr(backend)):
        assert "s3cret-pw" not in text
    assert repr(backend) == "RedisBackend(url='redis://user:***@127.0.0.1:1/0')"
    await backend.aclose()


async def test_client_that_decodes_responses_is_refused() -> None:
    client = fakeredis.FakeAsyncRedis(decode_responses=True)
    with pytest.raises(ConfigurationError, match="decode_responses"):
        RedisBackend(client)
    await client.aclose()


async def test_repr_of_a_wrapped_client_names_its_class(
    fake_client: redis.asyncio.Redis,
) -> None:
    backend = RedisBackend(fake_client)
    assert repr(backend) == f"RedisBackend(client={type(fake_client).__name__})"


async def test_backend_meets_the_backend_and_server_info_protocols(
    fake_client: redis.asyncio.Redis,
) -> None:
    backend: Backend = RedisBackend(fake_client)
    assert isinstance(backend, ServerInfoBackend)


@pytest.mark.parametrize(
    "url",
    [
        "http://user:pw-in-url@127.0.0.1/0",
        "redis://user:pw-in-url@127.0.0.1:notaport/0",
        "nonsense",
    ],
)
def test_invalid_url_raises_configuration_error_without_the_password(url: str) -> None:
    with pytest.raises(ConfigurationError, match="Redis URL") as caught:
        RedisBackend.from_url(url)
    assert "pw-in-url" not in str(caught.value)


def test_tls_options_need_a_rediss_url() -> None:
    with pytest.raises(ConfigurationError, match="rediss://"):
        RedisBackend.from_url("redis://127.0.0.1/0", ssl_ca_certs="/etc/ssl/ca.pem")


async def test_rediss_and_unix_urls_build_without_io() -> None:
    tls = RedisBackend.from_url("rediss://127.0.0.1:6380/0", ssl_cert_reqs="none")
    unix = RedisBackend.from_url(f"unix:///tmp/cachetier-{uuid.uuid4().hex}.sock?db=3")
    with pytest.raises(BackendError, match=r"^PING failed: no Unix socket at that path$"):
        await unix.ping()
    await tls.aclose()
    await unix.aclose()


@pytest.mark.parametrize(
    "options",
    [
        {"connect_timeout": 0},
        {"command_timeout": -1},
        {"command_timeout": float("inf")},
        {"max_connections": 0},
        {"retries": -1},
        {"health_check_interval": -5},
    ],
    ids=lambda options: next(iter(options)),
)
def test_out_of_range_options_raise_configuration_error(options: dict[str, float]) -> None:
    name = next(iter(options))
    with pytest.raises(ConfigurationError, match=name):
        RedisBackend.from_url("redis://127.0.0.1/0", **options)  # type: ignore[arg-type]


# bounded calls


@pytest.mark.parametrize("operation", list(OPERATIONS))
async def test_every_call_to_a_server_that_never_answers_fails_within_the_timeout(
    black_hole: str, operation: str
) -> None:
    backend = RedisBackend.from_url(black_hole, command_timeout=COMMAND_TIMEOUT)
    started = time.perf_counter()
    with pytest.raises(BackendError, match=r"^[A-Z][A-Za-z ]* timed out after 100 ms$"):
        await OPERATIONS[operation](backend)
    assert time.perf_counter() - started < COMMAND_TIMEOUT + MARGIN
    await backend.aclose()


async def test_waiting_for_a_busy_pool_is_bounded_too(black_hole: str) -> None:
    backend = RedisBackend.from_url(black_hole, command_timeout=COMMAND_TIMEOUT, max_connections=1)
    started = time.perf_counter()
    results = await asyncio.gather(
        *(backend.get(f"k{i}") for i in range(4)), return_exceptions=True
    )
    assert all(isinstance(result, BackendError) for result in results)
    # Each call waits for the pool or for the server, never for both beyond one timeout.
    assert time.perf_counter() - started < 2 * COMMAND_TIMEOUT + MARGIN
    await backend.aclose()


async def test_cancelling_a_call_propagates_cancellation(black_hole: str) -> None:
    backend = RedisBackend.from_url(black_hole, command_timeout=5)
    task = asyncio.create_task(backend.get("k"))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await backend.aclose()


# errors the server returns


async def test_incr_of_a_non_integer_names_the_key(fake_client: redis.asyncio.Redis) -> None:
    backend = RedisBackend(fake_client)
    await backend.set("counter:1", b"not a number")
    for ttl in (None, 10.0):
        with pytest.raises(
            BackendError, match=r"the value at key 'counter:1' is not a 64-bit integer"
        ):
            await backend.incr("counter:1", ttl=ttl)


async def test_server_error_reply_becomes_backend_error_naming_the_command(
    fake_client: redis.asyncio.Redis,
) -> None:
    await fake_client.lpush("list", b"x")
    backend = RedisBackend(fake_client)
    with pytest.raises(BackendError, match=r"^GET failed: the server replied '.*WRONGTYPE"):
        await backend.get("list")


async def test_scan_skips_keys_that_are_not_utf8(fake_client: redis.asyncio.Redis) -> None:
    await fake_client.set(b"p:\xff\xfe", b"v")
    await fake_client.set(b"p:ok", b"v")
    backend = RedisBackend(fake_client)
    assert [batch async for batch in backend.scan("p:*")] == [["p:ok"]]


async def test_aclose_leaves_a_borrowed_client_usable(fake_client: redis.asyncio.Redis) -> None:
    backend = RedisBackend(fake_client)
    await backend.set("k", b"v")
    await backend.aclose()
    assert await fake_client.get("k") == b"v"


# against a real server


@pytest.mark.redis
async def test_server_info_reports_facts_about_the_server(redis_url: str) -> None:
    backend = RedisBackend.from_url(redis_url, connect_timeout=2.0, command_timeout=2.0)
    try:
        info = await backend.server_info()
    finally:
        await backend.aclose()
    assert set(info) == {
        "uptime_seconds",
        "used_memory_mb",
        "connected_clients",
        "ops_per_sec",
        "redis_version",
    }
    assert isinstance(info["uptime_seconds"], int)
    assert isinstance(info["used_memory_mb"], float)
    assert info["used_memory_mb"] == round(info["used_memory_mb"], 1)
    assert isinstance(info["connected_clients"], int)
    assert info["connected_clients"] >= 1
    assert isinstance(info["ops_per_sec"], int)
    assert re.fullmatch(r"\d+\.\d+\.\d+", str(info["redis_version"]))


@pytest.mark.redis
async def test_ttls_are_sent_in_milliseconds_rounded_up(redis_url: str, namespace: str) -> None:
    backend = RedisBackend.from_url(redis_url, connect_timeout=2.0, command_timeout=2.0)
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        started = time.perf_counter()
        await backend.set(f"{namespace}:a", b"v", ttl=1.2341)
        await backend.incr(f"{namespace}:n", ttl=2.0001)
        left_a = await client.pttl(f"{namespace}:a")
        left_n = await client.pttl(f"{namespace}:n")
        # The TTLs run down meanwhile: by more than the 35 ms a fixed bound allowed on a loaded
        # CI machine, never by more than the time these commands took (1 ms: Redis's clock).
        elapsed = (time.perf_counter() - started) * 1000 + 1
        assert 1235 - elapsed <= left_a <= 1235
        assert 2001 - elapsed <= left_n <= 2001
    finally:
        await client.delete(f"{namespace}:a", f"{namespace}:n")
        await client.aclose()
        await backend.aclose()


async def _client_names(redis_url: str) -> set[str]:
    admin = redis.asyncio.Redis.from_url(redis_url)
    try:
        return {client["name"] for client in await admin.client_list()}
    finally:
        await admin.aclose()


@pytest.mark.redis
async def test_aclose_closes_the_connections_of_an_owned_client_only(redis_url: str) -> None:
    owned_name = f"cachetier-owned-{uuid.uuid4().hex[:8]}"
    borrowed_name = f"cachetier-borrowed-{uuid.uuid4().hex[:8]}"
    owned = RedisBackend.from_url(
        redis_url, client_name=owned_name, connect_timeout=2.0, command_timeout=2.0
    )
    client = redis.asyncio.Redis.from_url(redis_url, client_name=borrowed_name)
    borrowed = RedisBackend(client)
    try:
        await owned.ping()
        await borrowed.ping()
        assert {owned_name, borrowed_name} <= await _client_names(redis_url)
        await owned.aclose()
        await borrowed.aclose()
        for _ in range(50):
            names = await _client_names(redis_url)
            if owned_name not in names:
                break
            await asyncio.sleep(0.02)
        assert owned_name not in names
        assert borrowed_name in names
    finally:
        await client.aclose()
        await owned.aclose()


@pytest.mark.redis
async def test_default_timeouts_serve_a_healthy_local_server(
    redis_url: str, namespace: str
) -> None:
    backend = RedisBackend.from_url(redis_url)
    try:
        await backend.set(f"{namespace}:k", b"v" * 1024, ttl=60)
        for _ in range(200):
            assert await backend.get(f"{namespace}:k") == b"v" * 1024
    finally:
        await backend.delete(f"{namespace}:k")
        await backend.aclose()
