"""Incidents: correlated alerts with a typed timeline of notes, RCA reports, proposals and their outcomes."""
