"""The ``cachetier`` command: look at and invalidate a running application's cache from a shell.

Every command reads the same settings as the library (``REDIS_URL``, ``REDIS_ENABLED``,
``CACHE_*`` and ``.env``), so it sees the keys the application writes. Exit codes: 0 success,
1 "no" (a key is absent, the backend is slow), 2 a configuration or usage error or an
unhealthy backend, 3 a backend failure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import Any, Final

from ._cache import Cache
from ._errors import BackendError, ConfigurationError
from ._settings import CacheSettings, describe_backend_choice
from ._stats import ReadEvent
from ._types import Outcome
from ._version import __version__

__all__ = ("main",)

EXIT_OK: Final = 0
EXIT_NO: Final = 1
EXIT_CONFIGURATION: Final = 2
EXIT_BACKEND: Final = 3

# `health` maps the report's status to an exit code that scripts and probes can test.
_HEALTH_EXIT: Final = {"healthy": 0, "disabled": 0, "degraded": 1, "unhealthy": 2}

_SCAN_BATCH: Final = 500

_DESCRIPTION: Final = f"""\
Look at and invalidate the cache of a running application (cachetier {__version__}).

Settings come from the environment and from .env in the current directory, exactly as
the application reads them: REDIS_URL, REDIS_ENABLED and CACHE_* (CACHE_NAMESPACE,
CACHE_VERSION, ...). Keys are shown and given relative to "namespace:version:", as in
the Python API: `cachetier get user:42` reads what `cache.get("user:42")` reads."""

_EPILOG: Final = """\
examples:
  REDIS_URL=redis://localhost:6379/0 cachetier health
  cachetier health --json
  cachetier --namespace shop keys 'user:*' --limit 20
  cachetier get tasks:pending:10
  cachetier invalidate 'tasks:pending:*' --dry-run
  cachetier invalidate 'tasks:pending:*'

exit codes:
  0  done (health: healthy or disabled)
  1  get: the key holds no value; health: degraded (the backend answered slowly)
  2  a setting or an argument is invalid; health: unhealthy
  3  the backend failed (the reason is printed, never the password)

The demo is not part of the installed package: run `python examples/demo.py` from a
source checkout of cachetier."""


class _Failure(Exception):
    """Ends a command with a message for stderr and an exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the ``cachetier`` command with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    args = _parser().parse_args(argv)
    command: Callable[[Cache, argparse.Namespace], Coroutine[Any, Any, int]] = args.run
    handler = _log_handler(verbose=args.verbose)
    try:
        cache = _open_cache(args)
        return asyncio.run(_run(command, cache, args))
    except ConfigurationError as exc:
        return _fail(str(exc), EXIT_CONFIGURATION)
    except BackendError as exc:
        # The backend's messages are built to be safe to print: no URL, no password.
        return _fail(str(exc), EXIT_BACKEND)
    except _Failure as exc:
        return _fail(str(exc), exc.code)
    except KeyboardInterrupt:
        return 130  # the shell convention for a command ended by SIGINT
    finally:
        logging.getLogger("cachetier").removeHandler(handler)


def _fail(message: str, code: int) -> int:
    print(f"cachetier: {message}", file=sys.stderr)
    return code


async def _run(
    command: Callable[[Cache, argparse.Namespace], Coroutine[Any, Any, int]],
    cache: Cache,
    args: argparse.Namespace,
) -> int:
    try:
        return await command(cache, args)
    finally:
        await cache.aclose()


