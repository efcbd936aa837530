"""cachetier demo: three slow endpoint queries on a real SQLite database, cached.

``python examples/demo.py`` from a checkout; ``cachetier demo`` runs the same code from an
installed package (it lives in ``cachetier._demo``). Here the database is kept beside this file,
``examples/demo.sqlite3`` (git-ignored), and reused by later runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cachetier._demo import add_arguments, run_command

DEFAULT_DB = Path(__file__).resolve().parent / "demo.sqlite3"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser, default_db=DEFAULT_DB)
    return run_command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
