"""Every ```python block of the Redis caching integration guide, run against `cachetier.compat`.

The guide is read from ``<repo>/../shared/seed/000_91bff7ee7a781755.txt`` (CI keeps a copy of
``shared/`` beside the clone); without it the module skips. Each block runs with only its own
import line rewritten (``from services.redis_cache import`` → ``from cachetier.compat import``)
against real Redis, in a namespace of its own. The names the guide leaves to the application
(``database_service``, ``db``, ``router``, ``TaskCreate``, ``logger`` ...) are stand-ins defined
here; everything else is the guide's text. Later snippets assume the guide's import, as the
modules they quote would have it, so every block runs after that import.

Blocks with top-level ``await`` are compiled with ``PyCF_ALLOW_TOP_LEVEL_AWAIT``, which makes the
block the body of a coroutine whose names land in the block's namespace; routes and decorated
functions the block defines are then called (routes through FastAPI and httpx). Every block is
listed in `EXAMPLES` by index, with text it must contain, so a block added to or changed in the
guide fails `test_every_python_block_is_accounted_for` until it is listed here. Blocks that do
not run as written are listed with the reason, the failure is asserted, and a corrected version
derived from the guide's text runs instead.
"""

from __future__ import annotations

import ast
import inspect
import logging
import re
import textwrap
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cachetier import TTL, Cache
from cachetier.backends import RedisBackend
from cachetier.compat import CacheConfig, RedisCache

from ..servers import free_port

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

# After the importorskip calls, so that the module skips when the frameworks are missing.
from fastapi import APIRouter, FastAPI  # noqa: E402
from pydantic import BaseModel, ValidationError  # noqa: E402
from pydantic.warnings import PydanticDeprecatedSince20  # noqa: E402

# The guide as the project received it (shared/seed beside the checkout) wins; the copy kept in
# the repository lets the test run in any clone, and a test below keeps the two identical.
SHARED_GUIDE = (
    Path(__file__).resolve().parents[2].parent / "shared" / "seed" / "000_91bff7ee7a781755.txt"
)
KEPT_GUIDE = Path(__file__).with_name("integration_guide.txt")
GUIDE = SHARED_GUIDE if SHARED_GUIDE.is_file() else KEPT_GUIDE

