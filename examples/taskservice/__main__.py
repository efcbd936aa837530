"""Runs the task service with uvicorn: ``python -m examples.taskservice [--port 8000]``."""

from __future__ import annotations

import argparse
import logging

import uvicorn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    # Shows cachetier's start-up line (backend, redacted URL, TTL) next to uvicorn's own.
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(message)s")
    uvicorn.run("examples.taskservice.app:app", host=args.host, port=args.port)


if __name__ == "__main__":
    main()
