"""Credentials given in the environment never show in logs, reprs, health reports or exceptions."""

from __future__ import annotations

import json
import logging
import os
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from cachetier import BackendError, Cache, CacheSettings, ConfigurationError

from ..servers import closed_port

# Every secret below contains this marker, so one substring check covers each spelling
# (plain, percent-encoded, decoded) that could leak.
MARKER = "S3CRET"
SIGNING_KEY = "signing-S3CRET-0123456789abcdef"


def _urls(port: int) -> dict[str, str]:
    return {
        "user-and-password": f"redis://user:pw-{MARKER}-9000@127.0.0.1:{port}/0",
        "password-only": f"redis://:pw-{MARKER}-9000@127.0.0.1:{port}/0",
        "percent-encoded": f"redis://user:pw-{MARKER}%2F9000%40x@127.0.0.1:{port}/0",
        "query-password": f"redis://127.0.0.1:{port}/0?password=pw-{MARKER}-9000",
        "tls": f"rediss://user:pw-{MARKER}-9000@127.0.0.1:{port}/0",
    }


@pytest.fixture(params=sorted(_urls(1)))
def secret_env(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> str:
    """An environment whose REDIS_URL (a closed loopback port) and signing key hold secrets."""
    for name in list(os.environ):
        if name.startswith(("REDIS_", "CACHE_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray .env file is read
    url = _urls(closed_port())[request.param]
    monkeypatch.setenv("REDIS_URL", url)
    monkeypatch.setenv("CACHE_SIGNING_KEY", SIGNING_KEY)
    # Every call reaches the closed port, rather than being skipped by an open breaker.
    monkeypatch.setenv("CACHE_BREAKER_FAILURES", "1000")
    return url


def _assert_clean(texts: list[str]) -> None:
    assert texts
    for text in texts:
        assert MARKER not in text, text


def _exception_texts(exc: BaseException) -> list[str]:
    """Everything a logger or a traceback could print about ``exc`` and its chained causes."""
    texts = ["".join(traceback.format_exception(exc))]
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        texts += [str(current), repr(current), *map(repr, current.args)]
        pending += [current.__cause__, current.__context__]
    return texts


async def _backend_error(name: str, operation: Callable[[], Awaitable[object]]) -> BackendError:
    try:
        await operation()
    except BackendError as exc:
        return exc
    pytest.fail(f"{name} raised no BackendError")


def _record_texts(records: list[logging.LogRecord]) -> list[str]:
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    texts = []
    for record in records:
        texts += [formatter.format(record), repr(record.args), str(record.msg)]
    return texts


# Every operation that reaches the backend, as a strict or fail-open caller sees it.
def _operations(cache: Cache) -> dict[str, Callable[[], Awaitable[object]]]:
    @cache.cached(ttl=60)
    async def lookup(k: int) -> dict[str, int]:
        return {"k": k}

    return {
        "get": lambda: cache.get("k"),
        "set": lambda: cache.set("k", {"v": 1}),
        "add": lambda: cache.add("k", 1),
        "get_many": lambda: cache.get_many(["a", "b"]),
        "set_many": lambda: cache.set_many({"a": 1, "b": 2}),
        "delete": lambda: cache.delete("k"),
        "exists": lambda: cache.exists("k"),
        "ttl": lambda: cache.ttl("k"),
        "incr": lambda: cache.incr("n", ttl=60),
        "delete_pattern": lambda: cache.delete_pattern("users:*"),
        "get_or_set": lambda: cache.get_or_set("g", lambda: 1),
        "decorated": lambda: lookup(3),
        "lock": lambda: cache.get_or_set("locked", lambda: 1, lock=True),
    }


async def test_secrets_never_appear_in_log_records_at_any_level(
    secret_env: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with Cache.from_settings() as cache:
        for name, operation in _operations(cache).items():
            if name == "incr":
                with pytest.raises(BackendError):  # a counter has no fail-open value
                    await operation()
            else:
                await operation()
        await cache.health_check()
    messages = [record.getMessage() for record in caplog.records]
    assert any("redis://" in m or "rediss://" in m for m in messages), messages
    assert any("failed" in m for m in messages), messages
    _assert_clean(_record_texts(caplog.records))


def test_secrets_never_appear_in_reprs(secret_env: str) -> None:
    settings = CacheSettings.load()
    assert settings.redis_url is not None
    assert settings.redis_url.get_secret_value() == secret_env
    cache = Cache.from_settings(settings)
    texts = [
        repr(cache),
        str(cache),
        repr(cache.backend),
        repr(settings),
        str(settings),
        settings.model_dump_json(),
        repr(settings.model_dump()),
        repr(CacheSettings.load()),
        str(settings.redacted_url),
    ]
    assert "127.0.0.1" in repr(cache.backend)
    _assert_clean(texts)


async def test_secrets_never_appear_in_health_reports(secret_env: str) -> None:
    async with Cache.from_settings() as cache:
        report = await cache.health_check()
        assert report.status == "unhealthy"
        assert report.error
        _assert_clean([json.dumps(report.to_dict()), repr(report), str(report.error)])


async def test_secrets_never_appear_in_exceptions_of_a_strict_cache(secret_env: str) -> None:
    texts: list[str] = []
    async with Cache.from_settings(CacheSettings.load(strict=True)) as cache:
        for name, operation in _operations(cache).items():
            texts += _exception_texts(await _backend_error(name, operation))
        report = await cache.health_check()
        texts.append(json.dumps(report.to_dict()))
    assert any("failed" in text for text in texts)
    _assert_clean(texts)


@pytest.mark.parametrize(
    "url",
    [
        f"redis://user:pw-{MARKER}@127.0.0.1:notaport/0",
        f"redis://user:pw-{MARKER}@127.0.0.1:0/0",
        f"redis://user:pw-{MARKER}@:6379/0",
        f"http://user:pw-{MARKER}@127.0.0.1:6379/0",
        f"user:pw-{MARKER}@127.0.0.1:6379",
        f"pw-{MARKER}",
    ],
    ids=["bad-port", "port-zero", "no-host", "bad-scheme", "no-scheme", "bare-password"],
)
def test_secrets_never_appear_in_configuration_errors(
    url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REDIS_URL", url)
    with pytest.raises(ConfigurationError) as caught:
        Cache.from_settings()
    assert "REDIS_URL" in str(caught.value)
    _assert_clean(_exception_texts(caught.value) + _record_texts(caplog.records))
