"""`HealthReport`, what `Cache.health_check` returns."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

from ._stats import CacheStats

__all__ = ("HealthReport", "HealthStatus")

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
        data["stats"] = {**asdict(self.stats), "hit_ratio": round(self.stats.hit_ratio, 4)}
        return data

    def __getitem__(self, name: str) -> object:
        """Returns a field by name, so code written for dict reports (``report["status"]``) works."""
        if name not in self.__dataclass_fields__:
            raise KeyError(name)
        return getattr(self, name)
