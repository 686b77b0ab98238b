"""Alerts raised by monitors: deduplicated by fingerprint, acknowledged and resolved by people or monitors."""
