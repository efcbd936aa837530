"""Private `redis-server` processes on free loopback ports, for tests that stop, kill or count."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REDIS_SERVER = shutil.which("redis-server")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_ports(count: int) -> list[int]:
    """Returns ``count`` distinct free loopback ports (all held open until all are chosen)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One redis-server on 127.0.0.1, started and stopped by pid; keeps nothing on disk."""

    def __init__(self, directory: Path, port: int | None = None, *extra: str) -> None:
        if REDIS_SERVER is None:
            raise RuntimeError("redis-server is not on PATH")
        self.port = port or free_port()
        self.directory = directory
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert REDIS_SERVER is not None
        self.process = subprocess.Popen(
            [
                REDIS_SERVER,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not _answers(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            # A test that froze it (SIGSTOP) and failed before thawing it: SIGTERM would wait.
            os.kill(self.process.pid, signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


@contextlib.contextmanager
def running_redis(directory: Path, *extra: str) -> Iterator[RedisServer]:
    server = RedisServer(directory, None, *extra)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# -- helpers for fault, TLS and ACL tests ------------------------------------------------------

OPENSSL = shutil.which("openssl")


def closed_port() -> int:
    """Returns a loopback port that nothing listens on (it was free a moment ago)."""
    return free_port()


@contextlib.asynccontextmanager
async def black_hole() -> AsyncIterator[int]:
    """A server on 127.0.0.1 that accepts connections, reads everything and never answers.

    Yields its port. On exit it stops listening and closes every connection it accepted.
    """
    handlers: set[asyncio.Task[None]] = set()
    writers: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            handlers.add(task)
        writers.append(writer)
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):
                pass
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = int(server.sockets[0].getsockname()[1])
    try:
        yield port
    finally:
        server.close()
        for writer in writers:
            writer.close()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()


@contextlib.asynccontextmanager
async def serving(
    handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[int]:
    """An asyncio server on 127.0.0.1 running ``handler`` for each connection; yields its port."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 1)


@dataclass(frozen=True)
class TlsFiles:
    """A throw-away CA and a server certificate for 127.0.0.1 that it signed (PEM files)."""

    ca_cert: Path
    cert: Path
    key: Path


def make_tls_files(directory: Path) -> TlsFiles:
    """Writes a new CA and a server certificate for IP 127.0.0.1 into ``directory`` with openssl."""
    if OPENSSL is None:
        raise RuntimeError("openssl is not on PATH")
    ca_key, ca_cert = directory / "ca.key", directory / "ca.crt"
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.crt"
    extensions = directory / "server.ext"
    extensions.write_text(
        "subjectAltName = IP:127.0.0.1\n"
        "basicConstraints = critical, CA:FALSE\n"
        "keyUsage = critical, digitalSignature, keyEncipherment\n"
        # clientAuth too: a cluster node presents its certificate to the others on the bus.
        "extendedKeyUsage = serverAuth, clientAuth\n"
    )
    steps = [
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
         "/CN=cachetier test CA", "-keyout", str(ca_key), "-out", str(ca_cert)],
        ["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
         "-keyout", str(key), "-out", str(csr)],
        ["x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key),
         "-CAcreateserial", "-days", "2", "-extfile", str(extensions), "-out", str(cert)],
    ]  # fmt: skip
    for step in steps:
        subprocess.run([OPENSSL, *step], check=True, capture_output=True, timeout=60)
    return TlsFiles(ca_cert=ca_cert, cert=cert, key=key)


class TlsUnsupportedError(RuntimeError):
    """This redis-server was built without TLS support."""


