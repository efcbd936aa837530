"""The HTTP response-caching rules, once, for every framework layer in `cachetier.contrib`.

A framework layer (`cachetier.contrib.asgi`, `cachetier.contrib.fastapi`) turns its request into
a `RequestInfo`, hands `ResponseCache.serve` a zero-argument ``produce`` that runs the route and
returns a `CapturedResponse`, and sends back what ``serve`` returns. Everything else is here:

Keys. ``{key_prefix}:GET:{path}[?{query}][#v={digest}][#a={digest}]``. The path is
percent-encoded so that ``?``, ``#`` and the glob characters ``*?[]`` never appear raw in it;
query parameters are sorted by name (repeated names keep their order, which may carry meaning)
and re-encoded; ``#v=`` digests the values of the request headers the policy names in ``vary``;
``#a=`` digests the ``Authorization`` header (see below). So
``cache.delete_pattern("http:GET:/api/tasks*")`` reaches every cached response of that route,
and `invalidate_responses` does it for one exact path. HEAD requests read the GET entry and never
write one, since a HEAD response has no body to store.

Which responses are stored. Only a response whose status is in ``statuses`` (``{200}`` by
default), that sets no cookie, whose own ``Cache-Control`` says neither ``no-store``,
``no-cache`` nor ``private``, and whose ``Vary`` names only headers the key covers. Everything
else is sent as it came, with ``X-Cache: MISS``, and stored nowhere.

Authorization. A request carrying ``Authorization`` is keyed by a keyed BLAKE2b digest of that
header, so one user never receives another's response, and is answered with
``Cache-Control: private``. The digest key is ``credential_key`` or, by default, random per
process: then such entries are shared only within one process, and no stored key can be
matched against a guessed password offline. ``shared=True`` drops the digest: every user gets
the same entry (``Cache-Control: public``); use it only for routes whose response does not
depend on who asks.

Request directives (RFC 9111 section 5.2.1). ``no-store`` bypasses the cache: nothing is read
or written and the response says ``X-Cache: BYPASS``. ``no-cache``, ``max-age=0`` and, without
``Cache-Control``, ``Pragma: no-cache`` revalidate: the route runs and a storable response
replaces the entry. They do not turn caching off.

Validators. Every stored response carries a strong ``ETag``: the application's own, or the
quoted BLAKE2b digest of the body. A GET or HEAD whose ``If-None-Match`` matches it gets
``304 Not Modified`` without a body. Hits carry ``Age``; ``Cache-Control`` is the
application's if it set one, else ``policy.cache_control``, else ``public|private, max-age=TTL``.

``X-Cache`` says how each response was made: ``HIT`` (from the cache), ``SHARED`` (the route
ran once for this and concurrent identical requests, whose answer this one shares; it says
nothing about the cache, and is what a disabled cache gives too), ``MISS`` (the route ran),
``STALE`` (the route failed or answered 5xx and ``stale_if_error`` served the previous
response) or ``BYPASS``.

The header rules themselves (directives, ETag comparison, which headers are stored) are in
`cachetier.contrib._http_headers`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, cast, final
from urllib.parse import parse_qsl, quote, urlencode

from .._cache import Cache
from .._errors import ConfigurationError
from .._glob import glob_escape
from .._log import LOGGER
from .._policy import PolicyOptions
from .._ttl import TTLLike, to_seconds
from ._http_headers import (
    NOT_MODIFIED_HEADERS,
    NOT_STORED,
    REFUSING_DIRECTIVES,
    body_etag,
    etag_matches,
    parse_directives,
    parse_tokens,
    request_directives,
    unique_names,
)

__all__ = (
    "CapturedResponse",
    "RequestInfo",
    "ResponseCache",
    "ResponseCachePolicy",
    "XCache",
    "invalidate_responses",
    "response_key_prefix",
)

XCache = Literal["HIT", "SHARED", "MISS", "STALE", "BYPASS"]
"""The values of the ``X-Cache`` response header."""

_ENTRY_FORMAT: Final = 1
# Characters left as they are in a path: the RFC 3986 path characters, minus "?" and "#" (our
# separators) and minus every glob character, so a stored path never widens a pattern.
_PATH_SAFE: Final = "/:@!$&'()+,;=-._~"


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """The parts of a request that response caching reads; nothing request-scoped beyond them.

    ``headers`` maps lower-case names to values, repeated headers joined with ``", "``.
    """

    method: str
    path: str
    query_string: str
    headers: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class CapturedResponse:
    """A complete response: status, headers as ``(lower-case name, value)`` pairs, and body."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        """Returns the values of header ``name`` (lower-case) joined with ``", "``, or ``None``."""
        values = [value for key, value in self.headers if key == name]
        return ", ".join(values) if values else None

    def replace_headers(self, updates: Mapping[str, str]) -> CapturedResponse:
        """Returns a copy with each header in ``updates`` set to one value, replacing any others."""
        kept = tuple((key, value) for key, value in self.headers if key not in updates)
        return CapturedResponse(self.status, kept + tuple(updates.items()), self.body)


@dataclass(frozen=True, slots=True)
class ResponseCachePolicy:
    """How the responses of one route (or path prefix) are cached; see the module docstring.

    Args:
        ttl: seconds (or ``timedelta``) a response stays fresh; also its ``max-age``.
        vary: request headers whose values enter the key, e.g. ``("Accept-Language",)``; they
            are sent back in ``Vary``.
        statuses: response statuses that may be stored; only ``200`` by default, so errors,
            redirects and ``404`` are recomputed on every request.
        shared: store responses to requests carrying ``Authorization`` under one key for every
            user; by default each credential gets its own entries.
        cache_control: the ``Cache-Control`` sent with cacheable responses that set none;
            by default ``public, max-age=<ttl>`` (``private`` for per-credential entries).
        key_prefix: the first part of every key, for `Cache.delete_pattern`.
        stale_if_error: seconds past ``ttl`` a stored response is kept, to be served with
            ``X-Cache: STALE`` when the route raises or answers 5xx. An entry rewritten by a
            ``no-cache`` request gets no such window (`Cache.set` keeps none).
        credential_key: the secret (16+ bytes) that keys the digest of ``Authorization``; give
            every process the same one to share per-credential entries between them. Random
            per policy when omitted.

    Raises:
        ConfigurationError: an argument is out of range.
    """

    ttl: TTLLike
    vary: tuple[str, ...] = ()
    statuses: frozenset[int] = frozenset({200})
    shared: bool = False
    cache_control: str | None = None
    key_prefix: str = "http"
    stale_if_error: TTLLike | None = None
    credential_key: bytes | None = field(default=None, repr=False)
    _seconds: float = field(init=False, repr=False, compare=False)
    _digest_key: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        seconds = to_seconds(self.ttl, name="ttl")
        if seconds is None:  # pragma: no cover - to_seconds returns None only for None
            raise ConfigurationError("ttl must be given: it is also the response's max-age")
        to_seconds(self.stale_if_error, name="stale_if_error")
        # A bare string type-checks nowhere, but would be split into one-letter header names.
        if isinstance(cast("object", self.vary), str):
            raise ConfigurationError(
                f"vary must be a sequence of header names, not the string {self.vary!r}"
            )
        if not self.key_prefix or any(c in self.key_prefix for c in "*?[]\\"):
            raise ConfigurationError(
                f"key_prefix must be non-empty text without glob characters, got {self.key_prefix!r}"
            )
        if self.credential_key is not None and len(self.credential_key) < 16:
            raise ConfigurationError("credential_key must be at least 16 bytes long")
        # Frozen dataclass: derived fields are set once, here, through object.__setattr__.
        object.__setattr__(self, "vary", tuple(self.vary))
        object.__setattr__(self, "statuses", frozenset(self.statuses))
        object.__setattr__(self, "_seconds", seconds)
        # BLAKE2b takes keys of at most 64 bytes; a longer secret is hashed down to one.
        key = self.credential_key or secrets.token_bytes(32)
        object.__setattr__(
            self, "_digest_key", key if len(key) <= 64 else hashlib.sha512(key).digest()
        )

    @property
    def seconds(self) -> float:
        """``ttl`` in seconds."""
        return self._seconds

    def credential_digest(self, authorization: str) -> str:
        """Returns the keyed digest of an ``Authorization`` value that per-user keys carry."""
        return hashlib.blake2b(
            authorization.encode("latin-1", "replace"), key=self._digest_key, digest_size=16
        ).hexdigest()


def response_key_prefix(path: str, *, key_prefix: str = "http") -> str:
    """Returns the relative key every cached response of exactly ``path`` starts with.

    Followed by nothing, ``?`` (a query) or ``#`` (vary and credential digests).
    """
    return f"{key_prefix}:GET:{quote(path, safe=_PATH_SAFE)}"


async def invalidate_responses(
    cache: Cache, path: str, *, prefix: bool = False, key_prefix: str = "http"
) -> int:
    """Removes the cached responses of ``path`` (every query, vary and user); returns how many.

    With ``prefix=True`` every path that starts with ``path`` is reached as well
    (``"/api/tasks"`` reaches ``/api/tasks/7`` and ``/api/tasksets``).
    """
    # The encoded path holds no glob characters (see _PATH_SAFE), but escaping costs nothing
    # and keeps this safe should that set ever change.
    literal = glob_escape(response_key_prefix(path, key_prefix=key_prefix))
    if prefix:
        return await cache.delete_pattern(literal + "*")
    exact = await cache.delete(response_key_prefix(path, key_prefix=key_prefix))
    return exact + await cache.delete_pattern(literal + "[?#]*")


class _NotStorable(Exception):
    """Raised inside ``get_or_set``'s fetch so that a response that must not be stored is not."""


