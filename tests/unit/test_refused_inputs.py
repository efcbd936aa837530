"""Bad settings, URLs, TTLs and arguments are refused early, with errors naming what is at fault."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from cachetier import CacheSettings, ConfigurationError
from cachetier.backends.redis import RedisBackend

PASSWORD_PIECES = ("Zq9-pa", "ss-x7")


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Hides the developer's variables and ``.env`` files: each test starts from defaults."""
    for name in list(os.environ):
        upper = name.upper()
        if upper in {"REDIS_URL", "REDIS_ENABLED"} or upper.startswith("CACHE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


# --- settings errors name the environment variable -------------------------------------------


@pytest.mark.parametrize(
    ("variable", "text"),
    [
        ("CACHE_BACKEND", "mongodb"),
        ("CACHE_DEFAULT_TTL", "soon"),
        ("CACHE_RETRIES", "many"),
        ("REDIS_ENABLED", "perhaps"),
        ("REDIS_URL", "http://h:6379"),
        ("CACHE_NAMESPACE", "a b"),
    ],
)
def test_plain_construction_error_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, text: str
) -> None:
    monkeypatch.setenv(variable, text)
    with pytest.raises(ValidationError) as info:
        CacheSettings()
    assert [error["loc"][0] for error in info.value.errors()] == [variable]
    assert variable in str(info.value)


def test_plain_construction_error_names_every_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CACHE_BACKEND", "mongodb")
    monkeypatch.setenv("CACHE_DEFAULT_TTL", "soon")
    with pytest.raises(ValidationError) as info:
        CacheSettings()
    message = str(info.value)
    assert "CACHE_BACKEND" in message
    assert "CACHE_DEFAULT_TTL" in message
    assert "\nbackend\n" not in message
    assert "\ndefault_ttl\n" not in message


def test_plain_construction_error_hides_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "http://app:pw-S3CRET-42@h:6379/0")
    with pytest.raises(ValidationError) as info:
        CacheSettings()
    assert "S3CRET" not in str(info.value)
    assert "S3CRET" not in repr(info.value.errors())
    assert info.value.__context__ is None


def test_keyword_errors_name_the_variable_too() -> None:
    with pytest.raises(ValidationError, match="CACHE_DEFAULT_TTL"):
        CacheSettings(default_ttl="soon")


# --- a password holding '/', '?' or '#' never shows ------------------------------------------


@pytest.mark.parametrize("char", ["/", "?", "#"])
def test_from_url_error_hides_a_password_with_reserved_characters(char: str) -> None:
    url = f"redis://:{PASSWORD_PIECES[0]}{char}{PASSWORD_PIECES[1]}@127.0.0.1:6379/0"
    with pytest.raises(ConfigurationError, match="percent-encoded") as info:
        RedisBackend.from_url(url)
    assert not any(piece in str(info.value) for piece in PASSWORD_PIECES)


@pytest.mark.parametrize("char", ["/", "?", "#"])
@pytest.mark.parametrize("scheme", ["redis", "redis+cluster", "redis+sentinel"])
def test_settings_error_hides_a_password_with_reserved_characters(char: str, scheme: str) -> None:
    url = f"{scheme}://:{PASSWORD_PIECES[0]}{char}{PASSWORD_PIECES[1]}@h:6379/mymaster"
    with pytest.raises(ConfigurationError, match=r"REDIS_URL: .*percent-encoded") as info:
        CacheSettings.load(redis_url=url)
    assert not any(piece in str(info.value) for piece in PASSWORD_PIECES)


def test_from_url_accepts_a_percent_encoded_password() -> None:
    backend = RedisBackend.from_url("redis://:Zq9-pa%2Fss-x7@127.0.0.1:6379/0")
    assert "Zq9" not in repr(backend)
