"""Typed client for the prompt registry: TTL cache, and the last good version when the server is unreachable."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from control_plane.prompts.templates import TemplateProblem, render

log = logging.getLogger(__name__)


class PromptClientError(RuntimeError):
    """The registry refused the request (not found, forbidden, invalid)."""

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


class PromptUnavailable(RuntimeError):
    """The registry is unreachable and no good copy of the prompt is cached."""


@dataclass(frozen=True, slots=True)
class RenderedPrompt:
    """A rendered prompt: ``text`` for text prompts, ``messages`` for chat prompts."""

    version_id: str
    text: str
    messages: list[dict[str, str]]
    model_params: dict[str, Any]


@dataclass(frozen=True, slots=True)
class PromptTemplate:
    """One prompt version as the registry served it; ``stale`` when served from the fallback cache."""

    name: str
    ref: str
    version: int
    version_id: str
    kind: str
    template: str
    messages: list[dict[str, str]]
    variables: list[str]
    model_params: dict[str, Any]
    stale: bool = False

    def render(self, variables: Mapping[str, Any]) -> RenderedPrompt:
        """Render locally with the registry's strict rules (a missing variable raises TemplateProblem)."""
        text, messages = render(template=self.template, messages=self.messages, declared=self.variables,
                                variables=variables)
        return RenderedPrompt(self.version_id, text, messages, dict(self.model_params))


class PromptClient:
    """Fetch prompt versions by NAME@ref, cached for ``ttl_seconds``; fall back to the last good copy."""

    def __init__(
        self, base_url: str, token: str, *, ttl_seconds: float = 60.0, timeout_seconds: float = 5.0,
        cache_dir: Path | None = None, transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_seconds = ttl_seconds
        self.cache_dir = cache_dir
        self._clock = clock
        self._cache: dict[tuple[str, str], tuple[float, PromptTemplate]] = {}
        self._http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout_seconds, transport=transport,
                                  headers={"Authorization": f"Bearer {token}"})

    def __enter__(self) -> PromptClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._http.close()

    def get(self, name: str, ref: str = "production") -> PromptTemplate:
        """Return the version ``ref`` (label, number or 'latest') of prompt ``name``."""
        key = (name, ref)
        cached = self._cache.get(key)
        if cached is not None and self._clock() - cached[0] < self.ttl_seconds:
            return cached[1]
        try:
            response = self._http.get(f"/api/v1/prompts/{quote(name, safe='')}/versions/{quote(ref, safe='')}")
        except httpx.TransportError as exc:
            return self._fallback(key, cached, f"unreachable: {exc}")
        if response.status_code >= 500:
            return self._fallback(key, cached, f"server error {response.status_code}")
        if response.status_code != 200:
            raise PromptClientError(_error_message(response), response.status_code)
        body = response.json()
        prompt = PromptTemplate(name=name, ref=ref, version=body["version"], version_id=body["id"],
                                kind=body["kind"], template=body["template"], messages=body["messages"],
                                variables=body["variables"], model_params=body["model_params"])
        self._cache[key] = (self._clock(), prompt)
        self._store(prompt)
        return prompt

    def render(self, name: str, variables: Mapping[str, Any], ref: str = "production") -> RenderedPrompt:
        """Fetch (or reuse) a version and render it strictly."""
        return self.get(name, ref).render(variables)

    def record_run(self, *, agent: str, outcome: str, prompt_version_ids: list[str], input_summary: str = "",
                   details: Mapping[str, Any] | None = None) -> str:
        """Record an agent run and the prompt versions it used; return the run id."""
        response = self._http.post("/api/v1/agent-runs", json={
            "agent": agent, "outcome": outcome, "prompt_version_ids": prompt_version_ids,
            "input_summary": input_summary, "details": dict(details or {})})
        if response.status_code != 201:
            raise PromptClientError(_error_message(response), response.status_code)
        return str(response.json()["id"])

    def _fallback(self, key: tuple[str, str], cached: tuple[float, PromptTemplate] | None,
                  reason: str) -> PromptTemplate:
        last_good = cached[1] if cached is not None else self._load(key)
        if last_good is None:
            raise PromptUnavailable(f"prompt {key[0]}@{key[1]}: registry {reason}, and no cached copy")
        log.warning("prompt %s@%s: registry %s; using last good version %d", key[0], key[1], reason,
                    last_good.version)
        return replace(last_good, stale=True)

    def _path(self, key: tuple[str, str]) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / f"{quote(key[0], safe='')}@{quote(key[1], safe='')}.json"

    def _store(self, prompt: PromptTemplate) -> None:
        path = self._path((prompt.name, prompt.ref))
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(asdict(prompt)), encoding="utf-8")
        # Atomic replace: a crash mid-write must not leave a half-written last-good copy.
        os.replace(temporary, path)

    def _load(self, key: tuple[str, str]) -> PromptTemplate | None:
        path = self._path(key)
        if path is None or not path.is_file():
            return None
        try:
            return PromptTemplate(**json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            return None


def _error_message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}"


__all__ = ["PromptClient", "PromptClientError", "PromptTemplate", "PromptUnavailable", "RenderedPrompt",
           "TemplateProblem"]
