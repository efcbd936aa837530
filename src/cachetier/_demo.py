"""The demo: three slow endpoint queries on a real SQLite database, uncached and then cached.

``cachetier demo`` runs it from an installed package, ``python examples/demo.py`` from a
checkout. It builds a SQLite database of tasks, events and articles, times three endpoint-like
queries uncached and then cached, shows an invalidation, and names the backend used:
process-local memory by default, Redis when ``REDIS_URL`` is set. Only the standard library and
cachetier are needed. The database is never part of the package: it is built where ``--db``
says, or in a temporary directory removed at exit.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import re
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, closing, contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from ._cache import Cache
from ._errors import ConfigurationError
from ._settings import CacheSettings
from ._ttl import TTL

__all__ = ("add_arguments", "run_command")

SCHEMA_VERSION = 1
DEFAULT_ROWS = 100_000
HIT_SAMPLES = 5

Row = dict[str, Any]

# --- the database ----------------------------------------------------------------------------

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


# --- the demo --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """One cached endpoint: its route, cache key, query and TTL."""

    route: str
    key: str
    fetch: Callable[[], Awaitable[Any]]
    ttl: int


@dataclass(frozen=True)
class Timing:
    route: str
    first_ms: float
    hit_ms: float

    @property
    def speedup(self) -> float:
        return self.first_ms / self.hit_ms if self.hit_ms > 0 else float("inf")


async def timed(call: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    """Returns the milliseconds ``call`` took and its result."""
    started = time.perf_counter()
    result = await call()
    return (time.perf_counter() - started) * 1000, result


async def timed_outcome(cache: Cache, call: Callable[[], Awaitable[Any]]) -> tuple[float, Any, str]:
    """Returns the milliseconds ``call`` took, its result, and how the cache read ended."""
    before = cache.stats
    ms, result = await timed(call)
    after = cache.stats
    if after.hits > before.hits:
        outcome = "hit"
    elif after.misses > before.misses:
        outcome = "miss"
    elif after.backend_errors > before.backend_errors:
        outcome = "backend error, ran the query"
    else:
        outcome = "not cached"
    return ms, result, outcome


async def measure(cache: Cache, endpoint: Endpoint) -> Timing:
    """Times the first (uncached) call of ``endpoint`` and the median of the cached ones."""

    def call() -> Awaitable[Any]:
        return cache.get_or_set(endpoint.key, endpoint.fetch, ttl=endpoint.ttl)

    first_ms, fetched = await timed(call)
    hits = [await timed(call) for _ in range(HIT_SAMPLES)]
    if any(value != fetched for _, value in hits):
        raise AssertionError(f"{endpoint.route}: the cached value differs from the fetched one")
    return Timing(endpoint.route, first_ms, statistics.median(ms for ms, _ in hits))


def print_table(timings: list[Timing]) -> None:
    header = ("endpoint", "first call (ms)", "cached hit (ms)", "speedup")
    rows = [
        (t.route, f"{t.first_ms:,.1f}", f"{t.hit_ms:,.3f}", f"{t.speedup:,.0f}x") for t in timings
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        first, *numbers = cells
        return "  ".join(
            [
                first.ljust(widths[0]),
                *(c.rjust(w) for c, w in zip(numbers, widths[1:], strict=True)),
            ]
        )

    print(line(header))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row))
    print(f"(cached hit: median of {HIT_SAMPLES} calls)")


def top_task(tasks: object) -> Row | None:
    """Returns the first task of a pending-tasks result (cached values are plain JSON)."""
    if isinstance(tasks, list) and tasks and isinstance(tasks[0], dict):
        return tasks[0]
    return None


def describe_task(task: Row | None) -> str:
    if task is None:
        return "no pending task"
    return f'#{task["id"]} "{task["title"]}" (priority {task["priority"]})'


async def show_invalidation(cache: Cache, db: Database, endpoint: Endpoint) -> None:
    """Completes the most urgent task, shows the stale cached list, invalidates, refetches."""

    def call() -> Awaitable[Any]:
        return cache.get_or_set(endpoint.key, endpoint.fetch, ttl=endpoint.ttl)

    print()
    print("Invalidation: PUT /api/tasks/{id} marks the most urgent pending task done")
    task = top_task(await call())
    if task is None:
        print("  (no pending task to complete)")
        return
    print(f"  top pending task:  {describe_task(task)}")
    await db.complete_task(task["id"])
    try:
        print(f"  database:          UPDATE tasks SET status = 'done' WHERE id = {task['id']}")
        cached = await cache.get(endpoint.key)
        if cached is None:
            print("  cache:             holds nothing (caching is off or failing)")
        else:
            print(
                f"  cache, still:      {describe_task(top_task(cached))}  <- stale until invalidated"
            )
        removed = await cache.delete_pattern("demo:tasks:pending:*")
        keys = "key" if removed == 1 else "keys"
        print(
            f'  invalidate:        delete_pattern("demo:tasks:pending:*") removed {removed} {keys}'
        )
        ms, after, outcome = await timed_outcome(cache, call)
        print(
            f"  next call:         {outcome}, {ms:,.1f} ms, top is now {describe_task(top_task(after))}"
        )
        ms, _, outcome = await timed_outcome(cache, call)
        print(f"  and again:         {outcome}, {ms:,.3f} ms")
    finally:
        # Put the row back, so that the next run starts from the same data.
        await db.complete_task(task["id"], status="pending")
        await cache.delete_pattern("demo:tasks:pending:*")


async def run(args: argparse.Namespace) -> int:
    try:
        settings = CacheSettings.load()
    except ConfigurationError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    sizes = Sizes(args.rows)
    print(f"Database: {args.db}")
    connection, how = await asyncio.to_thread(open_database, args.db, sizes, rebuild=args.rebuild)
    print(
        f"  {sizes.tasks:,} tasks, {sizes.events:,} events, {sizes.articles:,} articles, "
        f"{sizes.comments:,} comments ({how})"
    )
    db = Database(connection)
    article_id = min(42, sizes.articles)
    endpoints = [
        Endpoint(
            "GET /api/tasks/pending?limit=20",
            "demo:tasks:pending:20",
            lambda: db.pending_tasks(20),
            TTL.QUERY,
        ),
        Endpoint(
            "GET /api/metrics?days=30", "demo:metrics:30d", lambda: db.metrics(30), TTL.METRICS
        ),
        Endpoint(
            f"GET /api/content/{article_id}",
            f"demo:content:{article_id}",
            lambda: db.content(article_id),
            TTL.CONTENT,
        ),
    ]
    cache = Cache.from_settings(settings)
    with closing(connection):
        async with cache:
            # Start cold, also on a Redis server that kept the entries of an earlier run.
            await cache.delete_pattern("demo:*")
            print()
            print_table([await measure(cache, endpoint) for endpoint in endpoints])
            if not cache.stats.hits:
                print("No cache hits: the backend is off or failing (see below).")
            await show_invalidation(cache, db, endpoints[0])
            print()
            print_backend(cache, settings)
    return 0


def print_backend(cache: Cache, settings: CacheSettings) -> None:
    kind = cache.backend.kind
    if kind == "redis":
        print(f"Backend: redis at {settings.redacted_url} (shared by every process using it)")
    elif kind == "memory":
        print("Backend: memory (process-local: this Python process only)")
        print("  Set REDIS_URL=redis://localhost:6379/0 to run the same demo on Redis.")
    else:
        print(f"Backend: {kind} (caching is off: every call runs the query)")
    stats = cache.stats
    print(
        f"Stats: {stats.hits} hits, {stats.misses} misses, hit ratio {stats.hit_ratio:.0%}, "
        f"{stats.backend_errors} backend errors"
    )
    if stats.backend_errors:
        print("  The backend failed; the cache failed open, so the app kept working uncached.")


def add_arguments(parser: argparse.ArgumentParser, *, default_db: Path | None) -> None:
    """Adds the demo's options to ``parser``; without ``default_db`` the database is temporary."""
    parser.add_argument(
        "--rows",
        type=_rows,
        default=DEFAULT_ROWS,
        help=f"number of tasks, at least 100; the other tables scale with it (default {DEFAULT_ROWS:,})",
    )
    where = (
        f"default {default_db}"
        if default_db is not None
        else "default: a temporary file, removed at exit"
    )
    parser.add_argument(
        "--db",
        type=Path,
        default=default_db,
        help=f"SQLite file, built on first use and reused while its size and schema match ({where})",
    )
    parser.add_argument("--rebuild", action="store_true", help="rebuild the database")
    parser.add_argument("-q", "--quiet", action="store_true", help="hide cachetier's log lines")


def _rows(text: str) -> int:
    try:
        rows = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}") from None
    if rows < 100:
        raise argparse.ArgumentTypeError(f"must be at least 100, not {rows}")
    return rows


def run_command(args: argparse.Namespace) -> int:
    """Runs the demo with the options `add_arguments` defined; returns the exit code."""
    if not args.quiet:
        logging.basicConfig(level=logging.INFO, format="log: %(message)s", stream=sys.stdout)
    with ExitStack() as stack:
        if args.db is None:
            # Built for this run only (a few seconds), so that an installed demo leaves nothing.
            directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="cachetier-demo-"))
            args.db = Path(directory) / "demo.sqlite3"
        with suppress(KeyboardInterrupt):
            return asyncio.run(run(args))
    return 130  # the shell convention for a command ended by SIGINT
