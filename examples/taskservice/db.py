"""The task service's SQLite database: schema, seeding, and the queries behind each endpoint.

Queries run on aiosqlite, which gives each connection a worker thread, so the event loop never
blocks. They are deliberately the kind many apps start with (aggregates over every event, a
``LIKE`` scan for related articles), which is what makes them worth caching.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aiosqlite
from pydantic import BaseModel

SCHEMA_VERSION = "1"

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE tasks (
    id INTEGER PRIMARY KEY,
    title TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'done', 'failed')),
    priority INTEGER NOT NULL CHECK (priority BETWEEN 1 AND 5),
    assignee TEXT,
    created_at TEXT NOT NULL
);
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    task_id INTEGER NOT NULL,
    kind TEXT NOT NULL,
    outcome TEXT NOT NULL,
    duration_ms INTEGER NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE articles (
    id INTEGER PRIMARY KEY,
    title TEXT NOT NULL,
    author TEXT NOT NULL,
    body TEXT NOT NULL,
    published_at TEXT NOT NULL
);
"""

# Word lists for generated rows; picked inside SQLite so seeding never builds Python tuples.
_TITLES = ["Fix", "Review", "Migrate", "Document", "Deploy", "Profile", "Audit", "Refactor"]
_THINGS = ["billing", "search", "exports", "login", "webhooks", "the dashboard", "quotas"]
_PEOPLE = ["ada", "grace", "ken", "radia", "guido", "barbara"]
_KINDS = ["queued", "started", "retried", "completed", "commented"]
_WORDS = [
    *("cache", "latency", "query", "index", "replica", "shard", "deploy", "rollout", "incident"),
    *("alert", "metric", "trace", "budget", "error", "retry", "timeout", "queue", "worker"),
    *("batch", "stream", "schema", "migration", "page", "user", "team", "project", "design"),
    *("review", "benchmark", "memory", "network", "socket", "async", "endpoint", "client"),
    *("server", "traffic", "cost"),
]
_STOPWORDS = frozenset({"the", "a", "of", "and", "to", "in"})


class Task(BaseModel):
    """A pending task as ``GET /api/tasks/pending`` lists it, with its activity."""

    id: int
    title: str
    priority: int
    assignee: str | None
    created_at: str
    events: int
    errors: int
    last_activity: str


class MetricRow(BaseModel):
    """Events of one kind on one day: volume, error rate and latency."""

    day: str
    kind: str
    events: int
    error_pct: float
    avg_ms: float
    max_ms: int


class Related(BaseModel):
    """An article sharing keywords with another."""

    id: int
    title: str
    score: int


class Article(BaseModel):
    """An article with its reading statistics and related articles."""

    id: int
    title: str
    author: str
    body: str
    published_at: str
    words: int
    keywords: list[str]
    related: list[Related]


def _pick(words: Sequence[str]) -> str:
    """SQL choosing one of ``words`` per row (constants from this file, never user input)."""
    cases = " ".join(f"WHEN {i} THEN '{word}'" for i, word in enumerate(words))
    return f"(CASE abs(random()) % {len(words)} {cases} END)"


def _body_sql() -> str:
    """SQL making a body of about 60 random words."""
    return " || ' ' || ".join(_pick(_WORDS) for _ in range(60))


