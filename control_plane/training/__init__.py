"""Continuous training: retraining jobs, labelled rows, champion vs challenger."""
