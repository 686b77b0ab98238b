"""Logging for the command line: Edgeloop's own messages on the console, everything else in the log file."""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
OWN_LOGGERS = ("control_plane", "edge_agent", "agents", "evals")


class _OwnLoggersOnly(logging.Filter):
    """Let through Edgeloop's own records; third-party warnings the user cannot act on stay in the log file."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name.split(".", 1)[0] in OWN_LOGGERS


def configure_cli_logging(log_file: Path | None, *, debug: bool) -> Path | None:
    """Send every record to ``log_file`` (when writable) and only Edgeloop's warnings to stderr; return the file.

    With ``debug`` the console shows every logger at DEBUG, third-party ones included.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_edgeloop", False):
            root.removeHandler(handler)
            handler.close()
    root.setLevel(logging.DEBUG)
    logging.captureWarnings(True)  # warnings.warn() from libraries becomes a record of logger "py.warnings"

    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    if debug:
        console.setLevel(logging.DEBUG)
    else:
        console.setLevel(logging.WARNING)
        console.addFilter(_OwnLoggersOnly())
    handlers: list[logging.Handler] = [console]

    written: Path | None = None
    if log_file is not None:
        with contextlib.suppress(OSError):
            log_file.parent.mkdir(parents=True, exist_ok=True)
            file_handler = logging.FileHandler(log_file, encoding="utf-8")
            file_handler.setLevel(logging.DEBUG)
            file_handler.setFormatter(logging.Formatter(LOG_FORMAT))
            handlers.append(file_handler)
            written = log_file
    for handler in handlers:
        handler._edgeloop = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    return written
