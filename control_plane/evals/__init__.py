"""Evaluation service: versioned eval datasets, scored eval runs and run comparison."""
