"""`CacheSettings`, the one reader of the environment, and `build_backend`, which turns it into a backend.

Environment names are ``REDIS_URL`` and ``REDIS_ENABLED`` (unprefixed, as existing deployments
set them) and ``CACHE_*`` for everything else. ``.env`` and then ``.env.local`` in the working
directory are read as well; real environment variables win over both files, and keyword
arguments win over everything.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, get_args
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError
from pydantic_core.core_schema import ErrorType
from pydantic_settings import BaseSettings, SettingsConfigDict
from typing_extensions import Self, assert_never

from ._core.breaker import MAX_COOLDOWN
from ._errors import ConfigurationError
from ._redact import redact_url
from ._ttl import MAX_TTL
from ._types import BackendName

# A plain parser importing no redis-py; backends themselves are imported where they are built.
from .backends.redis.urls import MAX_RETRIES, misplaced_at_problem, split_hosts

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from pydantic_core import ErrorDetails

    from .backends import Backend

__all__ = (
    "BackendChoice",
    "CacheSettings",
    "build_backend",
    "describe_backend_choice",
    "startup_log_line",
)

_logger: Final = logging.getLogger("cachetier")

_MIB: Final = 1024 * 1024
_ENV_PREFIX: Final = "CACHE_"
_REDIS_SCHEMES: Final = ("redis", "rediss", "unix")
# URLs naming several hosts, comma separated: Sentinels, or startup nodes of a cluster.
_MULTI_HOST_SCHEMES: Final = ("redis+sentinel", "redis+cluster", "rediss+cluster")
_SCHEME_SHAPE: Final = re.compile(r"[a-z][a-z0-9+.\-]{0,19}")
_WHITESPACE: Final = re.compile(r"\s")


class CacheSettings(BaseSettings):
    """Cache configuration, read from the environment, ``.env`` and ``.env.local`` at construction.

    Keyword arguments take the field names (``CacheSettings(redis_url=..., backend="redis")``)
    and win over the environment. Plain construction raises pydantic's ``ValidationError`` on bad
    input, located at the environment variable (``CACHE_DEFAULT_TTL``, not ``default_ttl``) and
    with secrets redacted; `CacheSettings.load` raises `ConfigurationError` naming the
    environment variable, and is what `Cache.from_settings` uses. Instances are immutable, and their ``repr`` shows
    ``REDIS_URL`` with its password replaced by ``***``.
    """

    model_config = SettingsConfigDict(
        env_prefix=_ENV_PREFIX,
        env_file=(".env", ".env.local"),
        env_file_encoding="utf-8",
        # ``REDIS_URL=`` (as docker-compose writes for an unset variable) means "not set",
        # not "invalid"; the same holds for every other variable.
        env_ignore_empty=True,
        extra="ignore",
        frozen=True,
    )

    # The two unprefixed names are aliases whose second choice is the field name, so keywords
    # work; matching is case-insensitive, so that choice reads no other variable. The other
    # fields get no alias (and ``populate_by_name`` stays off) because either would make
    # pydantic-settings read bare ``BACKEND``, ``NAMESPACE``, ``STRICT`` ... from the environment;
    # `__init__` maps their environment names to field names instead.
    redis_url: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("REDIS_URL", "redis_url"),
        description=(
            "redis://, rediss:// (TLS) or unix:// URL of the Redis server, redis+sentinel:// of "
            "its Sentinels, or redis+cluster:// (rediss+cluster://) of a cluster; may hold a "
            "password."
        ),
    )
    redis_enabled: bool = Field(
        default=True,
        validation_alias=AliasChoices("REDIS_ENABLED", "redis_enabled"),
        description="false turns Redis, and under CACHE_BACKEND=auto all caching, off.",
    )
    backend: BackendName = Field(
        default="auto", description="auto, redis, memory or null; see `describe_backend_choice`."
    )
    namespace: str = Field(default="cache", description="First part of every key.")
    version: str = Field(default="v1", description="Second part of every key.")
    default_ttl: float = Field(
        default=3600.0,
        gt=0,
        le=MAX_TTL,
        allow_inf_nan=False,
        description="Seconds, when a call gives none; at most ten years.",
    )
    connect_timeout: float = Field(
        default=0.25, gt=0, allow_inf_nan=False, description="Seconds to open a connection."
    )
    command_timeout: float = Field(
        default=0.1, gt=0, allow_inf_nan=False, description="Seconds for one backend command."
    )
    max_connections: int = Field(default=256, ge=1, description="Size of the Redis pool.")
    retries: int = Field(
        default=0,
        ge=0,
        le=MAX_RETRIES,
        description=(
            f"Retries after a Redis connection error (at least one is made), at most {MAX_RETRIES}."
        ),
    )
    breaker_failures: int = Field(
        default=5, ge=1, description="Consecutive backend failures that open the circuit breaker."
    )
    breaker_cooldown: float = Field(
        default=5.0,
        gt=0,
        le=MAX_COOLDOWN,
        allow_inf_nan=False,
        description="Seconds the breaker stays open before one probe call.",
    )
    memory_max_entries: int = Field(default=10_000, ge=1, description="Memory backend bound.")
    memory_max_bytes: int = Field(default=64 * _MIB, ge=1, description="Memory backend bound.")
    max_value_bytes: int = Field(
        default=_MIB, ge=1, description="Serialized values larger than this are not cached."
    )
    signing_key: SecretStr | None = Field(
        default=None,
        description="Secret (16+ bytes) to sign entries with HMAC-SHA256; unsigned entries are refused.",
    )
    strict: bool = Field(default=False, description="Raise `BackendError` instead of failing open.")
    key_max_length: int = Field(
        default=200,
        ge=64,  # KeyBuilder's floor: room for the namespace, the version and a digest
        description="Longer keys are shortened with a stable hash.",
    )
    version_check_interval: float = Field(
        default=0.25,
        ge=0,
        allow_inf_nan=False,
        description="Seconds between reads that also fetch the generation (bump_version).",
    )
    latency_stats: bool = Field(
        default=True, description="Time backend calls for the latency percentiles of stats."
    )
    local_tier: bool = Field(
        default=False,
        description="Keep hot values in process memory too, kept coherent through Redis.",
    )
    local_max_entries: int = Field(default=10_000, ge=1, description="Local tier bound.")
    local_ttl: float = Field(
        default=60.0,
        gt=0,
        le=MAX_TTL,
        allow_inf_nan=False,
        description="Seconds a value stays in the local tier at most.",
    )

    @field_validator("redis_url", mode="before")
    @classmethod
    def _check_redis_url(cls, value: object) -> object:
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if not isinstance(value, str):
            return value  # None, or a wrong type that pydantic reports without the value
        value = value.strip()
        if not value:
            return None
        problem = _redis_url_problem(value)
        if problem is not None:
            raise PydanticCustomError("redis_url", problem)
        return value

    @field_validator("namespace", "version")
    @classmethod
    def _check_key_part(cls, value: str) -> str:
        if not value:
            raise PydanticCustomError("key_part", "must not be empty")
        if _WHITESPACE.search(value):
            raise PydanticCustomError("key_part", "must not contain whitespace")
        return value

    @model_validator(mode="after")
    def _check_redis_choice(self) -> Self:
        if self.backend == "redis" and self.redis_enabled and self.redis_url is None:
            raise PydanticCustomError(
                "redis_url_missing",
                "REDIS_URL: must be set when CACHE_BACKEND=redis "
                "(or choose CACHE_BACKEND=auto, memory or null)",
            )
        return self

    def __init__(self, **values: Any) -> None:
        """Reads the environment and ``.env`` files, with ``values`` on top.

        ``values`` are keyed by field name (``default_ttl=60``) or environment name
        (``CACHE_DEFAULT_TTL=60``); pydantic-settings' own ``_env_file=`` and similar options
        pass through.

        Raises:
            TypeError: A keyword names no setting (rather than being silently ignored, as
                unknown keys in the environment and ``.env`` files are).
            pydantic.ValidationError: A value is malformed; each error's ``loc`` is the
                environment variable, and secrets are redacted from its inputs. `load` turns
                this into a `ConfigurationError` message.
        """
        unknown = _unknown_names(values)
        if unknown:
            raise TypeError(_unknown_message(unknown))
        # Environment names are mapped here rather than declared as aliases, because an alias
        # would also widen what is read from the environment (see the comment on the fields).
        known = _names_to_fields()
        try:
            super().__init__(
                **{known.get(name.lower(), name): value for name, value in values.items()}
            )
        except ValidationError as exc:
            renamed = _with_variable_names(exc)
        else:
            return
        # Raised outside the except block so that the original error, which names fields and
        # quotes REDIS_URL with its password, is not chained as __context__.
        raise renamed

    @classmethod
    def load(cls, **overrides: Any) -> Self:
        """Returns settings read from the environment and ``.env`` files, with ``overrides`` on top.

        ``overrides`` are keyed by field name (``default_ttl=60``) or environment name
        (``CACHE_DEFAULT_TTL=60``).

        Raises:
            ConfigurationError: A value is malformed or an override names no setting; the
                message names the environment variable and never contains a password.
        """
        unknown = _unknown_names(overrides)
        if unknown:
            raise ConfigurationError(_unknown_message(unknown))
        try:
            return cls(**overrides)
        except ValidationError as exc:
            errors = exc.errors(include_url=False)
        # Raised outside the except block so that pydantic's error, whose text includes every
        # input (REDIS_URL with its password among them), is not chained as __context__.
        raise ConfigurationError(_describe_errors(errors))

    @property
    def redacted_url(self) -> str | None:
        """``REDIS_URL`` with any password replaced by ``***``, or ``None`` when it is not set."""
        if self.redis_url is None:
            return None
        return redact_url(self.redis_url.get_secret_value())

    def backend_choice(self) -> BackendChoice:
        """Returns the backend `Cache.from_settings` builds from these settings, and why; no I/O.

        The reason is worded for a log line, as in ``REDIS_URL is not set: process-local memory
        cache``; see `describe_backend_choice` for the rule. Added in 0.2.

        Raises:
            ConfigurationError: ``CACHE_BACKEND=redis`` without ``REDIS_URL``.
        """
        return describe_backend_choice(self)

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # Shows the host and database, which a masked SecretStr would hide, but not the password.
        for name, value in super().__repr_args__():
            yield (name, self.redacted_url) if name == "redis_url" else (name, value)


@dataclass(frozen=True, slots=True)
class BackendChoice:
    """Which backend settings lead to, and why, in words fit for a log line
    (`CacheSettings.backend_choice`). Added in 0.2."""

    kind: Literal["redis", "memory", "null"]
    reason: str


def describe_backend_choice(settings: CacheSettings) -> BackendChoice:
    """Returns the backend `build_backend` makes from ``settings``, with the reason; does no I/O.

    ``REDIS_ENABLED=false`` is the kill switch the application's operators already use: it turns
    off caching under ``CACHE_BACKEND=auto`` and Redis under ``CACHE_BACKEND=redis``. Under
    ``auto`` a set ``REDIS_URL`` selects Redis, and otherwise the process-local memory backend.
    """
    if settings.backend == "null":
        return BackendChoice("null", "CACHE_BACKEND=null: caching is off")
    if settings.backend == "memory":
        return BackendChoice("memory", "CACHE_BACKEND=memory: process-local memory cache")
    if not settings.redis_enabled:
        return BackendChoice(
            "null", f"REDIS_ENABLED=false with CACHE_BACKEND={settings.backend}: caching is off"
        )
    if settings.redis_url is not None:
        reason = "CACHE_BACKEND=redis" if settings.backend == "redis" else "REDIS_URL is set"
        return BackendChoice("redis", reason)
    if settings.backend == "redis":
        raise ConfigurationError("REDIS_URL: must be set when CACHE_BACKEND=redis")
    return BackendChoice("memory", "REDIS_URL is not set: process-local memory cache")


def build_backend(settings: CacheSettings) -> Backend:
    """Returns the backend ``settings`` describe (see `describe_backend_choice`); does no I/O.

    Under ``CACHE_BACKEND=auto`` without ``REDIS_URL``, logs one INFO line on the ``cachetier``
    logger saying the cache is process-local.

    Raises:
        ConfigurationError: ``CACHE_BACKEND=redis`` without ``REDIS_URL``.
    """
    choice = describe_backend_choice(settings)
    # Backends are imported where they are built: `cachetier.backends` imports redis-py and
    # the modules that import this one, so a top-level import would be a cycle.
    match choice.kind:
        case "redis":
            from .backends.redis import RedisBackend

            if settings.redis_url is None:  # pragma: no cover - describe_backend_choice raised
                raise ConfigurationError("REDIS_URL: must be set when CACHE_BACKEND=redis")
            return RedisBackend.from_url(
                settings.redis_url.get_secret_value(),
                connect_timeout=settings.connect_timeout,
                command_timeout=settings.command_timeout,
                max_connections=settings.max_connections,
                retries=settings.retries,
            )
        case "memory":
            from .backends.memory import MemoryBackend

            if settings.backend == "auto":
                _logger.info(
                    "cachetier: REDIS_URL is not set, so the cache is in process memory: "
                    "process-local, not shared between processes. Set REDIS_URL=redis://host:6379/0 "
                    "to share it through Redis, or CACHE_BACKEND=memory to silence this line."
                )
            return MemoryBackend(
                max_entries=settings.memory_max_entries, max_bytes=settings.memory_max_bytes
            )
        case "null":
            from .backends.null import NullBackend

            return NullBackend()
        case _:  # pragma: no cover - exhaustive over the literal
            assert_never(choice.kind)


def startup_log_line(settings: CacheSettings, backend: Backend) -> str:
    """Returns the one-line start-up summary: backend, redacted URL, default TTL, namespace, version.

    The reason for the backend is added when ``backend`` is the one ``settings`` lead to.
    """
    parts = [f"backend={backend.kind}"]
    if backend.kind in ("redis", "redis-cluster") and settings.redacted_url is not None:
        parts.append(f"url={settings.redacted_url}")
    parts += [
        f"default_ttl={settings.default_ttl:g}s",
        f"namespace={settings.namespace}",
        f"version={settings.version}",
    ]
    line = "cachetier: cache initialized: " + " ".join(parts)
    try:
        choice = describe_backend_choice(settings)
    except ConfigurationError:
        return line
    return f"{line} ({choice.reason})" if choice.kind == backend.kind else line


def _redis_url_problem(url: str) -> str | None:
    """Returns what is wrong with ``url`` as a Redis URL, or ``None``; never quotes the URL."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "is not a valid URL"
    scheme = parts.scheme.lower()
    misplaced = misplaced_at_problem(url)
    if misplaced is not None:
        return misplaced
    if scheme in _MULTI_HOST_SCHEMES:
        return _multi_host_url_problem(scheme, url)
    if scheme not in _REDIS_SCHEMES:
        # A URL without "scheme://" parses its first segment as the scheme; that may be a
        # user name or worse, so only a short scheme-shaped word is quoted back.
        got = f'"{scheme}"' if "://" in url and _SCHEME_SHAPE.fullmatch(scheme) else "no scheme"
        return (
            f"scheme must be redis://, rediss:// or unix:// (got {got}); Sentinel and Cluster "
            "URLs use redis+sentinel://, redis+cluster:// or rediss+cluster://"
        )
    if scheme == "unix":
        if not parts.path.strip("/"):
            return "unix:// URL must give the socket path, as in unix:///run/redis.sock"
        return None
    try:
        port = parts.port
    except ValueError:
        return "port must be a number from 1 to 65535"
    if not parts.hostname:
        return f"{scheme}:// URL must give a host, as in {scheme}://localhost:6379/0"
    if port == 0:
        return "port must be a number from 1 to 65535"
    database = parts.path.strip("/")
    if database and not database.isdigit():
        return "database must be a number after the host, as in /0"
    return None


