"""Champion vs challenger on the same rows: accuracy overall and per cohort, int8 vs fp32, latency per inference."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from control_plane.registry import onnx_tools

LATENCY_ROWS = 100
REFERENCE_COHORT = "reference"  # the registered dataset's held-out test split


def score(model: bytes, x: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> dict[str, Any]:
    """Accuracy (overall and per cohort) and single-row latency percentiles with onnxruntime on one thread."""
    session = onnx_tools.make_session(model)
    result: dict[str, Any] = {"rows": len(y)}
    if len(y) == 0:
        return {**result, "accuracy": None, "per_cohort": {}}
    predicted = onnx_tools.predict_labels(session, x)
    hits = predicted == y
    result["accuracy"] = round(float(np.mean(hits)), 6)
    if groups is not None:
        result["per_cohort"] = {str(g): round(float(np.mean(hits[groups == g])), 6) for g in sorted(set(groups))}
    timings = []
    for row in x[:LATENCY_ROWS]:
        started = time.perf_counter()
        onnx_tools.predict_labels(session, row[None, :])
        timings.append((time.perf_counter() - started) * 1e6)
    result["latency_p50_us"] = round(float(np.percentile(timings, 50)), 1)
    result["latency_p99_us"] = round(float(np.percentile(timings, 99)), 1)
    return result


def compare(champion: dict[str, bytes], challenger: dict[str, bytes], *, reference: tuple[np.ndarray, np.ndarray],
            recent: tuple[np.ndarray, np.ndarray, np.ndarray]) -> dict[str, Any]:
    """Score every artifact of both models on the reference test split and on the recent held-out rows."""
    sets = {"reference": (*reference, None), "recent": recent}
    scores: dict[str, dict[str, Any]] = {}
    for role, artifacts in (("champion", champion), ("challenger", challenger)):
        for quantization, model in artifacts.items():
            scores[f"{role}.{quantization}"] = {name: score(model, x, y, g) for name, (x, y, g) in sets.items()}
    return scores


def deployed(artifacts: dict[str, Any]) -> str:
    """The artifact the fleet runs (pick_artifact's default): int8 when there is one."""
    return "int8" if "int8" in artifacts else sorted(artifacts)[-1]


def decide(scores: dict[str, Any], *, champion: str, margin: float) -> dict[str, Any]:
    """Win when the challenger's int8 gains ``margin`` on the recent rows and loses less than it on reference."""
    mine, theirs = scores["challenger.int8"], scores[f"champion.{champion}"]
    gain = _diff(mine["recent"]["accuracy"], theirs["recent"]["accuracy"])
    reference_change = _diff(mine["reference"]["accuracy"], theirs["reference"]["accuracy"])
    wins = gain is not None and gain >= margin and reference_change is not None and reference_change >= -margin
    if gain is None:
        reason = "no held-out recent rows to compare on"
    elif gain < margin:
        reason = f"recent-row accuracy gain {gain:+.4f} is below the margin {margin:.4f}"
    elif reference_change is not None and reference_change < -margin:
        reason = f"reference accuracy falls by {-reference_change:.4f}, more than the margin {margin:.4f}"
    else:
        reason = f"recent-row accuracy gain {gain:+.4f} meets the margin {margin:.4f}"
    challenger_int8_delta = _diff(mine["reference"]["accuracy"], scores["challenger.fp32"]["reference"]["accuracy"])
    per_cohort = {cohort: {"champion": theirs["recent"].get("per_cohort", {}).get(cohort), "challenger": accuracy}
                  for cohort, accuracy in mine["recent"].get("per_cohort", {}).items()}
    per_cohort[REFERENCE_COHORT] = {"champion": theirs["reference"]["accuracy"],
                                    "challenger": mine["reference"]["accuracy"]}
    return {"wins": wins, "reason": reason, "margin": margin, "gain_recent": gain,
            "reference_change": reference_change, "champion_artifact": champion,
            "champion_recent": theirs["recent"]["accuracy"], "challenger_recent": mine["recent"]["accuracy"],
            "champion_reference": theirs["reference"]["accuracy"],
            "challenger_reference": mine["reference"]["accuracy"],
            "per_cohort": per_cohort, "challenger_int8_delta_vs_fp32": challenger_int8_delta,
            "champion_int8_delta_vs_fp32": _diff(scores.get("champion.int8", {}).get("reference", {}).get("accuracy"),
                                                 scores.get("champion.fp32", {}).get("reference", {}).get("accuracy")),
            "latency_p50_us": {key: value["reference"].get("latency_p50_us") for key, value in scores.items()}}


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 6)
