"""`HeldReads`: `RedisBackend`'s cache reads (GET, MGET) over connections it holds, auto-pipelined.

(A Redis Cluster's reads use one `HeldReads` per primary: `slots.SlotReads`.)

Why not redis-py's ``Redis.get``: on loopback its per-command machinery (a pool checkout under a
lock, a retry wrapper, an ``asyncio.wait_for`` around each write, which is a task of its own
before Python 3.12, a timeout context around each read, five coroutines deep) costs more than
the round trip (issue 17). Here each event loop holds up to `LANES` connections, each made and
handshaken by the client's own pool (``pool.make_connection()``: the pool's connection class
and options, so AUTH and ACL users, TLS, SELECT, the client name, the RESP version and, through
Sentinel, the master lookup all apply as on pooled connections). Once it is handshaken, the
connection's transport is handed to a protocol of this module's (`_Receiver`), the design of
rueidis in Go:

- A read is written at once when its connection has nothing outstanding, else queued and
  written with the others of the same event loop turn in one write (auto-pipelining).
- Every reply is parsed where it arrives, in the transport's ``data_received`` (hiredis's
  parser when installed, else `resp.Replies`), and handed to the future of the oldest
  outstanding command, which is the command it answers: the connection stays in step whatever
  its callers do. A waiter that is cancelled leaves its future behind; its reply is parsed and
  dropped.
- The command timeout is one timer per connection, not a context per read: when the oldest
  outstanding command has waited that long, the connection is closed and never used again; the
  waiters behind it get the timeout. A connection the server closes fails its waiters with a
  connection error, after which they retry once (like the pooled path's ``Retry``) on a fresh
  connection. A reply is never handed to anyone but the waiter whose command it answers.

Connections are opened in a task of their own, so that no caller's cancellation can leave one
half-handshaken. Per-loop state is made lazily inside the running loop; `aclose` closes it all.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, cast, final

from .errors import FAILURES, RETRIED_ERRORS, dropped_connection, timed_out
from .resp import Parser, make_parser

if TYPE_CHECKING:
    from redis.asyncio.connection import AbstractConnection

__all__ = ("HeldReads",)

LANES: Final = 2
"""Connections held per event loop."""

DEPTH: Final = 512
"""Waiters one held connection may have queued and outstanding; past that, reads use the pool."""

_Waiter = asyncio.Future[Any]

GET: Final = b"*2\r\n$3\r\nGET\r\n$%d\r\n%b\r\n"
"""GET of one key, as RESP: ``GET % (len(name), name)``, ``name`` the key's bytes."""


