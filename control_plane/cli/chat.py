"""`edgeloop chat`: a terminal REPL over the assistant's SSE API, with streamed answers and evidence lines."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import httpx
import typer
from httpx_sse import connect_sse
from rich.console import Console

HELP = "Commands: /new (fresh thread), /history (this thread's turns), /quit. Anything else is a question."


class ChatSession:
    """One thread on a remote control plane, with the user's token."""

    def __init__(self, url: str, token: str, console: Console) -> None:
        self.base = url.rstrip("/") + "/api/v1/assistant"
        self.http = httpx.Client(timeout=httpx.Timeout(10.0, read=120.0),
                                 headers={"Authorization": f"Bearer {token}"})
        self.console = console
        self.thread_id = ""

    def new(self) -> None:
        """Start a fresh thread."""
        response = self.http.post(f"{self.base}/threads")
        _raise_for(response)
        self.thread_id = response.json()["id"]
        self.console.print(f"thread {self.thread_id}", style="dim", markup=False)

    def history(self) -> None:
        """Print this thread's turns."""
        response = self.http.get(f"{self.base}/threads/{self.thread_id}")
        _raise_for(response)
        for turn in response.json()["turns"]:
            self.console.print(f"{turn['role']}> {turn['text']}", markup=False, highlight=False)

    def ask(self, text: str) -> None:
        """Stream one answer: text as it comes, then one compact line per tool call and citation."""
        with connect_sse(self.http, "POST", f"{self.base}/threads/{self.thread_id}/messages",
                         json={"text": text}) as source:
            if source.response.status_code >= 400:
                source.response.read()
                _raise_for(source.response)
            for message in source.iter_sse():
                self._show(message.event, json.loads(message.data))

    def _show(self, event: str, data: dict[str, Any]) -> None:
        if event == "chunk":
            self.console.print(data["text"], end="", markup=False, highlight=False, soft_wrap=True)
        elif event == "tool_end":
            self.console.print(f"  · {data['tool']} {data['status']}", style="dim", markup=False)
        elif event == "citations":
            self.console.print()
            for citation in data["citations"]:
                if citation["kind"] == "runbook":
                    self.console.print(f"  ↳ {citation['document']} § {citation['heading']}", style="dim",
                                       markup=False)
        elif event == "error":
            self.console.print(f"error: {data['message']}", style="red", markup=False)


def _raise_for(response: httpx.Response) -> None:
    if response.status_code >= 400:
        try:
            message = response.json().get("message") or response.json().get("detail")
        except ValueError:
            message = response.text[:200]
        raise RuntimeError(f"{response.status_code}: {message}")


def chat(
    url: Annotated[str, typer.Option(envvar="EDGELOOP_URL", help="The control plane's base URL.")] =
    "http://127.0.0.1:8000",
    token: Annotated[str, typer.Option(envvar="EDGELOOP_TOKEN", help="Your API token.", show_default=False)] = "",
) -> None:
    """Ask the ops assistant questions in a terminal REPL."""
    if not token:
        raise typer.BadParameter("give a token (--token or EDGELOOP_TOKEN)")
    console = Console(highlight=False)
    session = ChatSession(url, token, console)
    try:
        session.new()
        console.print(HELP, style="dim", markup=False)
        for line in sys.stdin:
            text = line.strip()
            if not text:
                continue
            if text == "/quit":
                break
            try:
                if text == "/new":
                    session.new()
                elif text == "/history":
                    session.history()
                else:
                    session.ask(text)
            except (RuntimeError, httpx.HTTPError) as exc:
                console.print(f"error: {exc}", style="red", markup=False)
    except (RuntimeError, httpx.HTTPError) as exc:
        console.print(f"error: {exc}", style="red", markup=False)
        raise typer.Exit(1) from exc
    finally:
        session.http.close()
