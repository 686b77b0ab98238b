"""Shared by the growth-curve benchmarks: host facts, the results file and a PNG of Edgeloop vs its peer."""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
QUICK_DIR = Path(__file__).resolve().parent / ".work" / "quick"  # gitignored: a smoke run never replaces a result


def out_dir(quick: bool) -> Path:
    """Return where results go: results/ for real runs, benchmarks/.work/quick/ for --quick."""
    return QUICK_DIR if quick else RESULTS_DIR


def host(load_start: Sequence[float]) -> dict[str, Any]:
    """Return the machine and its load average at the start and now (the machines are shared)."""
    return {"python": platform.python_version(), "cpus": os.cpu_count(), "machine": platform.machine(),
            "load_avg_start": [round(x, 2) for x in load_start],
            "load_avg_end": [round(x, 2) for x in os.getloadavg()]}


def write_results(name: str, document: dict[str, Any], quick: bool = False) -> Path:
    """Write <out_dir>/<name>.json with the generation time; return the path."""
    out_dir(quick).mkdir(parents=True, exist_ok=True)
    path = out_dir(quick) / f"{name}.json"
    document = {"name": name, **document, "generated_at": datetime.now(UTC).isoformat(timespec="seconds")}
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def plot(name: str, panels: list[dict[str, Any]], title: str, quick: bool = False) -> Path:
    """Draw one panel per dict {xlabel, ylabel, series: {label: (xs, ys)}, logx, logy, ymin}; save <name>.png."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(panels), figsize=(max(8.5, 6.2 * len(panels)), 4.6), squeeze=False)
    for axis, panel in zip(axes[0], panels, strict=True):
        for (label, (xs, ys)), marker in zip(panel["series"].items(), "os^vD", strict=False):
            points = [(x, y) for x, y in zip(xs, ys, strict=True) if y is not None]
            if points:
                axis.plot([p[0] for p in points], [p[1] for p in points], marker=marker, label=label)
        axis.set_xlabel(panel["xlabel"])
        axis.set_ylabel(panel["ylabel"])
        if panel.get("logx"):
            axis.set_xscale("log")
        if panel.get("logy"):
            axis.set_yscale("log")
        if "ymin" in panel:
            axis.set_ylim(bottom=panel["ymin"])
        if panel.get("subtitle"):
            axis.set_title(panel["subtitle"], fontsize=10)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle(title, fontsize=11)
    figure.tight_layout()
    out_dir(quick).mkdir(parents=True, exist_ok=True)
    path = out_dir(quick) / f"{name}.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
