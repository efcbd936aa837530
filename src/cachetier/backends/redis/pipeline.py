"""`HeldReads`: `RedisBackend`'s cache reads (GET, MGET) over connections it holds, auto-pipelined.

Why not redis-py's ``Redis.get``: on loopback its per-command machinery (a pool checkout under a
lock, a retry wrapper, an ``asyncio.wait_for`` around each write, which is a task of its own
before Python 3.12) costs more than the round trip (issue 17). Here each event loop holds up to
`LANES` connections, each made by the client's own pool (``pool.make_connection()``: the pool's
connection class and options, so AUTH and ACL users, TLS, SELECT, the client name, the RESP
version and, through Sentinel, the master lookup all apply as on pooled connections). redis-py
still connects, handshakes and parses (hiredis when present); this module only decides what is
written when, and who reads which reply:

- A read that finds a connection idle writes its command and reads its own reply (redis-py's
  ``read_response``, under the command timeout): no task hop, no lock.
- Reads that find every connection busy are queued on one and written together at the end of
  the event loop's turn (auto-pipelining, as rueidis does in Go); one reader task per
  connection reads the replies and hands each to its waiter's future in the order the commands
  were written, which is the order Redis answers them in.
- A waiter that is cancelled leaves its future behind: its reply is still read, and dropped.
- A connection whose read fails in any way but an error reply (a timeout, a reset, or the
  caller reading its own reply cancelled mid-parse) is closed by redis-py and never used again;
  the waiters behind it get the timeout, or a connection error after which they retry once
  (like the pooled path's ``Retry``) on a fresh connection. A reply is never handed to anyone
  but the waiter whose command it answers.

Connections are opened in a task of their own, so that no caller's cancellation can leave one
half-handshaken. Per-loop state is made lazily inside the running loop; `aclose` closes it all.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, cast, final

from .errors import FAILURES, REPLY_ERRORS, RETRIED_ERRORS, dropped_connection

if TYPE_CHECKING:
    from redis.asyncio.connection import AbstractConnection

__all__ = ("HeldReads",)

LANES: Final = 2
"""Connections held per event loop."""

DEPTH: Final = 512
"""Waiters one held connection may have queued and in flight; past that, reads use the pool."""

RESENDS: Final = 3
"""Times a read is sent again because a read ahead of it on its connection was cancelled
mid-reply (which closes the connection), beyond the retries of connection errors."""

# The reason of that connection error, told apart by identity: another caller's
# cancellation, not a failure of the server, so it spends no retry of the caller's.
_CANCELLED: Final = "a read ahead on the held connection was cancelled"

_Waiter = asyncio.Future[Any]


def _drop(connection: AbstractConnection) -> None:
    """Closes ``connection`` without waiting; it is never used again.

    redis-py's own ``disconnect`` is a coroutine; this runs where no await may happen (a
    callback, or a task being cancelled), and also for a connection whose event loop has
    closed, whose transport can no longer schedule its close (hence the suppressed error).
    """
    writer = connection._writer
    if writer is not None:
        connection._reader = connection._writer = None
        with contextlib.suppress(RuntimeError):
            writer.close()


@final
class _Lane:
    """One held connection: what was written on it and awaits a reply, what awaits writing."""

    __slots__ = (
        "connection",
        "loop",
        "opening",
        "outbox",
        "owner",
        "pending",
        "reader",
        "reading",
        "scheduled",
    )

    def __init__(self, owner: _LoopLanes) -> None:
        self.owner = owner
        self.loop = owner.loop
        # Connected and in step (every reply read belongs to the next waiter), or None.
        self.connection: AbstractConnection | None = None
        # Futures of commands written on `connection`, in the order written.
        self.pending: deque[_Waiter] = deque()
        # Commands to write at the end of this loop turn, with their futures.
        self.outbox: list[tuple[bytes, _Waiter]] = []
        self.scheduled = False
        # Whether someone reads replies now: a caller reading its own, or `reader`.
        self.reading = False
        self.reader: asyncio.Task[None] | None = None
        self.opening: asyncio.Task[None] | None = None

    def idle(self) -> bool:
        return (
            self.connection is not None
            and not self.reading
            and not self.pending
            and not self.outbox
            and self.opening is None
        )

    def load(self) -> int:
        return len(self.pending) + len(self.outbox)

    # -- a caller reading its own reply ----------------------------------------------------

    async def direct(self, command: bytes) -> Any:
        """Writes ``command`` on the idle connection and reads its reply in the calling task."""
        connection = cast("AbstractConnection", self.connection)
        writer = connection._writer
        if writer is None:  # closed under us (redis-py closes on failure): open anew
            self.retire(dropped_connection("the held connection was closed"))
            return await self.queue(command)
        self.reading = True
        try:
            writer.write(command)
            reply = await connection.read_response()
        except REPLY_ERRORS:
            # An error reply (WRONGTYPE, NOPERM): read whole, the connection stays in step.
            self.done_reading()
            raise
        except BaseException as exc:
            # A timeout, a reset, or this task cancelled mid-read: redis-py has closed the
            # connection (read_response does on any such exception), so whatever was written
            # behind this command is lost with it.
            self.reading = False
            self.retire(exc)
            raise
        self.done_reading()
        return reply

    def done_reading(self) -> None:
        self.reading = False
        if self.pending:
            self.start_reader()
        elif self.outbox:
            self.schedule()

    # -- queued reads, written once per loop turn --------------------------------------------

    def queue(self, command: bytes) -> _Waiter:
        waiter: _Waiter = self.loop.create_future()
        self.outbox.append((command, waiter))
        if not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self.flush)
        return waiter

    def schedule(self) -> None:
        if not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        """Writes the queued commands in one write, or opens a connection to write them on."""
        self.scheduled = False
        if self.opening is not None:
            return  # the opener flushes once connected
        # A waiter cancelled before its command went out needs no reply: not sent at all.
        outbox = [(command, waiter) for command, waiter in self.outbox if not waiter.done()]
        self.outbox = outbox
        if not outbox:
            return
        connection = self.connection
        writer = None if connection is None else connection._writer
        if (
            connection is None
            or writer is None
            or not _open(connection)
            or not self.owner.current(connection)
        ):
            if connection is not None and not self.pending and not self.reading:
                self.retire(dropped_connection("the held connection was closed"))
                self.open()
            elif connection is None:
                self.open()
            # Else replies are still being read on it: once they are (or the read fails and
            # retires it), the outbox is flushed again, onto a fresh connection.
            return
        self.outbox = []
        try:
            writer.write(b"".join([command for command, _ in outbox]))
        except (RuntimeError, OSError):  # a transport that refuses writes: done
            self.pending.extend(waiter for _, waiter in outbox)
            self.retire(dropped_connection("the held connection refused a write"))
            return
        self.pending.extend(waiter for _, waiter in outbox)
        if not self.reading:
            self.start_reader()

    def start_reader(self) -> None:
        self.reading = True
        self.reader = self.loop.create_task(self.read_replies())

    async def read_replies(self) -> None:
        """Reads replies until no waiter is left, handing each to its waiter in order."""
        connection = cast("AbstractConnection", self.connection)
        pending = self.pending
        try:
            while pending:
                failure: BaseException | None = None
                reply: Any = None
                try:
                    reply = await connection.read_response()
                except REPLY_ERRORS as exc:
                    failure = exc
                waiter = pending.popleft()
                if waiter.done():
                    continue  # its caller was cancelled: the reply is dropped
                if failure is None:
                    waiter.set_result(reply)
                else:
                    waiter.set_exception(failure)
        except BaseException as exc:
            self.reading = False
            self.reader = None
            self.retire(exc)
            if not isinstance(exc, Exception):
                raise
            return
        self.reader = None
        self.done_reading()

    # -- opening and retiring ----------------------------------------------------------------

    def open(self) -> None:
        if self.owner.closed:
            # Closed by `aclose` under a queued read: it retries on the loop's new lanes.
            waiting = [waiter for _, waiter in self.outbox]
            self.outbox = []
            _fail(waiting, dropped_connection("the backend closed"))
        elif self.opening is None:
            self.opening = self.loop.create_task(self.connect())

    async def connect(self) -> None:
        """Opens a connection with the pool's handshake, then writes what is queued."""
        connection = self.owner.make_connection()
        try:
            await connection.connect()  # type: ignore[no-untyped-call]  # redis-py leaves connect unannotated
        except BaseException as exc:
            # Never reused half-made: a handshake cut short leaves replies unread.
            _drop(connection)
            self.opening = None
            waiting = [waiter for _, waiter in self.outbox]
            self.outbox = []
            _fail(waiting, exc)
            if not isinstance(exc, Exception):
                raise
            return
        self.opening = None
        if self.owner.closed:
            _drop(connection)
            _fail([waiter for _, waiter in self.outbox], dropped_connection("the backend closed"))
            self.outbox = []
            return
        self.connection = connection
        self.flush()

    def retire(self, exc: BaseException) -> None:
        """Closes the connection after ``exc``; fails the waiters whose commands it carried.

        They get ``exc`` itself when it is a timeout or a connection error, else (a caller
        cancelled mid-read, an unexpected error) a connection error: either way their callers
        see a `BackendError` or, for a connection error, retry once on a fresh connection.
        Commands not yet written are kept for the next connection.
        """
        connection, self.connection = self.connection, None
        if connection is not None:
            _drop(connection)
        waiting = list(self.pending)
        self.pending.clear()
        _fail(waiting, exc)
        if self.outbox:
            self.schedule()

    async def aclose(self) -> None:
        tasks = [task for task in (self.reader, self.opening) if task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self.reader = self.opening = None
        self.reading = False
        waiting = [*self.pending, *(waiter for _, waiter in self.outbox)]
        self.pending.clear()
        self.outbox = []
        _fail(waiting, dropped_connection("the backend closed"))
        connection, self.connection = self.connection, None
        if connection is not None:
            await connection.disconnect(nowait=True)

    def abandon(self) -> None:
        """Drops everything without awaiting: for a lane whose event loop is gone."""
        connection, self.connection = self.connection, None
        if connection is not None:
            _drop(connection)
        self.pending.clear()
        self.outbox = []


def _fail(waiters: Sequence[_Waiter], exc: BaseException) -> None:
    """Hands ``exc`` to the waiters still waiting, or a connection error if it is no failure
    of the server's (a cancellation, or anything unexpected): a waiter must end in an error
    the backend turns into `BackendError`, never in one that escapes the cache."""
    if isinstance(exc, FAILURES):
        failure: BaseException = exc
    elif isinstance(exc, Exception):
        failure = dropped_connection("a read on the held connection failed unexpectedly")
    else:
        failure = dropped_connection(_CANCELLED)
    for waiter in waiters:
        if not waiter.done():
            waiter.set_exception(failure)
            waiter.exception()  # retrieved here: its caller may be gone


@final
class _LoopLanes:
    """The held connections of one event loop."""

    __slots__ = ("closed", "current", "lanes", "loop", "make_connection")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        make_connection: Callable[[], AbstractConnection],
        current: Callable[[AbstractConnection], bool],
    ) -> None:
        self.loop = loop
        self.make_connection = make_connection
        self.current = current
        self.closed = False
        self.lanes = [_Lane(self) for _ in range(LANES)]

    def pick(self) -> _Lane | None:
        """The lane for one more read: an idle one, else one to open, else the least loaded."""
        lanes = self.lanes
        for lane in lanes:
            if lane.idle():
                connection = cast("AbstractConnection", lane.connection)
                if _open(connection) and self.current(connection):
                    return lane
                # Closed by the server while idle (a restart), or to a demoted master: the
                # pool checks its idle connections the same way before lending one.
                lane.retire(dropped_connection("the held connection was closed"))
        for lane in lanes:
            if lane.connection is None and lane.opening is None:
                return lane
        lane = min(lanes, key=_Lane.load)
        return lane if lane.load() < DEPTH else None


