"""`KeyBuilder`: ``namespace:version:part:part`` keys, escaping, hashing, and keys of calls.

Escaping. Inside a part, ``\\``, ``:`` and the glob characters ``*?[]`` are preceded by a
backslash. An unescaped ``:`` therefore always separates parts, which makes the map from
part sequences to keys injective, and an escaped part used inside a Redis glob matches only
itself, because Redis reads ``\\x`` in a pattern as a literal ``x``.

Shortening. A key longer than ``max_length`` keeps its first characters (never fewer than
the namespace and version prefix) and ends in ``#`` plus a 32-hex-digit BLAKE2b digest of the
whole key, so it stays unique, stable across processes, and reachable by prefix patterns.

Reserved keys. The generation counter, tag stamps, locks and wake-up channels live under the
prefix too (an ACL limited to ``namespace:*`` reaches them), after a ``\\_`` that escaping never
produces (it puts a backslash only before ``\\:*?[]``). A relative key given to a `Cache` method
is written as is, so `KeyBuilder.full` refuses one that starts with it: no user key can clobber
cachetier's own. Keys holding a lone surrogate, which Redis cannot store as UTF-8, are refused
on every backend alike.

Call keys. Arguments are bound to the signature with defaults applied, so keyword order and
positional versus keyword passing do not matter, and each value is encoded with its type:
``1``, ``1.0``, ``"1"`` and ``True`` give different keys. Values whose only text is
``object.__repr__`` (a memory address) are refused, since they would make every key unique.
`encode_argument` is the text of one value; `cachetier._calls` compiles the rule for a whole
call, once per function, for both `Cache.cached` and `KeyBuilder.call_key`.
"""

from __future__ import annotations

import hashlib
import inspect
import warnings
from collections.abc import Callable, Collection, Mapping
from typing import cast, final

from ._calls import plan_for
from ._errors import ConfigurationError
from ._glob import glob_escape
from ._parts import (
    DIGEST_LENGTH,
    RESERVED,
    check_key_collection,
    check_text,
    encode_argument,
    escape_part,
    function_name,
)

__all__ = (
    "KeyBuilder",
    "check_key_collection",
    "encode_argument",
    "escape_part",
    "function_name",
)


