"""Every ```python block of README.md and examples/README.md runs here, so no claim of theirs rots.

Each block runs as written, compiled with top-level ``await`` allowed, in a namespace holding
the stand-ins for what it leaves to the application (``db``, ``Task``, ``app``...); a check
then asserts what the surrounding text promises. Blocks are listed in `EXAMPLES` by file and
index with text they must contain, and the number of blocks per file is asserted, so a block
added or changed fails `test_every_python_block_is_accounted_for` until it is listed here.

A block that cannot run here is marked in the Markdown source, on the line right before its
fence, with ``<!-- test: skip (the reason) -->``; the test skips it with that reason.
"""

from __future__ import annotations

import ast
import inspect
import os
import re
import textwrap
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import pytest
from pydantic import BaseModel

from cachetier import TTL, Cache
from cachetier.backends import MemoryBackend

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = {"README.md": ROOT / "README.md", "examples/README.md": ROOT / "examples" / "README.md"}

# The expected number of ```python blocks per document.
BLOCK_COUNTS = {"README.md": 7, "examples/README.md": 0}

FENCE = re.compile(
    r"(?:^<!--[ \t]*test:[ \t]*skip[ \t]*\((?P<skip>[^)\n]+)\)[ \t]*-->[ \t]*\n)?"
    r"^(?P<indent>[ \t]*)```python[ \t]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
    re.M | re.S,
)


@dataclass(frozen=True)
class Block:
    """One ```python block: its document, index there, first code line, text and skip reason."""

    document: str
    index: int
    line: int
    source: str
    skip: str | None


def python_blocks(document: str) -> list[Block]:
    text = DOCUMENTS[document].read_text(encoding="utf-8")
    return [
        Block(
            document,
            index,
            text.count("\n", 0, match.start("body")) + 1,
            textwrap.dedent(match.group("body")),
            match.group("skip"),
        )
        for index, match in enumerate(FENCE.finditer(text))
    ]


BLOCKS = [block for document in DOCUMENTS for block in python_blocks(document)]


# -- stand-ins for what the blocks leave to the application -------------------------------------


class Task(BaseModel):
    id: int
    title: str
    project_id: int = 7


class TaskChange(BaseModel):
    title: str


class NewTask(BaseModel):
    title: str
    project_id: int


class User(BaseModel):
    id: int
    active: bool = True


class Session:
    """A database session: never part of a key."""


class Article(BaseModel):
    id: int
    title: str


class ArticleUpdate(BaseModel):
    title: str


@dataclass
class FakeDatabase:
    """Counts the queries the blocks run."""

    queries: int = 0

    async def fetch_pending(self, limit: int) -> list[Task]:
        self.queries += 1
        return [Task(id=number, title=f"task {number}") for number in range(limit)]

    async def get_task(self, task_id: int) -> Task:
        self.queries += 1
        return Task(id=task_id, title="old")

    async def update_task(self, task: Task, change: TaskChange) -> Task:
        self.queries += 1
        return task.model_copy(update={"title": change.title})

    async def insert_task(self, new: NewTask) -> Task:
        self.queries += 1
        return Task(id=1000, title=new.title, project_id=new.project_id)


@dataclass
class FakeCounter:
    """Stands for a Prometheus counter with one label."""

    counts: Counter[str] = field(default_factory=Counter)
    _label: str = ""

    def labels(self, label: str) -> FakeCounter:
        self._label = label
        return self

    def inc(self) -> None:
        self.counts[self._label] += 1


def memory_cache() -> Cache:
    return Cache(MemoryBackend(), namespace=f"readme{uuid.uuid4().hex[:8]}")


# -- what each block needs and what it must have done -------------------------------------------

Namespace = dict[str, Any]


async def _nothing(names: Namespace) -> None:
    return None


@dataclass(frozen=True)
class Example:
    """How one block runs: text it contains, what it needs, and its stand-ins and checks."""

    contains: str
    prepare: Callable[[Namespace], Awaitable[None]] = _nothing
    check: Callable[[Namespace], Awaitable[None]] = _nothing
    modules: tuple[str, ...] = ()
    redis: bool = False


async def quick_start_prepare(names: Namespace) -> None:
    names.update(Task=Task, db=FakeDatabase())


async def quick_start_check(names: Namespace) -> None:
    # A miss ran the query, the hit returned list[Task] again (not dicts), without a query.
    assert names["db"].queries == 1
    assert len(names["tasks"]) == 20
    assert all(isinstance(task, Task) for task in names["tasks"])
    # After the invalidations the next call runs the query again.
    await names["pending_tasks"](20)
    assert names["db"].queries == 2


async def decorator_prepare(names: Namespace) -> None:
    names.update(cache=memory_cache(), TTL=TTL, Session=Session, User=User)


async def decorator_check(names: Namespace) -> None:
    get_user = names["get_user"]
    # The key template, with `session` left out of the key.
    assert get_user.key_for(1, 7, Session()) == "user:1"
    assert list(inspect.signature(get_user).parameters) == ["user_id", "org_id", "session"]


async def four_ways_prepare(names: Namespace) -> None:
    cache = memory_cache()
    names["cache"] = cache
    for key in ("task:42", "tasks:pending:10", "project-page", "unrelated"):
        await cache.set(key, 1, tags=["project:7"] if key == "project-page" else ())