async def open_database(path: Path, tasks: int) -> tuple[aiosqlite.Connection, str]:
    """Returns a connection to the database at ``path``, seeding it first unless it matches.

    ``tasks`` sets the size: four events per task and one article per three tasks. Returns the
    connection and a few words on what was done, for the start-up log.
    """
    expected = {"schema_version": SCHEMA_VERSION, "tasks": str(tasks)}
    if await asyncio.to_thread(path.exists):
        db = await aiosqlite.connect(path)
        try:
            async with db.execute("SELECT key, value FROM meta") as cursor:
                found = {str(k): str(v) for k, v in await cursor.fetchall()}
        except aiosqlite.DatabaseError:
            found = {}
        if found == expected:
            db.row_factory = aiosqlite.Row
            return db, "reused"
        await db.close()
    started = time.perf_counter()
    partial = path.with_name(path.name + ".partial")
    await asyncio.to_thread(partial.unlink, missing_ok=True)
    async with aiosqlite.connect(partial) as db:
        await _seed(db, tasks)
        await db.executemany("INSERT INTO meta VALUES (?, ?)", sorted(expected.items()))
        await db.commit()
    # Renamed only once complete, so an interrupted seed is never taken for a good database.
    await asyncio.to_thread(partial.replace, path)
    db = await aiosqlite.connect(path)
    db.row_factory = aiosqlite.Row
    return db, f"seeded {tasks:,} tasks in {time.perf_counter() - started:.1f} s"


