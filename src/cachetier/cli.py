"""The ``cachetier`` command: look at and invalidate a running application's cache from a shell.

Every command reads the same settings as the library (``REDIS_URL``, ``REDIS_ENABLED``,
``CACHE_*`` and ``.env``), so it sees the keys the application writes. Exit codes: 0 success,
1 "no" (a key holds no value, the backend is slow), 2 a configuration or usage error or an
unhealthy backend, 3 a backend failure.

Only `invalidate` and `bump-version` change anything; `get` reads an entry without the side
effects of `Cache.get` (which removes an entry it cannot decode).

It uses only the public API (`cachetier.Cache`, `cachetier.CacheSettings` and the errors), as
any application's own tooling could; `demo` is its own sub-command, in `cachetier._demo`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import Any, Final

from cachetier import BackendError, Cache, CacheSettings, ConfigurationError, __version__

from . import _demo

__all__ = ("main",)

EXIT_OK: Final = 0
EXIT_NO: Final = 1
EXIT_CONFIGURATION: Final = 2
EXIT_BACKEND: Final = 3

# `health` maps the report's status to an exit code that scripts and probes can test.
_HEALTH_EXIT: Final = {"healthy": 0, "disabled": 0, "degraded": 1, "unhealthy": 2}

_PROGRESS_EVERY: Final = 0.1
"""Seconds between redraws of a progress line."""
_SCAN_BATCH: Final = 500

_DESCRIPTION: Final = f"""\
Look at and invalidate the cache of a running application (cachetier {__version__}).

Settings come from the environment and from .env in the current directory, exactly as
the application reads them: REDIS_URL, REDIS_ENABLED and CACHE_* (CACHE_NAMESPACE,
CACHE_VERSION, ...). Keys are shown and given relative to "namespace:version:", as in
the Python API: `cachetier get user:42` reads what `cache.get("user:42")` reads.

Three ways to invalidate, each within one namespace and version:
  invalidate PATTERN    the keys matching a glob such as 'user:*'
  invalidate --tag TAG  the entries written with that tag (tags= on cache.set(),
                        cache.get_or_set() or @cache.cached)
  bump-version          every entry at once, in O(1) however many there are"""

_EPILOG: Final = """\
examples:
  REDIS_URL=redis://localhost:6379/0 cachetier health
  cachetier health --json
  cachetier --namespace shop keys 'user:*' --limit 20
  cachetier get tasks:pending:10
  cachetier invalidate 'tasks:pending:*' --dry-run
  cachetier invalidate 'tasks:pending:*'
  cachetier invalidate --tag project:7 --tag project:8
  cachetier bump-version
  cachetier demo

exit codes:
  0  done (health: healthy or disabled)
  1  get: the key holds no value (the reason is printed); health: degraded (slow)
  2  a setting or an argument is invalid; health: unhealthy
  3  the backend failed (the reason is printed, never the password)

`cachetier demo` times three slow queries on a SQLite database, uncached and then
cached, on the backend the settings choose (memory unless REDIS_URL is set)."""


class _Failure(Exception):
    """Ends a command with a message for stderr and an exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the ``cachetier`` command with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    args = _parser().parse_args(argv)
    if args.command == "demo":
        # The demo builds its own cache, failing open as an application's does (the cache the
        # other commands share is strict), and prints cachetier's log lines with its output.
        return _demo.run_command(args)
    # Checks that argparse cannot express ("a PATTERN, a --tag, or both"), made before any
    # setting is read, so a usage error is reported as one whatever the environment.
    check: Callable[[argparse.Namespace], str | None] | None = getattr(args, "check", None)
    if check is not None and (problem := check(args)) is not None:
        args.command_parser.error(problem)  # exits with status 2, after the command's usage
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
    choice = settings.backend_choice()
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
    progress = _Progress("found", quiet=args.quiet)
    try:
        async for key in _matching_keys(cache, args.pattern, progress=progress):
            if args.limit and len(found) >= args.limit:
                more = True
                break
            found.append(key)
    finally:
        progress.done()
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
    found = await cache.inspect(args.key)
    if not found.served:
        raise _Failure(f"no value at {args.key!r}: {found.reason}", EXIT_NO)
    if found.reason:
        print(f"cachetier: note: {args.key!r} holds {found.reason}", file=sys.stderr)
    # default=repr keeps a non-JSON value (from the msgpack or pickle serializer) printable.
    print(
        json.dumps(
            found.value, indent=None if args.compact else 2, ensure_ascii=False, default=repr
        )
    )
    return EXIT_OK


