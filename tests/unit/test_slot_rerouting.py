"""Which failures of a cluster's held read go to the cluster client (`backends.redis.slots`)."""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from cachetier.backends.redis.errors import rerouted


@pytest.mark.parametrize(
    "error",
    [
        MovedError("3999 127.0.0.1:6381"),
        AskError("3999 127.0.0.1:6381"),
        TryAgainError("Multiple keys request during rehashing of slot"),
        ClusterDownError("The cluster is down"),
        # redis-py before 6 parses these outside its cluster parser as plain ResponseErrors.
        ResponseError("MOVED 3999 127.0.0.1:6381"),
        ResponseError("ASK 3999 127.0.0.1:6381"),
        ResponseError("TRYAGAIN Multiple keys request during rehashing of slot"),
        ResponseError("CLUSTERDOWN The cluster is down"),
        RedisConnectionError("the server closed the held connection"),
    ],
    ids=repr,
)
def test_redirections_and_lost_nodes_go_to_the_cluster_client(error: Exception) -> None:
    assert rerouted(error)


@pytest.mark.parametrize(
    "error",
    [
        ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
        ResponseError("NOPERM this user has no permissions to run the 'get' command"),
        ResponseError("an error whose text mentions MOVED later"),
        RedisTimeoutError("Timeout reading from socket"),
        asyncio.TimeoutError(),
    ],
    ids=repr,
)
def test_other_failures_fail_the_read(error: Exception) -> None:
    assert not rerouted(error)