async def _seed(db: aiosqlite.Connection, tasks: int) -> None:
    await db.executescript("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;")
    await db.executescript(SCHEMA)
    now, horizon = int(time.time()), 90 * 86_400
    series = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :count)"
    await db.execute(
        f"""{series}
        INSERT INTO tasks (title, status, priority, assignee, created_at)
        SELECT {_pick(_TITLES)} || ' ' || {_pick(_THINGS)},
               {_pick(["pending", "pending", "running", "failed", "done", "done", "done"])},
               abs(random()) % 5 + 1, {_pick(_PEOPLE)},
               datetime(:now - abs(random()) % :horizon, 'unixepoch')
        FROM n""",
        {"count": tasks, "now": now, "horizon": horizon},
    )
    await db.execute(
        f"""{series}
        INSERT INTO events (task_id, kind, outcome, duration_ms, created_at)
        SELECT abs(random()) % :tasks + 1, {_pick(_KINDS)},
               CASE WHEN abs(random()) % 100 < 4 THEN 'error' ELSE 'ok' END,
               abs(random()) % 2000 + 5, datetime(:now - abs(random()) % :horizon, 'unixepoch')
        FROM n""",
        {"count": tasks * 4, "tasks": tasks, "now": now, "horizon": horizon},
    )
    await db.execute(
        f"""{series}
        INSERT INTO articles (title, author, body, published_at)
        SELECT 'Notes on ' || {_pick(_WORDS)}, {_pick(_PEOPLE)}, {_body_sql()},
               datetime(:now - abs(random()) % :horizon, 'unixepoch')
        FROM n""",
        {"count": max(tasks // 3, 20), "now": now, "horizon": horizon},
    )
    # Indexes after the rows: one sort each instead of a B-tree insert per row.
    await db.executescript(
        "CREATE INDEX tasks_by_status ON tasks (status);"
        "CREATE INDEX events_by_task ON events (task_id);"
        "ANALYZE;"
    )


def _rows(rows: Iterable[Any]) -> list[dict[str, Any]]:
    return [dict(row) for row in rows]


async def pending_tasks(db: aiosqlite.Connection, limit: int) -> list[Task]:
    """Pending tasks, most urgent first, with counts over their events (scans every event)."""
    async with db.execute(
        """
        SELECT t.id, t.title, t.priority, t.assignee, t.created_at,
               count(e.id) AS events, coalesce(sum(e.outcome = 'error'), 0) AS errors,
               coalesce(max(e.created_at), t.created_at) AS last_activity
        FROM tasks AS t LEFT JOIN events AS e ON e.task_id = t.id
        WHERE t.status = 'pending'
        GROUP BY t.id
        ORDER BY t.priority DESC, last_activity DESC, t.id
        LIMIT ?
        """,
        (limit,),
    ) as cursor:
        return [Task(**row) for row in _rows(await cursor.fetchall())]


async def metrics(db: aiosqlite.Connection, days: int) -> list[MetricRow]:
    """Per day and event kind over the last ``days``: a GROUP BY over every event."""
    since = (datetime.now(timezone.utc) - timedelta(days=days)).strftime("%Y-%m-%d %H:%M:%S")
    async with db.execute(
        """
        SELECT date(created_at) AS day, kind, count(*) AS events,
               round(100.0 * sum(outcome = 'error') / count(*), 2) AS error_pct,
               round(avg(duration_ms), 1) AS avg_ms, max(duration_ms) AS max_ms
        FROM events WHERE created_at >= ?
        GROUP BY day, kind ORDER BY day DESC, kind
        """,
        (since,),
    ) as cursor:
        return [MetricRow(**row) for row in _rows(await cursor.fetchall())]


async def article(db: aiosqlite.Connection, article_id: int) -> Article | None:
    """An article, its keywords, and related articles found by a LIKE scan of every body."""
    async with db.execute(
        "SELECT id, title, author, body, published_at FROM articles WHERE id = ?", (article_id,)
    ) as cursor:
        row = await cursor.fetchone()
    if row is None:
        return None
    found = dict(row)
    words = Counter(w for w in re.findall(r"[a-z]+", found["body"].lower()) if w not in _STOPWORDS)
    keywords = [word for word, _ in words.most_common(3)] or ["cache"]
    keywords += [keywords[0]] * (3 - len(keywords))
    async with db.execute(
        """
        SELECT id, title,
               3 * (instr(body, :k1) > 0) + (instr(body, :k2) > 0) + (instr(body, :k3) > 0)
                   + (length(body) - length(replace(body, :k1, ''))) / length(:k1) AS score
        FROM articles
        WHERE id != :id AND (body LIKE '%' || :k1 || '%' OR body LIKE '%' || :k2 || '%')
        ORDER BY score DESC, published_at DESC
        LIMIT 5
        """,
        {"id": article_id, "k1": keywords[0], "k2": keywords[1], "k3": keywords[2]},
    ) as cursor:
        related = [Related(**r) for r in _rows(await cursor.fetchall())]
    return Article(**found, words=len(found["body"].split()), keywords=keywords, related=related)


async def create_task(db: aiosqlite.Connection, title: str, priority: int) -> int:
    """Inserts a pending task; returns its id."""
    cursor = await db.execute(
        "INSERT INTO tasks (title, status, priority, created_at) "
        "VALUES (?, 'pending', ?, datetime('now'))",
        (title, priority),
    )
    await db.commit()
    assert cursor.lastrowid is not None
    return cursor.lastrowid


async def update_task(
    db: aiosqlite.Connection, task_id: int, *, status: str | None, priority: int | None
) -> bool:
    """Changes a task and records the change as an event; returns whether the task exists."""
    cursor = await db.execute(
        "UPDATE tasks SET status = coalesce(?, status), priority = coalesce(?, priority) "
        "WHERE id = ?",
        (status, priority, task_id),
    )
    if cursor.rowcount:
        await db.execute(
            "INSERT INTO events (task_id, kind, outcome, duration_ms, created_at) "
            "VALUES (?, 'updated', 'ok', 0, datetime('now'))",
            (task_id,),
        )
    await db.commit()
    return cursor.rowcount > 0


async def delete_task(db: aiosqlite.Connection, task_id: int) -> bool:
    """Deletes a task and its events; returns whether it existed."""
    await db.execute("DELETE FROM events WHERE task_id = ?", (task_id,))
    cursor = await db.execute("DELETE FROM tasks WHERE id = ?", (task_id,))
    await db.commit()
    return cursor.rowcount > 0


async def update_article(
    db: aiosqlite.Connection, article_id: int, *, title: str | None, body: str | None
) -> bool:
    """Edits an article; returns whether it exists."""
    cursor = await db.execute(
        "UPDATE articles SET title = coalesce(?, title), body = coalesce(?, body) WHERE id = ?",
        (title, body, article_id),
    )
    await db.commit()
    return cursor.rowcount > 0