async def _invalidate(cache: Cache, args: argparse.Namespace) -> int:
    if args.dry_run:
        found = sorted([key async for key in _matching_keys(cache, args.pattern, entries=True)])
        for key in found:
            print(key)
        print(
            f"cachetier: would delete {_plural(len(found), 'key')}; "
            "run without --dry-run to delete them",
            file=sys.stderr,
        )
        return EXIT_OK
    if args.tags:
        # One write per tag: how many entries carried it is not known, nor needed.
        in_use = await cache.invalidate_tags(*args.tags)
        print(f"invalidated {_plural(len(args.tags), 'tag')} ({in_use} in use)")
    if args.pattern is not None:
        progress = _Progress("deleted", quiet=args.quiet)
        try:
            deleted = await cache.delete_pattern(args.pattern, on_progress=progress)
        finally:
            progress.done()
        print(f"deleted {_plural(deleted, 'key')}")
    return EXIT_OK


def _check_invalidate(args: argparse.Namespace) -> str | None:
    if args.pattern is None and not args.tags:
        return (
            "say what to delete: a PATTERN, one or more --tag TAG, or both "
            "(e.g. `cachetier invalidate 'tasks:*'` or `cachetier invalidate --tag project:7`)"
        )
    if args.dry_run and args.tags:
        return (
            "--dry-run lists the keys matching PATTERN, and cannot list the entries of a tag; "
            "leave out --tag to preview the pattern alone"
        )
    return None


async def _bump_version(cache: Cache, args: argparse.Namespace) -> int:
    name = f"{cache.namespace}:{cache.version}"
    if args.dry_run:
        generation = await _generation(cache)
        print(f"{name} is at generation {generation}")
        print(
            f"cachetier: would bump it to generation {generation + 1}, making every entry now "
            f"in {name} a miss; run without --dry-run to bump it",
            file=sys.stderr,
        )
        return EXIT_OK
    generation = await cache.bump_version()
    print(f"bumped {name} to generation {generation}")
    return EXIT_OK


async def _generation(cache: Cache) -> int:
    """Returns the namespace generation as stored (0 before the first `bump_version`)."""
    raw = await cache.backend.get(cache.keys.generation_key())
    return int(raw) if raw is not None and raw.lstrip(b"-").isdigit() else 0


async def _matching_keys(
    cache: Cache,
    pattern: str,
    *,
    entries: bool = False,
    progress: Callable[[int, int], object] | None = None,
) -> AsyncIterator[str]:
    """Yields each relative key matching ``pattern`` once, through SCAN (never KEYS).

    With ``entries``, leaves out the generation counter, which `delete_pattern` never deletes.
    ``progress`` is told the keys scanned and yielded after each SCAN step.
    """
    prefix = cache.keys.prefix
    skip = cache.keys.generation_key() if entries else None
    seen: set[str] = set()
    scanned = 0
    async for batch in cache.backend.scan(cache.keys.pattern(pattern), count=_SCAN_BATCH):
        scanned += len(batch)
        for stored_key in batch:
            # SCAN may return a key more than once when the keyspace is rehashed meanwhile.
            if stored_key not in seen and stored_key != skip:
                seen.add(stored_key)
                yield stored_key[len(prefix) :]
        if progress is not None:
            progress(scanned, len(seen))