GUIDE_IMPORT = "from services.redis_cache import"
COMPAT_IMPORT = "from cachetier.compat import"
PREAMBLE = f"{COMPAT_IMPORT} RedisCache, CacheConfig, cached"
FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```python[ \t]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.M | re.S
)

# The expected totals, so that the numbers of the report are checked, not printed.
BLOCKS_IN_GUIDE = 27
RUN_AS_WRITTEN = 21
RUN_CORRECTED = 5
NOT_PYTHON = 1


@dataclass(frozen=True)
class Block:
    """One ```python block: its index among them, the guide line of its first code line, its text."""

    index: int
    line: int
    source: str


def extract_blocks(text: str) -> list[Block]:
    """Returns every ```python block, dedented (some sit inside list items)."""
    blocks = []
    for index, match in enumerate(FENCE.finditer(text)):
        line = text.count("\n", 0, match.start("body")) + 1
        blocks.append(Block(index, line, textwrap.dedent(match.group("body"))))
    return blocks


TEXT = GUIDE.read_text(encoding="utf-8")
BLOCKS = extract_blocks(TEXT)


def rewrite_import(source: str) -> str:
    """Rewrites the guide's own import line, and only that."""
    return source.replace(GUIDE_IMPORT, COMPAT_IMPORT)


def compile_block(source: str, block: Block) -> Any:
    """Compiles ``source`` so that tracebacks point at the guide's own line numbers."""
    return compile(
        "\n" * (block.line - 1) + source,
        f"<guide {GUIDE.name}, block {block.index}>",
        "exec",
        flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
        dont_inherit=True,
    )


# -- the application's objects: stand-ins for what the guide leaves undefined ------------------


class TaskCreate(BaseModel):
    title: str
    priority: int = 0


class ContentUpdate(BaseModel):
    title: str
    body: str = ""


class UserSchema(BaseModel):
    id: int
    name: str


class FakeDatabase:
    """The application's database service, counting calls; ``db`` and ``database_service``."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    async def get_pending_tasks(self, limit: int = 10) -> list[dict[str, Any]]:
        self.calls["get_pending_tasks"] += 1
        return [{"id": i, "status": "pending"} for i in range(limit)]

    async def create_task(self, task: TaskCreate) -> dict[str, Any]:
        self.calls["create_task"] += 1
        return {"id": 100, **task.model_dump()}

    async def get_metrics(self) -> dict[str, Any]:
        self.calls["get_metrics"] += 1
        return {"tasks_total": 42, "error_rate": 0.01}

    async def update_content(self, content_id: str, content: ContentUpdate) -> dict[str, Any]:
        self.calls["update_content"] += 1
        return {"id": content_id, **content.model_dump()}

    async def delete_task(self, task_id: str) -> None:
        self.calls["delete_task"] += 1

    async def update(self, item_id: str, data: object = None) -> dict[str, Any]:
        self.calls["update"] += 1
        return {"id": item_id, "updated": True}

    async def get_popular_tasks(self) -> list[dict[str, Any]]:
        self.calls["get_popular_tasks"] += 1
        return [{"id": 1, "views": 900}, {"id": 2, "views": 700}]


class FakePool:
    """An asyncpg-like pool whose ``fetch`` returns rows as dicts."""

    def __init__(self) -> None:
        self.queries: list[tuple[str, tuple[object, ...]]] = []

    async def fetch(self, query: str, *args: object) -> list[dict[str, Any]]:
        self.queries.append((query, args))
        limit = args[-1]
        assert isinstance(limit, int)
        return [{"id": i, "status": args[0]} for i in range(limit)]


def make_fetch(calls: Counter[str], name: str, value: object) -> Callable[[], Awaitable[object]]:
    """A zero-argument coroutine function, as the guide's ``fetch_fn=db_query`` expects."""

    async def fetch() -> object:
        calls[name] += 1
        return value

    fetch.__name__ = name
    return fetch


# -- running a block ---------------------------------------------------------------------------


@dataclass
class GuideRun:
    """One block's namespace and stand-ins, with helpers to run it and call what it defines."""

    block: Block
    cache: Cache
    down_cache: Cache
    capsys: pytest.CaptureFixture[str]
    caplog: pytest.LogCaptureFixture
    db: FakeDatabase = field(default_factory=FakeDatabase)
    calls: Counter[str] = field(default_factory=Counter)
    ns: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.ns.update(
            __name__=f"guide_block_{self.block.index}",
            database_service=self.db,
            db=self.db,
            router=APIRouter(),
            TaskCreate=TaskCreate,
            ContentUpdate=ContentUpdate,
            UserSchema=UserSchema,
            logger=logging.getLogger("guide.app"),
            user_data={"id": 123, "name": "Ada"},
            user_id=123,
            key="user:123",
            value={"answer": 42},
            db_query=make_fetch(self.calls, "db_query", [{"id": 10}]),
            calculate_analytics=make_fetch(self.calls, "calculate_analytics", {"dau": 1200}),
            get_user_session=make_fetch(self.calls, "get_user_session", {"token": "t-123"}),
            get_api_metrics=make_fetch(self.calls, "get_api_metrics", {"calls": 5000}),
            fetch_from_database=make_fetch(self.calls, "fetch_from_database", {"from": "db"}),
        )
        exec(compile(PREAMBLE, "<guide import>", "exec"), self.ns)  # noqa: S102  # the guide's import, rewritten

    @property
    def source(self) -> str:
        """The block as written, with only its import line rewritten."""
        return rewrite_import(self.block.source)

    async def execute(self, source: str | None = None) -> None:
        """Runs the block (or a corrected ``source``) in the namespace, awaiting top-level awaits."""
        code = compile_block(self.source if source is None else source, self.block)
        result = eval(code, self.ns)  # noqa: S307  # running the guide's code is the test
        if inspect.iscoroutine(result):
            await result

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Calls a route of the block's ``router`` through FastAPI; returns the JSON body."""
        app = FastAPI()
        app.include_router(self.ns["router"])
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://guide") as client:
            response = await client.request(method, path, **kwargs)
        assert response.status_code == 200, response.text
        return response.json()

    async def remaining(self, key: str) -> float:
        """The seconds ``key`` has left in the cache; it must exist."""
        seconds = await self.cache.ttl(key)
        assert seconds is not None, f"{key} is not cached"
        return seconds


Check = Callable[[GuideRun], Awaitable[None]]


@dataclass(frozen=True)
class Example:
    """How one block is run: the text that identifies it, and why it is not run as written."""

    contains: str
    check: Check
    defect: str | None = None
    not_python: str | None = None


EXAMPLES: dict[int, Example] = {}


def example(
    index: int, contains: str, *, defect: str | None = None, not_python: str | None = None
) -> Callable[[Check], Check]:
    def register(check: Check) -> Check:
        assert index not in EXAMPLES
        EXAMPLES[index] = Example(contains, check, defect, not_python)
        return check

    return register


# -- the blocks, in the guide's order -----------------------------------------------------------


@example(0, "MODEL_CACHE_TTL = 86400")
async def cache_ttl_configuration(run: GuideRun) -> None:
    await run.execute()
    guide_config = run.ns["CacheConfig"]
    assert guide_config is not CacheConfig
    names = [name for name in vars(guide_config) if name.endswith("_TTL")]
    assert len(names) == 6
    for name in names:
        assert getattr(guide_config, name) == getattr(CacheConfig, name)
    assert guide_config.QUERY_CACHE_TTL == TTL.QUERY


@example(1, 'await RedisCache.set("user:123", user_data, ttl=3600)')
async def basic_get_set(run: GuideRun) -> None:
    await run.execute()
    assert run.ns["value"] is None
    stats = run.cache.stats
    assert (stats.misses, stats.sets, stats.deletes) == (1, 1, 1)
    assert await run.cache.get("user:123") is None


@example(2, 'key="query:tasks:pending"')
async def get_or_set_pattern(run: GuideRun) -> None:
    await run.execute()
    await run.execute()
    assert run.db.calls["get_pending_tasks"] == 1
    assert run.ns["tasks"] == [{"id": i, "status": "pending"} for i in range(10)]
    assert await run.remaining("query:tasks:pending") <= CacheConfig.QUERY_CACHE_TTL


@example(3, '@cached(ttl=CacheConfig.QUERY_CACHE_TTL, key_prefix="tasks:")')
async def cached_decorator(run: GuideRun) -> None:
    await run.execute()
    assert await run.ns["get_pending_tasks"]() == run.ns["tasks"]
    assert len(run.ns["tasks"]) == 10
    assert run.db.calls["get_pending_tasks"] == 1
    assert await RedisCache.delete_pattern("tasks:*") == 1


@example(4, "await RedisCache.clear_all()")
async def cache_invalidation(run: GuideRun) -> None:
    other = Cache(run.cache.backend, namespace=run.cache.namespace + "-other")
    for key in ("query:tasks:123", "query:tasks:pending:10", "user:1"):
        await RedisCache.set(key, key)
    await other.set("user:1", "another application's")
    try:
        await run.execute()
        assert await run.cache.get_many(["query:tasks:123", "user:1"]) == {}
        assert await other.get("user:1") == "another application's"
    finally:
        await other.clear()


@example(5, 'await RedisCache.incr("api:calls:user_123", amount=1)')
async def counter_operations(run: GuideRun) -> None:
    await run.execute()
    assert run.ns["count"] == 1
    await run.execute()
    assert run.ns["count"] == 2


@example(
    6,
    "async def get_pending_tasks(self, limit: int = 10):",
    defect=(
        "two methods quoted without their class: `get_pending_tasks(self, ...)` and "
        "`_fetch_pending_tasks(self, ...)` are module-level functions as written, so calling "
        "one fails for want of `self`; the corrected version puts them in a class"
    ),
)
async def database_service_integration(run: GuideRun) -> None:
    await run.execute()
    with pytest.raises(TypeError, match="self"):
        await run.ns["get_pending_tasks"]()
    await run.execute("class DatabaseService:\n" + textwrap.indent(run.source, "    "))
    service = run.ns["DatabaseService"]()
    service.pool = FakePool()
    first = await service.get_pending_tasks(3)
    assert await service.get_pending_tasks(limit=3) == first
    assert first == [{"id": i, "status": "pending"} for i in range(3)]
    assert len(service.pool.queries) == 1
    assert await run.remaining("query:tasks:pending:3") <= CacheConfig.QUERY_CACHE_TTL


@example(7, 'router = APIRouter(prefix="/api/tasks", tags=["tasks"])')
async def api_endpoint_integration(run: GuideRun) -> None:
    await run.execute()
    first = await run.request("GET", "/api/tasks/pending", params={"limit": 3})
    assert await run.request("GET", "/api/tasks/pending", params={"limit": 3}) == first
    assert first == {"tasks": [{"id": i, "status": "pending"} for i in range(3)]}
    assert run.db.calls["get_pending_tasks"] == 1
    created = await run.request("POST", "/api/tasks/", json={"title": "write docs"})
    assert created == {"id": 100, "title": "write docs", "priority": 0}
    assert await run.cache.get("query:tasks:pending:3") is None
    await run.request("GET", "/api/tasks/pending", params={"limit": 3})
    assert run.db.calls["get_pending_tasks"] == 2


@example(8, 'key="metrics:summary"')
async def metrics_integration(run: GuideRun) -> None:
    await run.execute()
    first = await run.request("GET", "/api/metrics")
    assert await run.request("GET", "/api/metrics") == first
    assert first == {"tasks_total": 42, "error_rate": 0.01}
    assert run.db.calls["get_metrics"] == 1
    assert await run.remaining("metrics:summary") <= CacheConfig.METRICS_CACHE_TTL


@example(9, 'await RedisCache.delete_pattern("query:content:*")')
async def invalidation_on_updates(run: GuideRun) -> None:
    await run.execute()
    for key in ("content:abc", "query:content:list", "task:7", "query:tasks:pending:10"):
        await RedisCache.set(key, key)
    await RedisCache.set("user:1", "unrelated")
    updated = await run.request("PUT", "/api/content/abc", json={"title": "New title"})
    assert updated == {"id": "abc", "title": "New title", "body": ""}
    assert await run.cache.get_many(["content:abc", "query:content:list"]) == {}
    assert await run.cache.get("task:7") == "task:7"
    assert await run.request("DELETE", "/api/tasks/7") == {"success": True}
    assert await run.cache.get_many(["task:7", "query:tasks:pending:10"]) == {}
    assert await run.cache.get("user:1") == "unrelated"
    assert (run.db.calls["update_content"], run.db.calls["delete_task"]) == (1, 1)


async def check_get_or_set(run: GuideRun, key: str, fetch: str, ttl: int, result: str) -> None:
    """Runs a strategy block twice: one fetch, then a hit with the same value and the TTL given."""
    await run.execute()
    first = run.ns[result]
    await run.execute()
    assert run.ns[result] == first
    assert run.calls[fetch] == 1
    assert ttl - 10 < await run.remaining(key) <= ttl


@example(10, "fetch_fn=db_query")
async def query_caching(run: GuideRun) -> None:
    await check_get_or_set(run, "query:tasks:pending:10", "db_query", 1800, "tasks")


@example(11, "fetch_fn=calculate_analytics")
async def computation_caching(run: GuideRun) -> None:
    await check_get_or_set(
        run, "computation:analytics:daily", "calculate_analytics", 86400, "report"
    )


@example(12, "fetch_fn=get_user_session")
async def session_caching(run: GuideRun) -> None:
    await check_get_or_set(run, "session:user_123", "get_user_session", 3600, "user_session")


@example(13, "fetch_fn=get_api_metrics")
async def realtime_metrics(run: GuideRun) -> None:
    await check_get_or_set(run, "metrics:api:calls", "get_api_metrics", 60, "metrics")


@example(14, 'await RedisCache.set("key", value, ttl=3600)')
async def time_based_expiration(run: GuideRun) -> None:
    await run.execute()
    assert await run.cache.get("key") == {"answer": 42}
    assert 3590 < await run.remaining("key") <= 3600


@example(15, 'await RedisCache.delete(f"item:{item_id}")')
async def event_based_invalidation(run: GuideRun) -> None:
    await run.execute()
    await RedisCache.set("item:9", {"name": "old"})
    assert await run.request("PUT", "/api/items/9") == {"id": "9", "updated": True}
    assert await run.cache.get("item:9") is None


@example(
    16,
    'await RedicsCache.delete_pattern("metrics:*")',
    defect=(
        "`RedicsCache` is misspelt: the route clears the query caches, then fails with "
        "NameError and leaves the metrics caches stale; the corrected version spells RedisCache"
    ),
)
async def pattern_based_invalidation(run: GuideRun) -> None:
    await run.execute()
    await RedisCache.set("query:tasks:pending:10", [1])
    await RedisCache.set("metrics:summary", {"n": 1})
    with pytest.raises(NameError, match="RedicsCache"):
        await run.request("POST", "/api/admin/reset-all")
    assert await run.cache.get("query:tasks:pending:10") is None
    assert await run.cache.get("metrics:summary") == {"n": 1}  # what the typo leaves behind
    run.ns["router"] = APIRouter()  # so the corrected route is the one that answers
    await run.execute(run.source.replace("RedicsCache", "RedisCache"))
    await run.request("POST", "/api/admin/reset-all")
    assert await run.cache.get("metrics:summary") is None


@example(17, 'await RedisCache.set("popular:tasks", popular_tasks, ttl=86400)')
async def manual_cache_refresh(run: GuideRun) -> None:
    await run.execute()
    await run.ns["warm_cache"]()
    assert await run.cache.get("popular:tasks") == await run.db.get_popular_tasks()
    assert 86390 < await run.remaining("popular:tasks") <= 86400


@example(18, "health = await RedisCache.health_check()\nprint(health)")
async def health_check(run: GuideRun) -> None:
    run.capsys.readouterr()
    await run.execute()
    printed = run.capsys.readouterr().out
    health = run.ns["health"]
    # "degraded" past 100 ms for the PING: a loaded machine can take that long.
    status = "degraded" if health["latency_ms"] > 100 else "healthy"
    assert f"'status': '{status}'" in printed
    assert (health["status"], health["available"]) == (status, True)
    for name in ("uptime_seconds", "used_memory_mb", "connected_clients", "ops_per_sec"):
        assert isinstance(health[name], int | float), name


@example(
    19,
    "validated = UserSchema.validate(cached_user)",
    defect=(
        "`UserSchema.validate(...)` never returns a falsy value: pydantic's (deprecated since "
        "2.0) returns the model or raises ValidationError, so `if not validated` never deletes "
        "and a poisoned entry raises out of the caller (marshmallow's returns an error dict, "
        "empty when valid, so the check would delete good entries and keep bad ones); the "
        "corrected version deletes the entry on ValidationError"
    ),
)
async def cache_poisoning_prevention(run: GuideRun) -> None:
    await RedisCache.set("user:123", {"id": 123, "name": "Ada"})
    with pytest.warns(PydanticDeprecatedSince20):
        await run.execute()
    assert run.ns["validated"] == UserSchema(id=123, name="Ada")
    await RedisCache.set("user:123", {"id": "not a number"})
    with pytest.warns(PydanticDeprecatedSince20), pytest.raises(ValidationError):
        await run.execute()
    assert await run.cache.get("user:123") == {"id": "not a number"}  # still served to others
    corrected = run.source.replace(
        "    validated = UserSchema.validate(cached_user)\n    if not validated:\n",
        "    try:\n        UserSchema.model_validate(cached_user)\n    except ValidationError:\n",
    )
    assert corrected != run.source
    run.ns["ValidationError"] = ValidationError
    await run.execute(corrected)
    assert await run.cache.get("user:123") is None
    await RedisCache.set("user:123", {"id": 123, "name": "Ada"})
    await run.execute(corrected)
    assert await run.cache.get("user:123") == {"id": 123, "name": "Ada"}


@example(20, "async def startup_warmup():\n    await warm_cache()")
async def startup_warmup(run: GuideRun) -> None:
    await run.execute(rewrite_import(BLOCKS[17].source))  # defines warm_cache, which it calls
    await run.execute()
    await run.ns["startup_warmup"]()
    assert await run.cache.get("popular:tasks") == await run.db.get_popular_tasks()


@example(21, 'key = f"v2:query:tasks:pending:10"')
async def cache_versioning(run: GuideRun) -> None:
    await run.execute()
    assert run.ns["key"] == "v2:query:tasks:pending:10"


@example(22, 'key = f"{CacheConfig.PREFIX_QUERY}tasks:pending:10"')
async def cache_key_organization(run: GuideRun) -> None:
    await run.execute()  # the string statements are valid Python, if inert
    assert run.ns["key"] == "query:tasks:pending:10"


@example(
    23,
    "- User profile: 5-15 minutes",
    not_python="a bulleted list of TTL guidelines fenced as Python; it is prose, not code",
)
async def appropriate_ttl_values(run: GuideRun) -> None:
    with pytest.raises(SyntaxError):
        compile_block(run.source, run.block)


@example(
    24,
    'await RedicsCache.delete_pattern(f"query:resources:*")',
    defect=(
        "`RedicsCache` is misspelt: the route deletes the resource entry, then fails with "
        "NameError before the pattern invalidation; the corrected version spells RedisCache"
    ),
)
async def invalidation_strategy(run: GuideRun) -> None:
    await run.execute()
    await RedisCache.set("resource:5", "old")
    await RedisCache.set("query:resources:all", ["old"])
    with pytest.raises(NameError, match="RedicsCache"):
        await run.request("PUT", "/api/resource/5", params={"data": "new"})
    assert await run.cache.get("resource:5") is None
    assert await run.cache.get("query:resources:all") == ["old"]  # stale after the update
    run.ns["router"] = APIRouter()  # so the corrected route is the one that answers
    await run.execute(run.source.replace("RedicsCache", "RedisCache"))
    assert await run.request("PUT", "/api/resource/5", params={"data": "new"}) == {
        "id": "5",
        "updated": True,
    }
    assert await run.cache.get("query:resources:all") is None


@example(
    25,
    "return await fetch_from_database()",
    defect=(
        "a function body quoted without its function: `return` at top level is a SyntaxError; "
        "the corrected version wraps it in `async def` (its `if value:` also treats a cached "
        "falsy value as a miss)"
    ),
)
async def error_handling(run: GuideRun) -> None:
    with pytest.raises(SyntaxError, match="'return' outside function"):
        compile_block(run.source, run.block)
    await run.execute("async def read_through():\n" + textwrap.indent(run.source, "    "))
    read_through = run.ns["read_through"]
    assert await read_through() == {"from": "db"}
    await RedisCache.set("user:123", {"from": "cache"})
    assert await read_through() == {"from": "cache"}
    with RedisCache.use(run.down_cache):
        assert await read_through() == {"from": "db"}
    assert run.calls["fetch_from_database"] == 2


@example(26, 'logger.error(f"Redis health issue: {health}")')
async def monitor_cache_health(run: GuideRun) -> None:
    with run.caplog.at_level(logging.ERROR, logger="guide.app"):
        await run.execute()
        assert not [r for r in run.caplog.records if r.name == "guide.app"]
        with RedisCache.use(run.down_cache):
            await run.execute()
    alerts = [r.getMessage() for r in run.caplog.records if r.name == "guide.app"]
    assert len(alerts) == 1
    assert "Redis health issue" in alerts[0]
    assert "'status': 'unhealthy'" in alerts[0]
    assert "S3CRET" not in alerts[0]


# -- the tests ---------------------------------------------------------------------------------


def test_every_python_block_is_accounted_for() -> None:
    """A block added to the guide, or changed, fails here until it is listed in EXAMPLES."""
    assert len(BLOCKS) == TEXT.count("```python") == BLOCKS_IN_GUIDE
    assert sorted(EXAMPLES) == [block.index for block in BLOCKS]
    for block in BLOCKS:
        assert EXAMPLES[block.index].contains in block.source, (
            f"block {block.index} (guide line {block.line}) changed"
        )
    defects = [e for e in EXAMPLES.values() if e.defect is not None]
    not_python = [e for e in EXAMPLES.values() if e.not_python is not None]
    assert (len(BLOCKS) - len(defects) - len(not_python), len(defects), len(not_python)) == (
        RUN_AS_WRITTEN,
        RUN_CORRECTED,
        NOT_PYTHON,
    )


