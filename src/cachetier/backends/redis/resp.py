"""The reply parsers of the held connections (`pipeline`): hiredis's when installed, else `Replies`.

A held connection hands each reply to its waiter from the transport's ``data_received``
callback, so its parser must be synchronous and incremental: fed bytes as they come, asked
for the next whole reply. hiredis's ``Reader`` is such a parser. redis-py's own pure-Python
parsers are not (they are coroutines that await a stream), so without hiredis — the default
install — `Replies` parses the replies GET and MGET can get: bulk strings, nulls (RESP2 and
RESP3), arrays of them, and error replies; anything else is a protocol error, after which the
connection is closed, never read again.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any, Final, Protocol, final

from .errors import PROTOCOL_ERROR, reply_error

__all__ = ("Parser", "Replies", "make_parser")

hiredis: ModuleType | None
try:
    import hiredis
except ImportError:  # the default install: no C parser
    hiredis = None


class Parser(Protocol):
    """What the held connections need of a parser (hiredis's ``Reader`` is one)."""

    def feed(self, data: bytes, /) -> None: ...

    def gets(self) -> Any:
        """The next whole reply (an error reply as its exception), or ``False``."""
        ...


_CRLF: Final = b"\r\n"
_COMPACT: Final = 1 << 16
"""Bytes of parsed replies kept at the buffer's head before they are cut off."""


# What `Replies._parse` answers when the buffer ends inside the reply. Not an exception: one
# raised here would keep, in its traceback, the transport's frames (and so its socket) alive.
_MORE: Final = (False, -1)


@final
class Replies:
    """An incremental RESP2/RESP3 parser of GET and MGET replies, for installs without hiredis.

    Raises redis-py's ``InvalidResponse`` for a reply of another type, or a malformed one.
    """

    __slots__ = ("_buffer", "_start")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._start = 0

    def feed(self, data: bytes, /) -> None:
        self._buffer += data

    def gets(self) -> Any:
        buffer = self._buffer
        if self._start >= len(buffer):
            return False
        try:
            reply, end = self._parse(buffer, self._start)
        except (ValueError, IndexError) as exc:
            raise PROTOCOL_ERROR(f"unreadable reply: {exc}") from None
        if end < 0:
            return False
        if end >= len(buffer):
            buffer.clear()
            end = 0
        elif end > _COMPACT:
            del buffer[:end]
            end = 0
        self._start = end
        return reply

    def _parse(self, buffer: bytearray, start: int) -> tuple[Any, int]:
        """Returns the reply that starts at ``start`` and where it ends, or `_MORE`."""
        line_end = buffer.find(_CRLF, start)
        if line_end < 0:
            return _MORE
        kind = buffer[start]
        after = line_end + 2
        if kind == 36:  # $: a bulk string, or -1 for none (RESP2)
            size = int(buffer[start + 1 : line_end])
            if size < 0:
                return None, after
            end = after + size
            if len(buffer) < end + 2:
                return _MORE
            if buffer[end : end + 2] != _CRLF:
                raise ValueError("a bulk string longer than its length")
            return bytes(buffer[after:end]), end + 2
        if kind == 42:  # *: an array (MGET), or -1 for none
            count = int(buffer[start + 1 : line_end])
            if count < 0:
                return None, after
            items = []
            for _ in range(count):
                item, after = self._parse(buffer, after)
                if after < 0:
                    return _MORE
                items.append(item)
            return items, after
        if kind == 95:  # _: null (RESP3)
            return None, after
        if kind == 45:  # -: an error reply
            text = bytes(buffer[start + 1 : line_end]).decode("utf-8", "replace")
            return reply_error(text), after
        raise ValueError(f"a reply of type {chr(kind)!r}, which GET and MGET never get")


def make_parser(resp3: bool) -> Callable[[], Parser]:
    """Returns what makes a connection's parser: hiredis's, when it is installed and speaks
    the connection's protocol (RESP3 needs hiredis 3), else `Replies`."""
    if hiredis is not None and (not resp3 or int(hiredis.__version__.split(".")[0]) >= 3):
        reader = hiredis.Reader

        def from_hiredis() -> Parser:
            parser: Parser = reader(protocolError=PROTOCOL_ERROR, replyError=reply_error)
            return parser

        return from_hiredis
    return Replies
