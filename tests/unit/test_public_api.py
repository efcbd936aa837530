"""The public surface: every public module's tuple ``__all__`` is sorted, importable and documented."""

from __future__ import annotations

import importlib
import inspect
import typing

import pytest

PUBLIC_MODULES = [
    "cachetier",
    "cachetier.backends",
    "cachetier.serializers",
    "cachetier.serializers.msgpack",
    "cachetier.testing",
    "cachetier.testing.contract",
    "cachetier.compat",
    "cachetier.contrib.asgi",
    "cachetier.contrib.fastapi",
    "cachetier.contrib.prometheus",
    "cachetier.contrib.otel",
]

SPEC_NAMES = {
    "Cache",
    "CacheSettings",
    "TTL",
    "KeyBuilder",
    "CacheError",
    "BackendError",
    "SerializationError",
    "ConfigurationError",
    "LockTimeout",
}


# Public modules behind an extra, and the import each needs: on an install without that extra
# the module refuses to import (its error names the extra), so its names cannot be checked.
NEEDS_EXTRA = {
    "cachetier.serializers.msgpack": "msgpack",
    "cachetier.contrib.fastapi": "fastapi",
    "cachetier.contrib.prometheus": "prometheus_client",
    "cachetier.contrib.otel": "opentelemetry.metrics",
}


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_all_is_a_sorted_tuple_of_documented_importable_names(name: str) -> None:
    if name in NEEDS_EXTRA:
        pytest.importorskip(NEEDS_EXTRA[name], reason=f"{name} needs an extra not installed here")
    module = importlib.import_module(name)
    exported = module.__all__
    assert isinstance(exported, tuple), f"{name}.__all__ must be a tuple"
    # isort's order, which ruff keeps in src: CONSTANTS first, then the rest by name.
    in_order = sorted(exported, key=lambda n: (not n.isupper(), n.lstrip("_")))
    assert list(exported) == in_order, f"{name}.__all__ is not sorted"
    assert len(set(exported)) == len(exported)
    for public in exported:
        value = getattr(module, public)  # raises if the name is missing
        # Type aliases (ReadHook, ASGIApp) are documented where defined; on 3.10 they pass isclass.
        if typing.get_origin(value) is None and (
            inspect.isclass(value) or inspect.isfunction(value)
        ):
            assert inspect.getdoc(value), f"{name}.{public} has no docstring"


def test_the_names_the_specification_fixes_are_exported() -> None:
    import cachetier
    import cachetier.backends

    assert set(cachetier.__all__) >= SPEC_NAMES
    assert {"Backend", "RedisBackend", "MemoryBackend", "NullBackend"} <= set(
        cachetier.backends.__all__
    )


def test_importing_the_core_imports_no_framework() -> None:
    import subprocess
    import sys

    code = (
        "import sys, cachetier, cachetier.backends, cachetier.compat\n"
        "loaded = {m.split('.')[0] for m in sys.modules}\n"
        "print(sorted(loaded & {'fastapi', 'starlette', 'prometheus_client', 'opentelemetry', 'pytest'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    assert out.strip() == "[]"
