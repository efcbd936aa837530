"""Turning what redis-py's cluster client raises into `BackendError`s that hold no secrets."""

from __future__ import annotations

from typing import Final

from redis.exceptions import (
    AuthenticationError,
    MaxConnectionsError,
    RedisClusterException,
    ResponseError,
    SlotNotCoveredError,
)
from redis.exceptions import ConnectionError as RedisConnectionError

from .._errors import BackendError
from .redis import _FAILURES, _TIMEOUTS, _describe_os_error

__all__ = ("CLUSTER_FAILURES", "cluster_failure")

# redis-py's cluster client raises RedisClusterException, which is not a RedisError, when no
# node answers, when slots are not covered and when it cannot route a command. Under many
# concurrent connects, its connections can also be torn down mid-handshake by a timeout and
# then written to, which raises AttributeError ('NoneType' object has no attribute
# 'writelines', redis-py 8.1): a failed call, not a bug of the caller's, so it fails open too.
CLUSTER_FAILURES: Final = (*_FAILURES, RedisClusterException, AttributeError)


def cluster_failure(
    command: str,
    exc: BaseException,
    *,
    connect_ms: str | None,
    command_ms: str | None,
    max_connections: object,
) -> BackendError:
    """Returns the `BackendError` for ``command`` failing with ``exc``; never holds secrets.

    ``connect_ms`` and ``command_ms`` are the timeouts as messages show them, ``None`` when
    unset; ``max_connections`` is the per-node pool size.
    """
    # A cluster error that no node answered in time carries the timeout as its cause.
    timeout = _find(exc, _TIMEOUTS, causes_only=True)
    if timeout is not None:
        # redis-py's only connect-timeout message; any other timeout is a read or write.
        if str(timeout).startswith("Timeout connecting") and connect_ms:
            return BackendError(f"{command} timed out connecting after {connect_ms} ms")
        if command_ms:
            return BackendError(f"{command} timed out after {command_ms} ms")
        return BackendError(f"{command} timed out")
    return BackendError(f"{command} failed: {_reason(exc, max_connections)}")


def _reason(exc: BaseException, max_connections: object) -> str:
    """Describes ``exc`` in words safe to log: no URL, password or stored value."""
    if isinstance(exc, AuthenticationError):
        return "the server refused the credentials"
    if isinstance(exc, ResponseError):
        # The server's own error text ("CLUSTERDOWN ...", "OOM ...", "NOPERM ..."). A pipeline
        # prefixes it with the failed command and its arguments (a stored value among them),
        # and an unknown command echoes its arguments: both are cut.
        text = str(exc)
        _, annotated, reply = text.partition("of pipeline caused error: ")
        if annotated:
            # What follows is the reply's args tuple: "('OOM command not allowed ...',)".
            text = reply.strip("(),").strip("'\"")
        text = text.split(", with args beginning with", 1)[0]
        return f"the server replied {text[:200]!r}"
    if isinstance(exc, MaxConnectionsError):
        return f"all {max_connections} connections to a node are busy"
    # Socket errors are described from the OSError that redis-py wrapped (its own message
    # names hosts and ports); cluster errors that wrap one (no node reachable) too.
    cause = _find(exc, (OSError,))
    if isinstance(cause, OSError):
        if isinstance(exc, RedisClusterException):
            return f"no node of the cluster could be reached ({_describe_os_error(cause)})"
        return _describe_os_error(cause)
    if isinstance(exc, SlotNotCoveredError):
        return "a hash slot is not served by any node"
    if isinstance(exc, RedisClusterException):
        # Its messages may quote the command and its arguments; only known ones are told.
        message = str(exc)
        if "not covered" in message:
            return "the cluster does not serve every hash slot"
        if "Cluster mode is not enabled" in message:
            return "the server is not in cluster mode"
        if "cannot be connected" in message:
            return "no node of the cluster could be reached"
        return f"the cluster client failed ({type(exc).__name__})"
    if isinstance(exc, RedisConnectionError):
        return "the connection failed or was closed by the server"
    if isinstance(exc, AttributeError):
        return "a connection was closed while in use"
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
