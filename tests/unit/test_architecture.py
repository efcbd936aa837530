"""The shape of `src/`: no import cycles, modules of a readable size, one owner per rule.

Imports are read from the source with `ast`, all of them: those under ``TYPE_CHECKING`` and
those inside functions count too, since a cycle hidden there is still a cycle to a reader.
Function complexity is ruff's rule C901 (``max-complexity = 20`` in ``pyproject.toml``).
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

SRC = Path(__file__).parents[2] / "src"
PACKAGE = SRC / "cachetier"
MAX_LINES = 600
# The façade is the one module above the limit, and only by its documentation: each public
# method's signature and docstring are the API reference, and its body is a check and one
# core call. Splitting the class would take mixins (see STYLE), so it has a ceiling of its own.
LARGER = {"cachetier._cache": 800}
# The byte layout of entries (magic bytes, header format, lease prefix), known to one module.
ENTRY_FORMAT_TOKENS = ("0xC1", "0xC2", "0xc1", "0xc2", "xc3\\xff", "BBBBQddf8s")
ENTRY_FORMAT_OWNER = "cachetier._core.entry"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@functools.cache
def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str) -> set[str]:
    """Every module of the package that ``name`` imports, wherever the import statement is."""
    modules = _modules()
    path = modules[name]
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, node.module] if node.module else base)
            targets = [module, *(f"{module}.{alias.name}" for alias in node.names)]
        found.update(target for target in targets if target in modules)
    found.discard(name)
    return found


def _cycles(graph: dict[str, list[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return components


def test_the_import_graph_of_the_package_has_no_cycle() -> None:
    assert _cycles({name: sorted(_imports(name)) for name in _modules()}) == []


def test_the_cycle_check_sees_imports_inside_functions_and_finds_cycles() -> None:
    """The check above can fail: it reads imports made inside a function (`from_settings`
    imports the settings module when called), and finds a cycle through three modules."""
    assert "cachetier._settings" in _imports("cachetier._cache")
    graph = {"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}
    assert _cycles(graph) == [["a", "b", "c"]]


@pytest.mark.parametrize("name", sorted(_modules()))
def test_no_module_is_longer_than_the_limit(name: str) -> None:
    lines = len(_modules()[name].read_text(encoding="utf-8").splitlines())
    limit = LARGER.get(name, MAX_LINES)
    assert lines <= limit, f"{name} has {lines} lines (limit {limit}): split it by concept"


def test_only_the_redis_package_imports_redis_py() -> None:
    outside = []
    for name, path in _modules().items():
        if name.startswith("cachetier.backends.redis"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                roots = {node.module.split(".")[0]}
            else:
                continue
            if "redis" in roots:
                outside.append(f"{name}:{node.lineno}")
    assert outside == []


def test_only_the_errors_module_knows_redis_py_exceptions() -> None:
    knowing = [
        name
        for name, path in _modules().items()
        if "redis.exceptions" in path.read_text(encoding="utf-8")
    ]
    assert knowing == ["cachetier.backends.redis.errors"]


def test_only_the_entry_module_knows_the_byte_layout_of_entries() -> None:
    knowing = {
        name
        for name, path in _modules().items()
        if any(token in path.read_text(encoding="utf-8") for token in ENTRY_FORMAT_TOKENS)
    }
    assert knowing == {ENTRY_FORMAT_OWNER}


def test_the_command_line_imports_only_public_names_of_the_library() -> None:
    """`cachetier.cli` is a client of the public API (its own demo apart)."""
    private = sorted(
        module
        for module in _imports("cachetier.cli")
        if any(part.startswith("_") for part in module.split(".")[1:])
        and not module.startswith("cachetier._demo")
    )
    assert private == []
