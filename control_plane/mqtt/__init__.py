"""The control plane's MQTT side: one resilient connection type shared by the fleet bridge and ingest."""
