"""Does the answer's surface move the detector? The same HaluEval answers, written differently, scored again.

Run ``python -m evals.surface_probe [--start 1700] [--rows 150] [--tasks ...]``: for each variant (lower case,
capitals, a framing preamble, a citation mark, a numbered list, a hedge, ...) the share of right and of hallucinated
answers the product's scorer flags. A detector that reads facts flags every variant like the answer as written.
Dev rows only (0-1,999): this is a probe for building the scorer, not a held-out result.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from evals.halueval import DEV_ROWS, TASKS, load_task
from evals.scorers import default_scorer
from evals.scorers.base import Scorer
from evals.scorers.text import split_sentences


def _lower_first(answer: str) -> str:
    return answer[:1].lower() + answer[1:]


VARIANTS: dict[str, Callable[[str], str]] = {
    "as written": lambda a: a,
    "all lower case": str.lower,
    "all capitals": str.upper,
    "Title Case": lambda a: " ".join(w[:1].upper() + w[1:] for w in a.split(" ")),
    '"According to the passage, " first': lambda a: "According to the passage, " + a,
    '"Answer: " first': lambda a: "Answer: " + a,
    '"Based on the context, the answer is " first': lambda a: "Based on the context, the answer is " + a,
    '"I think " first': lambda a: "I think " + _lower_first(a),
    '" [1]" after': lambda a: a.rstrip() + " [1]",
    "as a numbered list": lambda a: "\n".join(f"{i + 1}. {s.text}" for i, s in enumerate(split_sentences(a))),
    '"(according to the passage)" after': lambda a: a.rstrip().rstrip(".") + " (according to the passage).",
    '"It might be that " first': lambda a: "It might be that " + _lower_first(a),
}


def probe(scorer: Scorer, task: str, start: int, stop: int) -> dict[str, tuple[float, float]]:
    """Return, per variant, the share of right and of hallucinated answers of rows ``start:stop`` flagged."""
    rows = load_task(task, start, stop)
    out = {}
    for name, change in VARIANTS.items():
        flagged = [0, 0]
        for example in rows:
            question = example.question or None
            for i, answer in enumerate((example.right, example.hallucinated)):
                result = scorer.score(answer=change(answer), contexts=[example.context], question=question)
                flagged[i] += result.score < 0.5
        out[name] = (flagged[0] / len(rows), flagged[1] / len(rows))
    return out


def main(argv: list[str] | None = None) -> int:
    """Probe each task and print a markdown table (and write JSON with --output)."""
    parser = argparse.ArgumentParser(prog="python -m evals.surface_probe", description=__doc__)
    parser.add_argument("--start", type=int, default=1700)
    parser.add_argument("--rows", type=int, default=150)
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)
    if args.start < 0 or args.rows < 1 or args.start + args.rows > DEV_ROWS:
        parser.error(f"dev rows only: --start and --rows must stay within 0-{DEV_ROWS - 1}")
    scorer = default_scorer()
    results = {task: probe(scorer, task, args.start, args.start + args.rows) for task in args.tasks}
    print(f"scorer: {scorer.name}, rows {args.start}-{args.start + args.rows - 1}; share flagged, right / hallucinated")
    print("| variant | " + " | ".join(args.tasks) + " |")
    print("|---|" + "---|" * len(args.tasks))
    for name in VARIANTS:
        cells = [f"{results[t][name][0]:.1%} / {results[t][name][1]:.1%}" for t in args.tasks]
        print(f"| {name} | " + " | ".join(cells) + " |")
    if args.output:
        args.output.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
