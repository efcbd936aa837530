"""`compile_glob` matches exactly what Redis's own glob matches (checked against a real server)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cachetier._glob import compile_glob, glob_escape

PATTERN_ALPHABET = "ab-^*?[]\\"
TEXT_ALPHABET = "ab-^*?[]\\"


@pytest.fixture(scope="module")
def server(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.mark.redis
@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.text(PATTERN_ALPHABET, max_size=7), st.text(TEXT_ALPHABET, max_size=5))
def test_compile_glob_agrees_with_redis(server: redis.Redis, pattern: str, text: str) -> None:
    prefix = f"glob-{uuid.uuid4().hex}:"
    key = prefix + text
    server.set(key, b"1", px=10_000)
    try:
        redis_matches = bool(
            server.scan(0, match=glob_escape(prefix) + pattern, count=10_000_000)[1]
        )
    finally:
        server.delete(key)
    assert (compile_glob(pattern).fullmatch(text) is not None) == redis_matches, (pattern, text)


@given(st.text(max_size=20), st.text(max_size=20))
def test_escaped_text_matches_only_itself(literal: str, other: str) -> None:
    assert (compile_glob(glob_escape(literal)).fullmatch(other) is not None) == (literal == other)