def mget_command(names: Sequence[bytes]) -> bytes:
    """MGET of ``names`` (keys as bytes), as RESP."""
    parts = [b"*%d\r\n$4\r\nMGET\r\n" % (len(names) + 1)]
    parts.extend(b"$%d\r\n%b\r\n" % (len(name), name) for name in names)
    return b"".join(parts)


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
class _Receiver(asyncio.Protocol):
    """The protocol of one held connection's transport: parses replies, hands them out in order."""

    __slots__ = ("lane", "parser")

    def __init__(self, lane: _Lane, parser: Parser) -> None:
        self.lane = lane
        self.parser = parser

    def data_received(self, data: bytes) -> None:
        lane = self.lane
        if lane.receiver is not self:
            return  # retired: its transport is closing, whatever still arrives is dropped
        parser = self.parser
        pending = lane.pending
        try:
            parser.feed(data)
            reply = parser.gets()
            while reply is not False:
                waiter = pending.popleft()[0]
                if not waiter.done():  # else its caller was cancelled: the reply is dropped
                    if isinstance(reply, Exception):
                        waiter.set_exception(reply)  # an error reply: the rest stays in step
                    else:
                        waiter.set_result(reply)
                reply = parser.gets()
        except Exception as exc:  # noqa: BLE001  # bytes no parser reads, a reply nobody awaits
            lane.retire(exc)
            return
        if not pending and lane.outbox:
            lane.schedule()  # what waited for these replies (a demoted master's reopening)

    def eof_received(self) -> bool:
        return False  # the server closed its side: close ours too (then `connection_lost`)

    def connection_lost(self, exc: Exception | None) -> None:
        lane = self.lane
        if lane.receiver is self:
            lane.retire(dropped_connection("the server closed the held connection"))


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
        "receiver",
        "scheduled",
        "timer",
        "transport",
    )

    def __init__(self, owner: _LoopLanes) -> None:
        self.owner = owner
        self.loop = owner.loop
        # Connected and in step (every reply parsed belongs to the oldest pending waiter), or
        # all three None.
        self.connection: AbstractConnection | None = None
        self.transport: asyncio.Transport | None = None
        self.receiver: _Receiver | None = None
        # Futures of commands written on the connection, in the order written, with the time
        # by which each must be answered.
        self.pending: deque[tuple[_Waiter, float]] = deque()
        # Commands to write at the end of this loop turn, with their futures.
        self.outbox: list[tuple[bytes, _Waiter]] = []
        self.scheduled = False
        self.timer: asyncio.TimerHandle | None = None
        self.opening: asyncio.Task[None] | None = None

    def idle(self) -> bool:
        return self.transport is not None and not self.pending and not self.outbox

    def load(self) -> int:
        return len(self.pending) + len(self.outbox)

    def send(self, command: bytes) -> _Waiter:
        """Writes ``command`` now if nothing is outstanding, else with this turn's others."""
        waiter: _Waiter = self.loop.create_future()
        transport = self.transport
        if transport is not None and not self.pending and not self.outbox:
            transport.write(command)
            self.written(waiter)
        else:
            self.outbox.append((command, waiter))
            self.schedule()
        return waiter

    def written(self, waiter: _Waiter) -> None:
        """Lists ``waiter`` as outstanding, and times it."""
        timeout = self.owner.timeout
        if timeout is None:
            self.pending.append((waiter, 0.0))
            return
        deadline = self.loop.time() + timeout
        self.pending.append((waiter, deadline))
        if self.timer is None:
            self.timer = self.loop.call_at(deadline, self.expire)

    def expire(self) -> None:
        """Retires the connection if its oldest outstanding command is unanswered too long."""
        self.timer = None
        if not self.pending:
            return
        deadline = self.pending[0][1]
        loop = self.loop
        # Timers may fire up to one clock resolution early (asyncio's own rule).
        if loop.time() + loop._clock_resolution >= deadline:  # type: ignore[attr-defined]  # asyncio's
            self.retire(timed_out())
        else:
            self.timer = loop.call_at(deadline, self.expire)

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
        transport = self.transport
        if transport is None:
            self.open()
            return
        current = self.owner.current
        if current is not None and not current(cast("AbstractConnection", self.connection)):
            # To a demoted master: once its outstanding replies are in, retired and reopened.
            if not self.pending:
                self.retire(dropped_connection("the held connection was closed"))
                self.open()
            return
        self.outbox = []
        try:
            transport.write(b"".join([command for command, _ in outbox]))
        except (RuntimeError, OSError):  # a transport that refuses writes: done
            self.pending.extend((waiter, 0.0) for _, waiter in outbox)
            self.retire(dropped_connection("the held connection refused a write"))
            return
        for _, waiter in outbox:
            self.written(waiter)

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
        """Opens a connection with the pool's handshake, takes its transport, writes what is
        queued."""
        connection = self.owner.make_connection()
        try:
            await connection.connect()  # type: ignore[no-untyped-call]  # redis-py leaves connect unannotated
            receiver, transport = self.take(connection)
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
        self.connection, self.receiver, self.transport = connection, receiver, transport
        self.flush()

    def take(self, connection: AbstractConnection) -> tuple[_Receiver, asyncio.Transport]:
        """Moves ``connection``'s transport from redis-py's stream to a `_Receiver`."""
        reader, writer = connection._reader, connection._writer
        if reader is None or writer is None or reader.at_eof():
            raise dropped_connection("the held connection was closed")
        if reader._buffer:  # type: ignore[attr-defined]  # asyncio's StreamReader keeps it here
            # The handshake leaves nothing unread; bytes here would be a reply to nobody.
            raise dropped_connection("the held connection had unread bytes")
        transport = cast("asyncio.Transport", writer.transport)
        receiver = _Receiver(self, self.owner.make_parser())
        transport.set_protocol(receiver)
        return receiver, transport

    def retire(self, exc: BaseException) -> None:
        """Closes the connection after ``exc``; fails the waiters whose commands it carried.

        They get ``exc`` itself when it is a timeout or a connection error, else (an
        unreadable reply, an unexpected error) a connection error: either way their callers
        see a `BackendError` or, for a connection error, retry once on a fresh connection.
        Commands not yet written are kept for the next connection.
        """
        connection, self.connection = self.connection, None
        self.transport = self.receiver = None
        if connection is not None:
            _drop(connection)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        waiting = [waiter for waiter, _ in self.pending]
        self.pending.clear()
        _fail(waiting, exc)
        if self.outbox:
            self.schedule()

    async def aclose(self) -> None:
        opening, self.opening = self.opening, None
        if opening is not None:
            opening.cancel()
            await asyncio.gather(opening, return_exceptions=True)
        waiting = [waiter for _, waiter in self.outbox]
        self.outbox = []
        self.retire(dropped_connection("the backend closed"))
        _fail(waiting, dropped_connection("the backend closed"))

    def abandon(self) -> None:
        """Drops everything without awaiting: for a lane whose event loop is gone."""
        connection, self.connection = self.connection, None
        self.transport = self.receiver = None
        if connection is not None:
            _drop(connection)
        self.pending.clear()
        self.outbox = []
        self.timer = None


