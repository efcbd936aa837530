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
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

REDIS_SERVER = shutil.which("redis-server")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
        "extendedKeyUsage = serverAuth\n"
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