def _open_cache(args: argparse.Namespace) -> Cache:
    """Builds the cache the application would build, with the command-line overrides on top."""
    overrides: dict[str, object] = {
        # Strict, so that a backend failure is an error here: failing open would print
        # "absent" or "0 deleted" for a server that never answered.
        "strict": True
    }
    if args.namespace is not None:
        overrides["namespace"] = args.namespace
    if args.key_version is not None:
        overrides["version"] = args.key_version
    settings = CacheSettings.load(**overrides)
    choice = describe_backend_choice(settings)
    args.backend_reason = choice.reason
    if args.needs_shared_backend and choice.kind != "redis":
        # A memory backend built here would be this process's own, always empty, and the
        # null backend stores nothing: answering from either would mislead.
        raise _Failure(
            f"{choice.reason}, so there is no shared cache for `{args.command}` to reach; "
            "set REDIS_URL (e.g. REDIS_URL=redis://localhost:6379/0)",
            EXIT_CONFIGURATION,
        )
    cache = Cache.from_settings(settings)
    args.redacted_url = settings.redacted_url
    return cache


def _log_handler(*, verbose: bool) -> logging.Handler:
    """Sends the ``cachetier`` logger's lines to stderr; `main` removes the handler on return."""
    # Without a handler, Python's last-resort handler prints bare WARNING lines; this adds
    # the level, and --verbose adds the INFO line saying which backend was chosen and why.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    handler.setLevel(logging.INFO if verbose else logging.WARNING)
    logger = logging.getLogger("cachetier")
    logger.addHandler(handler)
    if verbose and logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    return handler


# -- commands -----------------------------------------------------------------------------


async def _health(cache: Cache, args: argparse.Namespace) -> int:
    report = await cache.health_check(degraded_after_ms=args.degraded_after_ms)
    data = report.to_dict()
    # The counters are this process's own, and it has read nothing: showing them would
    # suggest the application's hit ratio is zero.
    data.pop("stats", None)
    if report.backend == "redis":
        data["url"] = args.redacted_url
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        # Fields the backend does not have (server facts of a memory backend) are left out.
        _print_table({name: value for name, value in data.items() if value is not None})
    if report.backend == "memory":
        print(
            f"cachetier: note: {args.backend_reason}; this checked the memory cache of this "
            "command alone, not the application's",
            file=sys.stderr,
        )
    return _HEALTH_EXIT[report.status]


async def _keys(cache: Cache, args: argparse.Namespace) -> int:
    found: list[str] = []
    more = False
    async for key in _matching_keys(cache, args.pattern):
        if args.limit and len(found) >= args.limit:
            more = True
            break
        found.append(key)
    # SCAN returns keys in hash order; sorted output is easier to read and to diff.
    for key in sorted(found):
        print(key)
    if more:
        print(
            f"cachetier: stopped after {args.limit} keys; use --limit to see more "
            "(--limit 0 for all)",
            file=sys.stderr,
        )
    return EXIT_OK


async def _get(cache: Cache, args: argparse.Namespace) -> int:
    stored_key = cache.keys.full(args.key)
    outcomes: list[Outcome] = []

    # `get` answers with the default for every kind of absence; the read hook tells them
    # apart, so that the message can say why nothing was printed.
    def remember(event: ReadEvent) -> None:
        if event.key == stored_key:
            outcomes.append(event.outcome)

    absent = object()
    cache.add_hook(remember)
    try:
        value = await cache.get(args.key, absent)
    finally:
        cache.remove_hook(remember)
    if value is absent:
        reason = _ABSENT_REASONS.get(outcomes[-1] if outcomes else Outcome.MISS, "absent")
        raise _Failure(f"no value at {args.key!r} ({reason})", EXIT_NO)
    # default=repr keeps a non-JSON value (from the msgpack or pickle serializer) printable.
    print(json.dumps(value, indent=None if args.compact else 2, ensure_ascii=False, default=repr))
    return EXIT_OK


# A plain read counts an entry past its freshness as a miss, so MISS covers "expired" too.
_ABSENT_REASONS: Final = {
    Outcome.MISS: "absent or expired",
    Outcome.DECODE_ERROR: "the entry could not be decoded, and a read removes such entries",
}


async def _invalidate(cache: Cache, args: argparse.Namespace) -> int:
    if args.dry_run:
        found = sorted([key async for key in _matching_keys(cache, args.pattern)])
        for key in found:
            print(key)
        print(
            f"cachetier: would delete {_plural(len(found), 'key')}; "
            "run without --dry-run to delete them",
            file=sys.stderr,
        )
        return EXIT_OK
    deleted = await cache.delete_pattern(args.pattern)
    print(f"deleted {_plural(deleted, 'key')}")
    return EXIT_OK