def _answers_tls(port: int, ca_cert: Path) -> bool:
    context = ssl.create_default_context(cafile=str(ca_cert))
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=0.5) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as sock,
        ):
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class TlsRedisServer(RedisServer):
    """A redis-server that listens only on a TLS port, with ``files`` as its certificate."""

    def __init__(self, directory: Path, files: TlsFiles, *extra: str) -> None:
        super().__init__(directory, None, *extra)
        self.files = files
        self.log = directory / "redis-tls.log"

    @property
    def url(self) -> str:
        return f"rediss://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert REDIS_SERVER is not None
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    REDIS_SERVER,
                    "--bind", "127.0.0.1",
                    "--port", "0",
                    "--tls-port", str(self.port),
                    "--tls-cert-file", str(self.files.cert),
                    "--tls-key-file", str(self.files.key),
                    "--tls-ca-cert-file", str(self.files.ca_cert),
                    "--tls-auth-clients", "no",
                    "--save", "",
                    "--appendonly", "no",
                    "--dir", str(self.directory),
                    *self.extra,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 10
        while not _answers_tls(self.port, self.files.ca_cert):
            if self.process.poll() is not None:
                output = self.log.read_text(errors="replace")
                if "tls" in output.lower() and "bad directive" in output.lower():
                    raise TlsUnsupportedError(
                        f"{REDIS_SERVER} was built without TLS support (BUILD_TLS=no)"
                    )
                raise RuntimeError(f"redis-server with TLS exited at start:\n{output[-2000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server with TLS did not start on port {self.port}")
            time.sleep(0.02)


# -- helpers for Redis Cluster and Sentinel tests ----------------------------------------------

REDIS_CLI = shutil.which("redis-cli")


