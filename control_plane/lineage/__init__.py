"""Lineage: a typed graph linking datasets, runs, model versions, artifacts, deployments and prompts."""
