"""Testing helpers: `FakeClock`, and the backend contract suite in `cachetier.testing.contract`."""

from __future__ import annotations

from ._clock import FakeClock

__all__ = ("FakeClock",)
