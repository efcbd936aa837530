"""Issue 17: a call cancelled at any await point never makes any call return another key's value.

Every value encodes its key (``{"key": k, "n": ..., "pad": ...}``, the padding's length and
letter drawn from the key too, so replies differ in size, a few of them large), so a reply handed to the wrong
waiter, a reply left unread on a connection that goes back to the pool, or a batched MGET
answered out of order shows up as a value whose key is not the one asked for. Many concurrent
calls over a small key set (hits, misses, invalidations, writes) are each cancelled, or not,
after a random delay: a number of event-loop turns (0 cancels before the call starts) or a
time, each drawn up to the length of a recent call of the same kind. Where each cancellation
landed is read from the cancelled task's stack and counted: before the call started,
connecting, sending a command, waiting for its reply, waiting on a read it joined, while its
key's computation runs or while its value is stored. After the storm, every call that
completed returned the value of its own key, no call failed, hung or read an undecodable
entry, and a last pass over all keys (with no cancellation) returns correct values, as hits:
the connections are not desynchronised.

The same storm runs on a bare `MemoryBackend`, on one seen as remote (reads merged, pauses
around each call: ``tests/model/stores.py``), on fakeredis, on Redis, on Redis with a
`LocalTier` and on a Redis Cluster; and on a private Redis frozen with SIGSTOP under a 50 ms
command timeout.

The storm is seeded: ``CACHETIER_CANCEL_SEED=N`` changes the seed (17 by default), and each
assertion names it. `benchmarks/cancel_soak.py` runs the same storm for 400,000 calls.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import itertools
import os
import random
import signal
import sys
import time
import uuid
import warnings
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from types import CodeType, FrameType
from typing import Any

import pytest

from cachetier import Cache, CircuitBreaker, LocalTier
from cachetier.backends import Backend, MemoryBackend, RedisBackend, RedisClusterBackend

from ..model.stores import DelayedBackend, Jitter
from ..servers import RedisServer

SEED = int(os.environ.get("CACHETIER_CANCEL_SEED", "17"))
KEYS = 24
CALLS = 3000
CHEAP_CALLS = {"fakeredis": 1500}  # its Lua scripts make fakeredis the slowest store here
CONCURRENCY = 64
CANCEL_RATE = 0.37
CALL_LIMIT = 10.0
"""Seconds a call may take (its commands time out after 2 s) before it counts as hung."""
KINDS = ("memory", "memory-remote", "fakeredis", "redis", "local", "cluster")
"""Backends the storm runs on: ``memory-remote`` is a `MemoryBackend` seen as a remote store
(its reads merged and batched like Redis's, a few loop turns of pause around each call);
``local`` is Redis with a `LocalTier` in front; ``cluster`` a Redis Cluster of three
primaries (the session's)."""
REDIS_KINDS = ("redis", "local", "cluster")
# Where a cancellation may be lost, the call carrying on to return its own value: before
# Python 3.12, `asyncio.wait_for` (which redis-py wraps around each socket write) returns the
# inner result when it is cancelled just as the write finishes (CPython gh-86296). Anywhere
# else, a lost cancellation is a defect.
LOST_AT = ("sending ", "connecting ") if sys.version_info < (3, 12) else ()

_LETTERS = "abcdefghijklmnopqrstuvwxyz"


# -- values that encode their key --------------------------------------------------------------


def pad(k: int) -> str:
    """A padding of the key's own letter and length: up to 1,499 characters, or for three keys
    205 to 221 KB, so that their replies arrive in several reads and calls wait on them."""
    return _LETTERS[k % 26] * (200_000 + 997 * k if k % 8 == 5 else k * 211 % 1500)


def value_of(k: int, n: int) -> dict[str, Any]:
    """The value of key ``k``, the ``n``-th computed."""
    return {"key": k, "n": n, "pad": pad(k)}


def mismatch(value: object, k: int) -> str | None:
    """Says how ``value`` is not a value of key ``k``; ``None`` when it is one."""
    if isinstance(value, dict) and value.get("key") == k and value.get("pad") == pad(k):
        return None
    if isinstance(value, dict):
        shown = {name: (v if name != "pad" else f"<{len(v)} chars>") for name, v in value.items()}
        return f"key {k} got {shown!r}"
    return f"key {k} got {type(value).__name__} {value!r:.80}"


def item(k: int) -> str:
    return f"item:{k}"


# -- one storm ---------------------------------------------------------------------------------


@dataclass
class Op:
    """One call of a storm: what it is, how to start it, and how to check what it returned."""

    name: str
    key: int
    start: Callable[[], Awaitable[Any]]
    check: Callable[[Any], str | None] = lambda _result: None


@dataclass
class Tally:
    """What a storm did; `wrong` must stay empty."""

    seed: int
    calls: int = 0
    completed: int = 0
    cancelled: int = 0
    late: int = 0  # a cancellation drawn for a call that had already finished
    wrong: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    # Where the cancellations that ended a call landed, and where those that did not (the
    # call returned a value all the same) landed.
    phases: Counter[str] = field(default_factory=Counter)
    swallowed: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    def summary(self) -> str:
        def listed(counter: Counter[str]) -> str:
            return ", ".join(f"{name} {count}" for name, count in sorted(counter.items()))

        return (
            f"seed {self.seed}: {self.calls} calls, {self.completed} completed, "
            f"{self.cancelled} cancelled, {len(self.wrong)} wrong values, "
            f"{len(self.errors)} failed, {self.seconds:.2f} s; cancelled at: "
            f"{listed(self.phases)}; cancellations swallowed at: {listed(self.swallowed) or '-'}; "
            f"{self.late} came after the call had finished"
        )


def suspended_frames(task: asyncio.Task[Any]) -> list[FrameType]:
    """The frames of a suspended task, outermost first, down the chain of what each awaits.

    (`asyncio.Task.get_stack` gives only the outermost frame of a suspended coroutine.) Empty
    when the task has not started.
    """
    frames: list[FrameType] = []
    awaited: Any = task.get_coro()
    if inspect.getcoroutinestate(awaited) == inspect.CORO_CREATED:
        return frames
    while awaited is not None:
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
        if frame is None:
            break
        frames.append(frame)
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
    return frames


def _method_codes(*classes: type) -> frozenset[CodeType]:
    """The code of every method the classes define or inherit."""
    return frozenset(
        member.__code__
        for cls in classes
        for base in cls.__mro__
        for member in vars(base).values()
        if inspect.isfunction(member)
    )


# The backends' own methods, wherever their modules live: a frame running one of these names
# the command under way. (The wrapper of memory-remote keeps the method's name in ``name``.)
_BACKEND_CODES = _method_codes(RedisBackend, RedisClusterBackend, MemoryBackend, DelayedBackend)
_PAUSE = Jitter.pause.__code__
# redis-py's names for the parts of a command (also in its 5.0 releases).
_CONNECTING = frozenset({"connect", "connect_check_health", "on_connect", "_connect"})
_SENDING = frozenset({"send_packed_command", "_send_packed_command", "drain", "writelines"})
STAGES = {
    "connecting": 1,
    "sending": 1,
    "reply": 3,
    "paused": 1,
    "waiting on a read": 1,
    "while its key computes": 1,
    "while its key's value is stored": 1,
    "in the function": 1,
}
"""The kinds of await points `where` names, which a third of the cancellations aim at, with
their weights: a reply on loopback rarely keeps a call waiting for a whole loop turn."""


def where(frames: list[FrameType], state: str | None) -> str:
    """Names the await point a task is suspended at, from its frames (outermost first).

    Only what outlives a rewrite of cachetier's read path is used: the backends' methods,
    redis-py's, this module's function body, and ``state``, what the workload says the key is
    doing (a computation running, or its value being stored).
    """
    if not frames:
        return "before start"
    codes = [frame.f_code for frame in frames]
    if any(code.co_name == "lookup" and code.co_filename == __file__ for code in codes):
        return "in the function"  # run by the caller: the breaker is open
    command = next(
        (
            str(frame.f_locals.get("name", frame.f_code.co_name))
            for frame in reversed(frames)
            if frame.f_code in _BACKEND_CODES
        ),
        None,
    )
    if command is None:
        return state or "waiting on a read it joined"
    names = {code.co_name for code in codes}
    if _PAUSE in codes:
        stage = "paused"
    elif names & _CONNECTING:
        stage = "connecting"
    elif names & _SENDING:
        stage = "sending"
    else:
        stage = "reply"
    return f"{stage} {command}"


class _Durations:
    """How long recent calls of each kind took to the end, in loop turns and in seconds."""

    def __init__(self) -> None:
        self.recent: dict[str, deque[tuple[int, float]]] = {}

    def add(self, name: str, turns: int, seconds: float) -> None:
        self.recent.setdefault(name, deque(maxlen=256)).append((turns, seconds))

    def draw(self, name: str, rng: random.Random) -> tuple[int, float]:
        recent = self.recent.get(name)
        return recent[rng.randrange(len(recent))] if recent else (8, 0.001)


@dataclass
class _Call:
    """One call under way: its op, its task, where its cancellation landed, how long it took."""

    op: Op
    task: asyncio.Task[Any]
    landed: list[str] = field(default_factory=list)
    took: list[tuple[int, float]] = field(default_factory=list)


class _Storm:
    """The state of one `storm`."""

    def __init__(
        self,
        tally: Tally,
        cancel_rate: float,
        state: Callable[[Op], str | None],
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.tally = tally
        self.cancel_rate = cancel_rate
        self.state = state
        self.durations = _Durations()
        # The recent share of drawn cancellations that did end their call.
        self.ending = 1.0
        self.turn = 0
        self.ticking = False
        self.hung = False

    def tick(self) -> None:
        """Counts the turns of the event loop (by running once in each)."""
        self.turn += 1
        if self.ticking:
            self.loop.call_soon(self.tick)

    async def timed(self, op: Op, took: list[tuple[int, float]]) -> Any:
        """Runs ``op``; notes the loop turns and the time it took once started."""
        started, started_turn = self.loop.time(), self.turn
        result = await op.start()
        took.append((self.turn - started_turn, self.loop.time() - started))
        return result

    def start(self, op: Op, rng: random.Random) -> tuple[_Call, bool]:
        """Starts ``op``; draws whether and where to cancel it. Returns it and whether drawn."""
        took: list[tuple[int, float]] = []
        call = _Call(op, self.loop.create_task(self.timed(op, took)), took=took)
        self.tally.calls += 1
        if rng.random() >= min(1.0, self.cancel_rate / max(self.ending, self.cancel_rate)):
            return call, False
        turns, seconds = self.durations.draw(op.name, rng)
        mode = rng.random()
        if turns == 0 or mode < 0.4:
            self.after_turns(rng.randint(0, turns), call)
        elif mode < 0.7:
            self.loop.call_later(rng.random() * seconds, self.cancel, call)
        else:
            self.loop.call_soon(
                self.at_stage,
                rng.choices(list(STAGES), list(STAGES.values()))[0],
                2 * turns + 4,
                call,
            )
        return call, True

    def cancel(self, call: _Call) -> None:
        if call.task.done():
            self.tally.late += 1
            return
        call.landed.append(where(suspended_frames(call.task), self.state(call.op)))
        call.task.cancel()

    def after_turns(self, turns: int, call: _Call) -> None:
        if turns <= 0:
            self.cancel(call)
        else:
            self.loop.call_soon(self.after_turns, turns - 1, call)

    def at_stage(self, stage: str, turns: int, call: _Call) -> None:
        """Cancels the call at the first turn it is found at ``stage``, within ``turns``."""
        if call.task.done():
            return
        found = where(suspended_frames(call.task), self.state(call.op))
        if found.startswith(stage) or turns <= 0:
            self.cancel(call)
        else:
            self.loop.call_soon(self.at_stage, stage, turns - 1, call)

    def record(self, call: _Call, drawn: bool) -> None:
        """Counts how ``call`` ended, and checks what it returned."""
        tally, task, op = self.tally, call.task, call.op
        if drawn:
            self.ending = 0.98 * self.ending + 0.02 * task.cancelled()
        if task.cancelled():
            tally.cancelled += 1
            tally.phases[call.landed[0] if call.landed else "not by the storm"] += 1
            return
        exc = task.exception()
        if exc is not None:
            tally.errors.append(f"{op.name}({op.key}): {type(exc).__name__}: {exc}")
            return
        tally.completed += 1
        if call.landed:
            tally.swallowed[call.landed[0]] += 1
        else:
            self.durations.add(op.name, *call.took[0])
        problem = op.check(task.result())
        if problem is not None:
            tally.wrong.append(f"{op.name}: {problem}")


async def storm(
    next_op: Callable[[random.Random], Op],
    *,
    seed: int,
    calls: int = CALLS,
    concurrency: int = CONCURRENCY,
    cancel_rate: float = CANCEL_RATE,
    state: Callable[[Op], str | None] = lambda _op: None,
    tally: Tally | None = None,
    until: asyncio.Future[Any] | None = None,
    call_limit: float = CALL_LIMIT,
) -> Tally:
    """Makes ``calls`` calls (or calls until ``until`` is done), ``concurrency`` at a time.

    About ``cancel_rate`` of them are cancelled. The point of each cancellation is drawn from
    the lengths of recent calls of the same kind that ran to their end: a number of event-loop
    turns up to such a length (0: before the call starts), a time up to such a length, or the
    first turn the call is found at a kind of await point drawn from `STAGES` (or, failing
    that, twice such a length in turns), so that short-lived await points are hit too. A
    cancellation drawn for a call that has already finished is counted as late, and one that
    the call survived as swallowed; the rate of draws follows the share of draws that do end
    a call, so that the calls cancelled stay near ``cancel_rate``. Each cancellation
    records `where` it landed; ``state(op)`` tells what the workload's key is doing then.
    A call still running after ``call_limit`` seconds is a failure, and ends the storm.
    """
    tally = tally if tally is not None else Tally(seed)
    run = _Storm(tally, cancel_rate, state)
    remaining = calls

    def more() -> bool:
        return not run.hung and (remaining > 0 if until is None else not until.done())

    async def slot(number: int) -> None:
        nonlocal remaining
        rng = random.Random(f"{seed}:{number}")
        while more():
            remaining -= 1
            call, drawn = run.start(next_op(rng), rng)
            done, _ = await asyncio.wait({call.task}, timeout=call_limit)
            if not done:
                # A desynchronised connection may as well leave a reader waiting for ever:
                # that fails the storm too, which then stops instead of hanging.
                tally.errors.append(
                    f"{call.op.name}({call.op.key}) still waiting after {call_limit} s"
                )
                run.hung = True
                call.task.cancel()
                await asyncio.wait({call.task}, timeout=1.0)
                return
            run.record(call, drawn)

    started = time.perf_counter()
    run.ticking = True
    run.tick()
    try:
        await asyncio.gather(*(slot(number) for number in range(concurrency)))
    finally:
        run.ticking = False
    tally.seconds += time.perf_counter() - started
    return tally


# -- workloads ---------------------------------------------------------------------------------


class Decorated:
    """Decorated calls over `KEYS` keys, some invalidated meanwhile (6% of the calls)."""

    def __init__(self, cache: Cache, seed: int) -> None:
        self.cache = cache
        # Per key: the computations running, and whether one has returned and its callers
        # have not (its value is being stored). Approximate, for naming where calls were cancelled.
        self.computing: Counter[int] = Counter()
        self.finishing: set[int] = set()
        self.computed = itertools.count()
        body_rng = random.Random(f"{seed}:body")
        computing, finishing, computed = self.computing, self.finishing, self.computed

        @cache.cached(ttl=60)
        async def lookup(k: int) -> dict[str, Any]:
            computing[k] += 1
            finishing.discard(k)
            try:
                for _ in range(body_rng.randrange(3)):
                    await asyncio.sleep(0)
                if body_rng.random() < 0.1:
                    await asyncio.sleep(body_rng.random() * 0.002)
                value = value_of(k, next(computed))
            finally:
                computing[k] -= 1
            finishing.add(k)
            return value

        self.lookup = lookup

    def state(self, op: Op) -> str | None:
        """What the key of ``op``, one of this workload's, is doing."""
        if op.name not in ("call", "invalidate"):
            return None
        if self.computing[op.key]:
            return "while its key computes"
        if op.key in self.finishing:
            return "while its key's value is stored"
        return None

    def _returned(self, value: object, k: int) -> str | None:
        self.finishing.discard(k)
        return mismatch(value, k)

    def next_op(self, rng: random.Random) -> Op:
        k = rng.randrange(KEYS)
        if rng.random() < 0.06:
            return Op("invalidate", k, lambda: self.lookup.invalidate(k))
        return Op("call", k, lambda: self.lookup(k), lambda value: self._returned(value, k))

    async def final_pass(self) -> list[str]:
        """Every key twice, one call at a time; the second must be a hit of the same value.

        (Unless a command failed meanwhile: a timeout fails open, as a miss.)
        """
        problems: list[str] = []
        for k in range(KEYS):
            # Counted before the first call: one whose read or write failed open stores
            # nothing, and the second call then rightly misses.
            errors = self.cache.stats.backend_errors
            first = await self.lookup(k)
            hits = self.cache.stats.hits
            second = await self.lookup(k)
            problems += [p for p in (mismatch(first, k), mismatch(second, k)) if p]
            if self.cache.stats.backend_errors == errors and (
                second != first or self.cache.stats.hits != hits + 1
            ):
                problems.append(f"key {k}: the second call was no hit of the first's value")
        return problems


class Reads:
    """`Cache.get`, `get_many`, `set` and `delete` over `KEYS` keys."""

    def __init__(self, cache: Cache, seed: int) -> None:
        self.cache = cache
        self.written = itertools.count()

    def state(self, op: Op) -> str | None:
        return None

    async def fill(self) -> bool:
        """Writes every key; whether the backend took it."""
        return await self.cache.set_many({item(k): value_of(k, -1) for k in range(KEYS)}, ttl=60)

    def next_op(self, rng: random.Random) -> Op:
        cache = self.cache
        roll = rng.random()
        k = rng.randrange(KEYS)
        if roll < 0.45:
            return Op(
                "get",
                k,
                lambda: cache.get(item(k)),
                lambda value: None if value is None else mismatch(value, k),
            )
        if roll < 0.75:
            keys = rng.sample(range(KEYS), rng.randint(2, 8))
            return Op("get_many", k, lambda: cache.get_many([item(j) for j in keys]), _many(keys))
        if roll < 0.93:
            return Op("set", k, lambda: cache.set(item(k), value_of(k, next(self.written)), ttl=60))
        return Op("delete", k, lambda: cache.delete(item(k)))

    async def final_pass(self) -> list[str]:
        """Writes every key anew, then reads them one by one and together: all must be hits.

        (Unless a command failed meanwhile: a timeout fails open, as a miss.)
        """
        problems: list[str] = []
        errors = self.cache.stats.backend_errors
        await self.fill()
        for k in range(KEYS):
            value = await self.cache.get(item(k))
            if value is not None and mismatch(value, k):
                problems.append(f"get after the storm: {mismatch(value, k)}")
            elif value is None and self.cache.stats.backend_errors == errors:
                problems.append(f"get after the storm: key {k} missed")
        found = await self.cache.get_many([item(k) for k in range(KEYS)])
        if len(found) != KEYS and self.cache.stats.backend_errors == errors:
            problems.append(f"get_many after the storm found {len(found)} of {KEYS} keys")
        problems += [p for p in [_many(range(KEYS))(found)] if p]
        return problems


async def last_pass(work: Decorated | Reads, limit: float = 30.0) -> list[str]:
    """The workload's last pass, one call at a time, with no cancellation; its problems."""
    try:
        return await asyncio.wait_for(work.final_pass(), limit)
    except asyncio.TimeoutError:
        return [f"the last pass did not finish in {limit} s: a read hangs"]


def _many(keys: Any) -> Callable[[Any], str | None]:
    asked = {item(k): k for k in keys}

    def check(found: Any) -> str | None:
        if not isinstance(found, dict):
            return f"get_many returned {type(found).__name__}"
        problems = [
            f"{name}: {mismatch(value, asked[name])}" if name in asked else f"{name} not asked for"
            for name, value in found.items()
            if name not in asked or mismatch(value, asked[name])
        ]
        return "; ".join(problems) or None

    return check


# -- backends ----------------------------------------------------------------------------------


def make_backend(
    kind: str, seed: int, url: str | None, *, connect_timeout: float, command_timeout: float
) -> Backend:
    """A backend of ``kind`` (one of `KINDS`); ``url`` and the timeouts for the Redis kinds."""
    if kind == "memory":
        return MemoryBackend()
    if kind == "memory-remote":
        jitter = Jitter(random.Random(f"{seed}:jitter"), real=False)
        return DelayedBackend(MemoryBackend(), jitter)  # type: ignore[return-value]  # structural
    if kind == "fakeredis":
        import fakeredis

        return RedisBackend(
            fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer()), owns_client=True
        )
    assert url is not None, f"{kind} needs a Redis URL"
    return RedisBackend.from_url(
        url, connect_timeout=connect_timeout, command_timeout=command_timeout
    )


@asynccontextmanager
async def open_cache(
    kind: str,
    seed: int,
    url: str | None = None,
    *,
    breaker: CircuitBreaker | None = None,
    connect_timeout: float = 2.0,
    command_timeout: float = 2.0,
) -> AsyncIterator[Cache]:
    """A cache on a namespace of its own; removes what it wrote and closes it afterwards.

    The timeouts are generous by default: most tests check values, on machines that may stall.
    """
    backend = make_backend(
        kind, seed, url, connect_timeout=connect_timeout, command_timeout=command_timeout
    )
    cache = Cache(
        backend,
        namespace=f"cancel{uuid.uuid4().hex[:12]}",
        local=LocalTier() if kind == "local" else None,
        breaker=breaker,
    )
    try:
        if kind == "local":
            await wait_for_local_tier(cache)
        yield cache
    finally:
        try:
            await cache.clear()
            await cache.backend.delete(cache.keys.generation_key())
        finally:
            await cache.aclose()
            await settle()


async def wait_for_local_tier(cache: Cache, timeout: float = 5.0) -> None:
    """Waits until a value is served from the local tier (no backend call), by public API only."""
    assert await cache.set("probe", 1)
    deadline = time.monotonic() + timeout
    while True:
        assert await cache.get("probe") == 1
        calls = cache.stats.backend_calls
        assert await cache.get("probe") == 1
        if cache.stats.backend_calls == calls:
            break
        assert time.monotonic() < deadline, "the local tier did not come up"
        await asyncio.sleep(0.005)
    await cache.delete("probe")


async def settle() -> None:
    """Lets connections closed without waiting (cancelled reads) finish, and collects them.

    Collected here, with their ResourceWarnings silenced, rather than in a later test, where
    ``filterwarnings = error`` would fail it.
    """
    for _ in range(3):
        await asyncio.sleep(0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def verdict(tally: Tally, cache: Cache, final: list[str]) -> list[str]:
    """Everything that went wrong; empty when nothing did."""
    problems = [f"wrong value: {w}" for w in tally.wrong[:20]]
    problems += [f"error: {e}" for e in tally.errors[:20]]
    problems += [f"final pass: {p}" for p in final[:20]]
    if cache.stats.decode_errors:
        problems.append(f"{cache.stats.decode_errors} undecodable entries read")
    lost = {name: count for name, count in tally.swallowed.items() if not name.startswith(LOST_AT)}
    if lost:
        problems.append(f"cancellations lost (the call returned a value) at {lost}")
    return problems


# -- the tests ---------------------------------------------------------------------------------


def _kinds() -> list[Any]:
    return [
        pytest.param(kind, marks=pytest.mark.redis) if kind in REDIS_KINDS else kind
        for kind in KINDS
    ]


def _url(kind: str, request: pytest.FixtureRequest) -> str | None:
    if kind == "cluster":
        cluster: str = request.getfixturevalue("redis_cluster").url
        return cluster
    if kind in REDIS_KINDS:
        url: str = request.getfixturevalue("redis_url")
        return url
    return None


def _stages(tally: Tally) -> set[str]:
    """The places cancellations landed, with a backend stage ("reply get") also as its stage."""
    return set(tally.phases) | {name.split(" ", 1)[0] for name in tally.phases}


@pytest.mark.parametrize("kind", _kinds())
async def test_decorated_calls_cancelled_anywhere_return_only_their_own_key(
    kind: str, request: pytest.FixtureRequest
) -> None:
    async with open_cache(kind, SEED, _url(kind, request)) as cache:
        calls = CHEAP_CALLS.get(kind, CALLS)
        work = Decorated(cache, SEED)
        tally = await storm(work.next_op, seed=SEED, calls=calls, state=work.state)
        final = await last_pass(work)
        print(f"{kind}: {tally.summary()}")
        assert verdict(tally, cache, final) == [], tally.summary()
        assert tally.cancelled > calls * CANCEL_RATE * 0.7, tally.summary()
        assert tally.completed > calls * 0.4, tally.summary()
        assert cache.stats.hits > calls * 0.1, tally.summary()
        assert cache.stats.misses > KEYS, tally.summary()
        # Cancellations landed before calls started, while their key computed and while its
        # value was stored; and, where there is I/O, while a call waited on a read it had
        # joined or, over memory-remote, inside the backend. (Concurrent reads go out together
        # from a task of the cache's own, so a caller here rarely waits on a reply itself: the
        # get/get_many test below does.)
        wanted = {"before start", "while its key computes", "while its key's value is stored"}
        if kind != "memory":
            wanted.add("waiting on a read it joined")
        if kind == "memory-remote":
            wanted.add("paused")
        assert wanted <= _stages(tally), tally.summary()


@pytest.mark.parametrize("kind", _kinds())
async def test_get_and_get_many_cancelled_anywhere_return_only_their_own_key(
    kind: str, request: pytest.FixtureRequest
) -> None:
    async with open_cache(kind, SEED, _url(kind, request)) as cache:
        calls = CHEAP_CALLS.get(kind, CALLS)
        work = Reads(cache, SEED)
        assert await work.fill()
        tally = await storm(work.next_op, seed=SEED, calls=calls)
        final = await last_pass(work)
        print(f"{kind}: {tally.summary()}")
        assert verdict(tally, cache, final) == [], tally.summary()
        assert tally.cancelled > calls * CANCEL_RATE * 0.7, tally.summary()
        assert tally.completed > calls * 0.4, tally.summary()
        # Over memory, nothing in the backend awaits: only the start is a point to cancel at.
        # Over fakeredis, commands are answered as they are sent (and, with redis-py 5, so
        # quickly that no read is ever joined): no reply to wait for.
        wanted = {"before start"}
        if kind in ("memory-remote", *REDIS_KINDS):
            wanted.add("waiting on a read it joined")
        if kind == "memory-remote":
            wanted.add("paused")
        elif kind in REDIS_KINDS:
            wanted.add("reply")
        assert wanted <= _stages(tally), tally.summary()


FREEZE_TIMEOUT = 0.05


@pytest.fixture
def frozen_later(private_redis: RedisServer) -> Iterator[RedisServer]:
    """The module's private server, sent SIGCONT at the end in case a test left it stopped."""
    yield private_redis
    if private_redis.process is not None and private_redis.process.poll() is None:
        os.kill(private_redis.process.pid, signal.SIGCONT)


@pytest.mark.redis
@pytest.mark.parametrize("workload", ["decorated", "reads"])
async def test_command_timeouts_on_a_frozen_server_return_no_other_keys_value(
    workload: str, frozen_later: RedisServer
) -> None:
    """Replies the server queued while frozen reach sockets the timed-out calls gave up on.

    A storm runs before, during and right after a freeze of 0.3 s, with a 50 ms command
    timeout and a breaker that probes again every 50 ms.
    """
    server = frozen_later
    assert server.process is not None
    pid = server.process.pid
    breaker = CircuitBreaker(threshold=3, cooldown=0.05)
    async with open_cache(
        "redis",
        SEED,
        server.url,
        breaker=breaker,
        connect_timeout=FREEZE_TIMEOUT,
        command_timeout=FREEZE_TIMEOUT,
    ) as cache:
        work = Decorated(cache, SEED) if workload == "decorated" else Reads(cache, SEED)
        if isinstance(work, Reads):
            assert await work.fill()
        tally = Tally(SEED)

        async def freeze() -> None:
            os.kill(pid, signal.SIGSTOP)
            try:
                await asyncio.sleep(0.3)
            finally:
                os.kill(pid, signal.SIGCONT)

        await storm(work.next_op, seed=SEED, calls=CALLS // 3, state=work.state, tally=tally)
        errors_before = cache.stats.backend_errors
        frozen = asyncio.create_task(freeze())
        await storm(work.next_op, seed=SEED + 1, state=work.state, tally=tally, until=frozen)
        await frozen
        await storm(work.next_op, seed=SEED + 2, calls=CALLS // 3, state=work.state, tally=tally)
        timeouts = cache.stats.backend_errors - errors_before
        # The breaker may still be open: let it probe and close before the last pass.
        await asyncio.sleep(0.2)
        final = await last_pass(work)
        print(f"frozen, {workload}: {tally.summary()}; {timeouts} backend errors from the freeze")
        assert verdict(tally, cache, final) == [], tally.summary()
        assert timeouts > 0, "the freeze made no call time out"