def _multi_host_url_problem(scheme: str, url: str) -> str | None:
    """Returns what is wrong with a Sentinel or Cluster URL, or ``None``; never quotes it."""
    example = "host:26379/mymaster" if scheme == "redis+sentinel" else "host1:6379,host2:6379"
    try:
        hosts = split_hosts(url, base_scheme="redis", default_port=0)
    except ValueError as exc:
        return f"{scheme}:// URL is malformed: {exc}, as in {scheme}://{example}"
    path = hosts.path.strip("/")
    if scheme == "redis+sentinel":
        service, _, database = path.partition("/")
        if not service or service.isdigit():
            # "/0" alone is a database written where the service belongs.
            return (
                f"{scheme}:// URL must name the service after the hosts, as in {scheme}://{example}"
            )
        if database and not database.isdigit():
            return "database must be a number after the service, as in /mymaster/0"
    elif path not in ("", "0"):
        return f"{scheme}:// URL must not name a database: a cluster has only database 0"
    return None


def _unknown_names(values: Mapping[str, object]) -> list[str]:
    """Returns the keys of ``values`` that name no setting, leaving pydantic's ``_options`` be."""
    known = _names_to_fields()
    return sorted(name for name in values if name.lower() not in known and name[:1] != "_")


def _unknown_message(unknown: list[str]) -> str:
    return (
        f"unknown cache setting {', '.join(map(repr, unknown))}; "
        f"known settings are {', '.join(CacheSettings.model_fields)}"
    )