@final
class _Flight:
    """What this request's fetch did, to tell a hit from a miss from a stale answer."""

    __slots__ = ("error", "ran", "response", "saw_fetch")

    def __init__(self) -> None:
        self.ran = False
        # Set when another request's fetch of the same key ran while this one waited: an
        # answer this request did not fetch then came from that fetch, not from the cache.
        self.saw_fetch = False
        self.error: Exception | None = None
        self.response: CapturedResponse | None = None


@final
class ResponseCache:
    """Applies one `ResponseCachePolicy` to requests, reading and writing a `Cache`."""

    __slots__ = (
        "_cache",
        "_covered",
        "_fetching",
        "_options",
        "_policy",
        "_vary_names",
        "_waiting",
    )

    def __init__(self, cache: Cache, policy: ResponseCachePolicy) -> None:
        self._cache = cache
        self._policy = policy
        self._vary_names = tuple(sorted({name.lower() for name in policy.vary}))
        self._covered = frozenset(self._vary_names)
        # Per key, while any request for it is inside get_or_set: the requests waiting, and how
        # many fetches run. Entries go when the last request leaves, so both stay small.
        self._waiting: dict[str, set[_Flight]] = {}
        self._fetching: dict[str, int] = {}
        options: PolicyOptions = {}
        if policy.stale_if_error is not None:
            options["stale_if_error"] = policy.stale_if_error
        self._options = options

    @property
    def cache(self) -> Cache:
        """The cache responses are stored in."""
        return self._cache

    @property
    def policy(self) -> ResponseCachePolicy:
        """The rules applied."""
        return self._policy

    def key_for(self, request: RequestInfo) -> str:
        """Returns the relative cache key of ``request`` (HEAD shares the key of GET)."""
        key = response_key_prefix(request.path, key_prefix=self._policy.key_prefix)
        query = _canonical_query(request.query_string)
        if query:
            key += "?" + query
        if self._vary_names:
            values = "\n".join(
                f"{name}:{request.headers.get(name, '')}" for name in self._vary_names
            )
            key += (
                "#v="
                + hashlib.blake2b(values.encode("utf-8", "replace"), digest_size=12).hexdigest()
            )
        authorization = request.headers.get("authorization")
        if authorization is not None and not self._policy.shared:
            key += "#a=" + self._policy.credential_digest(authorization)
        return key

    async def serve(
        self,
        request: RequestInfo,
        produce: Callable[[], Awaitable[CapturedResponse]],
        *,
        is_final: Callable[[Exception], bool] = lambda exc: False,
    ) -> CapturedResponse:
        """Answers ``request`` from the cache, or by awaiting ``produce()`` and storing its result.

        ``produce`` runs the route; it is called at most once for this request, and not at all
        on a hit (it may run for a concurrent identical request instead). ``is_final`` tells
        which exceptions from ``produce`` are answers (a 404 raised as an exception) that a
        stale response must not hide. Other methods than GET and HEAD are produced untouched.
        """
        method = request.method.upper()
        if method not in ("GET", "HEAD"):
            return await produce()
        directives = request_directives(request.headers)
        if "no-store" in directives:
            response = await produce()
            return response.replace_headers({"x-cache": "BYPASS"})
        revalidate = "no-cache" in directives or directives.get("max-age") == "0"
        key = self.key_for(request)
        if method == "HEAD":
            return await self._serve_head(request, key, produce, revalidate=revalidate)
        if revalidate:
            response = await produce()
            if not self._storable(request, response):
                return response.replace_headers({"x-cache": "MISS"})
            stored = self._prepare(response)
            await self._cache.set(key, _encode(stored, time.time()), ttl=self._policy.seconds)
            return self._answer(request, stored, "MISS", age=None)

        flight = _Flight()

        async def fetch() -> dict[str, object]:
            flight.ran = True
            for other in self._waiting.get(key, ()):
                other.saw_fetch = True
            self._fetching[key] = self._fetching.get(key, 0) + 1
            try:
                response = await produce()
            except Exception as exc:
                flight.error = exc
                raise
            finally:
                if self._fetching[key] == 1:
                    del self._fetching[key]
                else:
                    self._fetching[key] -= 1
            if not self._storable(request, response):
                flight.response = response
                # The message reaches the log line of a stale-if-error answer.
                raise _NotStorable(f"the route answered {response.status}, not stored")
            return _encode(self._prepare(response), time.time())

        waiting = self._waiting.setdefault(key, set())
        waiting.add(flight)
        flight.saw_fetch = key in self._fetching
        try:
            entry = await self._cache.get_or_set(
                key, fetch, ttl=self._policy.seconds, **self._options
            )
        except _NotStorable:
            if flight.response is not None:
                return flight.response.replace_headers({"x-cache": "MISS"})
            # A concurrent identical request ran the route and got a response that must not be
            # stored (it may set that client's cookie): this request runs the route itself.
            response = await produce()
            return await self._uncached(request, key, response)
        finally:
            waiting.discard(flight)
            if not waiting:
                del self._waiting[key]
        if flight.ran and (flight.error is not None or flight.response is not None):
            # get_or_set served the stale entry because fetch raised. That is right for a
            # failure, wrong for a definitive answer (a 404, a response with a cookie).
            if flight.response is not None and flight.response.status < 500:
                return flight.response.replace_headers({"x-cache": "MISS"})
            if flight.error is not None and is_final(flight.error):
                raise flight.error
            outcome: XCache = "STALE"
        elif flight.ran:
            outcome = "MISS"
        else:
            outcome = "SHARED" if flight.saw_fetch else "HIT"
        decoded = _decode(entry)
        if decoded is None:
            LOGGER.warning("cachetier: dropping the unreadable cached response at %s", key)
            await self._cache.delete(key)
            response = flight.response if flight.ran and flight.response else await produce()
            return await self._uncached(request, key, response)
        stored, stored_at = decoded
        return self._answer(request, stored, outcome, age=None if outcome == "MISS" else stored_at)

    async def _serve_head(
        self,
        request: RequestInfo,
        key: str,
        produce: Callable[[], Awaitable[CapturedResponse]],
        *,
        revalidate: bool,
    ) -> CapturedResponse:
        if not revalidate:
            decoded = _decode(await self._cache.get(key))
            if decoded is not None:
                stored, stored_at = decoded
                answer = self._answer(request, stored, "HIT", age=stored_at)
                return CapturedResponse(answer.status, answer.headers, b"")
        response = await produce()
        return response.replace_headers({"x-cache": "MISS"})

    async def _uncached(
        self, request: RequestInfo, key: str, response: CapturedResponse
    ) -> CapturedResponse:
        """Finishes a response produced outside ``get_or_set``, storing it when allowed."""
        if not self._storable(request, response):
            return response.replace_headers({"x-cache": "MISS"})
        stored = self._prepare(response)
        await self._cache.set(key, _encode(stored, time.time()), ttl=self._policy.seconds)
        return self._answer(request, stored, "MISS", age=None)

    def _storable(self, request: RequestInfo, response: CapturedResponse) -> bool:
        if response.status not in self._policy.statuses:
            return False
        if response.header("set-cookie") is not None:
            return False
        cache_control = response.header("cache-control")
        if (
            cache_control is not None
            and REFUSING_DIRECTIVES & parse_directives(cache_control).keys()
        ):
            return False
        vary = response.header("vary")
        if vary is not None:
            names = parse_tokens(vary)
            covered = self._covered
            if not self._policy.shared:
                covered = covered | {"authorization"}
            if "*" in names or not names <= covered:
                return False
        return True

    def _prepare(self, response: CapturedResponse) -> CapturedResponse:
        """Returns the stored form of ``response``: per-transfer headers dropped, ETag added."""
        headers = tuple((name, value) for name, value in response.headers if name not in NOT_STORED)
        if not any(name == "etag" for name, _ in headers):
            headers += (("etag", body_etag(response.body)),)
        return CapturedResponse(response.status, headers, response.body)

    def _answer(
        self, request: RequestInfo, stored: CapturedResponse, outcome: XCache, *, age: float | None
    ) -> CapturedResponse:
        """Builds the response sent for a stored (or storable) one: 304 when the ETag matches."""
        per_credential = "authorization" in request.headers and not self._policy.shared
        updates: dict[str, str] = {"x-cache": outcome}
        if stored.header("cache-control") is None:
            updates["cache-control"] = self._policy.cache_control or (
                f"{'private' if per_credential else 'public'}, max-age={int(self._policy.seconds)}"
            )
        vary = list(self._policy.vary)
        if per_credential:
            vary.append("Authorization")
        app_vary = stored.header("vary")
        if app_vary is not None:
            vary += [name.strip() for name in app_vary.split(",") if name.strip()]
        if vary:
            updates["vary"] = ", ".join(unique_names(vary))
        if age is not None:
            updates["age"] = str(max(0, int(time.time() - age)))
        answer = stored.replace_headers(updates)
        etag = stored.header("etag")
        if_none_match = request.headers.get("if-none-match")
        if etag is not None and if_none_match is not None and etag_matches(if_none_match, etag):
            headers = tuple(
                (name, value) for name, value in answer.headers if name in NOT_MODIFIED_HEADERS
            )
            return CapturedResponse(304, headers, b"")
        return CapturedResponse(
            answer.status, (*answer.headers, ("content-length", str(len(answer.body)))), answer.body
        )


