"""How what redis-py raises becomes cachetier's `BackendError`, for both Redis backends.

The only module of cachetier that knows redis-py's exception classes. A backend holds one
`RedisErrors`, made from its client's connection options, and every command it sends goes
through it: ``with errors.on("UNLINK"): ...`` around the call, or, on the hot paths (GET,
MGET, SET), an inline ``try``/``except`` whose handler calls `RedisErrors.failure`, which costs
nothing until something fails.

Messages name the command and what went wrong, in words safe to log: never a URL, host,
port, password or stored value (redis-py's own messages may hold any of these).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, Final, NoReturn, final

from redis._parsers.base import BaseParser
from redis.asyncio.sentinel import MasterNotFoundError
from redis.exceptions import (
    AskError,
    AuthenticationError,
    ClusterDownError,
    InvalidResponse,
    MaxConnectionsError,
    MovedError,
    RedisClusterException,
    RedisError,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..._errors import BackendError, CounterError

__all__ = (
    "CLUSTER_FAILURES",
    "CLUSTER_URL_ERRORS",
    "FAILURES",
    "PROTOCOL_ERROR",
    "REROUTED_ERRORS",
    "RETRIED_ERRORS",
    "RedisErrors",
    "dropped_connection",
    "reply_error",
    "rerouted",
    "timed_out",
)

# What a failed call can raise out of redis-py: its own errors, socket errors it did not wrap
# (TLS, DNS), and asyncio's timeout (a builtin TimeoutError from 3.11 on, its own class on 3.10).
# CancelledError is deliberately absent: cancellation always propagates untouched.
FAILURES: Final = (RedisError, OSError, asyncio.TimeoutError)

# redis-py's cluster client raises RedisClusterException, which is not a RedisError, when no
# node answers, when slots are not covered and when it cannot route a command. Under many
# concurrent connects, its connections can also be torn down mid-handshake by a timeout and
# then written to, which raises AttributeError ('NoneType' object has no attribute
# 'writelines', redis-py 8.1): a failed call, not a bug of the caller's, so it fails open too.
CLUSTER_FAILURES: Final = (*FAILURES, RedisClusterException, AttributeError)

# The errors a one-server client retries at once (its ``Retry(supported_errors=...)``): a
# connection error, never a timeout.
RETRIED_ERRORS: Final = (RedisConnectionError,)

# What a cluster's held read (`slots`) may hand to the cluster client rather than fail, when
# `rerouted` says so: its slot lives elsewhere now, or its node is gone.
REROUTED_ERRORS: Final = (ResponseError, RedisConnectionError)
_REDIRECTIONS: Final = (MovedError, AskError, TryAgainError, ClusterDownError)
# redis-py before 6 parses these replies into plain ResponseErrors outside its cluster parser.
_REDIRECTION_CODES: Final = ("MOVED ", "ASK ", "TRYAGAIN", "CLUSTERDOWN")


def rerouted(exc: BaseException) -> bool:
    """Whether a cluster's read that failed with ``exc`` belongs to the cluster client, which
    follows redirections and refreshes its slot map: a MOVED, ASK, TRYAGAIN or CLUSTERDOWN
    reply, or a connection error. A timeout is not: it fails the read."""
    if isinstance(exc, (RedisConnectionError, *_REDIRECTIONS)):
        return True
    return type(exc) is ResponseError and str(exc).startswith(_REDIRECTION_CODES)


def dropped_connection(reason: str) -> Exception:
    """Returns the connection error of a read whose held connection was closed under it
    (`pipeline`); like a reset, it is retried once, and described as a closed connection."""
    return RedisConnectionError(reason)


def timed_out() -> Exception:
    """Returns the timeout of a read on a held connection (`pipeline`) that went unanswered for
    the command timeout; described as redis-py's own read timeouts are."""
    return RedisTimeoutError("Timeout reading from the held connection")


# What a reply parser raises for bytes that are no RESP reply (redis-py's choice for hiredis).
PROTOCOL_ERROR: Final = InvalidResponse

# Turns an error reply's text into redis-py's exception for it (NOPERM, WRONGTYPE, LOADING ...),
# as redis-py's own parsers do.
reply_error: Final[Callable[[str], Exception]] = BaseParser.parse_error


