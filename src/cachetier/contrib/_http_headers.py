"""HTTP caching's header rules: Cache-Control directives, ETags, and which headers are kept.

RFC 9111 and RFC 9110 as `cachetier.contrib._http` applies them; nothing here knows the cache.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Final

__all__ = (
    "NOT_MODIFIED_HEADERS",
    "NOT_STORED",
    "REFUSING_DIRECTIVES",
    "body_etag",
    "etag_matches",
    "parse_directives",
    "parse_tokens",
    "request_directives",
    "unique_names",
)

# Headers that describe one transfer or one moment, not the representation; never stored.
NOT_STORED: Final = frozenset(
    {
        "age",
        "connection",
        "content-length",
        "date",
        "keep-alive",
        "proxy-authenticate",
        "proxy-connection",
        "server",
        "set-cookie",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "x-cache",
    }
)
# Headers a 304 repeats from the 200 it stands for (RFC 9110 section 15.4.5).
NOT_MODIFIED_HEADERS: Final = frozenset(
    {"cache-control", "content-location", "etag", "expires", "vary", "age", "x-cache"}
)
REFUSING_DIRECTIVES: Final = frozenset({"no-store", "no-cache", "private"})


def request_directives(headers: Mapping[str, str]) -> dict[str, str]:
    """Returns the request's ``Cache-Control`` directives, lower-case, each with its argument."""
    value = headers.get("cache-control")
    if value is None:
        # HTTP/1.0 clients say no-cache this way; RFC 9111 section 5.4 has it ignored when
        # Cache-Control is present.
        pragma = headers.get("pragma", "")
        return {"no-cache": ""} if "no-cache" in parse_tokens(pragma) else {}
    return parse_directives(value)


def parse_directives(value: str) -> dict[str, str]:
    """Returns the directives of a ``Cache-Control`` value, lower-case, each with its argument."""
    directives: dict[str, str] = {}
    for item in value.split(","):
        name, _, argument = item.strip().partition("=")
        if name:
            directives[name.strip().lower()] = argument.strip().strip('"')
    return directives


def parse_tokens(value: str) -> set[str]:
    """Returns the lower-case tokens of a comma-separated header value (``Vary``, ``Pragma``)."""
    return {item.strip().lower() for item in value.split(",") if item.strip()}


def etag_matches(if_none_match: str, etag: str) -> bool:
    """Whether ``If-None-Match`` matches ``etag`` by the weak comparison RFC 9110 prescribes."""
    if if_none_match.strip() == "*":
        return True
    wanted = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == wanted for tag in if_none_match.split(","))


def body_etag(body: bytes) -> str:
    """Returns a strong ETag for ``body``: its quoted BLAKE2b-128 digest, stable across processes."""
    return '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'


def unique_names(names: Iterable[str]) -> list[str]:
    """Returns ``names`` without repeats, ignoring case, each where it first appears."""
    seen: set[str] = set()
    result: list[str] = []
    for name in names:
        if name.lower() not in seen:
            seen.add(name.lower())
            result.append(name)
    return result
