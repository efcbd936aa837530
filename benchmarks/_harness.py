"""The timing harness of the benchmarks: cases, interleaved rounds, medians, p99 and ratios."""

import asyncio
import gc
import math
import random
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

Call = Callable[[], Awaitable[object]]


# -- settings and results ---------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    rounds: int
    slices: int
    round_seconds: float
    sample_seconds: float
    max_samples: int
    warmup_seconds: float

    @classmethod
    def normal(cls) -> "Settings":
        return cls(
            rounds=15,
            slices=8,
            round_seconds=0.05,
            sample_seconds=0.4,
            max_samples=4000,
            warmup_seconds=0.05,
        )

    @classmethod
    def quick(cls) -> "Settings":
        return cls(
            rounds=7,
            slices=4,
            round_seconds=0.02,
            sample_seconds=0.08,
            max_samples=1000,
            warmup_seconds=0.02,
        )


@dataclass
class Case:
    """One measured line of a table."""

    key: str
    label: str
    call: Call | None = None
    error: str | None = None
    ops: int = 1  # logical calls per invocation (a gathered batch counts its calls)
    peer: str | None = None  # key of the case this one is compared with
    checks: list[Callable[[], str | None]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    median_ns: float | None = None
    p99_ns: float | None = None
    round_means: dict[int, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def ratio_to(self, other: "Case | None") -> float | None:
        """Median over the rounds both ran of this case's time over ``other``'s.

        Both ran within the same round, close in time, so a burst of load from another
        process inflates both sides of each ratio alike.
        """
        paired = self.paired_ratios(other)
        return statistics.median(paired) if paired else None

    def ratio_spread(self, other: "Case | None") -> tuple[float, float] | None:
        """The interquartile range of the same-round ratios to ``other``."""
        paired = self.paired_ratios(other)
        if len(paired) < 4:
            return None
        quartiles = statistics.quantiles(paired, n=4)
        return quartiles[0], quartiles[2]

    def paired_ratios(self, other: "Case | None") -> list[float]:
        if other is None or self.median_ns is None or other.median_ns is None:
            return []
        return [
            mean / other.round_means[r]
            for r, mean in self.round_means.items()
            if other.round_means.get(r)
        ]


@dataclass
class Section:
    key: str
    title: str
    base: str | None  # key of the case every ratio in the "vs base" column divides by
    base_label: str
    cases: list[Case]
    note: str = ""
    throughput: bool = False

    def find(self, key: str | None) -> Case | None:
        return next((c for c in self.cases if c.key == key), None)


def describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:160]}" if text else type(exc).__name__


def p99(samples: list[int]) -> float:
    ordered = sorted(samples)
    return float(ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)])


# -- the timing harness -----------------------------------------------------------------------


async def measure(cases: list[Case], settings: Settings) -> None:
    """Times every runnable case in interleaved rounds; fills ``median_ns`` and ``p99_ns``.

    A round gives each case about ``round_seconds``, cut into ``slices`` short batches that
    alternate between the cases in a random order, so a burst of load from another process
    lands on all of them.
    After each batch a few calls are timed one by one for the p99.
    """
    slices = settings.slices
    per_slice: dict[str, int] = {}
    samples_per_slice: dict[str, int] = {}
    for case in cases:
        if case.call is None or case.error:
            continue
        try:
            per_call = await asyncio.wait_for(_warm_up(case.call, settings), timeout=30)
        except Exception as exc:
            case.error = describe(exc)
            continue
        per_slice[case.key] = max(1, round(settings.round_seconds * 1e9 / per_call / slices))
        wanted = min(settings.max_samples, settings.sample_seconds * 1e9 / per_call)
        samples_per_slice[case.key] = max(1, math.ceil(wanted / settings.rounds / slices))
    live = [c for c in cases if c.key in per_slice]
    samples: dict[str, list[int]] = {c.key: [] for c in live}
    shuffler = random.Random(20_26)  # an order of cases, not security
    # What the process imported (redis-py, pydantic, the peers: some 50,000 objects) is frozen,
    # as services freeze what they load at start-up: a full collection then walks only what the
    # cases allocate. Unfrozen, one lands every few hundred bursts and takes 8-25 ms, on
    # whichever case runs then (a 2 ms burst of 100 calls showed a p99 of 20 ms, and a quarter
    # of its rounds 35 % slow).
    gc.collect()
    gc.freeze()
    try:
        await _rounds(live, settings, per_slice, samples_per_slice, samples, shuffler)
    finally:
        gc.unfreeze()
    for case in live:
        if case.error:
            continue
        case.median_ns = statistics.median(case.round_means.values())
        case.p99_ns = p99(samples[case.key])
        case.extra["calls_per_round"] = per_slice[case.key] * slices
        case.extra["p99_samples"] = len(samples[case.key])
    for case in cases:
        for check in case.checks:
            try:
                note = check()
            except Exception as exc:
                note = f"check failed: {describe(exc)}"
            if note:
                case.notes.append(note)


async def _rounds(
    live: list[Case],
    settings: Settings,
    per_slice: dict[str, int],
    samples_per_slice: dict[str, int],
    samples: dict[str, list[int]],
    shuffler: random.Random,
) -> None:
    """Runs the interleaved rounds of `measure`: fills each case's ``round_means`` and p99
    samples."""
    slices = settings.slices
    for round_index in range(settings.rounds):
        totals = dict.fromkeys(per_slice, 0)
        for _ in range(slices):
            # A fresh random order each time: with a fixed cyclic order every case would always
            # follow the same neighbour and inherit its leftovers (garbage to collect, caches).
            order = list(live)
            shuffler.shuffle(order)
            for case in order:
                if case.error or case.call is None:
                    continue
                call, n = case.call, per_slice[case.key]
                try:
                    started = time.perf_counter_ns()
                    for _ in range(n):
                        await call()
                    totals[case.key] += time.perf_counter_ns() - started
                    bucket = samples[case.key]
                    for _ in range(samples_per_slice[case.key]):
                        started = time.perf_counter_ns()
                        await call()
                        bucket.append(time.perf_counter_ns() - started)
                except Exception as exc:
                    case.error = describe(exc)
        for case in live:
            if not case.error:
                case.round_means[round_index] = totals[case.key] / (per_slice[case.key] * slices)


async def _warm_up(call: Call, settings: Settings) -> float:
    """Runs ``call`` for the warm-up time (at least 20 times); returns ns per call."""
    count = 0
    started = time.perf_counter_ns()
    while True:
        await call()
        count += 1
        elapsed = time.perf_counter_ns() - started
        if count >= 20 and elapsed >= settings.warmup_seconds * 1e9:
            return elapsed / count
