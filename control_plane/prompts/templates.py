"""Strict prompt rendering: Jinja2 in a sandbox with StrictUndefined, so a missing variable is an error."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, meta
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError


class TemplateProblem(ValueError):
    """A template that does not parse, or variables that do not fit it."""

    def __init__(self, message: str, *, missing: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.missing = tuple(missing)


# A rendered prompt larger than this is a runaway template (``"x" * 10**9``), not a prompt.
MAX_RENDERED_CHARS = 1_000_000


class _Sandbox(ImmutableSandboxedEnvironment):
    """Sandbox that also refuses the arithmetic a template could use to exhaust memory or CPU."""

    intercepted_binops = frozenset({"**", "*"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            raise SecurityError("the power operator is not allowed in prompt templates")
        if operator == "*" and any(isinstance(v, str | list | tuple) for v in (left, right)):
            count = right if isinstance(left, str | list | tuple) else left
            size = len(left if isinstance(left, str | list | tuple) else right)
            if isinstance(count, int) and count * size > MAX_RENDERED_CHARS:
                raise SecurityError(f"repetition would exceed {MAX_RENDERED_CHARS} characters")
        return super().call_binop(context, operator, left, right)


def _environment() -> ImmutableSandboxedEnvironment:
    # A fresh sandbox per call: templates come from the API, so they must not reach Python internals,
    # and nothing is cached across tenants. keep_trailing_newline keeps file prompts byte-faithful.
    return _Sandbox(undefined=StrictUndefined, keep_trailing_newline=True, autoescape=False)


def template_variables(source: str) -> set[str]:
    """Return the undeclared (caller-supplied) variables a template uses."""
    environment = _environment()
    try:
        return set(meta.find_undeclared_variables(environment.parse(source)))
    except TemplateSyntaxError as exc:
        raise TemplateProblem(f"template syntax error at line {exc.lineno}: {exc.message}") from exc


def variables_of(*, template: str, messages: Sequence[Mapping[str, str]]) -> list[str]:
    """Return the sorted variables of a text template or of every chat message."""
    found: set[str] = set()
    for source in [template, *(m["content"] for m in messages)]:
        found |= template_variables(source)
    return sorted(found)


def _render_one(source: str, variables: Mapping[str, Any]) -> str:
    try:
        return _environment().from_string(source).render(**variables)
    except TemplateError as exc:
        # StrictUndefined also fires on names only reachable at render time (inside branches, loops).
        raise TemplateProblem(f"cannot render prompt: {exc}") from exc


def render(
    *, template: str, messages: Sequence[Mapping[str, str]], declared: Sequence[str], variables: Mapping[str, Any]
) -> tuple[str, list[dict[str, str]]]:
    """Render a text template or chat messages; refuse missing variables, naming every one of them."""
    missing = sorted(set(declared) - set(variables))
    if missing:
        raise TemplateProblem(f"missing template variable(s): {', '.join(missing)}", missing=missing)
    text = _render_one(template, variables) if template else ""
    rendered = [{"role": m["role"], "content": _render_one(m["content"], variables)} for m in messages]
    return text, rendered
