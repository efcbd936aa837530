"""`cachetier.compat` is an alias of `cachetier.guide`: the same names, the very same objects."""

from __future__ import annotations

import cachetier.compat
import cachetier.guide


def test_compat_exports_exactly_the_guide_objects() -> None:
    assert cachetier.compat.__all__ == cachetier.guide.__all__
    for name in cachetier.guide.__all__:
        assert getattr(cachetier.compat, name) is getattr(cachetier.guide, name), name


def test_both_modules_say_which_is_the_home() -> None:
    assert "alias" in (cachetier.compat.__doc__ or "")
    assert "cachetier.guide" in (cachetier.compat.__doc__ or "")
