"""The `edgeloop` command line."""
