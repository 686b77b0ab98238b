"""The assistant eval runs end to end on a seeded control plane and meets its no-LLM targets."""

from __future__ import annotations

import pytest

from evals.assistant_eval import CASES, run


@pytest.mark.slow
def test_assistant_eval_meets_the_no_llm_targets() -> None:
    report = run(CASES)
    summary = report["summary"]
    assert summary["cases"] >= 40
    assert summary["fact_accuracy"] >= 0.9, summary["failed_cases"]
    assert summary["answers_with_citation"] == 1.0
    assert summary["unsupported_numbers"] == 0
    assert summary["executions"] == 0 and summary["proposals_created"] == 0
    assert summary["refusals_explained"] >= 1