def _command(port: int, *args: str) -> str:
    """Runs one command with redis-cli against 127.0.0.1:``port``; returns its raw output."""
    assert REDIS_CLI is not None
    completed = subprocess.run(
        [REDIS_CLI, "-h", "127.0.0.1", "-p", str(port), *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=10,
    )
    return completed.stdout


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def _info_fields(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, value = line.strip().partition(":")
        if sep:
            fields[name] = value
    return fields


class RedisClusterServers:
    """A Redis Cluster of ``size`` primaries, each with ``replicas`` replicas, on 127.0.0.1, in
    one directory.

    Each node gets a free port and a free cluster-bus port (``cluster-port``, so the bus never
    collides with another process on port + 10000). `start` returns once every node reports
    ``cluster_state:ok`` with all 16384 slots assigned and agrees on the node count.
    """

    def __init__(self, directory: Path, size: int = 3, replicas: int = 0) -> None:
        if REDIS_SERVER is None or REDIS_CLI is None:
            raise RuntimeError("redis-server or redis-cli is not on PATH")
        self.directory = directory
        self.nodes: list[RedisServer] = []
        self.replicas = replicas
        count = size * (1 + replicas)
        ports = free_ports(2 * count)
        for port, bus_port in zip(ports[:count], ports[count:], strict=True):
            options = (
                "--cluster-enabled", "yes",
                "--cluster-config-file", f"nodes-{port}.conf",
                "--cluster-port", str(bus_port),
                "--cluster-node-timeout", "5000",
            )  # fmt: skip
            self.nodes.append(RedisServer(directory, port, *options))

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    @property
    def url(self) -> str:
        """A ``redis+cluster://`` URL naming every node as a startup node."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def start(self) -> None:
        try:
            for node in self.nodes:
                node.start()
            assert REDIS_CLI is not None
            subprocess.run(
                [
                    REDIS_CLI, "--cluster", "create",
                    *(f"127.0.0.1:{port}" for port in self.ports),
                    "--cluster-replicas", str(self.replicas), "--cluster-yes",
                ],
                check=True,
                capture_output=True,
                timeout=60,
            )  # fmt: skip
            _wait_for(self._ready, "cluster_state:ok on every node")
        except BaseException:
            self.stop()
            raise

    def _ready(self) -> bool:
        for port in self.ports:
            info = _info_fields(_command(port, "CLUSTER", "INFO"))
            if (
                info.get("cluster_state") != "ok"
                or info.get("cluster_slots_ok") != "16384"
                or info.get("cluster_known_nodes") != str(len(self.nodes))
            ):
                return False
        return True

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def record_commands(client: Any) -> list[str]:
    """Records the name of every command ``client`` (a redis-py client) is asked to send from
    now on, in the list returned; the commands still go out."""
    sent: list[str] = []
    original = client.execute_command

    async def spy(*args: object, **options: object) -> object:
        sent.append(str(args[0]))
        return await original(*args, **options)

    client.execute_command = spy
    return sent


@contextlib.contextmanager
def running_cluster(
    directory: Path, size: int = 3, replicas: int = 0
) -> Iterator[RedisClusterServers]:
    cluster = RedisClusterServers(directory, size, replicas)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


class SentinelServers:
    """One Redis primary and one Sentinel (``redis-server --sentinel``) monitoring it.

    The service is `SERVICE`. `start` returns once the Sentinel names the primary's address
    for it and does not consider it down. ``password``, when given, protects the primary
    (``requirepass``) and is given to the Sentinel (``auth-pass``); the Sentinel itself takes
    no password.
    """

    SERVICE = "mymaster"

    def __init__(self, directory: Path, password: str | None = None) -> None:
        if REDIS_SERVER is None or REDIS_CLI is None:
            raise RuntimeError("redis-server or redis-cli is not on PATH")
        self.directory = directory
        self.password = password
        primary_port, self.sentinel_port = free_ports(2)
        self.primary = RedisServer(directory, primary_port)
        self.process: subprocess.Popen[bytes] | None = None
        self.log = directory / "sentinel.log"

    @property
    def url(self) -> str:
        """A ``redis+sentinel://`` URL for `SERVICE`, with the password when there is one."""
        credentials = f":{self.password}@" if self.password else ""
        return f"redis+sentinel://{credentials}127.0.0.1:{self.sentinel_port}/{self.SERVICE}"

    def start(self) -> None:
        assert REDIS_SERVER is not None
        try:
            self.primary.start()
            if self.password:
                # Set once it answers: RedisServer.start waits for a PING, which needs no AUTH.
                _command(self.primary.port, "CONFIG", "SET", "requirepass", self.password)
            config = self.directory / "sentinel.conf"
            lines = [
                f"port {self.sentinel_port}",
                "bind 127.0.0.1",
                f"dir {self.directory}",
                f"sentinel monitor {self.SERVICE} 127.0.0.1 {self.primary.port} 1",
                f"sentinel down-after-milliseconds {self.SERVICE} 5000",
            ]
            if self.password:
                lines.append(f"sentinel auth-pass {self.SERVICE} {self.password}")
            # Sentinel rewrites its configuration file, so it must be a file of its own.
            config.write_text("\n".join(lines) + "\n")
            with self.log.open("wb") as log:
                self.process = subprocess.Popen(
                    [REDIS_SERVER, str(config), "--sentinel"], stdout=log, stderr=subprocess.STDOUT
                )
            _wait_for(self._ready, f"the Sentinel on port {self.sentinel_port} to see the primary")
        except BaseException:
            self.stop()
            raise

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            output = self.log.read_text(errors="replace")
            raise RuntimeError(f"redis-server --sentinel exited at start:\n{output[-2000:]}")
        if not _answers(self.sentinel_port):
            return False
        lines = _command(self.sentinel_port, "SENTINEL", "MASTER", self.SERVICE).splitlines()
        state = dict(zip(lines[::2], lines[1::2], strict=False))
        return state.get("port") == str(self.primary.port) and state.get("flags") == "master"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            # A test that froze it (SIGSTOP) and failed before thawing it: SIGTERM would wait.
            os.kill(self.process.pid, signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.primary.stop()


@contextlib.contextmanager
def running_sentinel(directory: Path, password: str | None = None) -> Iterator[SentinelServers]:
    servers = SentinelServers(directory, password)
    servers.start()
    try:
        yield servers
    finally:
        servers.stop()
