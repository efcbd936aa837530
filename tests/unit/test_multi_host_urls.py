"""Sentinel and Cluster URLs: what `RedisBackend.from_url` and `CacheSettings` accept; no server."""

from __future__ import annotations

import pytest

from cachetier import BackendError, Cache, CacheSettings, ConfigurationError
from cachetier._settings import build_backend, startup_log_line
from cachetier.backends import RedisBackend
from cachetier.backends._protocol import GuardedBackend, LockingBackend, ServerInfoBackend

from ..servers import closed_port

PASSWORD = "pw-S3CRET-multi"


@pytest.mark.parametrize(
    "url",
    [
        f"redis+cluster://app:{PASSWORD}@10.0.0.1:7000,10.0.0.2:7001,10.0.0.3",
        f"rediss+cluster://:{PASSWORD}@cache.example.com:7000",
        "redis+cluster://[::1]:7000,[::1]:7001",
        "redis+cluster://10.0.0.1:7000/0",
    ],
)
def test_cluster_url_gives_a_cluster_backend_without_io(url: str) -> None:
    backend = RedisBackend.from_url(url)
    assert backend.kind == "redis-cluster"
    assert type(backend).__name__ == "RedisClusterBackend"
    assert PASSWORD not in repr(backend)
    assert repr(backend).startswith("RedisClusterBackend(url=")
    # Everything a RedisBackend offers the cache, a cluster backend offers too.
    assert isinstance(backend, GuardedBackend)
    assert isinstance(backend, LockingBackend)
    assert isinstance(backend, ServerInfoBackend)


@pytest.mark.parametrize(
    "url",
    [
        f"redis+sentinel://app:{PASSWORD}@10.0.0.1:26379,10.0.0.2:26380/mymaster",
        f"redis+sentinel://:{PASSWORD}@10.0.0.1/mymaster/2",
        "redis+sentinel://10.0.0.1,10.0.0.2/mymaster?health_check_interval=5",
    ],
)
def test_sentinel_url_gives_a_redis_backend_without_io(url: str) -> None:
    backend = RedisBackend.from_url(url)
    assert isinstance(backend, RedisBackend)
    assert backend.kind == "redis"
    assert PASSWORD not in repr(backend)
    assert "mymaster" in repr(backend)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis+cluster://10.0.0.1:7000/3", "only database 0"),
        ("redis+cluster://10.0.0.1:7000?db=3", "must be 0"),
        ("redis+cluster://10.0.0.1:7000?no_such_option=1", "no_such_option"),
        ("redis+cluster://10.0.0.1:0", "port must be a number"),
        ("redis+cluster://10.0.0.1:port", "port must be a number"),
        ("redis+cluster://10.0.0.1:7000,,10.0.0.2", "every host must be given"),
        ("redis+sentinel://10.0.0.1:26379", "must name the service"),
        ("redis+sentinel://10.0.0.1:26379/0", "must name the service"),
        ("redis+sentinel://10.0.0.1:26379/mymaster/zero", "must be a number"),
        ("rediss+sentinel://10.0.0.1:26379/mymaster", "not supported"),
    ],
)
def test_malformed_multi_host_url_is_refused_without_the_password(url: str, expected: str) -> None:
    url = url.replace("://", f"://app:{PASSWORD}@", 1)
    with pytest.raises(ConfigurationError) as info:
        RedisBackend.from_url(url)
    assert expected in str(info.value)
    assert PASSWORD not in str(info.value)
    assert info.value.__cause__ is None


def test_tls_arguments_apply_to_tls_cluster_urls_only() -> None:
    backend = RedisBackend.from_url("rediss+cluster://10.0.0.1:7000", ssl_cert_reqs="none")
    assert backend.kind == "redis-cluster"
    with pytest.raises(ConfigurationError, match="rediss"):
        RedisBackend.from_url("redis+cluster://10.0.0.1:7000", ssl_cert_reqs="none")
    with pytest.raises(ConfigurationError, match="rediss"):
        RedisBackend.from_url("redis+sentinel://10.0.0.1/mymaster", ssl_cert_reqs="none")


async def test_cluster_backend_fails_fast_when_no_node_answers() -> None:
    url = f"redis+cluster://app:{PASSWORD}@127.0.0.1:{closed_port()}"
    async with Cache(RedisBackend.from_url(url), namespace="down") as cache:
        assert await cache.get("k", default="fallback") == "fallback"
    backend = RedisBackend.from_url(url)
    with pytest.raises(BackendError, match="could be reached") as info:
        await backend.get("k")
    assert PASSWORD not in str(info.value)
    await backend.aclose()


# -- settings ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        (f"redis+sentinel://:{PASSWORD}@10.0.0.1:26379,10.0.0.2:26379/mymaster", "redis"),
        ("redis+sentinel://10.0.0.1/mymaster/1", "redis"),
        (f"redis+cluster://app:{PASSWORD}@10.0.0.1:7000,10.0.0.2:7001", "redis-cluster"),
        ("rediss+cluster://cache.example.com:7000", "redis-cluster"),
    ],
)
def test_settings_accept_sentinel_and_cluster_urls(
    monkeypatch: pytest.MonkeyPatch, url: str, kind: str
) -> None:
    monkeypatch.setenv("REDIS_URL", url)
    settings = CacheSettings.load()
    backend = build_backend(settings)
    assert backend.kind == kind
    line = startup_log_line(settings, backend)
    assert "url=redis" in line
    assert PASSWORD not in line
    assert PASSWORD not in repr(settings)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis+sentinel://10.0.0.1:26379", "REDIS_URL: redis+sentinel:// URL must name the service"),
        ("redis+sentinel://10.0.0.1:26379/0", "REDIS_URL: redis+sentinel:// URL must name the service"),
        ("redis+sentinel://10.0.0.1/mymaster/x", "REDIS_URL: database must be a number"),
        ("redis+cluster://10.0.0.1:7000/2", "REDIS_URL: redis+cluster:// URL must not name a database"),
        ("redis+cluster://10.0.0.1:99999", "REDIS_URL: redis+cluster:// URL is malformed: a port"),
        ("rediss+sentinel://10.0.0.1/mymaster", 'REDIS_URL: scheme must be redis://'),
    ],
)  # fmt: skip
def test_settings_name_the_variable_for_a_malformed_multi_host_url(
    monkeypatch: pytest.MonkeyPatch, url: str, expected: str
) -> None:
    monkeypatch.setenv("REDIS_URL", url.replace("://", f"://app:{PASSWORD}@", 1))
    with pytest.raises(ConfigurationError) as info:
        CacheSettings.load()
    assert expected in str(info.value)
    assert PASSWORD not in str(info.value)
