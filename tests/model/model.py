"""A seeded scheduler that drives the whole cache over a "database" and checks the contract.

One run (`run_model`) plays ``steps`` operations, each in its own task, over a few `Cache`
objects that share one store (processes sharing one Redis); a process started later joins
mid-run. The database is ``db[i]``, an integer version per row ``i``; every value the cache
holds is ``{"k": key, "v": version}``, computed from the version its function read, so the
checker can tell a stale value and a value of another key. Tasks interleave wherever a
`Jitter` pauses (around every command, in every database read), are cancelled at random, and
the fake clock moves (TTLs, ``stale_ttl``, ``version_check_interval``).

The contract checked after every step (the strict reading where the wording allows two):

1. Once ``set``, ``delete``, ``fn.invalidate``, ``invalidate``, ``invalidate_tags``,
   ``delete_pattern``, ``bump_version`` or ``clear`` has returned on a cache, a read that
   starts afterwards on that cache (any task) returns no value computed from a database
   version older than the one the invalidated rows held when the invalidation started. A
   miss that recomputes is fine. After ``set(k, v)`` returned True, a later ``get(k)`` returns
   ``v`` or newer (a miss only if an invalidation of ``k`` started meanwhile).
2. The same on every other cache, except ``bump_version``, which binds another cache once the
   clock has passed its ``version_check_interval`` after the bump returned (at once with 0).
3. Single flight and read merging are held to 1 and 2 like any other read.
4. ``fn.refresh(...)`` (``lock=True`` included) returns a value at least as new as the row
   when it started, and a read starting after it returns nothing older (it stored it).
5. A value never comes back for another key.
6. Quiescence: after all tasks end, three rounds of "write every row, ``invalidate_tags``"
   leave every read path returning the database's value.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fnmatch
import functools
import random
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from cachetier import Cache
from cachetier.testing import FakeClock

from .stores import ModelStore

__all__ = ("ModelConfig", "ModelResult", "Violation", "run_model")

ROWS = 4
GROUPS = 2
FAMILIES = ("item", "locked", "stale")
KEYS = tuple(f"{family}:{i}" for family in FAMILIES for i in range(ROWS))
PATTERNS = ("item:{i}", "*:{i}", "locked:*", "stale:*", "item:*", "*")
STALE_TTL_FRESH = 2.0  # the ``stale`` family's TTL; the clock moves past it now and then
LONG_TTL = 3600.0  # everything else; the clock never gets there in one run


def _tags(i: int) -> list[str]:
    return [f"row:{i}", f"grp:{i % GROUPS}"]


def _row(key: str) -> int:
    return int(key.rsplit(":", 1)[1])


def _policy(family: str) -> dict[str, Any]:
    if family == "locked":
        return {"lock": True, "lock_ttl": 2, "lock_timeout": 1}
    if family == "stale":
        return {"stale_ttl": LONG_TTL}
    return {}


def _ttl(family: str) -> float:
    return STALE_TTL_FRESH if family == "stale" else LONG_TTL


@dataclass(frozen=True)
class ModelConfig:
    """What one run does; ``interval`` is every cache's ``version_check_interval``."""

    store: str
    seed: int
    steps: int = 150
    interval: float = 0.0
    max_tasks: int = 8
    cancel_rate: float = 0.06
    quiescence_rounds: int = 3

    def label(self) -> str:
        return f"store={self.store} seed={self.seed} steps={self.steps} interval={self.interval:g}"


@dataclass(frozen=True)
class Violation:
    step: int
    op: str
    message: str
    key: str = ""


@dataclass
class ModelResult:
    config: ModelConfig
    violations: list[Violation]
    log_tail: list[str]
    counts: collections.Counter[str]
    errors: list[str]
    history: list[str]
    deterministic: bool

    def report(self) -> str:
        lines = [f"consistency model: {self.config.label()}"]
        lines.extend(
            f"VIOLATION at step {violation.step} ({violation.op}): {violation.message}"
            for violation in self.violations[:5]
        )
        if len(self.violations) > 5:
            lines.append(f"... and {len(self.violations) - 5} more violations")
        lines.extend(f"ERROR: {error}" for error in self.errors[:5])
        if self.violations and self.violations[0].key:
            key = self.violations[0].key
            row = f"row {_row(key)}"
            mentions = [
                line
                for line in self.history
                if key in line
                or f"db[{_row(key)}]" in line
                or row in line
                or f"row:{_row(key)}" in line
                or f"grp:{_row(key) % GROUPS}" in line
                or "process starts" in line
                or "bump_version" in line
            ]
            lines.append(f"history of {key} (the lines naming it or its row):")
            lines.extend("  " + line for line in mentions[-25:])
        lines.append("op log tail (seq step proc event):")
        lines.extend("  " + line for line in self.log_tail)
        lines.append(
            "replay: .venv/bin/python -m tests.model.soak "
            f"--store {self.config.store} --seed {self.config.seed} "
            f"--steps {self.config.steps} --interval {self.config.interval:g}"
            + (
                ""
                if self.deterministic
                else "  (over sockets a seed replays the same operations, not always the same timing)"
            )
        )
        return "\n".join(lines)