def _names_to_fields() -> dict[str, str]:
    """Maps lower-cased field names and environment names to field names."""
    names: dict[str, str] = {}
    for field in CacheSettings.model_fields:
        names[field] = field
        names[_env_name(field).lower()] = field
    return names


def _env_name(field: str) -> str:
    """Returns the environment variable that sets ``field``."""
    alias = CacheSettings.model_fields[field].validation_alias
    if isinstance(alias, AliasChoices) and isinstance(alias.choices[0], str):
        return alias.choices[0]
    return f"{_ENV_PREFIX}{field.upper()}"


_SECRET_FIELDS: Final = frozenset({"redis_url", "signing_key"})
_PYDANTIC_ERROR_TYPES: Final = frozenset(get_args(ErrorType))


def _with_variable_names(exc: ValidationError) -> ValidationError:
    """Returns ``exc`` with each error located at its environment variable, secrets redacted."""
    names = _names_to_fields()
    rebuilt: list[InitErrorDetails] = []
    for error in exc.errors(include_url=False):
        loc = error["loc"]
        field = names.get(str(loc[0]).lower()) if loc else None
        value = error["input"]
        if field in _SECRET_FIELDS:
            # The URL keeps its host, which helps find the mistake; the signing key shows nothing.
            if field == "redis_url" and isinstance(value, str):
                value = redact_url(value)
            elif value is not None:
                value = "**********"
        kind = error["type"]
        context = error.get("ctx")
        details: InitErrorDetails = {
            "type": kind
            if kind in _PYDANTIC_ERROR_TYPES
            else PydanticCustomError(kind, error["msg"]),
            "loc": (_env_name(field), *loc[1:]) if field is not None else loc,
            "input": value,
        }
        if context is not None and kind in _PYDANTIC_ERROR_TYPES:
            details["ctx"] = context
        rebuilt.append(details)
    return ValidationError.from_exception_data(exc.title, rebuilt)


