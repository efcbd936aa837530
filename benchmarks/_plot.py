"""Draws the benchmark results as one SVG: per section, each case's median time, cachetier's bars
marked, the section's baseline as a line.

``run.py`` calls `plot` after a full run; to redraw from results already written::

    python benchmarks/_plot.py benchmarks/results/latest.json benchmarks/results/latest.svg

Needs matplotlib (in the ``bench`` dependency group); without it nothing is drawn and the run
says so.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

# The sections worth a picture: per-call times that a bar chart compares well.
SECTIONS = (
    "redis_hit_doc",
    "redis_hit_short",
    "cluster_hit_doc",
    "memory_hit_doc",
    "memory_hit_short",
)


def plot(report: dict[str, Any], path: Path) -> bool:
    """Writes the chart of ``report`` (as ``latest.json`` holds it) to ``path``; returns
    whether it could (``False`` without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    sections = [s for s in report["sections"] if s["key"] in SECTIONS]
    if not sections:
        return False
    figure, axes = plt.subplots(
        len(sections), 1, figsize=(9, 2.2 + 0.45 * sum(len(s["rows"]) for s in sections))
    )
    if len(sections) == 1:
        axes = [axes]
    for axis, section in zip(axes, sections, strict=True):
        rows = [row for row in section["rows"] if row.get("median_us")]
        labels = [row["case"] for row in rows]
        values = [row["median_us"] for row in rows]
        colors = ["#2b6cb0" if row["case"].startswith("cachetier") else "#a0aec0" for row in rows]
        axis.barh(labels, values, color=colors)
        axis.invert_yaxis()
        axis.set_title(section["title"], fontsize=10, loc="left")
        axis.set_xlabel("median µs per call (lower is better)", fontsize=8)
        axis.tick_params(axis="y", labelsize=7)
        axis.tick_params(axis="x", labelsize=7)
        base = next((row for row in rows if row["key"] == section.get("base")), None)
        if base is not None:
            axis.axvline(base["median_us"], color="#c53030", linewidth=1, linestyle="--")
        for y, value in enumerate(values):
            axis.text(value, y, f" {value:,.1f}", va="center", fontsize=6)
    environment = report.get("environment", {})
    figure.suptitle(
        f"cachetier benchmarks, {str(environment.get('date', ''))[:10]}, "
        f"{environment.get('cpus', '?')} CPUs; dashed line: the section's baseline",
        fontsize=9,
    )
    figure.tight_layout(rect=(0, 0, 1, 0.985))
    path.parent.mkdir(parents=True, exist_ok=True)
    # No timestamps or ids in the file, so the same results give the same bytes.
    figure.savefig(path, format="svg", metadata={"Date": None})
    plt.close(figure)
    return True


def main(argv: list[str]) -> int:
    source = Path(argv[0]) if argv else Path(__file__).parent / "results" / "latest.json"
    target = Path(argv[1]) if len(argv) > 1 else source.with_suffix(".svg")
    if not plot(json.loads(source.read_text(encoding="utf-8")), target):
        print("nothing drawn: matplotlib is not installed (pip install --group bench)")
        return 1
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
