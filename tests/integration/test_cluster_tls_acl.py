"""A Redis Cluster over TLS with an ACL user: the held reads of `backends.redis.slots` make
their connections as the cluster client does, so TLS and AUTH apply to them too."""

from __future__ import annotations

import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
import redis

from cachetier import BackendError, Cache
from cachetier.backends import RedisBackend, RedisClusterBackend

from ..conftest import REQUIRE_REDIS
from ..servers import (
    OPENSSL,
    REDIS_CLI,
    REDIS_SERVER,
    TlsFiles,
    TlsRedisServer,
    TlsUnsupportedError,
    free_ports,
    make_tls_files,
    record_commands,
)

pytestmark = pytest.mark.redis

USER = "app"
PASSWORD = "pw-S3CRET-tls-cluster"


def _missing(message: str) -> None:
    if REQUIRE_REDIS:
        pytest.fail(message + " [CACHETIER_REQUIRE_REDIS=1 makes this a failure]")
    pytest.skip(message)


@dataclass
class TlsCluster:
    files: TlsFiles
    ports: list[int]

    def url(self, password: str = PASSWORD) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.ports)
        return f"rediss+cluster://{USER}:{password}@{hosts}?ssl_ca_certs={self.files.ca_cert}"

    def node(self, port: int) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1",
            port=port,
            username=USER,
            password=PASSWORD,
            ssl=True,
            ssl_ca_certs=str(self.files.ca_cert),
        )

    def ready(self) -> bool:
        for port in self.ports:
            with self.node(port) as client:
                reply = client.execute_command("CLUSTER INFO")
            # Parsed into a dict by newer redis-py releases, text before.
            if not isinstance(reply, dict):
                text = reply.decode() if isinstance(reply, bytes) else str(reply)
                reply = dict(
                    line.strip().split(":", 1) for line in text.splitlines() if ":" in line
                )
            fields = {name: str(value) for name, value in reply.items()}
            if fields.get("cluster_state") != "ok" or fields.get("cluster_known_nodes") != str(
                len(self.ports)
            ):
                return False
        return True


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsCluster]:
    """Three TLS-only primaries whose default user may only PING; ``app`` may do anything."""
    if REDIS_SERVER is None or REDIS_CLI is None:
        _missing("redis-server or redis-cli is not installed (apt-get install redis-server)")
    if OPENSSL is None:
        _missing("openssl is not installed (apt-get install openssl)")
    directory = tmp_path_factory.mktemp("tls-cluster")
    files = make_tls_files(directory)
    ports = free_ports(6)
    nodes: list[TlsRedisServer] = []
    try:
        for port, bus_port in zip(ports[:3], ports[3:], strict=True):
            node_directory = directory / str(port)
            node_directory.mkdir()
            node = TlsRedisServer(
                node_directory,
                files,
                "--cluster-enabled", "yes",
                "--cluster-config-file", f"nodes-{port}.conf",
                "--cluster-port", str(bus_port),
                "--tls-cluster", "yes",
                "--user", "default", "on", "nopass", "-@all", "+ping",
                "--user", USER, "on", f">{PASSWORD}", "~*", "&*", "+@all",
            )  # fmt: skip
            node.port = port
            nodes.append(node)
            try:
                node.start()
            except TlsUnsupportedError as exc:
                pytest.skip(str(exc))
        assert REDIS_CLI is not None
        subprocess.run(
            [
                REDIS_CLI, "--tls", "--cacert", str(files.ca_cert),
                "--user", USER, "--pass", PASSWORD, "--no-auth-warning",
                "--cluster", "create", *(f"127.0.0.1:{port}" for port in ports[:3]),
                "--cluster-replicas", "0", "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )  # fmt: skip
        cluster = TlsCluster(files, ports[:3])
        deadline = time.monotonic() + 15
        while not cluster.ready():
            assert time.monotonic() < deadline, "the TLS cluster did not reach cluster_state:ok"
            time.sleep(0.05)
        yield cluster
    finally:
        for node in nodes:
            node.stop()


@pytest.fixture
async def backend(cluster: TlsCluster) -> AsyncIterator[RedisClusterBackend]:
    backend = RedisBackend.from_url(cluster.url(), connect_timeout=2.0, command_timeout=2.0)
    assert isinstance(backend, RedisClusterBackend)
    yield backend
    await backend.aclose()


async def test_reads_of_every_primary_go_over_held_tls_connections(
    backend: RedisClusterBackend, namespace: str
) -> None:
    keys = [f"{namespace}:{index}" for index in range(30)]
    await backend.set_many({key: key.encode() for key in keys})
    assert await backend.get_many(keys) == [key.encode() for key in keys]
    # From here on, only held connections: the cluster client sends nothing.
    sent = record_commands(backend._client)
    assert await backend.get_many(keys) == [key.encode() for key in keys]
    for key in keys:
        assert await backend.get(key) == key.encode()
    assert await backend.get(f"{namespace}:absent") is None
    assert sent == []
    held = backend._reads
    assert held is not None
    assert len(held._held) == 3, "one set of held connections per primary"


async def test_the_cache_round_trips_over_tls_with_the_acl_user(
    cluster: TlsCluster, namespace: str
) -> None:
    async with Cache(
        RedisBackend.from_url(cluster.url(), connect_timeout=2.0, command_timeout=2.0),
        namespace=namespace,
        strict=True,
    ) as cache:
        assert await cache.set("k", {"n": 1}) is True
        assert await cache.get("k") == {"n": 1}
        assert await cache.get_many(["k", "absent"]) == {"k": {"n": 1}}
        await cache.clear()


async def test_a_wrong_password_fails_reads_without_naming_it(cluster: TlsCluster) -> None:
    backend = RedisBackend.from_url(
        cluster.url("pw-WR0NG-guess"), connect_timeout=2.0, command_timeout=2.0
    )
    try:
        with pytest.raises(BackendError) as caught:
            await backend.get("k")
        assert "pw-WR0NG-guess" not in str(caught.value)
        assert PASSWORD not in str(caught.value)
    finally:
        await backend.aclose()
