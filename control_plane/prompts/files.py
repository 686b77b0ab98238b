"""The prompt file format: ``prompts/<name>.md`` with TOML front matter between ``+++`` lines.

TOML because the standard library reads it (no YAML dependency). Chat prompts split the body into messages
at lines of the form ``=== system ===``, ``=== user ===`` or ``=== assistant ===``.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from control_plane.prompts.schemas import ChatMessage, GateConfig, ModelParams, PromptKind, VersionCreate

FENCE = "+++"
_ROLE_LINE = re.compile(r"^=== (system|user|assistant) ===[ \t]*$", re.MULTILINE)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_KNOWN_KEYS = {"name", "kind", "description", "variables", "commit_message", "model_params", "gate"}


class PromptFileError(ValueError):
    """A prompt file that cannot be read as a prompt."""


@dataclass(frozen=True, slots=True)
class PromptFile:
    """One parsed prompt file."""

    path: Path
    name: str
    kind: PromptKind
    description: str
    gate: GateConfig | None
    version: VersionCreate


def split_front_matter(text: str) -> tuple[str, str]:
    """Return (front matter, body) of a file that starts with a ``+++`` fence."""
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].strip() != FENCE:
        raise PromptFileError(f"must start with a {FENCE} line opening the TOML front matter")
    for index, line in enumerate(lines[1:], start=1):
        if line.strip() == FENCE:
            return "".join(lines[1:index]), "".join(lines[index + 1 :])
    raise PromptFileError(f"front matter is not closed by a {FENCE} line")


def split_messages(body: str) -> list[ChatMessage]:
    """Split a chat body into messages at ``=== role ===`` lines."""
    markers = list(_ROLE_LINE.finditer(body))
    if not markers or body[: markers[0].start()].strip():
        raise PromptFileError("a chat prompt body must start with a '=== system ===' (or user/assistant) line")
    messages = []
    for marker, following in zip(markers, [*markers[1:], None], strict=True):
        end = following.start() if following else len(body)
        messages.append(ChatMessage(role=marker.group(1), content=body[marker.end() : end].strip("\n") + "\n"))
    return messages


def parse_prompt_file(path: Path) -> PromptFile:
    """Read and validate one prompt file; raise PromptFileError naming what is wrong."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PromptFileError(f"not valid UTF-8 (byte {exc.start})") from exc
    front, body = split_front_matter(text)
    try:
        meta = tomllib.loads(front)
    except tomllib.TOMLDecodeError as exc:
        raise PromptFileError(f"front matter is not valid TOML: {exc}") from exc
    unknown = sorted(set(meta) - _KNOWN_KEYS)
    if unknown:
        raise PromptFileError(f"unknown front-matter key(s): {', '.join(unknown)}")
    name = str(meta.get("name", path.stem))
    if not _NAME.match(name):
        raise PromptFileError(f"invalid prompt name {name!r}")
    try:
        kind = PromptKind(meta.get("kind", "text"))
        gate = GateConfig.model_validate(meta["gate"]) if "gate" in meta else None
        common = {"variables": meta.get("variables"), "commit_message": meta.get("commit_message", ""),
                  "model_params": ModelParams.model_validate(meta.get("model_params", {}))}
        if kind == PromptKind.CHAT:
            version = VersionCreate(messages=split_messages(body), **common)
        else:
            version = VersionCreate(template=body, **common)
    except (ValidationError, ValueError) as exc:
        if isinstance(exc, PromptFileError):
            raise
        raise PromptFileError(str(exc).replace("\n", "; ")) from exc
    return PromptFile(path=path, name=name, kind=kind, description=str(meta.get("description", "")), gate=gate,
                      version=version)


def prompt_files(directory: Path) -> list[Path]:
    """Return the prompt files of a directory in a stable order (README.md is documentation, not a prompt)."""
    return sorted(p for p in directory.glob("*.md") if p.is_file() and p.name.lower() != "readme.md")
