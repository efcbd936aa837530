"""The ``examples/taskservice`` app on a small database: endpoints, caching and invalidation."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cachetier import Cache
from cachetier.backends import RedisBackend
from cachetier.testing import expect_reads

from ..servers import REDIS_SERVER, RedisServer

pytest.importorskip("fastapi")
pytest.importorskip("aiosqlite")
httpx = pytest.importorskip("httpx")

# After the importorskip calls, so that the module skips when the frameworks are missing.
from examples.taskservice import db as queries  # noqa: E402
from examples.taskservice.app import create_app  # noqa: E402

TASKS = 600


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One seeded database file per module."""
    path = tmp_path_factory.mktemp("taskservice") / "tasks.sqlite3"

    async def seed() -> None:
        connection, _ = await queries.open_database(path, TASKS)
        await connection.close()

    asyncio.run(seed())
    return path


@pytest.fixture
def db_path(seeded: Path, tmp_path: Path) -> Path:
    """A copy of the seeded database for one test, so its writes never leak into another."""
    return Path(shutil.copy(seeded, tmp_path / "tasks.sqlite3"))


@pytest.fixture
async def client(cache: Cache, db_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(cache, db_path=db_path, tasks=TASKS)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        yield client


async def test_pending_tasks_are_cached_and_invalidated_by_writes(
    client: httpx.AsyncClient, cache: Cache
) -> None:
    with expect_reads(cache, misses=1):
        first = (await client.get("/api/tasks/pending", params={"limit": 5})).json()
    with expect_reads(cache, hits=1, misses=0):
        assert (await client.get("/api/tasks/pending", params={"limit": 5})).json() == first
    assert len(first) == 5

    created = await client.post("/api/tasks", json={"title": "urgent", "priority": 5})
    assert created.status_code == 201
    new_id = created.json()["id"]
    after_post = (await client.get("/api/tasks/pending", params={"limit": 200})).json()
    assert new_id in [task["id"] for task in after_post]

    assert (await client.put(f"/api/tasks/{new_id}", json={"status": "done"})).status_code == 200
    after_put = (await client.get("/api/tasks/pending", params={"limit": 200})).json()
    assert new_id not in [task["id"] for task in after_put]

    top = after_put[0]["id"]
    assert (await client.delete(f"/api/tasks/{top}")).status_code == 200
    after_delete = (await client.get("/api/tasks/pending", params={"limit": 200})).json()
    assert top not in [task["id"] for task in after_delete]
    assert (await client.delete(f"/api/tasks/{top}")).status_code == 404


async def test_metrics_are_cached_and_move_after_an_update(
    client: httpx.AsyncClient, cache: Cache
) -> None:
    before = (await client.get("/api/metrics", params={"days": 90})).json()
    with expect_reads(cache, hits=1):
        assert (await client.get("/api/metrics", params={"days": 90})).json() == before
    task_id = (await client.get("/api/tasks/pending", params={"limit": 1})).json()[0]["id"]
    await client.put(f"/api/tasks/{task_id}", json={"priority": 1})
    after = (await client.get("/api/metrics", params={"days": 90})).json()
    assert sum(row["events"] for row in after) == sum(row["events"] for row in before) + 1


async def test_content_response_cache_etag_and_invalidation(client: httpx.AsyncClient) -> None:
    first = await client.get("/api/content/3")
    assert first.status_code == 200
    assert first.headers["x-cache"] == "MISS"
    second = await client.get("/api/content/3")
    assert second.headers["x-cache"] == "HIT"
    not_modified = await client.get(
        "/api/content/3", headers={"If-None-Match": second.headers["etag"]}
    )
    assert not_modified.status_code == 304

    edited = await client.put("/api/content/3", json={"title": "Edited title"})
    assert edited.status_code == 200
    after = await client.get("/api/content/3", headers={"If-None-Match": second.headers["etag"]})
    assert after.status_code == 200
    assert after.headers["x-cache"] == "MISS"
    assert after.json()["title"] == "Edited title"
    assert (await client.get("/api/content/999999")).status_code == 404


async def test_health_reports_the_cache(client: httpx.AsyncClient, cache: Cache) -> None:
    health = (await client.get("/api/health")).json()
    assert health["backend"] == cache.backend.kind
    # 'degraded' is a PING past 100 ms, which a loaded machine can take; never 'unhealthy'.
    assert health["cache"] in ("healthy", "degraded")


@pytest.mark.redis
@pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed")
async def test_serves_with_redis_stopped(db_path: Path, tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    server.start()
    try:
        # Timeouts a loaded CI machine does not trip while warming up; once the server is
        # stopped, connections are refused at once, whatever the timeouts.
        backend = RedisBackend.from_url(server.url, connect_timeout=2.0, command_timeout=2.0)
        cache = Cache(backend, namespace="taskservice")
        app = create_app(cache, db_path=db_path, tasks=TASKS)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c,
        ):
            pending = (await c.get("/api/tasks/pending")).json()
            content = (await c.get("/api/content/5")).json()
            server.stop()
            for _ in range(6):
                down = await c.get("/api/tasks/pending")
                assert down.status_code == 200
                assert down.json() == pending
                assert (await c.get("/api/content/5")).json() == content
            created = await c.post("/api/tasks", json={"title": "during outage", "priority": 5})
            assert created.status_code == 201
            listed = (await c.get("/api/tasks/pending", params={"limit": 200})).json()
            assert created.json()["id"] in [task["id"] for task in listed]
            assert (await c.get("/api/health")).json()["cache"] == "unhealthy"
    finally:
        server.stop()
