"""The change-event stream (SSE over the audit log) and outgoing webhooks."""
