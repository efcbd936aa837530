"""The whole cache against its consistency contract: a seeded model run on every store.

Each case runs `tests.model.model.run_model`: concurrent decorated calls (plain, ``lock=True``,
``stale_ttl``), ``get_or_set``, ``get``/``get_many``/``set``, ``refresh``, every kind of
invalidation and ``bump_version``/``clear``, over several `Cache` objects sharing one store
(processes, one of them started mid-run), with seeded pauses around every backend command and
database read, random cancellation and a fake clock. The contract it checks is in that
module's docstring. A failure prints the seed, the failing step, the history of the key and
the operation log tail, and the command that replays it.

CI runs a bounded number of seeds; ``CACHETIER_MODEL_SEEDS`` (seeds per store and interval,
default 2), ``CACHETIER_MODEL_STEPS`` (default 200) and ``CACHETIER_MODEL_FIRST_SEED`` widen
it, and ``python -m tests.model.soak`` runs a long soak or replays one seed.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from .model import ModelConfig, run_model
from .stores import ModelStore

SEEDS = int(os.environ.get("CACHETIER_MODEL_SEEDS", "2"))
STEPS = int(os.environ.get("CACHETIER_MODEL_STEPS", "200"))
FIRST_SEED = int(os.environ.get("CACHETIER_MODEL_FIRST_SEED", "1"))

# Stores that need a server are marked, so `-m "not redis"` leaves them out.
STORES = [
    pytest.param("memory", id="memory"),
    pytest.param("memory-inproc", id="memory-inproc"),
    pytest.param("fakeredis", id="fakeredis"),
    pytest.param("redis", id="redis", marks=pytest.mark.redis),
    pytest.param("cluster", id="cluster", marks=pytest.mark.redis),
]


@pytest.fixture
async def model_store(request: pytest.FixtureRequest) -> AsyncIterator[ModelStore]:
    """One store for one run: a unique namespace on a real server, removed afterwards."""
    kind: str = request.param
    url = None
    if kind == "redis":
        url = request.getfixturevalue("redis_url")
    elif kind == "cluster":
        url = request.getfixturevalue("redis_cluster").url
    store = ModelStore(kind, url=url)
    yield store
    await store.cleanup()


async def check(store: ModelStore, seed: int, steps: int, interval: float) -> None:
    result = await run_model(
        ModelConfig(store=store.kind, seed=seed, steps=steps, interval=interval), store
    )
    if result.violations or result.errors:
        pytest.fail(result.report(), pytrace=False)
    assert result.counts["reads"] > steps // 2, result.counts  # the run did read


@pytest.mark.parametrize("model_store", STORES, indirect=True)
@pytest.mark.parametrize(
    "interval", [0.0, 1.0], ids=["version-check-every-read", "version-check-interval-1s"]
)
@pytest.mark.parametrize("seed", range(FIRST_SEED, FIRST_SEED + SEEDS), ids=lambda s: f"seed{s}")
async def test_the_cache_keeps_the_consistency_contract(
    model_store: ModelStore, interval: float, seed: int
) -> None:
    """Random concurrent calls, invalidations, cancellations and processes; checked each step."""
    await check(model_store, seed, STEPS, interval)


# Seeds that found the defects of issue 14 on 660d26d (the code before the fixes); they replay
# exactly on the deterministic stores (memory, fakeredis). Each must pass once fixed.
KNOWN_SEEDS = [
    # 1. read-your-writes / flight join: A.set(item:0, v10) returned, then A.get_or_set(item:0)
    #    in the same task joined A.item(0), in flight since before the set, and returned v9.
    pytest.param("fakeredis", 11, 150, 0.0, id="defect1-flight-join-fakeredis-seed11"),
    # 2. tag index race: A.stale(1)'s miss was stored without being indexed under its tags; at
    #    quiescence invalidate_tags(row:1) -> 0 and stale(1) still returned v17 (row at v18).
    pytest.param("fakeredis", 9, 200, 0.0, id="defect2-entry-immune-to-tags-fakeredis-seed9"),
    # 6a. a read already in flight across bump_version: C.get_or_set(item:2) started, then
    #    C.bump_version() returned; C.item(2), started after it, returned the pre-bump v7
    #    (db at v11). Also a case of 1 (bump_version is one of its invalidations).
    pytest.param(
        "fakeredis", 104, 200, 0.0, id="defect6-pre-bump-value-after-bump-fakeredis-seed104"
    ),
    # 6b. a process started late (C) after an earlier bump: its first write, set(locked:0, v1),
    #    returned True and its next get(locked:0) missed (written with generation 0).
    pytest.param(
        "fakeredis", 47, 200, 0.0, id="defect6-fresh-process-set-invisible-fakeredis-seed47"
    ),
    # 7. refresh of a lock=True function: B.locked.refresh(2) returned the cached v4 without
    #    running the function; the row held v5 when it started.
    pytest.param("fakeredis", 0, 150, 0.0, id="defect7-refresh-locked-fakeredis-seed0"),
    # Found later by the long soak, on 637a75a (after the fixes above), all with an interval:
    # A.get_or_set(locked:3) joined A.locked(3), in flight since before C.invalidate_tags
    # (another process) returned, and returned its v29 (row at v30).
    pytest.param("memory-inproc", 60, 300, 1.0, id="flight-overtaken-by-another-process-seed60"),
    # B.get_many ran past its version_check_interval while B's generation read was under way,
    # took the generation it knew, and returned the pre-bump v4 after D.bump_version().
    pytest.param("memory", 11, 300, 1.0, id="generation-past-due-while-read-in-flight-seed11"),
    # A, not yet told of B's bump, missed what B set after it: an entry of a later generation
    # was not taken as proof of the bump.
    pytest.param("memory-inproc", 58, 300, 1.0, id="later-generation-entry-missed-seed58"),
]


@pytest.mark.parametrize(
    ("model_store", "seed", "steps", "interval"),
    [
        pytest.param(
            *case.values, id=case.id, marks=case.marks
        )  # the store goes to the fixture, indirectly
        for case in KNOWN_SEEDS
    ],
    indirect=["model_store"],
)
async def test_seeds_that_found_the_defects_of_issue_14(
    model_store: ModelStore, seed: int, steps: int, interval: float
) -> None:
    """Each replays the interleaving that broke the contract on 660d26d."""
    await check(model_store, seed, steps, interval)
