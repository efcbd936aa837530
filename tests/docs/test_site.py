"""Every ```python block of the documentation site (docs/) runs here, so no page's claim rots.

Each block runs as written, compiled with top-level ``await`` allowed, in a fresh namespace;
blocks are self-contained (they build the caches they use) and assert what their text says.
`EXAMPLES` lists each block by page and index with text it must contain and what it needs, and
`BLOCK_COUNTS` the number of blocks per page, so a block added, removed or moved fails
`test_every_python_block_is_accounted_for` until it is listed here.

A block marked ``redis=True`` runs against the real Redis of the suite (database 15) with
``REDIS_URL`` set for `Cache.from_settings` and a namespace of its own in ``CACHE_NAMESPACE``;
a block naming ``modules`` skips, with the reason, when one is not installed (an optional extra).
"""

from __future__ import annotations

import ast
import inspect
import logging
import os
import re
import textwrap
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cachetier import Cache
from cachetier.backends import MemoryBackend
from cachetier.testing import FakeClock

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"

FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```python[ \t]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.M | re.S
)


@dataclass(frozen=True)
class Block:
    """One ```python block: its page, index there, first code line and text."""

    page: str
    index: int
    line: int
    source: str


def python_blocks(page: Path) -> list[Block]:
    text = page.read_text(encoding="utf-8")
    name = page.relative_to(DOCS).as_posix()
    return [
        Block(
            name,
            index,
            text.count("\n", 0, match.start("body")) + 1,
            textwrap.dedent(match.group("body")),
        )
        for index, match in enumerate(FENCE.finditer(text))
    ]


PAGES = sorted(DOCS.rglob("*.md"))
BLOCKS = [block for page in PAGES for block in python_blocks(page)]


Namespace = dict[str, Any]


async def _nothing(names: Namespace) -> None:
    return None


@dataclass(frozen=True)
class Example:
    """How one block runs: text it contains, a check after it, the modules and Redis it needs."""

    contains: str
    check: Callable[[Namespace], Awaitable[None]] = _nothing
    modules: tuple[str, ...] = ()
    redis: bool = False


async def run_testing_page_tests(names: Namespace) -> None:
    """The testing page defines tests; run them as pytest would, with the plugin's fixtures."""
    with ExitStack() as stack:

        def swap(cache: Cache, backend: MemoryBackend | None = None) -> object:
            return stack.enter_context(cache.use(backend or MemoryBackend()))

        await names["test_greeting_is_cached"](swap)
    clock = FakeClock()
    cache = Cache(MemoryBackend(clock=clock), clock=clock)
    try:
        await names["test_entries_expire"](cache, clock)
    finally:
        await cache.aclose()


# The expected number of ```python blocks per page; pages not listed have none.
BLOCK_COUNTS: dict[str, int] = {
    "index.md": 1,
    "getting-started.md": 2,
    "concepts.md": 4,
    "decorator.md": 5,
    "invalidation.md": 3,
    "fastapi.md": 2,
    "testing.md": 2,
    "operations.md": 4,
    "scaling.md": 2,
    "security.md": 1,
    "migration/aiocache.md": 1,
    "migration/cashews.md": 1,
    "migration/fastapi-cache2.md": 1,
}

