"""The wheel and the sdist hold what a release must: the package with ``py.typed``, and nothing else.

Both are built once per module with ``python -m build --no-isolation`` (under a second, no
network), so the test needs ``build`` and ``hatchling`` installed (the ``release`` dependency
group) and skips, naming them, without.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytest.importorskip("build", reason="build is not installed (the release dependency group)")
pytest.importorskip("hatchling", reason="hatchling is not installed (the release dependency group)")


@pytest.fixture(scope="module")
def distributions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """Builds the wheel and the sdist and returns the names each holds."""
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    with zipfile.ZipFile(wheel) as archive:
        wheel_names = archive.namelist()
    with tarfile.open(sdist) as archive:
        # Relative to the sdist's top directory (cachetier-<version>/).
        sdist_names = [name.partition("/")[2] for name in archive.getnames()]
    return {"wheel": wheel_names, "sdist": sdist_names}


def test_wheel_holds_the_package_typed_and_nothing_else(
    distributions: dict[str, list[str]],
) -> None:
    names = distributions["wheel"]
    assert "cachetier/py.typed" in names
    assert "cachetier/__init__.py" in names
    assert "cachetier/testing/plugin.py" in names  # the pytest plugin ships
    tops = {name.split("/")[0] for name in names}
    assert {top for top in tops if not top.endswith(".dist-info")} == {"cachetier"}
    assert not [name for name in names if name.startswith(("tests/", "examples/", "benchmarks/"))]
    assert not [name for name in names if name.endswith((".sqlite3", ".db", ".pyc"))]


def test_wheel_metadata_declares_the_plugin_and_the_command(
    distributions: dict[str, list[str]],
) -> None:
    names = distributions["wheel"]
    assert any(name.endswith(".dist-info/entry_points.txt") for name in names)
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names)


def test_sdist_holds_sources_tests_and_docs_but_no_local_files(
    distributions: dict[str, list[str]],
) -> None:
    names = distributions["sdist"]
    for required in (
        "pyproject.toml",
        "README.md",
        "CHANGELOG.md",
        "LICENSE",
        "src/cachetier/py.typed",
        "tests/docs/test_site.py",
        "mkdocs.yml",
        "docs/index.md",
    ):
        assert required in names, required
    assert not [name for name in names if name.endswith((".sqlite3", ".db", ".pyc"))]
    assert not [name for name in names if name.startswith((".venv", "site/", "dist/"))]