# Pydantic messages reworded as the end of "VARIABLE: ...", with the bound where there is one.
_MESSAGES: Final[Mapping[str, str]] = {
    "greater_than": "must be greater than {gt}",
    "greater_than_equal": "must be at least {ge}",
    "less_than_equal": "must be at most {le}",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "int_type": "must be a whole number",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "finite_number": "must be a finite number",
    "bool_parsing": "must be true or false (or 1/0, yes/no, on/off)",
    "bool_type": "must be true or false (or 1/0, yes/no, on/off)",
    "literal_error": "must be one of {expected}",
    "string_type": "must be a string",
}


def _describe_errors(errors: list[ErrorDetails]) -> str:
    """Returns one message for pydantic ``errors``, each part naming its environment variable."""
    names = _names_to_fields()
    lines: list[str] = []
    for error in errors:
        # Bounds print as written: "greater than 0", not pydantic's float "0.0", and
        # "at most 315360000", not "3.1536e+08".
        context = {
            name: _bound_text(value) if isinstance(value, float) else value
            for name, value in error.get("ctx", {}).items()
        }
        template = _MESSAGES.get(error["type"])
        message = template.format(**context) if template is not None else error["msg"]
        if not error["loc"]:
            lines.append(message)  # model-level errors name their variables themselves
            continue
        field = names.get(str(error["loc"][0]).lower())
        variable = _env_name(field) if field is not None else str(error["loc"][0])
        # Inputs are quoted back to help find the typo, except REDIS_URL's, which may hold a
        # password; its own messages say what is wrong without quoting it.
        if field != "redis_url":
            message += _quoted_input(error["input"])
        lines.append(f"{variable}: {message}")
    if len(lines) == 1:
        return lines[0]
    return f"{len(lines)} invalid cache settings: " + "; ".join(lines)


def _bound_text(value: float) -> str:
    return str(int(value)) if value.is_integer() else f"{value:g}"


def _quoted_input(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return ""
    if isinstance(value, float) and not math.isfinite(value):
        return f" (got {value})"
    text = str(value)
    if "@" in text or "://" in text:
        return ""  # looks like a URL or credentials pasted into the wrong variable
    if len(text) > 40:
        text = text[:37] + "..."
    return f' (got "{text}")'
