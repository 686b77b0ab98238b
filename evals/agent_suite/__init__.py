"""The agents' scenario suite: cases are data (evals/scenarios/<case>/case.yaml), this package runs them."""
