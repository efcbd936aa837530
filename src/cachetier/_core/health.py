"""`HealthReport`, what `Cache.health_check` returns."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from .._errors import BackendError
from ..backends._protocol import ServerInfoBackend
from .guard import Guard
from .stats import CacheStats, StatsRecorder

__all__ = ("HealthReport", "HealthStatus", "check_health")

HealthStatus = Literal["healthy", "degraded", "unhealthy", "disabled"]


@dataclass(frozen=True, slots=True)
class HealthReport:
    """The state of a cache and its backend at one moment.

    ``status`` is ``healthy`` when the backend answered within its latency budget, ``degraded``
    when it answered slowly, ``unhealthy`` when it failed (the cache then runs uncached) and
    ``disabled`` for the null backend. ``breaker`` is the circuit breaker's state (``closed``,
    ``open``, ``half_open``). Server fields are ``None`` where the backend has no server.
    It holds no credentials; ``error`` is a redacted message.
    """

    status: HealthStatus
    available: bool
    backend: str
    latency_ms: float | None
    namespace: str
    version: str
    uptime_seconds: int | None = None
    used_memory_mb: float | None = None
    connected_clients: int | None = None
    ops_per_sec: int | None = None
    server_version: str | None = None
    error: str | None = None
    breaker: str = "closed"
    stats: CacheStats = field(default_factory=CacheStats)

    def to_dict(self) -> dict[str, object]:
        """Returns the report as plain JSON-ready data, stats included with ``hit_ratio``."""
        data = asdict(self)
        stats = {**asdict(self.stats), "hit_ratio": round(self.stats.hit_ratio, 4)}
        # Strict JSON has no Infinity: the last bucket's bound is written as Prometheus does.
        stats["latency_buckets"] = [
            ["+Inf" if bound == math.inf else bound, count]
            for bound, count in self.stats.latency_buckets
        ]
        data["stats"] = stats
        return data

    def __getitem__(self, name: str) -> object:
        """Returns a field by name, so code written for dict reports (``report["status"]``) works."""
        if name not in self.__dataclass_fields__:
            raise KeyError(name)
        return getattr(self, name)


async def check_health(
    guard: Guard, stats: StatsRecorder, namespace: str, version: str, degraded_after_ms: float
) -> HealthReport:
    """Returns the report `Cache.health_check` describes; never raises for a backend failure."""
    backend = guard.backend
    base: dict[str, Any] = {
        "backend": backend.kind,
        "namespace": namespace,
        "version": version,
        "stats": stats.snapshot(),
    }
    if backend.kind == "null":
        return HealthReport(status="disabled", available=False, latency_ms=None, **base)
    started = time.perf_counter()
    try:
        await backend.ping()
        latency_ms = round((time.perf_counter() - started) * 1000, 3)
        info: dict[str, Any] = {}
        if isinstance(backend, ServerInfoBackend):
            info = dict(await backend.server_info())
    except BackendError as exc:
        guard.breaker.failed()
        return HealthReport(
            status="unhealthy",
            available=False,
            latency_ms=None,
            error=str(exc),
            breaker=guard.breaker.state,
            **base,
        )
    guard.succeeded()
    status: HealthStatus = "degraded" if latency_ms > degraded_after_ms else "healthy"
    return HealthReport(
        status=status,
        available=True,
        latency_ms=latency_ms,
        uptime_seconds=_int_or_none(info.get("uptime_seconds")),
        used_memory_mb=_float_or_none(info.get("used_memory_mb")),
        connected_clients=_int_or_none(info.get("connected_clients")),
        ops_per_sec=_int_or_none(info.get("ops_per_sec")),
        server_version=str(info["redis_version"]) if "redis_version" in info else None,
        breaker=guard.breaker.state,
        **base,
    )


def _int_or_none(value: object) -> int | None:
    return int(value) if isinstance(value, int | float | str) and str(value).strip() else None


def _float_or_none(value: object) -> float | None:
    return float(value) if isinstance(value, int | float | str) and str(value).strip() else None
