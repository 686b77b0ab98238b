"""The web UI: server-rendered pages under /ui for the approver and the operator."""
