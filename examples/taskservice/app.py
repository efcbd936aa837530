"""The task service: a FastAPI app over SQLite whose slow queries and responses are cached.

Run it with ``python -m examples.taskservice`` or ``uvicorn examples.taskservice.app:app``.

Environment: the cache reads the usual ``REDIS_URL``, ``REDIS_ENABLED`` and ``CACHE_*``
variables (process memory by default, Redis when ``REDIS_URL`` is set).
``TASKSERVICE_DB`` names the SQLite file (default ``examples/taskservice.sqlite3``) and
``TASKSERVICE_TASKS`` its size (default 120,000 tasks: seeded in a few seconds on first start, after which the
uncached queries take 100-400 ms).

Two kinds of caching are shown side by side:

- decorated query functions (``@cache.cached(key="tasks:pending:{limit}")``): the value is
  cached, the route still runs, and a write invalidates by tag or key;
- response caching (``@cache_response``) on ``GET /api/content/{id}``: the whole HTTP response is
  cached with an ``ETag``, so a browser that has it gets a 304, and a hit never opens the DB.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

import aiosqlite
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from pydantic import BaseModel, Field

from cachetier import TTL, Cache
from cachetier.contrib.fastapi import (
    CacheDependency,
    CachedRoute,
    cache_response,
    invalidate_responses,
    open_cache,
)

from . import db as queries

DEFAULT_DB = Path(__file__).resolve().parent.parent / "taskservice.sqlite3"
DEFAULT_TASKS = 120_000


class NewTask(BaseModel):
    """The body of ``POST /api/tasks``."""

    title: str = Field(min_length=1, max_length=200)
    priority: int = Field(default=3, ge=1, le=5)


class TaskChange(BaseModel):
    """The body of ``PUT /api/tasks/{id}``."""

    status: Literal["pending", "running", "done", "failed"] | None = None
    priority: int | None = Field(default=None, ge=1, le=5)


class ArticleChange(BaseModel):
    """The body of ``PUT /api/content/{id}``."""

    title: str | None = None
    body: str | None = None


def get_db(request: Request) -> aiosqlite.Connection:
    """The app's database connection, opened by the lifespan."""
    connection: aiosqlite.Connection = request.app.state.db
    return connection


Database = Annotated[aiosqlite.Connection, Depends(get_db)]


def create_app(
    cache: Cache | None = None, *, db_path: Path | None = None, tasks: int | None = None
) -> FastAPI:
    """Returns the app; without arguments, configured from the environment.

    ``cache`` defaults to ``Cache.from_settings()``; the app closes it at shutdown.
    """
    if cache is None:
        cache = Cache.from_settings()
    path = db_path or Path(os.environ.get("TASKSERVICE_DB", str(DEFAULT_DB)))
    size = tasks or int(os.environ.get("TASKSERVICE_TASKS", str(DEFAULT_TASKS)))

    # The queries are cached as values: keys are relative to the cache's namespace, so
    # cache.delete("tasks:pending:20") and delete_pattern("tasks:pending:*") reach them, and
    # tags name what they show, so a write invalidates every query that shows what it changed.
    # The connection is excluded from keys: it is the same object for every call.
    @cache.cached(ttl=TTL.QUERY, key="tasks:pending:{limit}", tags=["tasks"])
    async def pending_tasks(db: aiosqlite.Connection, limit: int) -> list[queries.Task]:
        return await queries.pending_tasks(db, limit)

    @cache.cached(ttl=TTL.METRICS, key="metrics:{days}", tags=["task-events"])
    async def metrics(db: aiosqlite.Connection, days: int) -> list[queries.MetricRow]:
        return await queries.metrics(db, days)

    @cache.cached(ttl=TTL.CONTENT, key="content:{article_id}")
    async def article(db: aiosqlite.Connection, article_id: int) -> queries.Article | None:
        return await queries.article(db, article_id)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        connection, how = await queries.open_database(path, size)
        app.state.db = connection
        app.state.db_note = f"{path.name}: {how}"
        try:
            async with open_cache(app, cache):
                yield
        finally:
            await connection.close()

    app = FastAPI(title="taskservice", lifespan=lifespan)
    app.router.route_class = CachedRoute  # before any route: @cache_response needs it

    @app.get("/api/tasks/pending")
    async def list_pending(
        db: Database, limit: Annotated[int, Query(ge=1, le=200)] = 20
    ) -> list[queries.Task]:
        return await pending_tasks(db, limit)

    @app.get("/api/metrics")
    async def get_metrics(
        db: Database, days: Annotated[int, Query(ge=1, le=90)] = 30
    ) -> list[queries.MetricRow]:
        return await metrics(db, days)

    @app.get("/api/content/{article_id}")
    @cache_response(ttl=TTL.CONTENT, stale_if_error=TTL.CONTENT)
    async def get_content(article_id: int, db: Database) -> queries.Article:
        found = await article(db, article_id)
        if found is None:
            raise HTTPException(status_code=404, detail=f"no article {article_id}")
        return found

    @app.post("/api/tasks", status_code=201)
    async def create_task(task: NewTask, db: Database, cache: CacheDependency) -> dict[str, int]:
        # Every cached page of pending tasks may now be wrong, whatever its limit. The block
        # invalidates once the write is done; a query that read the old rows while it ran
        # does not store them afterwards.
        async with cache.invalidating(tags=["tasks"]):
            task_id = await queries.create_task(db, task.title, task.priority)
        return {"id": task_id}

    @app.put("/api/tasks/{task_id}")
    async def update_task(
        task_id: int, change: TaskChange, db: Database, cache: CacheDependency
    ) -> dict[str, int]:
        # The update is recorded as an event, so the metrics move too.
        async with cache.invalidating(tags=["tasks", "task-events"]):
            updated = await queries.update_task(
                db, task_id, status=change.status, priority=change.priority
            )
        if not updated:
            raise HTTPException(status_code=404, detail=f"no task {task_id}")
        return {"id": task_id}

    @app.delete("/api/tasks/{task_id}")
    async def delete_task(task_id: int, db: Database, cache: CacheDependency) -> dict[str, int]:
        async with cache.invalidating(tags=["tasks", "task-events"]):
            deleted = await queries.delete_task(db, task_id)
        if not deleted:
            raise HTTPException(status_code=404, detail=f"no task {task_id}")
        return {"deleted": task_id}

    @app.put("/api/content/{article_id}")
    async def update_content(
        article_id: int, change: ArticleChange, db: Database, cache: CacheDependency
    ) -> dict[str, int]:
        if not await queries.update_article(db, article_id, title=change.title, body=change.body):
            raise HTTPException(status_code=404, detail=f"no article {article_id}")
        # Both layers hold this article: the decorated query's value and the HTTP response.
        # Other articles' "related" lists may name it with its old title until they expire.
        await article.invalidate(db, article_id)
        await invalidate_responses(cache, f"/api/content/{article_id}")
        return {"id": article_id}

    @app.get("/api/health")
    async def health(cache: CacheDependency, request: Request) -> dict[str, Any]:
        report = await cache.health_check()
        return {
            "database": request.app.state.db_note,
            "cache": report.status,
            "backend": report.backend,
            "hit_ratio": round(cache.stats.hit_ratio, 3),
        }

    return app


app = create_app()
"""The app ``uvicorn examples.taskservice.app:app`` serves."""
