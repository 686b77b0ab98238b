"""Model registry: datasets, runs, models, immutable versions, aliases and content-addressed artifacts."""
