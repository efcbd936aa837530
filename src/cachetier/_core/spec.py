"""`FetchSpec`: how one kind of read-through call behaves — a decorated function keeps one."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .._policy import FreshnessPolicy, StampedePolicy
from ..serializers import Serializer
from .stats import StatsRecorder

__all__ = ("FetchSpec",)


@dataclass(frozen=True, slots=True)
class FetchSpec:
    """How one kind of read-through call behaves; a decorated function keeps one for all calls.

    ``ttl`` is the fresh lifetime in seconds (``None``: no expiry); ``codec`` turns values into
    payloads and back; ``stats`` are the decorated function's own counters; ``should_store``
    decides whether a computed value is cached (``None``: always); ``tags`` gives the tags of
    one call from its arguments.
    """

    ttl: float | None
    codec: Serializer
    stampede: StampedePolicy
    freshness: FreshnessPolicy
    stats: StatsRecorder | None = None
    should_store: Callable[[Any], bool] | None = None
    tags: Callable[[tuple[Any, ...], Mapping[str, Any]], tuple[str, ...]] | None = None

    def tags_of(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> tuple[str, ...]:
        """Returns the tags of one call."""
        return () if self.tags is None else self.tags(args, kwargs)
