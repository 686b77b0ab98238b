"""HaluEval hallucination detection and QA retrieval; see evals/halueval.py and evals/README.md.

The peer is the answer-length-only baseline, measured in the same run on the same rows.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from evals.halueval import main

if __name__ == "__main__":
    raise SystemExit(main())