def _fail(waiters: Sequence[_Waiter], exc: BaseException) -> None:
    """Hands ``exc`` to the waiters still waiting, or a connection error if it is no failure
    of the server's (a cancellation, or anything unexpected): a waiter must end in an error
    the backend turns into `BackendError`, never in one that escapes the cache."""
    failure: BaseException = (
        exc
        if isinstance(exc, FAILURES)
        else dropped_connection("a read on the held connection failed unexpectedly")
    )
    for waiter in waiters:
        if not waiter.done():
            waiter.set_exception(failure)
            waiter.exception()  # retrieved here: its caller may be gone


@final
class _LoopLanes:
    """The held connections of one event loop."""

    __slots__ = ("closed", "current", "lanes", "loop", "make_connection", "make_parser", "timeout")

    def __init__(self, loop: asyncio.AbstractEventLoop, reads: HeldReads) -> None:
        self.loop = loop
        self.make_connection = reads._make
        self.make_parser = reads._parser
        self.current = reads._current
        self.timeout = reads._timeout
        self.closed = False
        self.lanes = [_Lane(self) for _ in range(LANES)]

    def pick(self) -> _Lane | None:
        """The lane for one more read: an idle one, else one to open, else the least loaded."""
        lanes = self.lanes
        for lane in lanes:
            if lane.idle():
                current = self.current
                if current is None or current(lane.connection):  # type: ignore[arg-type]  # idle: connected
                    return lane
                # To a demoted master: the pool checks its idle connections the same way
                # before lending one. (One the server closed is retired as it closes.)
                lane.retire(dropped_connection("the held connection was closed"))
        for lane in lanes:
            if lane.transport is None and lane.opening is None:
                return lane
        lane = min(lanes, key=_Lane.load)
        return lane if lane.load() < DEPTH else None


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
        "_parser",
        "_retries",
        "_states",
        "_timeout",
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
        options = pool.connection_kwargs
        self._timeout: float | None = options.get("socket_timeout")
        self._parser = make_parser(str(options.get("protocol")) == "3")
        self._current: Callable[[AbstractConnection], bool] | None = None
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
        return self._send(GET % (len(name), name), (key,), single=True)

    def mget(self, keys: Sequence[str]) -> Awaitable[list[bytes | None]]:
        """MGET ``keys`` (at least one)."""
        encoding, errors = self._encoding, self._encoding_errors
        command = mget_command([key.encode(encoding, errors) for key in keys])
        return self._send(command, keys, single=False)

    def send_now(self, command: bytes) -> asyncio.Future[Any] | None:
        """Queues ``command`` (a GET or MGET) on a held connection of the running event loop
        and returns the future of its reply, or ``None`` when every held connection is too far
        behind. Not retried: for callers that route their own failures (`slots`)."""
        loop = asyncio.get_running_loop()
        lanes = self._lanes
        if self._loop is not loop or lanes is None:
            lanes = self._lanes_of(loop)
        lane = lanes.pick()
        return None if lane is None else lane.send(command)

    async def _send(self, command: bytes, keys: Sequence[str], *, single: bool) -> Any:
        retries = self._retries
        while True:
            # A lane picked on every attempt: `aclose` may have replaced them meanwhile.
            waiter = self.send_now(command)
            try:
                if waiter is None:
                    # Every held connection is that far behind: the pool, as before.
                    values = await self._fallback(keys)
                    return values[0] if single else values
                return await waiter
            except RETRIED_ERRORS:
                # A held connection the server closed (a restart) fails its first read; a
                # read is safe to send again, once, as redis-py's Retry would.
                if retries > 0:
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
            lanes = self._states[loop] = _LoopLanes(loop, self)
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