class Checked(Exception):
    """Stops a run at its first violation."""


@dataclass
class Proc:
    """One `Cache`, standing for one process, and what the contract lets it return."""

    name: str
    cache: Cache
    fns: dict[str, Any]
    floors: dict[str, int] = field(default_factory=dict)
    pending: list[tuple[float, dict[str, int]]] = field(default_factory=list)


class Model:
    def __init__(self, config: ModelConfig, store: ModelStore) -> None:
        self.config = config
        self.store = store
        self.rng = random.Random(config.seed)
        self.db_rng = random.Random(self.rng.random())
        self.clock = FakeClock(1_000_000.0)
        self.db = dict.fromkeys(range(ROWS), 0)
        self.row_locks = {i: asyncio.Lock() for i in range(ROWS)}
        self.procs: list[Proc] = []
        self.seq = 0
        self.step = -1
        self.log: collections.deque[str] = collections.deque(maxlen=40)
        self.history: list[str] = []
        self.violations: list[Violation] = []
        self.errors: list[str] = []
        self.counts: collections.Counter[str] = collections.Counter()
        # Set(k) returned True at seq s with version v: (s, v, proc name). Cleared per key by
        # the start of anything that may legitimately remove k.
        self.present: dict[str, tuple[int, int]] = {}
        self.cover_start: dict[str, int] = {}
        self.inflight: collections.Counter[str] = collections.Counter()
        self.cover_end: dict[str, int] = {}
        self.floor_source: dict[tuple[str, int], str] = {}
        self.bumps = 0

    # -- bookkeeping ---------------------------------------------------------------------------

    def note(self, proc: str, text: str) -> int:
        self.seq += 1
        line = f"{self.seq:5d} s{self.step:<4d} {proc}: {text}"
        self.log.append(line)
        self.history.append(line)
        return self.seq

    def violate(self, op: str, message: str, key: str = "") -> None:
        self.note("!", f"VIOLATION {op}: {message}")
        self.violations.append(Violation(self.step, op, message, key))
        raise Checked(message)

    def floors_now(self, proc: Proc) -> dict[str, int]:
        now = self.clock()
        due = [floors for at, floors in proc.pending if at <= now]
        if due:
            proc.pending = [(at, floors) for at, floors in proc.pending if at > now]
            for floors in due:
                self._merge(proc.floors, floors)
        return proc.floors

    @staticmethod
    def _merge(target: dict[str, int], floors: dict[str, int]) -> None:
        for key, version in floors.items():
            if version > target.get(key, -1):
                target[key] = version

    def raise_floors(
        self, origin: Proc, floors: dict[str, int], source: str, *, bump: bool = False
    ) -> None:
        for key, version in floors.items():
            self.floor_source.setdefault(
                (key, version), f"{origin.name}.{source} at seq {self.seq}"
            )
        for proc in self.procs:
            if bump and proc is not origin and self.config.interval > 0:
                proc.pending.append((self.clock() + self.config.interval, floors))
            else:
                self._merge(proc.floors, floors)

    def covering_start(self, keys: Iterable[str], seq: int) -> dict[str, int]:
        """Notes that an invalidation of ``keys`` starts; returns the rows' versions now."""
        snapshot = {}
        for key in keys:
            self.cover_start[key] = seq
            snapshot[key] = self.db[_row(key)]
        return snapshot

    def up_to_date(self, proc: Proc) -> bool:
        """Whether every bump made elsewhere binds ``proc`` already (see contract item 2)."""
        self.floors_now(proc)
        return not proc.pending

    # -- the database --------------------------------------------------------------------------

    async def read_row(self, key: str) -> dict[str, Any]:
        """The query: reads the row between two pauses; the value names its key and version."""
        await self.db_pause()
        version = self.db[_row(key)]
        self.counts["db_reads"] += 1
        await self.db_pause()
        return {"k": key, "v": version}

    async def db_pause(self) -> None:
        roll = self.db_rng.random()
        if roll < 0.3:
            return
        for _ in range(self.db_rng.randint(1, 6)):
            await asyncio.sleep(0)
        if not self.store.deterministic and roll > 0.93:
            await asyncio.sleep(self.db_rng.random() * 0.004)

    # -- processes -----------------------------------------------------------------------------

    def spawn(self) -> Proc:
        name = "ABCDEFGH"[len(self.procs)]
        cache = Cache(
            self.store.backend(self.rng),
            namespace=self.store.namespace,
            default_ttl=LONG_TTL,
            clock=self.clock,
            version_check_interval=self.config.interval,
        )
        fns: dict[str, Any] = {}
        for family in FAMILIES:
            fns[family] = self._decorate(cache, family)
        proc = Proc(name, cache, fns)
        # A process started now has never read the generation: every invalidation that has
        # returned binds it at once, bumps included (strict: its first read learns them).
        for other in self.procs:
            self._merge(proc.floors, self.floors_now(other))
            for _, floors in other.pending:
                self._merge(proc.floors, floors)
        self.procs.append(proc)
        return proc

    def _decorate(self, cache: Cache, family: str) -> Any:
        model = self

        @cache.cached(
            ttl=_ttl(family),
            key=family + ":{i}",
            tags=["row:{i}", "grp:{g}"],
            **_policy(family),
        )
        async def fn(i: int, g: int) -> dict[str, Any]:
            return await model.read_row(f"{family}:{i}")

        return fn

    # -- checking reads ----------------------------------------------------------------------

    def check_value(self, op: str, key: str, value: Any, floor: int) -> None:
        if not isinstance(value, dict) or value.get("k") != key:
            self.violate(op, f"returned {value!r}, a value of another key than {key!r}", key)
        version = value["v"]
        if version < floor:
            self.violate(
                op,
                f"returned {key}@v{version}, older than v{floor}, which "
                f"{self.floor_source.get((key, floor), '?')} requires as it returned before "
                f"this read started (db now v{self.db[_row(key)]})",
                key,
            )
        if version > self.db[_row(key)]:
            self.violate(
                op, f"returned {key}@v{version}, newer than the database (v{self.db[_row(key)]})"
            )

    def must_hit(self, proc: Proc, key: str) -> tuple[int, int] | None:
        """The set(key) a read starting now must see, if no invalidation of key starts meanwhile."""
        return self.present.get(key)

    def check_miss(self, op: str, key: str, expected: tuple[int, int] | None) -> None:
        if expected is None:
            return
        set_seq, version = expected
        if self.cover_start.get(key, -1) < set_seq:
            self.violate(
                op,
                f"missed {key}, which set() stored as v{version} (returned True at seq {set_seq}) "
                "and nothing invalidated since",
                key,
            )

    # -- operations ----------------------------------------------------------------------------

    def pick_proc(self) -> Proc:
        return self.rng.choice(self.procs)

    def pick_key(self, i: int | None = None) -> str:
        i = self.rng.randrange(ROWS) if i is None else i
        return f"{self.rng.choice(FAMILIES)}:{i}"

    def read_op(self, proc: Proc, key: str) -> tuple[str, Callable[[], Awaitable[None]]]:
        """Builds one read of ``key`` on ``proc``, by a random read path."""
        family, i = key.split(":")[0], _row(key)
        kind = self.rng.choice(["call", "call", "get", "get_or_set", "get_many"])
        if kind == "call":
            text = f"{family}({i})"

            async def call() -> None:
                await self._read(proc, text, [key], lambda: self._call(proc, family, i))

            return text, call
        if kind == "get":
            text = f"get({key})"

            async def get() -> None:
                await self._read(proc, text, [key], lambda: self._get(proc, key), may_miss=True)

            return text, get
        if kind == "get_or_set":
            text = f"get_or_set({key})"

            async def get_or_set() -> None:
                await self._read(
                    proc,
                    text,
                    [key],
                    lambda: self._single(
                        proc.cache.get_or_set(
                            key,
                            lambda: self.read_row(key),
                            ttl=_ttl(family),
                            tags=_tags(i),
                            **_policy(family),
                        ),
                        key,
                    ),
                )

            return text, get_or_set
        keys = sorted({key, *self.rng.sample(KEYS, self.rng.randint(1, 3))})
        text = f"get_many({','.join(keys)})"

        async def get_many() -> None:
            await self._read(proc, text, keys, lambda: proc.cache.get_many(keys), may_miss=True)

        return text, get_many

    async def _call(self, proc: Proc, family: str, i: int) -> dict[str, Any]:
        return {f"{family}:{i}": await proc.fns[family](i, i % GROUPS)}

    async def _get(self, proc: Proc, key: str) -> dict[str, Any]:
        value = await proc.cache.get(key)
        return {} if value is None else {key: value}

    @staticmethod
    async def _single(awaitable: Awaitable[Any], key: str) -> dict[str, Any]:
        return {key: await awaitable}

    async def _read(
        self,
        proc: Proc,
        text: str,
        keys: list[str],
        read: Callable[[], Awaitable[dict[str, Any]]],
        *,
        may_miss: bool = False,
    ) -> None:
        floors = dict(self.floors_now(proc))
        expected = {key: self.must_hit(proc, key) for key in keys} if may_miss else {}
        self.note(proc.name, f"{text} starts (floors {self._floors_text(floors, keys)})")
        got = await read()
        self.note(proc.name, f"{text} -> {self._values_text(got)}")
        self.counts["reads"] += 1
        for key in keys:
            if key in got:
                self.check_value(f"{proc.name}.{text}", key, got[key], floors.get(key, 0))
            elif may_miss:
                self.check_miss(f"{proc.name}.{text}", key, expected[key])
        extra = set(got) - set(keys)
        if extra:
            self.violate(f"{proc.name}.{text}", f"returned keys it was not asked for: {extra}")

    @staticmethod
    def _floors_text(floors: dict[str, int], keys: list[str]) -> str:
        return ",".join(f"{key}>=v{floors.get(key, 0)}" for key in keys)

    @staticmethod
    def _values_text(got: dict[str, Any]) -> str:
        if not got:
            return "miss"
        return ",".join(
            f"{key}@v{value['v']}"
            if isinstance(value, dict) and "v" in value
            else f"{key}={value!r}"
            for key, value in got.items()
        )

    async def refresh(self, proc: Proc, family: str, i: int) -> None:
        key = f"{family}:{i}"
        text = f"{family}.refresh({i})"
        start_version = self.db[i]
        self.note(proc.name, f"{text} starts (db v{start_version})")
        value = await proc.fns[family].refresh(i, i % GROUPS)
        self.note(proc.name, f"{text} -> {self._values_text({key: value})}")
        self.counts["refresh"] += 1
        op = f"{proc.name}.{text}"
        if not isinstance(value, dict) or value.get("k") != key:
            self.violate(op, f"returned {value!r}, a value of another key than {key!r}")
        if value["v"] < start_version:
            self.violate(
                op,
                f"returned {key}@v{value['v']} without running the function: the row held "
                f"v{start_version} when refresh() started",
                key,
            )
        self.raise_floors(proc, {key: start_version}, text)

    async def write(self, proc: Proc, i: int) -> None:
        """A request that changes row ``i``, invalidates by one means, then reads its write."""
        how = self.rng.choice(
            [
                "delete",
                "fn.invalidate",
                "set",
                "set",
                "tag-row",
                "tag-grp",
                "pattern",
                "invalidate",
                "bump",
                "clear",
                "touch",
            ]
        )
        if how in ("bump", "clear") and self.rng.random() < 0.5:
            how = "delete"  # they invalidate everything: keep them rarer
        family = self.rng.choice(FAMILIES)
        key = f"{family}:{i}"
        op = f"{proc.name}.write(row {i}, {how})"
        async with self.row_locks[i]:
            self.db[i] += 1
            version = self.db[i]
            self.note(proc.name, f"db[{i}] = v{version} ({how})")
            if how == "touch":
                self.counts["w:touch"] += 1
                return  # a write the cache is not told about: refresh() is the way
            covered: list[str]
            call: Callable[[], Awaitable[Any]]
            bump = False
            if how == "delete":
                keys = sorted({key, *self.rng.sample(KEYS, self.rng.randint(0, 2))})
                covered, text = keys, f"delete({','.join(keys)})"
                call = lambda: proc.cache.delete(*keys)  # noqa: E731
            elif how == "fn.invalidate":
                covered, text = [key], f"{family}.invalidate({i})"
                call = lambda: proc.fns[family].invalidate(i, i % GROUPS)  # noqa: E731
            elif how == "set":
                covered, text = [], f"set({key}, v{version})"
                value = {"k": key, "v": version}
                call = lambda: proc.cache.set(key, value, ttl=LONG_TTL, tags=_tags(i))  # noqa: E731
            elif how in ("tag-row", "tag-grp"):
                tag = _tags(i)[0 if how == "tag-row" else 1]
                covered = [k for k in KEYS if tag in _tags(_row(k))]
                text = f"invalidate_tags({tag})"
                call = lambda: proc.cache.invalidate_tags(tag)  # noqa: E731
            elif how == "pattern":
                pattern = self.rng.choice(PATTERNS).format(i=i)
                covered = [k for k in KEYS if fnmatch.fnmatchcase(k, pattern)]
                if key not in covered:
                    pattern, covered = f"*:{i}", [k for k in KEYS if _row(k) == i]
                text = f"delete_pattern({pattern})"
                call = lambda: proc.cache.delete_pattern(pattern)  # noqa: E731
            elif how == "invalidate":
                tag = self.rng.choice(_tags(i))
                pattern = self.rng.choice(PATTERNS).format(i=self.rng.randrange(ROWS))
                covered = sorted(
                    {key}
                    | {k for k in KEYS if tag in _tags(_row(k))}
                    | {k for k in KEYS if fnmatch.fnmatchcase(k, pattern)}
                )
                text = f"invalidate({key}, tags=[{tag}], patterns=[{pattern}])"
                call = lambda: proc.cache.invalidate(key, tags=[tag], patterns=[pattern])  # noqa: E731
            elif how == "bump":
                covered, text, bump = list(KEYS), "bump_version()", True
                call = proc.cache.bump_version
            else:
                covered, text = list(KEYS), "clear()"
                call = proc.cache.clear
            start = self.note(proc.name, f"{text} starts")
            floors = self.covering_start(covered, start)
            if how == "set":
                floors = {key: version}
                up_to_date = self.up_to_date(proc)
                self.present.pop(key, None)  # replaced: only this set's value may be required
            self.inflight.update(covered)
            try:
                result = await call()
            finally:
                self.inflight.subtract(covered)
                for covered_key in covered:
                    self.cover_end[covered_key] = self.seq + 1
            end = self.note(proc.name, f"{text} -> {result!r}")
            self.counts["w:" + how] += 1
            if bump:
                self.bumps += 1
            self.raise_floors(proc, floors, text, bump=bump)
            if (
                how == "set"
                and result is True
                and up_to_date
                and not self.inflight[key]
                and self.cover_end.get(key, -1) < start
            ):
                # No invalidation of the key overlapped the set: a read must now find it.
                self.present[key] = (end, version)
            elif how == "set" and result is not True:
                self.errors.append(f"step {self.step}: {op}: set() returned {result!r}")
            # The same request reads what it wrote, by any read path.
            read_key = key if self.rng.random() < 0.8 else self.pick_key(i)
            _, read = self.read_op(proc, read_key)
            await read()

    def advance_clock(self) -> None:
        seconds = self.rng.choice([0.3, 0.6, 1.1, 2.5])
        self.clock.advance(seconds)
        seq = self.note("*", f"clock +{seconds:g} s")
        for key in KEYS:
            if key.startswith("stale:"):
                self.cover_start[key] = seq  # a stale-family entry may now expire
        self.counts["clock"] += 1

    # -- the scheduler ---------------------------------------------------------------------------

    def next_op(self) -> tuple[str, Callable[[], Awaitable[None]]] | None:
        roll = self.rng.random()
        if roll < 0.03 and len(self.procs) < 4 and self.step > self.config.steps // 4:
            proc = self.spawn()
            self.note(proc.name, "a process starts (new Cache over the same store)")
            self.counts["spawn"] += 1
            # Its first call is as likely a write as a read.
            i = self.rng.randrange(ROWS)
            if self.rng.random() < 0.6:
                return f"{proc.name}.write(row {i})", lambda: self.write(proc, i)
            text, read = self.read_op(proc, self.pick_key(i))
            return f"{proc.name}.{text}", read
        if roll < 0.08:
            self.advance_clock()
            return None
        proc = self.pick_proc()
        i = self.rng.randrange(ROWS)
        if roll < 0.36:
            return f"{proc.name}.write(row {i})", lambda: self.write(proc, i)
        if roll < 0.42:
            family = self.rng.choice(FAMILIES)
            return (
                f"{proc.name}.{family}.refresh({i})",
                lambda: self.refresh(proc, family, i),
            )
        text, read = self.read_op(proc, self.pick_key(i))
        return f"{proc.name}.{text}", read

    async def guarded(self, name: str, op: Callable[[], Awaitable[None]]) -> None:
        try:
            await op()
        except Checked:
            pass
        except asyncio.CancelledError:
            self.note("*", f"{name} cancelled")
            raise
        except Exception as exc:
            self.note("!", f"{name} raised {type(exc).__name__}: {exc}")
            self.errors.append(f"step {self.step}: {name} raised {type(exc).__name__}: {exc}")

    async def run(self) -> None:
        self.spawn()
        self.spawn()
        running: dict[asyncio.Task[None], str] = {}
        try:
            for step in range(self.config.steps):
                self.step = step
                chosen = self.next_op()
                if chosen is not None:
                    name, op = chosen
                    task = asyncio.create_task(self.guarded(name, op))
                    running[task] = name
                if running and self.rng.random() < self.config.cancel_rate:
                    victim = self.rng.choice(sorted(running.values()))
                    for task, name in running.items():
                        if name == victim and not task.done():
                            self.note("*", f"cancel {name}")
                            task.cancel()
                            self.counts["cancelled"] += 1
                            break
                for _ in range(self.rng.randint(0, 4)):
                    await asyncio.sleep(0)
                if running and (self.rng.random() < 0.1 or len(running) > self.config.max_tasks):
                    # Let some tasks finish: the oldest, or all of them now and then.
                    waiting = list(running)
                    if self.rng.random() < 0.5:
                        waiting = waiting[: max(1, len(waiting) // 2)]
                    await asyncio.wait(waiting, timeout=10)
                for task in [task for task in running if task.done()]:
                    del running[task]
                if self.violations or self.errors:
                    return
            self.step = self.config.steps
            await self.settle(running)
            if not (self.violations or self.errors):
                await self.quiescence()
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)

    async def settle(self, running: dict[asyncio.Task[None], str]) -> None:
        """Waits for every task, then lets background refreshes and lease work finish."""
        if running:
            await asyncio.wait(list(running), timeout=20)
        for _ in range(20 if self.store.deterministic else 5):
            await asyncio.sleep(0 if self.store.deterministic else 0.01)

    async def quiescence(self) -> None:
        """Contract item 6: write every row and invalidate its tags, three times; read all."""
        writer = self.procs[0]
        for round_ in range(self.config.quiescence_rounds):
            self.note("*", f"quiescence round {round_ + 1}")
            for i in range(ROWS):
                self.db[i] += 1
                tag = _tags(i)[round_ % 2]
                start = self.note(
                    writer.name, f"db[{i}] = v{self.db[i]}; invalidate_tags({tag}) starts"
                )
                covered = [k for k in KEYS if tag in _tags(_row(k))]
                floors = self.covering_start(covered, start)
                result = await writer.cache.invalidate_tags(tag)
                self.note(writer.name, f"invalidate_tags({tag}) -> {result!r}")
                self.raise_floors(writer, floors, f"invalidate_tags({tag})")
            if self.config.interval:
                self.clock.advance(self.config.interval + 0.01)
            for proc in self.procs:
                for key in KEYS:
                    family, i = key.split(":")[0], _row(key)
                    # Every row was just invalidated after its write, so the floors equal the
                    # database: any value older than it fails the floor check.
                    await self._read(
                        proc,
                        f"{family}({i})",
                        [key],
                        functools.partial(self._call, proc, family, i),
                    )
                    await self._read(
                        proc,
                        f"get({key})",
                        [key],
                        functools.partial(self._get, proc, key),
                        may_miss=True,
                    )


async def run_model(config: ModelConfig, store: ModelStore) -> ModelResult:
    """Runs one seeded model over ``store``; closes what it opened, keeps the store's keys."""
    model = Model(config, store)
    try:
        with contextlib.suppress(Checked):
            await model.run()
    finally:
        for proc in model.procs:
            with contextlib.suppress(Exception):
                await proc.cache.aclose()
    for proc in model.procs:
        stats = proc.cache.stats
        errors = getattr(stats, "backend_errors", 0) or getattr(stats, "errors", 0)
        if errors:
            model.errors.append(
                f"cache {proc.name} counted {errors} backend errors: the run's checks assume none"
            )
    return ModelResult(
        config,
        model.violations,
        list(model.log),
        model.counts,
        model.errors,
        model.history,
        store.deterministic,
    )
