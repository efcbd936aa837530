"""cachetier demo: three slow endpoint queries on a real SQLite database, cached.

``python examples/demo.py`` from a checkout runs ``cachetier demo`` through the command's public
entry point, `cachetier.cli.main`, with the database kept beside this file,
``examples/demo.sqlite3`` (git-ignored), and reused by later runs. Every option of
``cachetier demo`` works here too (``--rows``, ``--rebuild``, ``--quiet``, or ``--db`` elsewhere).
"""

from __future__ import annotations

import sys
from pathlib import Path

from cachetier.cli import main as cachetier

DEFAULT_DB = Path(__file__).resolve().parent / "demo.sqlite3"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not any(arg == "--db" or arg.startswith("--db=") for arg in args):
        args = ["--db", str(DEFAULT_DB), *args]
    return cachetier(["demo", *args])


if __name__ == "__main__":
    sys.exit(main())