def _open(connection: AbstractConnection) -> bool:
    """Whether ``connection`` is open and the server has not closed its side."""
    reader = connection._reader
    return reader is not None and not reader.at_eof()


def _always_current(connection: AbstractConnection) -> bool:
    return True


@final
class HeldReads:
    """GET and MGET over held, auto-pipelined connections of a redis-py client's pool.

    Raises what redis-py's connection raises (the backend maps it to `BackendError`): a
    connection error after ``retries`` retries on fresh connections, a timeout at once.
    """

    __slots__ = (
        "_current",
        "_encoding",
        "_encoding_errors",
        "_fallback",
        "_lanes",
        "_loop",
        "_make",
        "_retries",
        "_states",
    )

    def __init__(
        self,
        pool: Any,
        *,
        retries: int,
        fallback: Callable[[Sequence[str]], Any],
        sentinel: bool,
    ) -> None:
        """Holds connections made by ``pool``; ``fallback(keys)`` MGETs through the pool.

        ``sentinel``: the pool finds its master through Sentinel, and a held connection to an
        address that is no longer the master's is closed before its next use.
        """
        self._make: Callable[[], AbstractConnection] = pool.make_connection
        encoder = pool.get_encoder()
        self._encoding: str = encoder.encoding
        self._encoding_errors: str = encoder.encoding_errors
        self._retries = retries
        self._fallback = fallback
        self._current: Callable[[AbstractConnection], bool] = _always_current
        if sentinel:

            def current(connection: AbstractConnection) -> bool:
                master = pool.master_address
                address = (getattr(connection, "host", None), getattr(connection, "port", None))
                return master is None or master == address

            self._current = current
        self._states: dict[asyncio.AbstractEventLoop, _LoopLanes] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lanes: _LoopLanes | None = None

    # Plain functions returning `_send`'s coroutine, not coroutines of their own: one frame
    # less on every hit. The commands are packed here (RESP arrays of bulk strings, keys
    # encoded as the pool's encoder would encode a str) rather than by ``pack_command``,
    # which is general and costs more than the rest of this function.

    def get(self, key: str) -> Awaitable[bytes | None]:
        """GET ``key``."""
        name = key.encode(self._encoding, self._encoding_errors)
        command = b"*2\r\n$3\r\nGET\r\n$%d\r\n%b\r\n" % (len(name), name)
        return self._send(command, (key,), single=True)

    def mget(self, keys: Sequence[str]) -> Awaitable[list[bytes | None]]:
        """MGET ``keys`` (at least one)."""
        encoding, errors = self._encoding, self._encoding_errors
        parts = [b"*%d\r\n$4\r\nMGET\r\n" % (len(keys) + 1)]
        for key in keys:
            name = key.encode(encoding, errors)
            parts.append(b"$%d\r\n%b\r\n" % (len(name), name))
        return self._send(b"".join(parts), keys, single=False)

    async def _send(self, command: bytes, keys: Sequence[str], *, single: bool) -> Any:
        loop = asyncio.get_running_loop()
        retries, resends = self._retries, RESENDS
        while True:
            # Looked up on every attempt: `aclose` may have replaced them meanwhile.
            lanes = self._lanes
            if self._loop is not loop or lanes is None:
                lanes = self._lanes_of(loop)
            lane = lanes.pick()
            try:
                if lane is None:
                    # Every held connection is that far behind: the pool, as before.
                    values = await self._fallback(keys)
                    return values[0] if single else values
                if lane.idle():
                    return await lane.direct(command)
                return await lane.queue(command)
            except RETRIED_ERRORS as exc:
                # A held connection the server closed (a restart) fails its first read; a
                # read is safe to send again, once, as redis-py's Retry would.
                if exc.args and exc.args[0] is _CANCELLED and resends > 0:
                    resends -= 1
                elif retries > 0:
                    retries -= 1
                else:
                    raise

    def _lanes_of(self, loop: asyncio.AbstractEventLoop) -> _LoopLanes:
        """The lanes of ``loop``, made on its first read; those of closed loops are dropped."""
        lanes = self._states.get(loop)
        if lanes is None:
            for other, old in list(self._states.items()):
                if other.is_closed():
                    del self._states[other]
                    for lane in old.lanes:
                        lane.abandon()
            lanes = self._states[loop] = _LoopLanes(loop, self._make, self._current)
        self._loop, self._lanes = loop, lanes
        return lanes

    async def aclose(self) -> None:
        """Closes the held connections of every event loop; new reads open new ones."""
        states, self._states = self._states, {}
        self._loop = self._lanes = None
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        for loop, lanes in states.items():
            lanes.closed = True
            if loop is running:
                await asyncio.gather(*(lane.aclose() for lane in lanes.lanes))
            else:
                # Another loop's connections cannot be awaited from here: closed as they are.
                for lane in lanes.lanes:
                    lane.abandon()