class _Progress:
    """A progress line on stderr, redrawn in place, shown only to a person at a terminal.

    Piped or redirected output (a script, a log) gets none, and neither does ``--quiet``.
    """

    def __init__(self, verb: str, *, quiet: bool) -> None:
        self.verb = verb
        self.shown = False
        self.enabled = not quiet and sys.stderr.isatty()
        self.started = self.drawn = time.monotonic()

    def __call__(self, scanned: int, done: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.drawn < _PROGRESS_EVERY and self.shown:
            return
        self.drawn = now
        rate = scanned / max(now - self.started, 1e-9)
        sys.stderr.write(
            f"\rcachetier: scanned {scanned:,} keys, {self.verb} {done:,} ({rate:,.0f} keys/s)"
        )
        sys.stderr.flush()
        self.shown = True

    def done(self) -> None:
        """Ends the progress line, if one was drawn, so that what follows starts afresh."""
        if self.shown:
            sys.stderr.write("\n")
            sys.stderr.flush()


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
    keys.add_argument("--quiet", action="store_true", help="show no progress on a terminal")
    keys.set_defaults(run=_keys, needs_shared_backend=True)

    get = commands.add_parser(
        "get",
        help="print the value stored at a key, as JSON, or say why there is none",
        description="Prints the value at KEY as JSON (a counter written by cache.incr() "
        "as a number). Exit code 1, with the reason on stderr, when it holds no fresh value: "
        "absent or expired, stale, written before the last bump-version, being computed, or "
        "not decodable (and why). It only reads: unlike a read by the application, it leaves "
        "an entry it cannot decode in place.",
    )
    get.add_argument("key", metavar="KEY", help="a relative key, as given to cache.get()")
    get.add_argument("--compact", action="store_true", help="print the JSON on one line")
    get.set_defaults(run=_get, needs_shared_backend=True)

    invalidate = commands.add_parser(
        "invalidate",
        help="delete the keys matching a pattern, or the entries of tags",
        description="""\
Invalidates entries of this namespace and version:
  - with PATTERN, deletes the keys matching it (SCAN and UNLINK in batches, never
    KEYS, as cache.delete_pattern() does) and prints how many;
  - with --tag, invalidates the entries stored with any of the tags, in one write
    per tag (as cache.invalidate_tags() does); repeat --tag for several tags;
  - with both, the keys matching PATTERN and the entries of the tags.
Give a PATTERN, a --tag, or both. Values being computed while it runs are not stored.""",
        epilog="""\
examples:
  cachetier invalidate 'tasks:pending:*' --dry-run
  cachetier invalidate 'tasks:pending:*'
  cachetier invalidate --tag project:7
  cachetier invalidate 'stats:*' --tag project:7 --tag project:8""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    invalidate.add_argument(
        "pattern",
        nargs="?",
        metavar="PATTERN",
        help="a Redis glob, relative to 'namespace:version:' (quote it)",
    )
    invalidate.add_argument(
        "--tag",
        action="append",
        dest="tags",
        type=_tag,
        metavar="TAG",
        help="a tag given as tags= when the entries were written, e.g. project:7",
    )
    invalidate.add_argument(
        "--dry-run",
        action="store_true",
        help="list the keys matching PATTERN, and delete nothing (not with --tag)",
    )
    invalidate.add_argument("--quiet", action="store_true", help="show no progress on a terminal")
    invalidate.set_defaults(
        run=_invalidate,
        needs_shared_backend=True,
        tags=None,
        check=_check_invalidate,
        command_parser=invalidate,
    )

    bump = commands.add_parser(
        "bump-version",
        help="invalidate every entry of the namespace and version at once",
        description="""\
Invalidates every entry of this namespace and version with one command, however
many there are, as cache.bump_version() does: it increments the generation that
each entry records when written, and prints the new one. Entries of earlier
generations are misses from then on: at once for processes that start later, and
within version_check_interval (0.25 s by default) for running ones. They are not
deleted; they stay until they expire or are overwritten.

Like invalidate, it does not ask for confirmation, so that deploy scripts can run
it; --dry-run shows which namespace and version it would bump.""",
        epilog="""\
examples:
  cachetier bump-version --dry-run
  cachetier --namespace shop bump-version""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bump.add_argument(
        "--dry-run",
        action="store_true",
        help="print the current generation, and change nothing",
    )
    bump.set_defaults(run=_bump_version, needs_shared_backend=True)

    demo = commands.add_parser(
        "demo",
        help="time three slow SQLite queries, uncached and then cached",
        description="""\
Builds a SQLite database of tasks, events and articles (100,000 tasks by default,
about 75 MB, a few seconds), times three endpoint-like queries uncached and then as
cache hits, shows an invalidation, and names the backend: process-local memory by
default, Redis when REDIS_URL is set, none when REDIS_ENABLED=false.""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _demo.add_arguments(demo, default_db=None)
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


def _tag(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("must not be empty")
    return text
