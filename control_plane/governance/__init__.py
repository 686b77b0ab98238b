"""Governance: model cards and "which model decided this?" decision records, read from the other domains."""
