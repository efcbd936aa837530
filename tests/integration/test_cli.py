"""The ``cachetier`` command, run as ``python -m cachetier`` in a subprocess against real Redis."""

from __future__ import annotations

import asyncio
import json
import os
import struct
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from cachetier import Cache
from cachetier.backends import RedisBackend

from ..servers import black_hole, closed_port

PASSWORD = "s3cret-hunter2"


@dataclass(frozen=True)
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@pytest.fixture
def base_env() -> dict[str, str]:
    """The test's environment without any cache variable, so the shell's settings never leak in."""
    return {
        name: value
        for name, value in os.environ.items()
        if name.upper() not in {"REDIS_URL", "REDIS_ENABLED"}
        and not name.upper().startswith("CACHE_")
    }


@pytest.fixture
def cli_env(base_env: dict[str, str], redis_url: str, namespace: str) -> dict[str, str]:
    """Settings pointing the command at the test Redis, in this test's namespace."""
    # Timeouts a loaded CI machine does not trip: these tests are about the command, not about
    # timeouts (`test_server_that_never_answers_fails_within_the_timeouts` keeps the defaults).
    return {
        **base_env,
        "REDIS_URL": redis_url,
        "CACHE_NAMESPACE": namespace,
        "CACHE_CONNECT_TIMEOUT": "2",
        "CACHE_COMMAND_TIMEOUT": "2",
    }


def _patient(redis_url: str) -> RedisBackend:
    """The test's own view of the server, with the same timeouts as `cli_env`."""
    return RedisBackend.from_url(redis_url, connect_timeout=2.0, command_timeout=2.0)


@pytest.fixture
async def cache(redis_url: str, namespace: str) -> AsyncIterator[Cache]:
    """The cache the command should see: same server, namespace and version."""
    cache = Cache(_patient(redis_url), namespace=namespace)
    yield cache
    await cache.clear()
    # `clear` keeps the generation counter on purpose; the test's namespace is gone with it.
    await cache.backend.delete(cache.keys.generation_key())
    await cache.aclose()