def test_only_the_guides_own_import_is_rewritten() -> None:
    for block in BLOCKS:
        rewritten = rewrite_import(block.source)
        assert "services." not in rewritten.replace("# In database_service.py", "")
        assert len(rewritten.splitlines()) == len(block.source.splitlines())
        changed = [
            (a, b)
            for a, b in zip(block.source.splitlines(), rewritten.splitlines(), strict=True)
            if a != b
        ]
        assert all(a.startswith(GUIDE_IMPORT) for a, _ in changed)


def test_extraction_finds_indented_blocks() -> None:
    source = "1. Warm up:\n   ```python\n   async def f():\n       pass\n   ```\n"
    (block,) = extract_blocks(source)
    assert block.source == "async def f():\n    pass\n"
    assert block.line == 3


@pytest.fixture
async def guide_cache(redis_url: str, namespace: str) -> AsyncIterator[Cache]:
    """The default cache while a block runs: the real Redis, in a namespace of its own."""
    # Timeouts a loaded CI machine does not trip: a read that timed out is served as a miss
    # (fail-open), which a block's check would misread. `down_cache` is for outages.
    backend = RedisBackend.from_url(redis_url, connect_timeout=2.0, command_timeout=2.0)
    cache = Cache(backend, namespace=namespace)
    with RedisCache.use(cache):
        yield cache
    await cache.clear()
    await cache.aclose()


@pytest.fixture
async def down_cache(namespace: str) -> AsyncIterator[Cache]:
    """A cache on a loopback port nothing listens on, with a password that must never show."""
    url = f"redis://app:pw-guide-S3CRET@127.0.0.1:{free_port()}/0"
    cache = Cache(RedisBackend.from_url(url, connect_timeout=0.1), namespace=namespace)
    yield cache
    await cache.aclose()


@pytest.mark.redis
@pytest.mark.parametrize(
    "block", [pytest.param(b, id=f"block{b.index:02d}-line{b.line}") for b in BLOCKS]
)
async def test_guide_example(
    block: Block,
    guide_cache: Cache,
    down_cache: Cache,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Runs one block as written (or, for a listed defect, fails as written and runs corrected)."""
    example = EXAMPLES[block.index]
    run = GuideRun(block, guide_cache, down_cache, capsys, caplog)
    await example.check(run)


@pytest.mark.skipif(
    not SHARED_GUIDE.is_file(), reason="no shared/ beside this checkout to compare with"
)
def test_the_kept_copy_of_the_guide_is_the_shared_one() -> None:
    assert KEPT_GUIDE.read_bytes() == SHARED_GUIDE.read_bytes()