# What redis-py's cluster client raises for an option it refuses while parsing a URL; its text
# names the option, never the password.
CLUSTER_URL_ERRORS: Final = (RedisClusterException, TypeError)

_TIMEOUTS: Final = (RedisTimeoutError, asyncio.TimeoutError, socket.timeout)


@final
class RedisErrors:
    """The `BackendError`s of one Redis backend: what it catches, and the words for each failure.

    Attributes:
        caught: The exceptions that mean "the backend failed" (`FAILURES`, or
            `CLUSTER_FAILURES` for a cluster); any other exception passes through untouched.
    """

    __slots__ = ("_cluster", "_command_ms", "_connect_ms", "_pool_size", "caught")

    def __init__(
        self,
        connection_kwargs: Mapping[str, Any],
        *,
        cluster: bool,
        pool_size: Callable[[], object],
    ) -> None:
        """Takes the timeouts from the client's ``connection_kwargs``.

        ``cluster`` is true for redis-py's cluster client, whose errors carry their timeout
        as a cause, name a pipeline's failed command, and come from one pool per node.
        ``pool_size`` returns the pool's ``max_connections`` when a message needs it.
        """
        self.caught: tuple[type[BaseException], ...] = CLUSTER_FAILURES if cluster else FAILURES
        self._cluster = cluster
        self._command_ms = _milliseconds(connection_kwargs.get("socket_timeout"))
        self._connect_ms = _milliseconds(connection_kwargs.get("socket_connect_timeout"))
        self._pool_size = pool_size

    def on(self, command: str) -> Translating:
        """Returns a context manager raising the `BackendError` of any failure in its block.

        ``with errors.on("UNLINK"): ...`` turns a failure (`caught`) into the `BackendError`
        that `failure` makes for ``command``, chained to it; anything else passes through.
        """
        return Translating(self, command, None)

    def on_incr(self, key: str, amount: int) -> Translating:
        """Like `on` for INCRBY, with the server's refusals made `CounterError` (see
        `incr_failure`)."""
        return Translating(self, "INCRBY", (key, amount))

    def throw(self, command: str, exc: BaseException) -> NoReturn:
        """Raises the `BackendError` for ``exc`` if it is a failure, else ``exc`` itself.

        For exceptions gathered rather than caught (``asyncio.gather(return_exceptions=True)``).
        """
        if isinstance(exc, self.caught):
            raise self.failure(command, exc) from exc
        raise exc

    def raise_first(self, command: str, answers: Iterable[object]) -> None:
        """Raises (as `throw` does) the first of ``answers`` that is an exception, if any."""
        for answer in answers:
            if isinstance(answer, BaseException):
                self.throw(command, answer)

    def failure(self, command: str, exc: BaseException) -> BackendError:
        """Returns the `BackendError` for ``command`` failing with ``exc``; never holds secrets."""
        timeout = self._timeout(exc)
        if timeout is not None:
            # redis-py's only connect-timeout message; any other timeout is a read or write.
            if str(timeout).startswith("Timeout connecting") and self._connect_ms:
                return BackendError(f"{command} timed out connecting after {self._connect_ms} ms")
            if self._command_ms:
                return BackendError(f"{command} timed out after {self._command_ms} ms")
            return BackendError(f"{command} timed out")
        return BackendError(f"{command} failed: {self._reason(exc)}")

    def incr_failure(self, key: str, amount: int, exc: BaseException) -> BackendError:
        """Returns the error of a failed INCRBY: a `CounterError` when the server refused a
        value that is no 64-bit integer or would overflow, else the `failure`."""
        if isinstance(exc, ResponseError):
            message = str(exc)
            if "not an integer" in message:
                return CounterError(
                    f"INCRBY failed: the value at key {key!r} is not a 64-bit integer"
                )
            if "overflow" in message:
                return CounterError(
                    f"INCRBY failed: adding {amount} to the value at key {key!r} would overflow "
                    "a 64-bit integer"
                )
        return self.failure("INCRBY", exc)

    def _timeout(self, exc: BaseException) -> BaseException | None:
        if self._cluster:
            # A cluster error that no node answered in time carries the timeout as its cause.
            return _find(exc, _TIMEOUTS, causes_only=True)
        return exc if isinstance(exc, _TIMEOUTS) else None

    def _reason(self, exc: BaseException) -> str:
        """Describes ``exc`` in words safe to log: no URL, password or stored value."""
        if isinstance(exc, AuthenticationError):
            return "the server refused the credentials"
        if isinstance(exc, ResponseError):
            return f"the server replied {self._server_text(exc)[:200]!r}"
        if isinstance(exc, MaxConnectionsError):
            if self._cluster:
                return f"all {self._pool_size()} connections to a node are busy"
            return f"all {self._pool_size()} pooled connections are busy"
        if isinstance(exc, MasterNotFoundError) and not self._cluster:
            # Raised only through Sentinel, never through a cluster client (which would call
            # it a connection failure, below). It names the service only: no host or password.
            return "no Sentinel named a master for the service (unknown service, or none answered)"
        # redis-py wraps socket errors in its ConnectionError, keeping the OSError as the
        # context; its own message would name the host and port, so it is described here.
        # Cluster errors that wrap one (no node reachable) too.
        cause = _find(exc, (OSError,))
        if isinstance(cause, OSError):
            if isinstance(exc, RedisClusterException):
                return f"no node of the cluster could be reached ({_describe_os_error(cause)})"
            return _describe_os_error(cause)
        if isinstance(exc, RedisClusterException):
            return _cluster_reason(exc)
        if isinstance(exc, RedisConnectionError):
            return "the connection failed or was closed by the server"
        if isinstance(exc, AttributeError):
            # Only in CLUSTER_FAILURES: see there.
            return "a connection was closed while in use"
        return type(exc).__name__

    def _server_text(self, exc: ResponseError) -> str:
        """The server's own error text ("OOM ...", "READONLY ...", "CLUSTERDOWN ...", "NOPERM
        ..."). An unknown command echoes its arguments, and that tail is cut."""
        text = str(exc)
        # A pipeline (cluster commands; `set_many` with a TTL on one server) prefixes the text
        # with the failed command and its arguments, a stored value among them: that is cut.
        _, annotated, reply = text.partition("of pipeline caused error: ")
        if annotated:
            # What follows is the reply's args tuple: "('OOM command not allowed ...',)".
            text = reply.strip("(),").strip("'\"")
        return text.split(", with args beginning with", 1)[0]


