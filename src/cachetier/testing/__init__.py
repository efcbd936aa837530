"""Testing helpers: `FakeClock`, `FaultyBackend`, read assertions, and the pytest plugin.

The fixtures live in `cachetier.testing.plugin` (loaded by pytest through its entry point) and
the backend contract suite in `cachetier.testing.contract`. `assert_hits`, `expect_reads` and
`Swap` (the type of the ``cachetier_swap`` fixture) are imported from the plugin module on
first use, so ``import cachetier.testing`` needs no pytest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._clock import FakeClock
from .faults import FaultyBackend

if TYPE_CHECKING:
    from .plugin import Swap, assert_hits, expect_reads

__all__ = ("FakeClock", "FaultyBackend", "Swap", "assert_hits", "expect_reads")


def __getattr__(name: str) -> object:
    if name in ("Swap", "assert_hits", "expect_reads"):
        from . import plugin

        return getattr(plugin, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
