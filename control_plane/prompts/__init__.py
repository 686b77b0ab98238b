"""Prompt registry: versioned prompts, movable labels with an eval gate, agent-run records."""
