"""One-line errors for the command line: what is wrong and how to fix it; the traceback goes to the log file."""

from __future__ import annotations

import logging
from typing import Any

import typer
from pydantic import ValidationError
from typer._click import ClickException, Context
from typer.core import TyperGroup

from control_plane.cli.context import err_console
from control_plane.errors import EdgeloopError
from control_plane.preflight import PreflightFailure

log = logging.getLogger("control_plane.cli")
DEBUG_KEY = "edgeloop.debug"
LOG_FILE_KEY = "edgeloop.log_file"
EXIT_PREFLIGHT = 2


def describe_settings_error(exc: ValidationError) -> str:
    """Name the first invalid setting and its environment variable."""
    first = exc.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "settings"
    return f"invalid setting {field} ({first['msg']}): fix EDGELOOP_{field.upper()} or the matching option"


def fail(message: str, exit_code: int) -> typer.Exit:
    """Print ``edgeloop: message`` as one line on stderr and return the exit to raise."""
    err_console.print(f"edgeloop: {message}", highlight=False, markup=False, soft_wrap=True)
    return typer.Exit(exit_code)


class OneLineErrors(TyperGroup):
    """A command group that turns failures into one line on stderr; ``--debug`` re-raises with the traceback."""

    def invoke(self, ctx: Context) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, ClickException):
            raise
        except Exception as exc:
            if ctx.meta.get(DEBUG_KEY):
                raise
            log.debug("command failed", exc_info=True)
            raise self._one_line(exc, ctx.meta.get(LOG_FILE_KEY)) from None

    @staticmethod
    def _one_line(exc: Exception, log_file: object) -> typer.Exit:
        if isinstance(exc, PreflightFailure):
            return fail(str(exc), EXIT_PREFLIGHT)
        if isinstance(exc, ValidationError) and exc.title == "Settings":
            return fail(describe_settings_error(exc), EXIT_PREFLIGHT)
        if isinstance(exc, EdgeloopError):
            return fail(exc.message, 1)
        where = f"traceback in {log_file}; " if log_file else ""
        return fail(f"{type(exc).__name__}: {exc} ({where}--debug shows it)", 1)