@final
class Translating:
    """The context manager of `RedisErrors.on`: raises a failure in its block as `BackendError`.

    A plain (not async) context manager, so a command pays for no extra coroutine.
    """

    __slots__ = ("_command", "_counter", "_errors")

    def __init__(self, errors: RedisErrors, command: str, counter: tuple[str, int] | None) -> None:
        self._errors = errors
        self._command = command
        # The key and amount of an INCRBY, whose refusals are CounterErrors.
        self._counter = counter

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # Never suppresses: a failure leaves as its BackendError, anything else as itself.
        if exc is not None and isinstance(exc, self._errors.caught):
            if self._counter is not None:
                raise self._errors.incr_failure(*self._counter, exc) from exc
            raise self._errors.failure(self._command, exc) from exc


def _cluster_reason(exc: RedisClusterException) -> str:
    """Describes a cluster client's own error; its messages may quote the command and its
    arguments, so only known ones are told."""
    if isinstance(exc, SlotNotCoveredError):
        return "a hash slot is not served by any node"
    message = str(exc)
    if "not covered" in message:
        return "the cluster does not serve every hash slot"
    if "Cluster mode is not enabled" in message:
        return "the server is not in cluster mode"
    if "cannot be connected" in message:
        return "no node of the cluster could be reached"
    return f"the cluster client failed ({type(exc).__name__})"


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


def _find(
    exc: BaseException, kinds: tuple[type[BaseException], ...], *, causes_only: bool = False
) -> BaseException | None:
    """Returns ``exc`` or the first exception behind it that is one of ``kinds``.

    Behind means its cause (``raise ... from``) or, unless ``causes_only``, the exception
    being handled when it was raised.
    """
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, kinds):
            return seen
        seen = seen.__cause__ if causes_only else (seen.__cause__ or seen.__context__)
    return None


def _milliseconds(seconds: object) -> str | None:
    """Formats a redis-py timeout for messages: ``0.1`` -> ``"100"``; ``None`` when unset."""
    if isinstance(seconds, (int, float)) and seconds > 0:
        return f"{seconds * 1000:g}"
    return None
