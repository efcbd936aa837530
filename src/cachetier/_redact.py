"""Credential redaction for anything that may reach a log, a repr, a report or an error."""

from __future__ import annotations

from typing import Final
from urllib.parse import urlsplit

__all__ = ("REDACTED", "redact_url")

REDACTED: Final = "***"


def redact_url(url: str) -> str:
    """Returns ``url`` with any password, and any ``password=`` query value, replaced by ``***``.

    The user name stays (it identifies an ACL user, not a secret). Text that does not parse as a
    URL is replaced whole, since it may be a secret pasted in the wrong place.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    if not parts.scheme:
        return REDACTED
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostinfo = netloc.rpartition("@")
        user, has_password, _ = userinfo.partition(":")
        netloc = f"{user}:{REDACTED}@{hostinfo}" if has_password else netloc
    query = "&".join(_redact_pair(pair) for pair in parts.query.split("&")) if parts.query else ""
    # Rebuilt by hand: urlunsplit drops the empty authority of "unix:///path".
    text = (
        f"{parts.scheme}://{netloc}{parts.path}" if "://" in url else f"{parts.scheme}:{parts.path}"
    )
    if query:
        text += f"?{query}"
    if parts.fragment:
        text += f"#{REDACTED}"
    return text


_SECRET_PARAMETERS: Final = frozenset({"password", "pass", "pwd", "token", "auth", "secret"})


def _redact_pair(pair: str) -> str:
    name, sep, _ = pair.partition("=")
    return f"{name}{sep}{REDACTED}" if sep and name.lower() in _SECRET_PARAMETERS else pair