async def four_ways_check(names: Namespace) -> None:
    cache = names["cache"]
    for key in ("task:42", "tasks:pending:10", "project-page", "unrelated"):
        assert await cache.get(key) is None, key


async def routes_prepare(names: Namespace) -> None:
    from fastapi import FastAPI

    names.update(
        cache=memory_cache(),
        app=FastAPI(),
        db=FakeDatabase(),
        Task=Task,
        TaskChange=TaskChange,
        NewTask=NewTask,
    )


async def routes_check(names: Namespace) -> None:
    cache = names["cache"]
    await cache.set("project-page", 1, tags=["project:7"])
    task = await names["update_task"](3, TaskChange(title="new"))
    assert task.title == "new"
    assert await cache.get("project-page") is None
    await cache.set("project-page", 1, tags=["project:7"])
    await cache.set("stats:today", 1)
    await names["create_task"](NewTask(title="more", project_id=7))
    assert await cache.get("project-page") is None
    assert await cache.get("stats:today") is None


async def hook_prepare(names: Namespace) -> None:
    names.update(cache=memory_cache(), reads=FakeCounter())


async def hook_check(names: Namespace) -> None:
    cache = names["cache"]
    await cache.get("absent")
    await cache.set("present", 1)
    await cache.get("present")
    assert names["reads"].counts == Counter({"miss": 1, "hit": 1})


async def two_tiers_check(names: Namespace) -> None:
    cache = names["cache"]
    key = f"readme-{uuid.uuid4().hex}"
    try:
        # The block uses the default namespace, which the demo shares in this database, so one
        # key of the test's own; a read first learns the namespace's bump_version generation.
        assert await cache.get(key) is None
        await cache.set(key, {"a": 1})
        assert await cache.get(key) == {"a": 1}
        assert await cache.get(key) == {"a": 1}
    finally:
        await cache.delete(key)


async def fastapi_prepare(names: Namespace) -> None:
    from fastapi import Depends, FastAPI

    async def database() -> object:
        return object()

    names.update(
        FastAPI=FastAPI,
        cache=memory_cache(),
        TTL=TTL,
        Database=Annotated[object, Depends(database)],
        Article=Article,
        ArticleUpdate=ArticleUpdate,
    )


async def fastapi_check(names: Namespace) -> None:
    paths = {(route.path, tuple(sorted(route.methods))) for route in names["app"].routes}
    assert ("/api/content/{id}", ("GET",)) in paths
    assert ("/api/content/{id}", ("PUT",)) in paths


EXAMPLES: dict[tuple[str, int], Example] = {
    ("README.md", 0): Example(
        "cache = Cache.from_settings()", quick_start_prepare, quick_start_check
    ),
    ("README.md", 1): Example("async def get_user(", decorator_prepare, decorator_check),
    ("README.md", 2): Example(
        'await cache.invalidate_tags("project:7")', four_ways_prepare, four_ways_check
    ),
    ("README.md", 3): Example(
        "async with cache.invalidating(", routes_prepare, routes_check, modules=("fastapi",)
    ),
    ("README.md", 4): Example("@cache.add_hook", hook_prepare, hook_check),
    ("README.md", 5): Example("LocalTier(max_entries", check=two_tiers_check, redis=True),
    ("README.md", 6): Example(
        "cache_response(ttl=TTL.CONTENT", fastapi_prepare, fastapi_check, modules=("fastapi",)
    ),
}


def test_every_python_block_is_accounted_for() -> None:
    """Each block is listed with text it holds, and no document gained or lost one unnoticed."""
    counts = Counter(block.document for block in BLOCKS)
    assert {document: counts[document] for document in DOCUMENTS} == BLOCK_COUNTS
    assert {(block.document, block.index) for block in BLOCKS} == set(EXAMPLES)
    for block in BLOCKS:
        assert EXAMPLES[block.document, block.index].contains in block.source, block


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Blocks read settings as an application would: no cache variable, no ``.env`` file."""
    for name in os.environ:
        if name.upper() in {"REDIS_URL", "REDIS_ENABLED"} or name.upper().startswith("CACHE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.mark.usefixtures("clean_environment")
@pytest.mark.parametrize(
    "block", BLOCKS, ids=[f"{block.document}:{block.index}:line{block.line}" for block in BLOCKS]
)
async def test_python_block_runs_and_does_what_the_text_says(
    block: Block, request: pytest.FixtureRequest
) -> None:
    if block.skip is not None:
        pytest.skip(block.skip)
    example = EXAMPLES[block.document, block.index]
    for module in example.modules:
        pytest.importorskip(module, reason=f"{module} is not installed (an optional extra)")
    names: Namespace = {"__name__": f"readme_block_{block.index}"}
    if example.redis:
        names["url"] = request.getfixturevalue("redis_url")
    await example.prepare(names)
    code = compile(
        "\n" * (block.line - 1) + block.source,
        f"<{block.document}, block {block.index}>",
        "exec",
        flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
        dont_inherit=True,
    )
    try:
        result = eval(code, names)  # noqa: S307  # the project's own README
        if inspect.iscoroutine(result):
            await result
        await example.check(names)
    finally:
        cache = names.get("cache")
        if isinstance(cache, Cache):
            await cache.aclose()
