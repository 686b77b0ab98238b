"""Strict prompt rendering: Jinja2 in a sandbox with StrictUndefined, so a missing variable is an error."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Sized
from typing import Any

from jinja2 import Environment, StrictUndefined, TemplateError, TemplateSyntaxError, meta, nodes
from jinja2.nodes import EvalContext
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError


class TemplateProblem(ValueError):
    """A template that does not parse, or variables that do not fit it."""

    def __init__(self, message: str, *, missing: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.missing = tuple(missing)


# A rendered prompt larger than this is a runaway template (``"x" * 10**9``), not a prompt: the cap applies to the
# whole rendered output (text and every message together), checked as it is produced.
MAX_RENDERED_CHARS = 1_000_000
# Loop iterations one render may run, across every loop and nesting level (nested loops multiply).
MAX_LOOP_ITERATIONS = 100_000
# A format width or precision this long (10**6 or more) asks for a string past the output cap by itself.
_HUGE_FORMAT_FIELD = re.compile(r"\d{7,}")


def _refuse_huge(value: Any) -> None:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_RENDERED_CHARS:
        raise SecurityError(f"argument {value} exceeds the {MAX_RENDERED_CHARS}-character output cap")


def _estimated_size(name: str, subject: Any, args: Sequence[Any]) -> int:
    """Return the size of a string-building call's result before it is built (0: not such a call)."""
    if not isinstance(subject, str):
        return 0
    if name == "join" and args and isinstance(args[0], Sized):
        return len(subject) * len(args[0])
    if name == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        count = subject.count(args[0]) if args[0] else len(subject) + 1
        return len(subject) + count * len(args[1])
    if name == "indent" and args and isinstance(args[0], str):
        return len(subject) + (subject.count("\n") + 1) * len(args[0])
    if name in ("format", "format_map") and _HUGE_FORMAT_FIELD.search(subject):
        return MAX_RENDERED_CHARS + 1
    return 0


def _check_call(name: str, subject: Any, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
    for value in [*args, *kwargs.values()]:
        _refuse_huge(value)
    if _estimated_size(name, subject, args) > MAX_RENDERED_CHARS:
        raise SecurityError(f"{name} would build a string past the {MAX_RENDERED_CHARS}-character output cap")


def _bounded_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    # functools.wraps copies jinja_pass_arg, so a filter that takes the context or environment still gets it.
    @functools.wraps(function)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        values = [a for a in args if not isinstance(a, Context | Environment | EvalContext)]
        if name == "join":  # the filter's separator comes after the sequence
            size = len(values[1]) * len(values[0]) if len(values) > 1 and isinstance(values[0], Sized) else 0
            if isinstance(values[1] if len(values) > 1 else None, str) and size > MAX_RENDERED_CHARS:
                raise SecurityError(f"join would build a string past the {MAX_RENDERED_CHARS}-character output cap")
        elif values:
            _check_call(name, values[0], values[1:], kwargs)
        return function(*args, **kwargs)

    return bounded


class _Sandbox(ImmutableSandboxedEnvironment):
    """Sandbox that also bounds what a template can make the renderer build: output, loops, repetition."""

    intercepted_binops = frozenset({"**", "*", "%"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.loop_iterations_left = MAX_LOOP_ITERATIONS
        self.filters = {name: _bounded_filter(name, f) for name, f in self.filters.items()}

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        # Every {% for %} iterates through counted_loop, so nested loops cannot run 10**10 silent iterations.
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):
            loop.iter = nodes.Call(nodes.EnvironmentAttribute("counted_loop"), [loop.iter], [], None, None,
                                   lineno=loop.lineno)
        return tree

    def counted_loop(self, iterable: Iterable[Any]) -> Iterator[Any]:
        """Yield the loop's items, refusing past the render's iteration budget."""
        for item in iterable:
            self.loop_iterations_left -= 1
            if self.loop_iterations_left < 0:
                raise SecurityError(f"the template runs more than {MAX_LOOP_ITERATIONS} loop iterations")
            yield item

    def call(self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        if __obj != self.counted_loop:
            _check_call(getattr(__obj, "__name__", ""), getattr(__obj, "__self__", None), args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """Refuse str.format widths that alone exceed the output cap (the sandbox routes str.format here)."""
        wrapped = super().wrap_str_format(value)
        subject = getattr(value, "__self__", None)
        if wrapped is not None and isinstance(subject, str) and _HUGE_FORMAT_FIELD.search(subject):
            raise SecurityError(f"the format would exceed {MAX_RENDERED_CHARS} characters")
        return wrapped

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            raise SecurityError("the power operator is not allowed in prompt templates")
        if operator == "*" and any(isinstance(v, str | list | tuple) for v in (left, right)):
            count = right if isinstance(left, str | list | tuple) else left
            size = len(left if isinstance(left, str | list | tuple) else right)
            if isinstance(count, int) and count * size > MAX_RENDERED_CHARS:
                raise SecurityError(f"repetition would exceed {MAX_RENDERED_CHARS} characters")
        if operator == "%" and isinstance(left, str) and _HUGE_FORMAT_FIELD.search(left):
            raise SecurityError(f"the format would exceed {MAX_RENDERED_CHARS} characters")
        return super().call_binop(context, operator, left, right)


def _environment() -> _Sandbox:
    # A fresh sandbox per render: templates come from the API, so they must not reach Python internals,
    # and nothing (the loop budget included) is shared across renders. keep_trailing_newline keeps file prompts
    # byte-faithful.
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


class _Output:
    """The characters one render may still produce, shared by the text and every message."""

    def __init__(self) -> None:
        self.left = MAX_RENDERED_CHARS


def _render_one(environment: _Sandbox, source: str, variables: Mapping[str, Any], output: _Output) -> str:
    pieces: list[str] = []
    try:
        # Streamed, so a runaway loop is stopped at the cap instead of after it has built the whole output.
        for piece in environment.from_string(source).generate(**variables):
            output.left -= len(piece)
            if output.left < 0:
                raise TemplateProblem(f"the rendered prompt exceeds {MAX_RENDERED_CHARS} characters")
            pieces.append(piece)
    except TemplateError as exc:
        # StrictUndefined also fires on names only reachable at render time (inside branches, loops).
        raise TemplateProblem(f"cannot render prompt: {exc}") from exc
    return "".join(pieces)


def render(
    *, template: str, messages: Sequence[Mapping[str, str]], declared: Sequence[str], variables: Mapping[str, Any]
) -> tuple[str, list[dict[str, str]]]:
    """Render a text template or chat messages; refuse missing variables, naming every one of them."""
    missing = sorted(set(declared) - set(variables))
    if missing:
        raise TemplateProblem(f"missing template variable(s): {', '.join(missing)}", missing=missing)
    environment, output = _environment(), _Output()  # one loop budget and one output cap for the whole prompt
    text = _render_one(environment, template, variables, output) if template else ""
    rendered = [{"role": m["role"], "content": _render_one(environment, m["content"], variables, output)}
                for m in messages]
    return text, rendered
