"""The demo's SQLite database: its schema, made-up rows, and the three endpoints' queries.

`cachetier._demo` times these queries uncached and cached; this module knows nothing of the
cache. The rows are made up, by a seeded generator and by SQLite's ``random()``.
"""

from __future__ import annotations

import asyncio
import random
import re
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

__all__ = ("DEFAULT_ROWS", "Database", "Row", "Sizes", "open_database")

SCHEMA_VERSION = 1
DEFAULT_ROWS = 100_000

Row = dict[str, Any]

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE projects (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE tasks (
    id INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL REFERENCES projects (id),
    title TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'done', 'failed')),
    priority INTEGER NOT NULL CHECK (priority BETWEEN 1 AND 5),
    assignee TEXT,
    created_at TEXT NOT NULL
);
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    task_id INTEGER NOT NULL REFERENCES tasks (id),
    kind TEXT NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('ok', 'error')),
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
CREATE TABLE comments (
    id INTEGER PRIMARY KEY,
    article_id INTEGER NOT NULL REFERENCES articles (id),
    author TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at TEXT NOT NULL
);
"""
INDEXES = """
CREATE INDEX tasks_by_status ON tasks (status);
CREATE INDEX events_by_task ON events (task_id);
CREATE INDEX comments_by_article ON comments (article_id);
"""

PEOPLE = ["ada", "grace", "linus", "barbara", "ken", "margaret", "dennis", "radia", "guido", None]
VERBS = ["Fix", "Refactor", "Document", "Review", "Migrate", "Benchmark", "Deploy", "Audit"]
OBJECTS = [
    "the billing webhook",
    "session expiry",
    "the search index",
    "CSV export",
    "the onboarding emails",
    "rate limiting",
    "the metrics dashboard",
    "image thumbnails",
    "the payments retry queue",
    "password reset",
    "the audit log",
    "feature flags",
]
EVENT_KINDS = ["queued", "started", "retried", "completed", "commented"]
TOPICS = [
    "caching",
    "postgres",
    "observability",
    "queues",
    "latency",
    "python",
    "kubernetes",
    "testing",
    "security",
    "pricing",
]
VOCABULARY = (
    "the a of to and in that it for on with as is was be by this at from or an are which "
    "service request response latency cache database query index replica shard cluster "
    "deploy rollout release incident alert dashboard metric trace span budget error retry "
    "timeout queue worker job batch stream event schema migration table column row page "
    "user customer team project plan estimate design review test benchmark profile memory "
    "disk network socket thread process async await function module package library api "
    "endpoint client server load traffic peak throughput capacity cost invoice feature"
)
WORDS = VOCABULARY.split()
COMMENTS = [
    "Great write-up, thanks!",
    "We hit the same problem last quarter.",
    "Did you measure this under production load?",
    "The second graph is hard to read on mobile.",
    "Could you share the configuration you used?",
    "This saved me an afternoon.",
    "I disagree with the conclusion about retries.",
    "Would love a follow-up on the cost side.",
]
STOPWORDS = frozenset(WORDS[:21])


@dataclass(frozen=True)
class Sizes:
    """Row counts derived from ``--rows`` (the number of tasks)."""

    tasks: int

    @property
    def events(self) -> int:
        return self.tasks * 4

    @property
    def articles(self) -> int:
        return max(self.tasks // 4, 50)

    @property
    def comments(self) -> int:
        return self.articles * 4


def open_database(path: Path, sizes: Sizes, *, rebuild: bool) -> tuple[sqlite3.Connection, str]:
    """Returns a connection to the demo database, building it first unless a matching one exists."""
    expected = {"schema_version": str(SCHEMA_VERSION), "tasks": str(sizes.tasks)}
    if path.exists() and not rebuild and _meta(path) == expected:
        return _connect(path), "reused"
    started = time.perf_counter()
    partial = path.with_name(path.name + ".partial")
    partial.unlink(missing_ok=True)
    with closing(sqlite3.connect(partial)) as connection:
        _populate(connection, sizes)
        connection.executemany("INSERT INTO meta VALUES (?, ?)", sorted(expected.items()))
        connection.commit()
    # Renamed only when complete, so an interrupted build is never mistaken for a good one.
    partial.replace(path)
    return _connect(path), f"built in {time.perf_counter() - started:.1f} s"


def _meta(path: Path) -> dict[str, str]:
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as connection:
            return dict(connection.execute("SELECT key, value FROM meta").fetchall())
    except sqlite3.DatabaseError:
        return {}


def _connect(path: Path) -> sqlite3.Connection:
    # Endpoint code runs in worker threads (asyncio.to_thread); the Database lock keeps it serial.
    connection = sqlite3.connect(path, check_same_thread=False)
    connection.row_factory = sqlite3.Row
    return connection


def _populate(connection: sqlite3.Connection, sizes: Sizes) -> None:
    connection.executescript("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;")
    connection.executescript(SCHEMA)
    rng = random.Random(2024)
    now = int(time.time())
    horizon = 90 * 86_400
    projects = [f"{topic}-{n}" for n in range(1, 5) for topic in TOPICS]
    connection.executemany(
        "INSERT INTO projects (id, name) VALUES (?, ?)", enumerate(projects, start=1)
    )
    # The large tables are generated inside SQLite by recursive CTEs, which is several times
    # faster than building millions of Python tuples; this data need not be reproducible.
    connection.execute(
        f"""
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :count)
        INSERT INTO tasks (project_id, title, status, priority, assignee, created_at)
        SELECT abs(random()) % :projects + 1,
               {_pick(VERBS)} || ' ' || {_pick(OBJECTS)},
               {_pick(["pending", "pending", "running", "failed", "done", "done", "done", "done"])},
               abs(random()) % 5 + 1,
               {_pick(PEOPLE)},
               datetime(:now - abs(random()) % :horizon, 'unixepoch')
        FROM n
        """,
        {"count": sizes.tasks, "projects": len(projects), "now": now, "horizon": horizon},
    )
    connection.execute(
        f"""
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :count)
        INSERT INTO events (task_id, kind, outcome, duration_ms, created_at)
        SELECT abs(random()) % :tasks + 1,
               {_pick(EVENT_KINDS)},
               CASE WHEN abs(random()) % 100 < 4 THEN 'error' ELSE 'ok' END,
               abs(random()) % 1500 + abs(random()) % 500 + 5,
               datetime(:now - abs(random()) % :horizon, 'unixepoch')
        FROM n
        """,
        {"count": sizes.events, "tasks": sizes.tasks, "now": now, "horizon": horizon},
    )
    connection.executemany(
        "INSERT INTO articles (title, author, body, published_at) VALUES (?, ?, ?, ?)",
        _articles(rng, sizes.articles, now),
    )
    connection.execute(
        f"""
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :count)
        INSERT INTO comments (article_id, author, body, created_at)
        SELECT abs(random()) % :articles + 1, {_pick(PEOPLE[:-1])}, {_pick(COMMENTS)},
               datetime(:now - abs(random()) % :horizon, 'unixepoch')
        FROM n
        """,
        {"count": sizes.comments, "articles": sizes.articles, "now": now, "horizon": horizon},
    )
    # Indexes are built after the rows: one sort instead of millions of B-tree inserts.
    connection.executescript(INDEXES)
    connection.execute("ANALYZE")


def _pick(choices: list[str] | list[str | None]) -> str:
    """Returns SQL choosing one of ``choices`` at random for each row (literals from this file)."""
    literals = ["NULL" if c is None else "'" + c.replace("'", "''") + "'" for c in choices]
    whens = " ".join(f"WHEN {i} THEN {literal}" for i, literal in enumerate(literals))
    return f"(CASE abs(random()) % {len(literals)} {whens} END)"


def _articles(rng: random.Random, count: int, now: int) -> Iterator[tuple[str, str, str, str]]:
    # Bodies are drawn from a pool of sentences: realistic enough for word statistics, and
    # fast to produce.
    pool = [" ".join(rng.choices(WORDS, k=rng.randint(8, 16))).capitalize() for _ in range(4000)]
    authors = [p for p in PEOPLE if p is not None]
    prefixes = ["Notes on", "Lessons from", "A field guide to", "Scaling", "Debugging"]
    for _ in range(count):
        topic = rng.choice(TOPICS)
        body = " ".join(f"{s} {topic}." for s in rng.choices(pool, k=rng.randint(10, 18)))
        published = datetime.fromtimestamp(now - rng.randrange(365 * 86_400), timezone.utc)
        yield (
            f"{rng.choice(prefixes)} {topic}",
            rng.choice(authors),
            body,
            published.strftime("%Y-%m-%d %H:%M:%S"),
        )


class Database:
    """The endpoints' queries; each runs in a worker thread so the event loop never blocks."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection
        self._lock = threading.Lock()

    @contextmanager
    def _cursor(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            yield self._connection

    async def pending_tasks(self, limit: int) -> list[Row]:
        """GET /api/tasks/pending: pending tasks, most urgent first, with their activity."""
        return await asyncio.to_thread(self._pending_tasks, limit)

    def _pending_tasks(self, limit: int) -> list[Row]:
        with self._cursor() as db:
            rows = db.execute(
                """
                SELECT t.id, t.title, t.priority, t.assignee, p.name AS project,
                       t.created_at, count(e.id) AS events,
                       coalesce(sum(e.outcome = 'error'), 0) AS errors,
                       coalesce(max(e.created_at), t.created_at) AS last_activity
                FROM tasks AS t
                JOIN projects AS p ON p.id = t.project_id
                LEFT JOIN events AS e ON e.task_id = t.id
                WHERE t.status = 'pending'
                GROUP BY t.id
                ORDER BY t.priority DESC, last_activity DESC, t.id
                LIMIT ?
                """,
                (limit,),
            ).fetchall()
        return [dict(row) for row in rows]

    async def metrics(self, days: int) -> list[Row]:
        """GET /api/metrics: per day and event kind, volume, error rate and latency."""
        return await asyncio.to_thread(self._metrics, days)

    def _metrics(self, days: int) -> list[Row]:
        since = (datetime.now(timezone.utc) - timedelta(days=days)).strftime("%Y-%m-%d %H:%M:%S")
        with self._cursor() as db:
            rows = db.execute(
                """
                SELECT date(e.created_at) AS day, e.kind, count(*) AS events,
                       round(100.0 * sum(e.outcome = 'error') / count(*), 2) AS error_pct,
                       round(avg(e.duration_ms), 1) AS avg_ms, max(e.duration_ms) AS max_ms,
                       count(DISTINCT e.task_id) AS tasks
                FROM events AS e
                WHERE e.created_at >= ?
                GROUP BY day, e.kind
                ORDER BY day DESC, e.kind
                """,
                (since,),
            ).fetchall()
        return [dict(row) for row in rows]

    async def content(self, article_id: int) -> Row | None:
        """GET /api/content/{id}: an article, its comments, reading stats and related articles."""
        return await asyncio.to_thread(self._content, article_id)

    def _content(self, article_id: int) -> Row | None:
        with self._cursor() as db:
            article = db.execute(
                "SELECT id, title, author, body, published_at FROM articles WHERE id = ?",
                (article_id,),
            ).fetchone()
            if article is None:
                return None
            comments = db.execute(
                "SELECT author, body, created_at FROM comments WHERE article_id = ? "
                "ORDER BY created_at",
                (article_id,),
            ).fetchall()
            keywords = _keywords(article["body"], 3)
            # "More like this" the way many apps start out: score every article by the
            # keywords it shares, with LIKE and instr scans over every body.
            related = db.execute(
                """
                SELECT id, title, published_at,
                       3 * (instr(lower(body), :k1) > 0) + (instr(lower(body), :k2) > 0)
                           + (instr(lower(body), :k3) > 0) AS score
                FROM articles
                WHERE id != :id AND (body LIKE '%' || :k1 || '%' OR body LIKE '%' || :k2 || '%'
                                     OR body LIKE '%' || :k3 || '%')
                ORDER BY score DESC, published_at DESC
                LIMIT 5
                """,
                {"id": article_id, "k1": keywords[0], "k2": keywords[1], "k3": keywords[2]},
            ).fetchall()
        words = len(article["body"].split())
        return {
            **dict(article),
            "words": words,
            "reading_minutes": max(1, round(words / 230)),
            "keywords": keywords,
            "comments": [dict(row) for row in comments],
            "related": [dict(row) for row in related],
        }

    async def complete_task(self, task_id: int, status: str = "done") -> None:
        """PUT /api/tasks/{id}: the write that makes cached task lists stale."""
        await asyncio.to_thread(self._set_status, task_id, status)

    def _set_status(self, task_id: int, status: str) -> None:
        with self._cursor() as db:
            db.execute("UPDATE tasks SET status = ? WHERE id = ?", (status, task_id))
            db.commit()


def _keywords(text: str, count: int) -> list[str]:
    words = Counter(w for w in re.findall(r"[a-z]+", text.lower()) if w not in STOPWORDS)
    top = [word for word, _ in words.most_common(count)]
    return top + [top[0]] * (count - len(top))
