"""JSON log lines for `edgeloop serve`, with the request id on every record and secrets redacted."""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime

from control_plane.observability.request_context import RequestIdFilter

# Redacted wherever they appear in a message or a traceback: bearer credentials, Edgeloop API tokens
# (elp_<key id>_<secret>), passwords in URLs (mqtt://user:password@host) and secret-looking query parameters.
_SECRETS = (
    (re.compile(r"(?i)\b(bearer\s+)[^\s,;'\"]+"), r"\1[redacted]"),
    (re.compile(r"\belp_[A-Za-z0-9]+_[A-Za-z0-9_\-]+"), "elp_[redacted]"),
    (re.compile(r"(://[^/\s:@]*:)[^@\s/]+@"), r"\1[redacted]@"),
    (re.compile(r"(?i)([?&](?:access_)?(?:token|password|secret|key|api_key)=)[^&\s]+"), r"\1[redacted]"),
)
SERVER_LOGGERS = ("control_plane", "edge_agent", "agents", "evals", "uvicorn")
# LogRecord attributes that are not "extra" fields.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "request_id"}


# One cheap search decides whether the four substitutions run at all: most lines hold none of these markers.
_MAYBE_SECRET = re.compile(r"(?i)bearer|elp_|://|[?&]")


def redact(text: str) -> str:
    """Return ``text`` with credentials replaced by ``[redacted]``."""
    if _MAYBE_SECRET.search(text) is None:
        return text
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFormatter(logging.Formatter):
    """The text format, with credentials redacted from the message and the traceback."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id, extra fields, traceback."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
            "request_id": getattr(record, "request_id", None),
        }
        fields = vars(record)
        for key in fields.keys() - _STANDARD:  # the extra= fields, found by one set difference
            value = fields[key]
            if not key.startswith("_"):
                entry[key] = value if isinstance(value, int | float | bool | None) else redact(str(value))
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        if record.stack_info:
            entry["stack"] = redact(self.formatStack(record.stack_info))
        return json.dumps(entry, ensure_ascii=False, default=str)


def formatter_for(log_format: str) -> logging.Formatter:
    """Return the formatter for the ``log_format`` setting (json or text)."""
    if log_format == "json":
        return JsonFormatter()
    return RedactingFormatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s")


class _ServerConsole(logging.Filter):
    """On a server's console: Edgeloop's and uvicorn's records from INFO, everyone else's from WARNING."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or record.name.split(".", 1)[0] in SERVER_LOGGERS


def use_server_log_format(log_format: str) -> None:
    """Give every root handler the chosen format, the request-id filter and redaction (for `edgeloop serve`).

    In JSON mode the console (a container's stdout is its log) also carries INFO records: the access line of every
    request and the server's lifecycle; third-party libraries still speak only from WARNING.
    """
    root = logging.getLogger()
    for handler in root.handlers:
        handler.setFormatter(formatter_for(log_format))
        if not any(isinstance(f, RequestIdFilter) for f in handler.filters):
            handler.addFilter(RequestIdFilter())
        is_console = isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)
        if log_format == "json" and is_console and handler.level > logging.INFO:
            handler.setLevel(logging.INFO)
            for old in [f for f in handler.filters if not isinstance(f, RequestIdFilter)]:
                handler.removeFilter(old)
            handler.addFilter(_ServerConsole())
    if log_format == "json":
        # uvicorn's own logging config (applied by any earlier uvicorn.Config in this process) gives its loggers
        # private text handlers, a level and no propagation; in JSON mode every record goes through the root
        # handlers (uvicorn.run sets the level it is given again afterwards).
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
            server_logger = logging.getLogger(name)
            for own in list(server_logger.handlers):
                server_logger.removeHandler(own)
            server_logger.propagate = True
            server_logger.setLevel(logging.NOTSET)