EXAMPLES: dict[tuple[str, int], Example] = {
    ("index.md", 0): Example("cache = Cache.from_settings()"),
    ("getting-started.md", 0): Example("async def pending_tasks(limit: int = 10) -> list[Task]"),
    ("getting-started.md", 1): Example('CacheSettings(backend="memory"'),
    ("concepts.md", 0): Example("cache.keys.literal("),
    ("concepts.md", 1): Example("ttl_jitter=0.1"),
    ("concepts.md", 2): Example("FaultyBackend(MemoryBackend(), outage=True)"),
    ("concepts.md", 3): Example("stats.replays"),
    ("decorator.md", 0): Example("async def get_user("),
    ("decorator.md", 1): Example("def __cache_key__(self) -> str:"),
    ("decorator.md", 2): Example("async def invoice(number: int) -> Invoice:"),
    ("decorator.md", 3): Example("asyncio.gather("),
    ("decorator.md", 4): Example("get_or_set("),
    ("invalidation.md", 0): Example('await cache.invalidate_tags("project:7")'),
    ("invalidation.md", 1): Example("async with cache.invalidating("),
    ("invalidation.md", 2): Example("slow = asyncio.create_task(task())"),
    ("fastapi.md", 0): Example("cache_response(ttl=TTL.CONTENT)", modules=("fastapi", "httpx")),
    ("fastapi.md", 1): Example("ResponseCacheMiddleware(", modules=("starlette", "httpx")),
    ("testing.md", 0): Example(
        "async def test_greeting_is_cached(cachetier_swap)", check=run_testing_page_tests
    ),
    ("testing.md", 1): Example("FaultyBackend(MemoryBackend())"),
    ("operations.md", 0): Example("await cache.health_check()"),
    ("operations.md", 1): Example(
        "from cachetier.contrib.prometheus import instrument", modules=("prometheus_client",)
    ),
    ("operations.md", 2): Example(
        "from cachetier.contrib.otel import instrument", modules=("opentelemetry.sdk",)
    ),
    ("operations.md", 3): Example("@cache.add_hook"),
    ("scaling.md", 0): Example("redis+cluster://"),
    ("scaling.md", 1): Example("local=LocalTier(", redis=True),
    ("security.md", 0): Example("signing_key="),
    ("migration/aiocache.md", 0): Example("# aiocache: @cached("),
    ("migration/cashews.md", 0): Example("# cashews: @cache("),
    ("migration/fastapi-cache2.md", 0): Example(
        "@cache_response(ttl=60)", modules=("fastapi", "httpx")
    ),
}


def test_every_python_block_is_accounted_for() -> None:
    """Each block is listed with text it holds, and no page gained or lost one unnoticed."""
    counts = Counter(block.page for block in BLOCKS)
    assert dict(counts) == BLOCK_COUNTS
    assert {(block.page, block.index) for block in BLOCKS} == set(EXAMPLES)
    for block in BLOCKS:
        assert EXAMPLES[block.page, block.index].contains in block.source, block


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Blocks read settings as an application would: no cache variable, no ``.env`` file; and
    what a block does to the ``cachetier`` logger (a level, for one) ends with it, so the
    tests that run later see the logger as it was."""
    for name in os.environ:
        if name.upper() in {"REDIS_URL", "REDIS_ENABLED"} or name.upper().startswith("CACHE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    logger = logging.getLogger("cachetier")
    level, handlers, propagate = logger.level, list(logger.handlers), logger.propagate
    yield
    logger.setLevel(level)
    logger.handlers[:] = handlers
    logger.propagate = propagate


@pytest.mark.usefixtures("clean_environment")
@pytest.mark.parametrize(
    "block", BLOCKS, ids=[f"{block.page}:{block.index}:line{block.line}" for block in BLOCKS]
)
async def test_python_block_runs(
    block: Block, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    example = EXAMPLES[block.page, block.index]
    for module in example.modules:
        pytest.importorskip(module, reason=f"{module} is not installed (an optional extra)")
    namespace = f"docs{uuid.uuid4().hex[:12]}"
    if example.redis:
        monkeypatch.setenv("REDIS_URL", request.getfixturevalue("redis_url"))
        monkeypatch.setenv("CACHE_NAMESPACE", namespace)
    names: Namespace = {"__name__": f"docs_block_{block.index}"}
    code = compile(
        "\n" * (block.line - 1) + block.source,
        f"docs/{block.page}",
        "exec",
        flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
        dont_inherit=True,
    )
    try:
        result = eval(code, names)  # noqa: S307  # the project's own documentation
        if inspect.iscoroutine(result):
            await result
        await example.check(names)
    finally:
        for value in list(names.values()):
            if isinstance(value, Cache):
                if example.redis and value.namespace == namespace:
                    await value.clear()
                await value.aclose()
