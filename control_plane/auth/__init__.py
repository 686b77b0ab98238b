"""API tokens, roles and scopes."""