@final
class KeyBuilder:
    """Builds keys of the form ``namespace:version:part:part...``.

    Keys handed to `Cache` methods are relative: the builder prepends the escaped namespace and
    version, leaves the relative key as written (so ``"tasks:pending:*"`` patterns reach
    ``"tasks:pending:10"``), and shortens the result past ``max_length`` characters.
    """

    __slots__ = ("_max_length", "_namespace", "_prefix", "_version")

    def __init__(
        self, namespace: str = "cache", version: str | int = "v1", *, max_length: int = 200
    ) -> None:
        """Args:
        namespace: the application's name for its keys; non-empty, no whitespace.
        version: a schema version; changing it leaves old entries unreachable.
        max_length: longest key kept as written, at least 64 characters.
        """
        if not isinstance(namespace, str) or not namespace or any(c.isspace() for c in namespace):
            raise ConfigurationError(
                f"namespace must be a non-empty string without whitespace, got {namespace!r}"
            )
        if isinstance(version, bool) or not isinstance(version, str | int) or str(version) == "":
            raise ConfigurationError(
                f"version must be a non-empty string or an int, got {version!r}"
            )
        self._namespace = namespace
        self._version = str(version)
        self._prefix = f"{escape_part(namespace)}:{escape_part(self._version)}:"
        if max_length < max(64, len(self._prefix) + DIGEST_LENGTH + 8):
            raise ConfigurationError(
                f"max_length must be at least 64 and leave room for the prefix and a digest, got {max_length}"
            )
        self._max_length = max_length

    def __repr__(self) -> str:
        return f"KeyBuilder(namespace={self._namespace!r}, version={self._version!r}, max_length={self._max_length})"

    @property
    def namespace(self) -> str:
        """The namespace, as given."""
        return self._namespace

    @property
    def version(self) -> str:
        """The version, as text."""
        return self._version

    @property
    def max_length(self) -> int:
        """Keys longer than this are shortened with a digest."""
        return self._max_length

    @property
    def prefix(self) -> str:
        """``namespace:version:`` with both parts escaped; every key starts with it."""
        return self._prefix

    def key(self, *parts: str | int) -> str:
        """Returns ``namespace:version:part:...`` with every part escaped and the whole shortened.

        Raises:
            TypeError: a part is not a ``str`` or an ``int``.
            ValueError: a part holds a lone surrogate.
        """
        texts: list[str] = []
        for part in parts:
            if isinstance(part, str):
                check_text(part, "key part")
                texts.append(escape_part(part))
            elif isinstance(part, int) and not isinstance(part, bool):
                texts.append(str(part))
            else:
                raise TypeError(f"key parts must be str or int, not {type(part).__name__}")
        return self._shorten(self._prefix + ":".join(texts))

    def relative(self, *parts: str | int) -> str:
        """Returns the escaped parts joined by ``:`` without the prefix, for `Cache` methods."""
        return self.key(*parts)[len(self._prefix) :] if parts else ""

    def full(self, key: str) -> str:
        """Returns the stored key for a relative ``key`` given to a `Cache` method.

        Raises:
            TypeError: ``key`` is not a ``str``.
            ValueError: ``key`` starts with the reserved ``\\_`` or holds a lone surrogate.
        """
        if type(key) is not str:
            if not isinstance(key, str):
                raise TypeError(f"cache keys must be str, not {type(key).__name__}")
            key = str(key)
        if key.startswith(RESERVED):
            raise ValueError(
                f"cache key {key!r} starts with {RESERVED!r}, which is reserved for the keys "
                "cachetier keeps for itself (generation, tags, locks)"
            )
        check_text(key, "cache key")
        full = self._prefix + key
        return full if len(full) <= self._max_length else self._shorten(full)

    def literal(self, *parts: str | int) -> str:
        """Returns a relative glob that matches exactly the relative key of ``parts``.

        Use it to put untrusted text into a pattern: ``cache.delete_pattern(
        cache.keys.literal("tasks", user) + ":*")`` can never reach another user's keys.
        """
        return glob_escape(self.relative(*parts))

    def fit(self, key: str) -> str:
        """Returns a stored ``key`` as is, or shortened with its digest when over ``max_length``."""
        return key if len(key) <= self._max_length else self._shorten(key)

    def lock_key(self, stored_key: str) -> str:
        """Returns the key of the lock that guards computing ``stored_key`` (as `full` made it).

        It stays inside this namespace and version, so an ACL user limited to them can lock.
        """
        return self._prefix + RESERVED + "lock:" + stored_key[len(self._prefix) :]

    def ready_channel(self, stored_key: str) -> str:
        """Returns the pub/sub channel that announces a value for ``stored_key`` has landed."""
        return self._prefix + RESERVED + "ready:" + stored_key[len(self._prefix) :]

    def tag_key(self, tag: str) -> str:
        """Returns the key holding the stamp of ``tag`` (an escaped part)."""
        if not isinstance(tag, str):
            raise TypeError(f"tags must be str, not {type(tag).__name__}")
        check_text(tag, "tag")
        return self.fit(self._prefix + RESERVED + "tag:" + escape_part(tag))

    def generation_key(self) -> str:
        """Returns the key of the counter that `Cache.bump_version` increments."""
        return self._prefix + RESERVED + "generation"

    def pattern(self, glob: str) -> str:
        """Returns the Redis glob that matches relative ``glob`` within this namespace and version.

        Raises:
            TypeError: ``glob`` is not a ``str``.
        """
        if not isinstance(glob, str):
            raise TypeError(f"patterns must be str, not {type(glob).__name__}")
        check_text(glob, "pattern")
        return glob_escape(self._prefix) + glob

    def call_key(
        self,
        func: Callable[..., object],
        args: tuple[object, ...],
        kwargs: Mapping[str, object],
        *,
        exclude: Collection[str] = (),
        prefix: str | None = None,
    ) -> str:
        """Returns the stored key of ``func(*args, **kwargs)``, as `Cache.cached` keys it.

        The relative key is ``prefix`` (default ``module.qualname:``) followed by
        ``name=value`` parts for every bound argument not in ``exclude``; a function with no
        such argument gets ``module.qualname`` (or ``prefix``) alone. The rule is compiled
        once per function, by the same code as the decorator's.

        Raises:
            TypeError: the arguments do not fit the signature, one has no stable text,
                ``exclude`` names no parameter, or a method's ``self`` has no
                ``__cache_key__``.
        """
        plan = plan_for(func, self, exclude=exclude, head=prefix)
        return self.full(plan.relative(args, kwargs))

    @staticmethod
    def encode_call(
        signature: inspect.Signature,
        args: tuple[object, ...],
        kwargs: Mapping[str, object],
        *,
        exclude: Collection[str] = (),
    ) -> str:
        """Returns the escaped ``name=value:name=value`` text of a call bound to ``signature``.

        Deprecated since 0.2, to be removed in 0.3: use `call_key`, which keys a call exactly
        as `Cache.cached` does.
        """
        warnings.warn(
            "KeyBuilder.encode_call is deprecated and will be removed in cachetier 0.3; "
            "use KeyBuilder.call_key, which keys a call as Cache.cached does",
            DeprecationWarning,
            stacklevel=2,
        )
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        parts: list[str] = []
        for name, value in bound.arguments.items():
            if name in exclude:
                continue
            if signature.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
                extra = cast("dict[str, object]", value)
                value = {key: item for key, item in extra.items() if key not in exclude}
            parts.append(escape_part(f"{name}={encode_argument(value)}"))
        return ":".join(parts)

    def _shorten(self, key: str) -> str:
        if len(key) <= self._max_length:
            return key
        digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
        keep = self._max_length - DIGEST_LENGTH - 1
        head = key[:keep]
        # A cut right after an escaping backslash would leave it escaping the "#".
        if (len(head) - len(head.rstrip("\\"))) % 2 == 1:
            head = head[:-1]
        return f"{head}#{digest}"
