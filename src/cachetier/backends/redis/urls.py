"""Splitting the multi-host URLs of Redis Cluster and Sentinel into what redis-py parses.

redis-py parses URLs naming one host. A Cluster or Sentinel URL names several, comma
separated, after one set of credentials::

    redis+cluster://[[user]:password@]host[:port][,host[:port]...][?option=value...]
    redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db][?option=value...]

`split_hosts` returns the hosts, and builds a single-host URL (the first host, with the
credentials and query) that redis-py's own ``parse_url`` turns into connection options, so that
percent-decoding, TLS and query options behave exactly as they do for ``redis://``.

It also holds the URL and connection checks that `RedisBackend.from_url` and `CacheSettings`
share, as this module imports no redis-py (and neither does this package's ``__init__``, so
`CacheSettings`, imported with cachetier itself, can import it without loading redis-py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

__all__ = ("MAX_RETRIES", "HostsURL", "misplaced_at_problem", "split_hosts")

# Retries are immediate (no backoff), so against a refused port each costs a connection attempt:
# 100,000 of them made one get() take seconds. Past a few, retrying only waits longer on a dead
# server; the circuit breaker is what copes with an outage.
MAX_RETRIES: Final = 10


@dataclass(frozen=True, slots=True)
class HostsURL:
    """A multi-host URL taken apart.

    Attributes:
        hosts: Each ``(host, port)`` in the order written; at least one.
        path: The path after the hosts (``/mymaster/0``), ``""`` when there is none.
        query: The query string with its ``?``, ``""`` when there is none.
        authority: The base scheme (``redis`` or ``rediss``), ``://``, the credentials and
            the first host, as written.
    """

    hosts: tuple[tuple[str, int], ...]
    path: str
    query: str
    authority: str

    def single(self, path: str) -> str:
        """Returns the single-host URL redis-py parses, with ``path`` in place of `path`."""
        return f"{self.authority}{path}{self.query}"


def split_hosts(url: str, *, base_scheme: str, default_port: int) -> HostsURL:
    """Takes ``url`` apart; ``base_scheme`` is the single-host scheme it stands for.

    Raises:
        ValueError: A host is empty or a port is not a number from 1 to 65535. Messages
            never quote the URL, which may hold a password.
    """
    _, separator, rest = url.partition("://")
    if not separator:
        raise ValueError("the URL must start with a scheme and ://")
    end = min(
        (index for index in (rest.find("/"), rest.find("?")) if index >= 0), default=len(rest)
    )
    netloc, tail = rest[:end], rest[end:]
    userinfo, at, host_list = netloc.rpartition("@")
    path, question, query = tail.partition("?")
    hosts: list[tuple[str, int]] = []
    for written in host_list.split(","):
        # urlsplit reads one host the way it reads any URL's, IPv6 brackets included.
        try:
            parts = urlsplit(f"{base_scheme}://{written}")
            port = parts.port
        except ValueError:
            raise ValueError("a port must be a number from 1 to 65535") from None
        if not parts.hostname or parts.path or parts.username is not None:
            raise ValueError("every host must be given as host or host:port, separated by commas")
        if port == 0:
            raise ValueError("a port must be a number from 1 to 65535")
        hosts.append((parts.hostname, port or default_port))
    first = host_list.split(",", 1)[0]
    return HostsURL(
        hosts=tuple(hosts),
        path=path,
        query=question + query,
        authority=f"{base_scheme}://{userinfo}{at}{first}",
    )


def misplaced_at_problem(url: str) -> str | None:
    """Returns why ``url`` is refused when an ``@`` follows the end of its authority, or ``None``.

    A password holding an unencoded ``/``, ``?`` or ``#`` ends the authority early: the parser
    then reads part of the password as the host or port, and redis-py's reason (and any
    redaction that trusts the parse) quotes it. Every ``@`` after the authority is refused for
    that reason; a literal ``@`` in a query value is written ``%40`` instead, which means the
    same. The message never quotes the URL.
    """
    _, separator, rest = url.partition("://")
    if not separator:
        return None
    end = min((index for index in map(rest.find, "/?#") if index >= 0), default=len(rest))
    if "@" not in rest[end:]:
        return None
    return (
        "an '@' follows the host: a password (or user name) holding '/', '?', '#' or '@' "
        "must be percent-encoded, as urllib.parse.quote(password, safe='') does"
    )
