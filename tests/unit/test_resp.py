"""The reply parser of held connections without hiredis (`resp.Replies`), against what was sent.

Replies are encoded, cut into random pieces and fed piece by piece, as a socket delivers them:
the parser must give back exactly the replies, in order, whatever the cuts; and, where hiredis
is installed, exactly what hiredis's reader gives for the same bytes.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.exceptions import InvalidResponse, NoPermissionError, ResponseError

from cachetier.backends.redis.resp import Replies, make_parser

try:
    import hiredis
except ImportError:
    hiredis = None

# Error replies, and the exception redis-py makes of each (its code dropped where it knows it).
_ERRORS = {
    "ERR unknown command 'X'": (ResponseError, "unknown command 'X'"),
    "WRONGTYPE Operation against a key holding the wrong kind of value": (
        ResponseError,
        "WRONGTYPE Operation against a key holding the wrong kind of value",
    ),
}

bulk = st.binary(max_size=300) | st.just(b"\r\n") | st.just(b"$3\r\nGET\r\n")
replies = st.lists(
    st.one_of(
        bulk,
        st.none(),
        st.lists(st.one_of(bulk, st.none()), max_size=6),
        st.sampled_from(sorted(_ERRORS)),
    ),
    min_size=1,
    max_size=12,
)


def encode(reply: Any, *, resp3: bool) -> bytes:
    if reply is None:
        return b"_\r\n" if resp3 else b"$-1\r\n"
    if isinstance(reply, bytes):
        return b"$%d\r\n%b\r\n" % (len(reply), reply)
    if isinstance(reply, str):
        return b"-%b\r\n" % reply.encode()
    return b"*%d\r\n" % len(reply) + b"".join(encode(item, resp3=resp3) for item in reply)


def cut(data: bytes, points: list[int]) -> list[bytes]:
    edges = sorted({0, len(data), *(p % (len(data) + 1) for p in points)})
    return [data[a:b] for a, b in itertools.pairwise(edges)]


def read_all(parser: Any, pieces: list[bytes]) -> list[Any]:
    out = []
    for piece in pieces:
        parser.feed(piece)
        while (reply := parser.gets()) is not False:
            out.append(reply)
    return out


def plain(reply: Any) -> Any:
    """A reply with its error replies as (class, text), comparable with ``==``."""
    if isinstance(reply, Exception):
        return type(reply), str(reply)
    if isinstance(reply, list):
        return [plain(item) for item in reply]
    return reply


def expected(reply: Any) -> Any:
    if isinstance(reply, str):
        return _ERRORS[reply]
    if isinstance(reply, list):
        return [expected(item) for item in reply]
    return reply


@settings(max_examples=300, deadline=None)
@given(replies, st.lists(st.integers(min_value=0), max_size=20), st.booleans())
def test_replies_come_back_whole_and_in_order_however_the_bytes_are_cut(
    sent: list[Any], points: list[int], resp3: bool
) -> None:
    data = b"".join(encode(reply, resp3=resp3) for reply in sent)
    got = read_all(Replies(), cut(data, points))
    assert [plain(reply) for reply in got] == [expected(reply) for reply in sent]


@pytest.mark.skipif(hiredis is None, reason="hiredis is not installed")
@settings(max_examples=200, deadline=None)
@given(replies, st.lists(st.integers(min_value=0), max_size=20))
def test_replies_parse_as_hiredis_parses_them(sent: list[Any], points: list[int]) -> None:
    data = b"".join(encode(reply, resp3=False) for reply in sent)
    pieces = cut(data, points)
    ours = read_all(Replies(), pieces)
    theirs = read_all(make_parser(resp3=False)(), pieces)
    assert [plain(reply) for reply in ours] == [plain(reply) for reply in theirs]


def test_an_error_reply_becomes_redis_pys_exception_for_its_code() -> None:
    parser = Replies()
    parser.feed(b"-NOPERM this user has no permissions to run the 'get' command\r\n")
    error = parser.gets()
    assert isinstance(error, NoPermissionError)
    assert parser.gets() is False


@pytest.mark.parametrize(
    "data",
    [
        b"%1\r\n$1\r\na\r\n$1\r\nb\r\n",  # a RESP3 map: no GET or MGET gets one
        b">2\r\n$7\r\nmessage\r\n$1\r\nx\r\n",  # a push
        b"$3\r\nabcd\r\n",  # a bulk string longer than its length
        b"$x\r\n",
    ],
)
def test_a_reply_that_get_and_mget_never_get_is_a_protocol_error(data: bytes) -> None:
    parser = Replies()
    parser.feed(data)
    with pytest.raises(InvalidResponse):
        parser.gets()


def test_a_long_run_of_replies_keeps_the_buffer_short() -> None:
    parser = Replies()
    value = b"v" * 1000
    for _ in range(500):
        parser.feed(encode(value, resp3=False) + encode(value, resp3=False)[:500])
        assert parser.gets() == value
        parser.feed(encode(value, resp3=False)[500:])
        assert parser.gets() == value
        assert parser.gets() is False
    assert len(parser._buffer) == 0  # every byte read was released