async def run_cli(*args: str, env: dict[str, str], cwd: Path) -> Result:
    """Runs ``python -m cachetier args...``; ``cwd`` is empty, so no ``.env`` file is read."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cachetier",
        *args,
        env=env,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode is not None
    return Result(process.returncode, stdout.decode(), stderr.decode())


# -- the public API alone ----------------------------------------------------------------------


@pytest.mark.parametrize("module", ["cachetier.cli", "cachetier._demo", "cachetier._demo_db"])
def test_the_command_imports_only_public_names_of_the_core(module: str) -> None:
    """The command is a client of the library: it imports names `cachetier` exports, and its demo."""
    import ast
    import importlib

    import cachetier

    source = Path(str(importlib.import_module(module).__file__)).read_text(encoding="utf-8")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            assert not [a.name for a in node.names if a.name.startswith("cachetier.")], module
        elif isinstance(node, ast.ImportFrom) and node.module == "cachetier" and not node.level:
            assert {a.name for a in node.names} <= set(cachetier.__all__), module
        elif isinstance(node, ast.ImportFrom) and (node.level or "cachetier" in str(node.module)):
            # Relative: only the command's own demo modules.
            within = {node.module} if node.module else {a.name for a in node.names}
            assert within <= {"_demo", "_demo_db"}, (module, ast.unparse(node))


# -- help and usage ---------------------------------------------------------------------------


async def test_help_describes_every_command_with_examples(
    base_env: dict[str, str], tmp_path: Path
) -> None:
    result = await run_cli("--help", env=base_env, cwd=tmp_path)
    assert result.code == 0
    for command in ("health", "keys", "get", "invalidate", "bump-version", "demo"):
        assert f"    {command} " in result.stdout
    assert "invalidate --tag TAG" in result.stdout
    assert "examples:" in result.stdout
    assert "exit codes:" in result.stdout
    assert "  cachetier demo\n" in result.stdout


async def test_invalidate_help_says_pattern_and_tags_combine(
    base_env: dict[str, str], tmp_path: Path
) -> None:
    result = await run_cli("invalidate", "--help", env=base_env, cwd=tmp_path)
    assert result.code == 0
    assert (
        "usage: cachetier invalidate [-h] [--tag TAG] [--dry-run] [--quiet] [PATTERN]"
        in result.stdout
    )
    assert "Give a PATTERN, a --tag, or both." in result.stdout
    assert "cachetier invalidate --tag project:7" in result.stdout


async def test_bump_version_help_explains_what_it_does_and_when_others_see_it(
    base_env: dict[str, str], tmp_path: Path
) -> None:
    result = await run_cli("bump-version", "--help", env=base_env, cwd=tmp_path)
    assert result.code == 0
    assert "cache.bump_version()" in result.stdout
    assert "version_check_interval" in result.stdout
    assert "--dry-run" in result.stdout


async def test_invalidate_without_pattern_or_tag_is_a_usage_error(
    base_env: dict[str, str], tmp_path: Path
) -> None:
    """Reported before any setting is read: the environment here has no REDIS_URL."""
    result = await run_cli("invalidate", env=base_env, cwd=tmp_path)
    assert result.code == 2
    assert result.stdout == ""
    assert result.stderr.startswith("usage: cachetier invalidate")
    assert "a PATTERN, one or more --tag TAG, or both" in result.stderr


async def test_invalidate_dry_run_with_a_tag_is_a_usage_error(
    base_env: dict[str, str], tmp_path: Path
) -> None:
    result = await run_cli("invalidate", "*", "--tag", "t", "--dry-run", env=base_env, cwd=tmp_path)
    assert result.code == 2
    assert "--dry-run" in result.stderr.splitlines()[-1]


async def test_missing_command_is_a_usage_error(base_env: dict[str, str], tmp_path: Path) -> None:
    result = await run_cli(env=base_env, cwd=tmp_path)
    assert result.code == 2
    assert "usage: cachetier" in result.stderr


# -- against the real server ------------------------------------------------------------------


@pytest.mark.redis
async def test_health_prints_an_aligned_report(
    cli_env: dict[str, str], tmp_path: Path, namespace: str
) -> None:
    # A PING past the default 100 ms, which a loaded machine can take, would be 'degraded'.
    result = await run_cli("health", "--degraded-after-ms", "5000", env=cli_env, cwd=tmp_path)
    assert result.code == 0, result.stderr
    rows = dict(line.split(None, 1) for line in result.stdout.splitlines())
    assert rows["status"] == "healthy"
    assert rows["backend"] == "redis"
    assert rows["namespace"] == namespace
    assert float(rows["latency_ms"]) >= 0
    # Values start in one column.
    columns = {
        line.index(value)
        for line, value in zip(result.stdout.splitlines(), rows.values(), strict=True)
    }
    assert len(columns) == 1


@pytest.mark.redis
async def test_health_json_is_the_report_without_process_counters(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    result = await run_cli(
        "health", "--json", "--degraded-after-ms", "5000", env=cli_env, cwd=tmp_path
    )
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["status"] == "healthy"
    assert report["available"] is True
    assert report["server_version"]
    assert "stats" not in report


@pytest.mark.redis
async def test_keys_lists_relative_keys_of_the_namespace_only(
    cli_env: dict[str, str], tmp_path: Path, cache: Cache, redis_url: str, namespace: str
) -> None:
    await cache.set_many({"user:1": 1, "user:2": 2, "order:1": 3})
    async with Cache(_patient(redis_url), namespace=namespace + "x") as other:
        await other.set("user:3", 3)
        try:
            result = await run_cli("keys", "user:*", env=cli_env, cwd=tmp_path)
        finally:
            await other.clear()
    assert result.code == 0, result.stderr
    assert result.stdout.splitlines() == ["user:1", "user:2"]


@pytest.mark.redis
async def test_keys_stops_at_the_limit_and_says_so(
    cli_env: dict[str, str], tmp_path: Path, cache: Cache
) -> None:
    await cache.set_many({f"item:{n}": n for n in range(5)})
    result = await run_cli("keys", "*", "--limit", "3", env=cli_env, cwd=tmp_path)
    assert result.code == 0, result.stderr
    assert len(result.stdout.splitlines()) == 3
    assert "stopped after 3 keys" in result.stderr


@pytest.mark.redis
async def test_get_prints_the_value_as_json(
    cli_env: dict[str, str], tmp_path: Path, cache: Cache
) -> None:
    value = {"id": 7, "name": "Zoë", "tags": ["a", "b"], "score": 1.5, "note": None}
    await cache.set("user:7", value)
    result = await run_cli("get", "user:7", env=cli_env, cwd=tmp_path)
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout) == value


@pytest.mark.redis
async def test_get_of_an_absent_key_exits_1_with_the_reason(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    result = await run_cli("get", "nothing:here", env=cli_env, cwd=tmp_path)
    assert result.code == 1
    assert result.stdout == ""
    assert "no value at 'nothing:here'" in result.stderr


@pytest.mark.redis
async def test_get_of_an_undecodable_entry_exits_1_and_leaves_it_in_place(
    cli_env: dict[str, str], tmp_path: Path, cache: Cache
) -> None:
    full = cache.keys.full("foreign")
    await cache.backend.set(full, b"written by someone else")
    result = await run_cli("get", "foreign", env=cli_env, cwd=tmp_path)
    assert result.code == 1
    assert result.stdout == ""
    assert "could not be decoded: not a cachetier entry" in result.stderr
    assert await cache.backend.get(full) == b"written by someone else"


async def _foreign(cache: Cache) -> None:
    await cache.backend.set(cache.keys.full("k"), b"\x00\x01 binary from another program")


async def _lease(cache: Cache) -> None:
    await cache.backend.set(cache.keys.full("k"), b"\xc3\xff" + bytes(range(16)), 60)


async def _earlier_generation(cache: Cache) -> None:
    await cache.set("k", "before the bump")
    await cache.bump_version()


async def _stale(cache: Cache) -> None:
    # Written by a process whose clock says two minutes ago: fresh for 60 s of that, so stale
    # now, and kept in Redis for the hour of stale_ttl.
    past = Cache(cache.backend, namespace=cache.namespace, clock=lambda: time.time() - 120)
    await past.get_or_set("k", lambda: "old", ttl=60, stale_ttl=3600)


async def _signed(cache: Cache) -> None:
    signed = Cache(cache.backend, namespace=cache.namespace, signing_key=b"k" * 32)
    await signed.set("k", "signed value")


async def _bad_payload(cache: Cache) -> None:
    # A format-2 header (magic, format, flags, reserved, generation, created, fresh, delta)
    # in front of a payload the JSON serializer refuses.
    header = struct.pack("<BBBBIddf", 0xC1, 2, 0, 0, 0, time.time(), 0.0, 0.0)
    await cache.backend.set(cache.keys.full("k"), header + b"{not json")


async def _other_format(cache: Cache) -> None:
    await cache.backend.set(cache.keys.full("k"), b"\xc1\x01" + bytes(30))


@pytest.mark.redis
@pytest.mark.parametrize(
    ("write", "reason"),
    [
        pytest.param(_foreign, "could not be decoded: not a cachetier entry", id="foreign"),
        pytest.param(_lease, "a computation in progress holds it", id="lease"),
        pytest.param(
            _earlier_generation,
            "but this namespace and version are at generation",
            id="earlier-generation",
        ),
        pytest.param(_stale, "its value went stale ", id="stale"),
        pytest.param(_signed, "a signed entry", id="signed-without-key"),
        pytest.param(_bad_payload, "could not be decoded: ", id="undecodable-payload"),
        pytest.param(_other_format, "it has entry format 1", id="other-entry-format"),
    ],
)
async def test_get_says_why_a_key_holds_no_value_and_changes_nothing(
    cli_env: dict[str, str],
    tmp_path: Path,
    cache: Cache,
    write: Callable[[Cache], Awaitable[None]],
    reason: str,
) -> None:
    await write(cache)
    full = cache.keys.full("k")
    before = await cache.backend.get(full)
    assert before is not None
    result = await run_cli("get", "k", env=cli_env, cwd=tmp_path)
    assert result.code == 1
    assert result.stdout == ""
    assert result.stderr.startswith("cachetier: no value at 'k': ")
    assert reason in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert await cache.backend.get(full) == before


@pytest.mark.redis
async def test_get_of_a_counter_prints_the_number_and_says_it_is_a_counter(
    cli_env: dict[str, str], tmp_path: Path, cache: Cache
) -> None:
    await cache.incr("hits", 5)
    result = await run_cli("get", "hits", env=cli_env, cwd=tmp_path)
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout) == 5
    assert "'hits' holds a counter" in result.stderr


@pytest.mark.redis
async def test_get_reads_signed_entries_with_the_signing_key(
    cli_env: dict[str, str], tmp_path: Path, cache: Cache
) -> None:
    await _signed(cache)
    env = {**cli_env, "CACHE_SIGNING_KEY": "k" * 32}
    result = await run_cli("get", "k", env=env, cwd=tmp_path)
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout) == "signed value"


@pytest.mark.redis
async def test_invalidate_dry_run_lists_and_deletes_nothing(
    cli_env: dict[str, str], tmp_path: Path, cache: Cache
) -> None:
    await cache.set_many({"tasks:pending:1": 1, "tasks:pending:2": 2, "tasks:done:1": 3})
    result = await run_cli("invalidate", "tasks:pending:*", "--dry-run", env=cli_env, cwd=tmp_path)
    assert result.code == 0, result.stderr
    assert result.stdout.splitlines() == ["tasks:pending:1", "tasks:pending:2"]
    assert "would delete 2 keys" in result.stderr
    assert await cache.get_many(["tasks:pending:1", "tasks:pending:2"]) == {
        "tasks:pending:1": 1,
        "tasks:pending:2": 2,
    }


@pytest.mark.redis
async def test_invalidate_deletes_matching_keys_and_prints_the_count(
    cli_env: dict[str, str], tmp_path: Path, cache: Cache
) -> None:
    await cache.set_many({"tasks:pending:1": 1, "tasks:pending:2": 2, "tasks:done:1": 3})
    result = await run_cli("invalidate", "tasks:pending:*", env=cli_env, cwd=tmp_path)
    assert result.code == 0, result.stderr
    assert result.stdout.strip() == "deleted 2 keys"
    assert await cache.get_many(["tasks:pending:1", "tasks:pending:2", "tasks:done:1"]) == {
        "tasks:done:1": 3
    }


@pytest.mark.redis
async def test_invalidate_tag_removes_exactly_the_tagged_entries(
    cli_env: dict[str, str], tmp_path: Path, cache: Cache
) -> None:
    await cache.set("task:1", 1, tags=["project:1"])
    await cache.set("task:2", 2, tags=["project:1", "project:2"])
    await cache.set("task:3", 3, tags=["project:2"])
    await cache.set("task:4", 4)
    await cache.set("task:5", 5, tags=["project:10"])  # a tag that only starts like one
    await cache.get_or_set("task:6", lambda: 6, tags=["project:1"])
    everything = [f"task:{n}" for n in range(1, 7)]

    result = await run_cli("invalidate", "--tag", "project:1", env=cli_env, cwd=tmp_path)
    assert result.code == 0, result.stderr
    assert result.stdout.strip() == "invalidated 1 tag (1 in use)"
    assert await cache.get_many(everything) == {"task:3": 3, "task:4": 4, "task:5": 5}

    result = await run_cli(
        "invalidate", "--tag", "project:2", "--tag", "nothing", env=cli_env, cwd=tmp_path
    )
    assert result.code == 0, result.stderr
    assert result.stdout.strip() == "invalidated 2 tags (1 in use)"
    assert await cache.get_many(everything) == {"task:4": 4, "task:5": 5}


@pytest.mark.redis
async def test_invalidate_pattern_and_tag_together_delete_both(
    cli_env: dict[str, str], tmp_path: Path, cache: Cache
) -> None:
    await cache.set("stats:daily", 1)
    await cache.set("stats:project:1", 2, tags=["project:1"])  # reached both ways
    await cache.set("task:1", 3, tags=["project:1"])
    await cache.set("task:2", 4, tags=["project:2"])
    result = await run_cli("invalidate", "stats:*", "--tag", "project:1", env=cli_env, cwd=tmp_path)
    assert result.code == 0, result.stderr
    assert result.stdout.splitlines() == ["invalidated 1 tag (1 in use)", "deleted 2 keys"]
    assert await cache.get_many(["stats:daily", "stats:project:1", "task:1", "task:2"]) == {
        "task:2": 4
    }


@pytest.mark.redis
async def test_bump_version_makes_earlier_entries_misses_for_every_reader(
    cli_env: dict[str, str], tmp_path: Path, cache: Cache, redis_url: str, namespace: str
) -> None:
    await cache.set_many({"user:1": 1, "user:2": 2})
    # A running reader that checks the generation on every read; with the default interval
    # it would notice within 0.25 s.
    async with Cache(_patient(redis_url), namespace=namespace, version_check_interval=0) as reader:
        assert await reader.get("user:1") == 1

        raw = await cache.backend.get(cache.keys.generation_key())
        assert raw is not None  # the first write stored it (at random)
        before = int(raw) - 1
        result = await run_cli("bump-version", env=cli_env, cwd=tmp_path)
        assert result.code == 0, result.stderr
        assert result.stdout.strip() == f"bumped {namespace}:v1 to generation {before + 2}"

        assert await reader.get("user:1") is None
        # A cache created afterwards learns the generation on its first read.
        async with Cache(_patient(redis_url), namespace=namespace) as newcomer:
            assert await newcomer.get_many(["user:1", "user:2"]) == {}
            await newcomer.set("user:1", "after the bump")
        assert await reader.get("user:1") == "after the bump"
    # The old entries are not deleted, only ignored.
    assert await cache.backend.exists(cache.keys.full("user:2"))

    again = await run_cli("bump-version", env=cli_env, cwd=tmp_path)
    assert again.stdout.strip() == f"bumped {namespace}:v1 to generation {before + 3}"


@pytest.mark.redis
async def test_bump_version_dry_run_prints_the_generation_and_changes_nothing(
    cli_env: dict[str, str], tmp_path: Path, cache: Cache, redis_url: str, namespace: str
) -> None:
    await cache.set("user:1", 1)
    generation = await cache.bump_version()
    await cache.set("user:1", 1)
    result = await run_cli("bump-version", "--dry-run", env=cli_env, cwd=tmp_path)
    assert result.code == 0, result.stderr
    assert result.stdout.strip() == f"{namespace}:v1 is at generation {generation}"
    assert f"would bump it to generation {generation + 1}" in result.stderr
    async with Cache(_patient(redis_url), namespace=namespace) as newcomer:
        assert await newcomer.get("user:1") == 1


@pytest.mark.redis
async def test_namespace_and_version_options_override_the_settings(
    cli_env: dict[str, str], tmp_path: Path, redis_url: str, namespace: str
) -> None:
    async with Cache(_patient(redis_url), namespace=namespace, version="v9") as cache:
        await cache.set("k", "v9 value")
        try:
            env = {**cli_env, "CACHE_NAMESPACE": "elsewhere"}
            found = await run_cli(
                "--namespace", namespace, "--key-version", "v9", "get", "k", env=env, cwd=tmp_path
            )
            default_version = await run_cli(
                "--namespace", namespace, "get", "k", env=env, cwd=tmp_path
            )
        finally:
            await cache.clear()
    assert found.code == 0, found.stderr
    assert json.loads(found.stdout) == "v9 value"
    assert default_version.code == 1


# -- errors -----------------------------------------------------------------------------------


async def test_malformed_redis_url_exits_2_naming_the_variable_without_the_password(
    base_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**base_env, "REDIS_URL": f"http://user:{PASSWORD}@cache.internal:6379/0"}
    commands = (["health"], ["get", "k"], ["keys", "*"], ["bump-version"])
    results = await asyncio.gather(*(run_cli(*c, env=env, cwd=tmp_path) for c in commands))
    for command, result in zip(commands, results, strict=True):
        assert result.code == 2, command
        assert result.stderr.startswith("cachetier: REDIS_URL: ")
        assert len(result.stderr.splitlines()) == 1
        assert PASSWORD not in result.output


async def test_unreachable_redis_health_is_unhealthy_and_reads_exit_3(
    base_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**base_env, "REDIS_URL": f"redis://:{PASSWORD}@127.0.0.1:{closed_port()}/0"}

    health = await run_cli("--verbose", "health", "--json", env=env, cwd=tmp_path)
    assert health.code == 2
    assert "backend=redis" in health.stderr  # --verbose logs the backend choice
    report = json.loads(health.stdout)
    assert report["status"] == "unhealthy"
    assert report["available"] is False
    assert report["error"]

    commands = (
        ["get", "k"],
        ["keys", "*"],
        ["invalidate", "*"],
        ["invalidate", "--tag", "project:7"],
        ["invalidate", "*", "--tag", "project:7"],
        ["bump-version"],
        ["bump-version", "--dry-run"],
    )
    results = await asyncio.gather(*(run_cli(*c, env=env, cwd=tmp_path) for c in commands))
    for command, result in zip(commands, results, strict=True):
        assert result.code == 3, command
        assert result.stdout == ""
        assert result.stderr.startswith("cachetier: ")
        assert len(result.stderr.splitlines()) == 1, result.stderr
        assert PASSWORD not in result.output
    assert PASSWORD not in health.output


async def test_server_that_never_answers_fails_within_the_timeouts(
    base_env: dict[str, str], tmp_path: Path
) -> None:
    async with black_hole() as port:
        env = {**base_env, "REDIS_URL": f"redis://127.0.0.1:{port}/0"}
        health, get, bump = await asyncio.gather(
            run_cli("health", env=env, cwd=tmp_path),
            run_cli("get", "k", env=env, cwd=tmp_path),
            run_cli("bump-version", env=env, cwd=tmp_path),
        )
    assert health.code == 2
    assert "unhealthy" in health.stdout
    for result in (get, bump):
        assert result.code == 3
        assert "timed out" in result.stderr


async def test_commands_that_need_redis_refuse_the_process_local_backend(
    base_env: dict[str, str], tmp_path: Path
) -> None:
    commands = (["keys", "*"], ["invalidate", "--tag", "t"], ["bump-version"])
    results = await asyncio.gather(*(run_cli(*c, env=base_env, cwd=tmp_path) for c in commands))
    for command, result in zip(commands, results, strict=True):
        assert result.code == 2, command
        assert "REDIS_URL is not set" in result.stderr


async def test_health_of_disabled_caching_exits_0(base_env: dict[str, str], tmp_path: Path) -> None:
    env = {**base_env, "REDIS_ENABLED": "false"}
    result = await run_cli("health", "--json", env=env, cwd=tmp_path)
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["status"] == "disabled"


async def _fill(cache: Cache, count: int) -> None:
    """Stores ``count`` keys under ``bulk:`` in a few round trips (their values do not matter)."""
    items = {cache.keys.full(f"bulk:{n}"): b"x" for n in range(count)}
    keys = list(items)
    for start in range(0, count, 10_000):
        await cache.backend.set_many({key: items[key] for key in keys[start : start + 10_000]})


def _run_on_a_terminal(args: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    """Runs ``python -m cachetier args`` with stderr on a pseudo-terminal; returns what it said."""
    import pty
    import subprocess

    main, side = pty.openpty()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "cachetier", *args],
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=side,
        )
        os.close(side)
        side = -1
        seen = b""
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # the terminal closed: the command has ended
                break
            if not chunk:
                break
            seen += chunk
        stdout, _ = process.communicate(timeout=60)
    finally:
        os.close(main)
        if side != -1:
            os.close(side)
    return process.returncode, stdout.decode(), seen.decode()


@pytest.mark.redis
@pytest.mark.slow
async def test_invalidate_shows_progress_on_a_terminal_and_none_when_piped(
    cli_env: dict[str, str], tmp_path: Path, cache: Cache
) -> None:
    await _fill(cache, 100_000)
    code, stdout, terminal = await asyncio.to_thread(
        _run_on_a_terminal, ["invalidate", "bulk:*"], cli_env, tmp_path
    )
    assert code == 0, terminal
    assert stdout.strip() == "deleted 100000 keys"
    assert "cachetier: scanned " in terminal
    assert "keys/s)" in terminal
    assert terminal.endswith("\r\n")  # the progress line is ended before the command exits

    await _fill(cache, 10_000)
    piped = await run_cli("invalidate", "bulk:*", env=cli_env, cwd=tmp_path)
    assert piped.code == 0
    assert piped.stdout.strip() == "deleted 10000 keys"
    assert piped.stderr == ""

    await _fill(cache, 10_000)
    code, stdout, terminal = await asyncio.to_thread(
        _run_on_a_terminal, ["invalidate", "bulk:*", "--quiet"], cli_env, tmp_path
    )
    assert (code, stdout.strip(), terminal) == (0, "deleted 10000 keys", "")


@pytest.mark.redis
async def test_keys_shows_progress_on_a_terminal(
    cli_env: dict[str, str], tmp_path: Path, cache: Cache
) -> None:
    await _fill(cache, 2_000)
    code, stdout, terminal = await asyncio.to_thread(
        _run_on_a_terminal, ["keys", "bulk:*", "--limit", "0"], cli_env, tmp_path
    )
    assert code == 0, terminal
    assert len(stdout.split()) == 2_000
    assert "cachetier: scanned " in terminal
    assert ", found " in terminal
