"""Runs ``examples/demo.py`` as a user would, on a small database, and reads its output."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo.py"
ROUTES = ("GET /api/tasks/pending", "GET /api/metrics", "GET /api/content/")

pytestmark = pytest.mark.slow


def run_demo(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Runs the demo in ``tmp_path`` with cache variables cleared, so no ``.env`` or shell leaks in."""
    clean = {
        name: value
        for name, value in os.environ.items()
        if name.upper() not in {"REDIS_URL", "REDIS_ENABLED"}
        and not name.upper().startswith("CACHE_")
    }
    return subprocess.run(
        [
            sys.executable,
            str(DEMO),
            "--rows",
            "2000",
            "--db",
            str(tmp_path / "demo.sqlite3"),
            *args,
        ],
        cwd=tmp_path,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def table_rows(stdout: str) -> dict[str, tuple[float, float]]:
    """Returns ``{route: (first call ms, cached hit ms)}`` from the printed table."""
    rows = {}
    for line in stdout.splitlines():
        if line.startswith(ROUTES):
            route, first, hit, speedup = re.split(r"\s{2,}", line.strip())
            assert speedup.endswith("x")
            rows[route] = (float(first.replace(",", "")), float(hit.replace(",", "")))
    return rows


def test_demo_prints_table_and_hits_are_faster(tmp_path: Path) -> None:
    result = run_demo(tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert re.search(r"^endpoint\s+first call \(ms\)\s+cached hit \(ms\)\s+speedup$", out, re.M)
    rows = table_rows(out)
    assert len(rows) == 3, out
    for route, (first_ms, hit_ms) in rows.items():
        assert hit_ms < first_ms, f"{route}: hit {hit_ms} ms is not faster than {first_ms} ms"
    assert "Backend: memory (process-local" in out
    assert "<- stale until invalidated" in out
    assert re.search(r"removed 1 key$", out, re.M)
    assert re.search(r"next call: +miss", out)
    assert "(built in" in out


def test_demo_reuses_database_and_logs_process_local_cache(tmp_path: Path) -> None:
    assert run_demo(tmp_path, "--quiet").returncode == 0
    result = run_demo(tmp_path)
    assert result.returncode == 0, result.stderr
    assert "(reused)" in result.stdout
    assert "log: cachetier: REDIS_URL is not set" in result.stdout  # shown by the demo's logging


def test_demo_rejects_bad_redis_url_naming_it(tmp_path: Path) -> None:
    result = run_demo(tmp_path, env={"REDIS_URL": "http://user:pw-S3CRET-42@example.com"})
    assert result.returncode == 2
    assert 'REDIS_URL: scheme must be redis://, rediss:// or unix:// (got "http")' in result.stderr
    assert "pw-S3CRET-42" not in result.stdout + result.stderr


@pytest.mark.redis
def test_demo_on_redis(tmp_path: Path, redis_url: str) -> None:
    result = run_demo(tmp_path, "--quiet", env={"REDIS_URL": redis_url})
    assert result.returncode == 0, result.stderr
    assert "Backend: redis at " in result.stdout
    assert "0 backend errors" in result.stdout
    rows = table_rows(result.stdout)
    assert len(rows) == 3
    assert all(hit < first for first, hit in rows.values())


def test_installed_command_runs_the_demo_and_leaves_no_database(tmp_path: Path) -> None:
    """``cachetier demo`` needs no checkout: it builds its database in a temporary directory."""
    clean = {
        name: value
        for name, value in os.environ.items()
        if name.upper() not in {"REDIS_URL", "REDIS_ENABLED"}
        and not name.upper().startswith("CACHE_")
    }
    result = subprocess.run(  # our own interpreter and package
        [sys.executable, "-m", "cachetier", "demo", "--rows", "2000", "--quiet"],
        cwd=tmp_path,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    rows = table_rows(result.stdout)
    assert len(rows) == 3, result.stdout
    assert all(hit < first for first, hit in rows.values())
    assert "Backend: memory (process-local" in result.stdout
    assert re.search(r"next call: +miss", result.stdout)
    database = re.search(r"^Database: (.+)$", result.stdout, re.M)
    assert database is not None
    assert not Path(database.group(1)).exists()
    assert list(tmp_path.iterdir()) == []


def test_installed_command_refuses_too_few_rows(tmp_path: Path) -> None:
    result = subprocess.run(  # our own interpreter and package
        [sys.executable, "-m", "cachetier", "demo", "--rows", "10"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "--rows: must be at least 100, not 10" in result.stderr