async def _matching_keys(cache: Cache, pattern: str) -> AsyncIterator[str]:
    """Yields each relative key matching ``pattern`` once, through SCAN (never KEYS)."""
    prefix = cache.keys.prefix
    seen: set[str] = set()
    async for batch in cache.backend.scan(cache.keys.pattern(pattern), count=_SCAN_BATCH):
        for stored_key in batch:
            # SCAN may return a key more than once when the keyspace is rehashed meanwhile.
            if stored_key not in seen:
                seen.add(stored_key)
                yield stored_key[len(prefix) :]


def _print_table(data: dict[str, object]) -> None:
    width = max(len(name) for name in data)
    for name, value in data.items():
        print(f"{name.ljust(width)}  {_text(value)}")


def _text(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


# -- arguments ----------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cachetier",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--namespace",
        metavar="NAME",
        help="the first part of every key (default: CACHE_NAMESPACE, else 'cache')",
    )
    parser.add_argument(
        "--key-version",
        dest="key_version",
        metavar="VERSION",
        help="the second part of every key (default: CACHE_VERSION, else 'v1')",
    )
    parser.add_argument("--version", action="version", version=f"cachetier {__version__}")
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also log which backend the settings chose, and why",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    health = commands.add_parser(
        "health",
        help="check that the backend answers, and how fast",
        description="Sends PING (and, for Redis, INFO) and prints the report. Exit code: 0 "
        "healthy or disabled (REDIS_ENABLED=false), 1 degraded (slow), 2 unhealthy.",
    )
    health.add_argument("--json", action="store_true", help="print the report as JSON")
    health.add_argument(
        "--degraded-after-ms",
        type=_positive_float,
        default=100.0,
        metavar="MS",
        help="a PING slower than this is 'degraded' (default: 100)",
    )
    health.set_defaults(run=_health, needs_shared_backend=False)

    keys = commands.add_parser(
        "keys",
        help="list keys matching a pattern",
        description="Lists the keys of this namespace and version that match PATTERN, "
        "relative to 'namespace:version:'. It walks the keyspace with SCAN, never KEYS, so "
        "the server keeps answering the application meanwhile.",
    )
    keys.add_argument(
        "pattern",
        metavar="PATTERN",
        help="a Redis glob: * any text, ? one character, [abc] a set, \\ escapes (quote it)",
    )
    keys.add_argument(
        "--limit",
        type=_count,
        default=100,
        metavar="N",
        help="stop after N keys (default: 100; 0 lists all)",
    )
    keys.set_defaults(run=_keys, needs_shared_backend=True)

    get = commands.add_parser(
        "get",
        help="print the value stored at a key, as JSON",
        description="Prints the value at KEY as JSON. Exit code 1, with the reason on stderr, "
        "when it holds no fresh value. An entry that cannot be decoded is reported and, as "
        "on any read by the application, removed.",
    )
    get.add_argument("key", metavar="KEY", help="a relative key, as given to cache.get()")
    get.add_argument("--compact", action="store_true", help="print the JSON on one line")
    get.set_defaults(run=_get, needs_shared_backend=True)

    invalidate = commands.add_parser(
        "invalidate",
        help="delete the keys matching a pattern",
        description="Deletes the keys of this namespace and version that match PATTERN "
        "(SCAN and UNLINK in batches, as cache.delete_pattern() does) and prints how many.",
    )
    invalidate.add_argument(
        "pattern",
        metavar="PATTERN",
        help="a Redis glob, relative to 'namespace:version:' (quote it)",
    )
    invalidate.add_argument(
        "--dry-run",
        action="store_true",
        help="list the keys that would be deleted, and delete nothing",
    )
    invalidate.set_defaults(run=_invalidate, needs_shared_backend=True)
    return parser


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, not {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, not {text}")
    return value
