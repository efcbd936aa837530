"""Shared pieces of the benchmarks: payloads, the typed model, Redis settings, installing extras.

Imported by ``run.py``, ``profile_hit.py`` and the stampede worker processes; importing it does
no I/O.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from pydantic import BaseModel

BENCH_DIR = Path(__file__).resolve().parent
SRC_DIR = BENCH_DIR.parent / "src"

REDIS_HOST = os.environ.get("CACHETIER_BENCH_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("CACHETIER_BENCH_REDIS_PORT", "6379"))
REDIS_DB = int(os.environ.get("CACHETIER_BENCH_REDIS_DB", "14"))
REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}"
# Nothing listens on port 1 of the loopback address: connecting fails at once with ECONNREFUSED.
DOWN_URL = "redis://127.0.0.1:1/0"

# Importable module name -> the distribution that provides it (the `bench` dependency group).
BENCH_MODULES: dict[str, str] = {
    "aiocache": "aiocache",
    "cashews": "cashews",
    "async_lru": "async-lru",
    "hiredis": "hiredis",
    "orjson": "orjson",
}

SHORT_STRING = "session:7f3a9c:active"


def make_document() -> dict[str, Any]:
    """Returns a ~1 KB JSON-compatible document: a user profile with its recent orders."""
    return {
        "id": 48213,
        "uuid": "5b7c1e0a-8d2f-4c6b-9e1a-3f2d7c8b9a10",
        "username": "ada.lovelace",
        "email": "ada.lovelace@example.com",
        "display_name": "Ada Lovelace",
        "active": True,
        "verified": True,
        "score": 97.25,
        "created_at": "2023-11-02T09:26:53+00:00",
        "last_login": "2025-01-17T18:04:11+00:00",
        "locale": "en-GB",
        "timezone": "Europe/London",
        "roles": ["admin", "editor", "billing"],
        "address": {
            "street": "12 St James's Square",
            "city": "London",
            "postcode": "SW1Y 4JH",
            "country": "GB",
        },
        "preferences": {"newsletter": False, "theme": "dark", "items_per_page": 50},
        "orders": [
            {
                "id": 1_000_231 + i,
                "sku": f"BK-{1843 + 7 * i}",
                "quantity": 1 + i % 3,
                "unit_price": round(12.5 + 3.75 * i, 2),
                "status": ("shipped", "delivered", "processing")[i % 3],
            }
            for i in range(6)
        ],
        "tags": ["early-adopter", "beta", "uk", "priority-support"],
    }


DOCUMENT: dict[str, Any] = make_document()


class Address(BaseModel):
    street: str
    city: str
    postcode: str
    country: str


class Preferences(BaseModel):
    newsletter: bool
    theme: str
    items_per_page: int


class Order(BaseModel):
    id: int
    sku: str
    quantity: int
    unit_price: float
    status: str


class Profile(BaseModel):
    """The typed form of `DOCUMENT`, for the typed-decode variant."""

    id: int
    uuid: str
    username: str
    email: str
    display_name: str
    active: bool
    verified: bool
    score: float
    created_at: datetime
    last_login: datetime
    locale: str
    timezone: str
    roles: list[str]
    address: Address
    preferences: Preferences
    orders: list[Order]
    tags: list[str]


PROFILE = Profile.model_validate(DOCUMENT)


def ensure_src_importable() -> None:
    """Puts ``src/`` on ``sys.path`` when cachetier is not installed in this interpreter."""
    if importlib.util.find_spec("cachetier") is None and str(SRC_DIR) not in sys.path:
        sys.path.insert(0, str(SRC_DIR))


def install_missing(*, quiet: bool = False) -> dict[str, str]:
    """Installs the benchmark-only modules that are missing; returns ``{module: error}`` failures.

    Uses the running interpreter's pip, so the benchmark installs into the environment it runs in.
    """
    missing = [name for name in BENCH_MODULES if importlib.util.find_spec(name) is None]
    if not missing:
        return {}
    dists = [BENCH_MODULES[name] for name in missing]
    if not quiet:
        print(f"installing benchmark dependencies: {' '.join(dists)}", flush=True)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", *dists],
        capture_output=True,
        text=True,
        check=False,
    )
    importlib.invalidate_caches()
    failures: dict[str, str] = {}
    for name in missing:
        if importlib.util.find_spec(name) is None:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["unknown error"]
            failures[name] = f"pip install {BENCH_MODULES[name]} failed: {tail[0][:200]}"
    return failures


class CommandCounter:
    """Counts the Redis commands this process sends while active, by command name.

    It wraps redis-py's asyncio command packer, which every command passes through: single
    commands, pipelines, pub/sub and the handshake of new connections; and the GET and MGET of
    `RedisBackend`'s held connections, which it packs itself (where this cachetier has them).
    Other processes using the same server are not counted, unlike ``INFO stats``.
    """

    def __init__(self) -> None:
        self.by_name: Counter[str] = Counter()
        self._original: Any = None
        self._held: Any = None

    @property
    def total(self) -> int:
        return sum(self.by_name.values())

    def __enter__(self) -> CommandCounter:
        from redis.asyncio.connection import AbstractConnection

        original = self._original = AbstractConnection.pack_command
        by_name = self.by_name

        def pack_command(connection: Any, *args: Any) -> Any:
            name = args[0].decode() if isinstance(args[0], bytes) else str(args[0])
            by_name[name.split(" ", 1)[0].upper()] += 1
            return original(connection, *args)

        AbstractConnection.pack_command = pack_command  # type: ignore[method-assign]
        try:
            from cachetier.backends.redis.pipeline import HeldReads
        except ImportError:  # a cachetier from before held connections
            return self
        # Counted where both reads go out (the backend binds get and mget at construction).
        self._held = (HeldReads, HeldReads._send)
        send = HeldReads._send

        def held_send(reads: Any, command: bytes, keys: Any, *, single: bool) -> Any:
            by_name["GET" if single else "MGET"] += 1
            return send(reads, command, keys, single=single)

        HeldReads._send = held_send  # type: ignore[method-assign]
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        from redis.asyncio.connection import AbstractConnection

        AbstractConnection.pack_command = self._original  # type: ignore[method-assign]
        if self._held is not None:
            held, held._send = self._held
            self._held = None


def locking_note(backend: Any) -> str:
    """Says when a backend lacks the `LockingBackend` methods that ``lock=True`` needs."""
    needed = ("acquire_lock", "release_lock", "publish", "subscribe")
    missing = [name for name in needed if not hasattr(backend, name)]
    if not missing:
        return ""
    return (
        f"{type(backend).__name__} lacks {', '.join(missing)} (LockingBackend), so lock=True "
        "falls back to in-process single flight"
    )