def _canonical_query(query_string: str) -> str:
    if not query_string:
        return ""
    pairs = parse_qsl(query_string, keep_blank_values=True)
    # Sorted by name only: a stable sort keeps repeated names (?tag=a&tag=b) in their order,
    # which an application may read as a list.
    pairs.sort(key=lambda pair: pair[0])
    return urlencode(pairs, quote_via=quote, safe="")


def _encode(response: CapturedResponse, stored_at: float) -> dict[str, object]:
    """Returns the entry stored for ``response``: a small dict any serializer can hold."""
    try:
        body: str = response.body.decode("utf-8")
        encoding = "utf-8"
    except UnicodeDecodeError:
        body = base64.b64encode(response.body).decode("ascii")
        encoding = "base64"
    return {
        "format": _ENTRY_FORMAT,
        "status": response.status,
        "headers": [[name, value] for name, value in response.headers],
        "body": body,
        "encoding": encoding,
        "stored_at": stored_at,
    }


def _decode(entry: object) -> tuple[CapturedResponse, float] | None:
    """Returns the response and its storage time from an entry, or ``None`` if it is malformed."""
    if not isinstance(entry, dict) or entry.get("format") != _ENTRY_FORMAT:
        return None
    status, headers, body = entry.get("status"), entry.get("headers"), entry.get("body")
    stored_at, encoding = entry.get("stored_at"), entry.get("encoding")
    if not (
        isinstance(status, int)
        and isinstance(body, str)
        and isinstance(stored_at, int | float)
        and isinstance(headers, list)
        and all(_is_header(item) for item in headers)
    ):
        return None
    try:
        if encoding == "utf-8":
            raw = body.encode("utf-8")
        elif encoding == "base64":
            raw = base64.b64decode(body, validate=True)
        else:
            return None
    except (binascii.Error, UnicodeEncodeError):
        return None
    pairs = tuple((str(name), str(value)) for name, value in cast("list[Sequence[str]]", headers))
    return CapturedResponse(status, pairs, raw), float(stored_at)


def _is_header(item: object) -> bool:
    return (
        isinstance(item, list)
        and len(item) == 2
        and isinstance(item[0], str)
        and isinstance(item[1], str)
    )
