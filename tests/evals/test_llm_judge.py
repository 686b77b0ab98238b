"""Tier 3 LLM judge against a scripted OpenAI-compatible HTTP server started in the test."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from evals.scorers import JudgeConfig, JudgeError, LLMJudgeScorer
from evals.scorers.llm_judge import parse_json_reply

CONTEXT = ["Devices reject a manifest whose sequence is not greater than the last one.", "The broker port is 1883."]


class ScriptedServer:
    """A real HTTP server speaking the chat-completions wire format, replying from a script."""

    def __init__(self) -> None:
        self.replies: list[tuple[int, str]] = []
        self.requests: list[dict[str, Any]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"path": self.path, "body": body})
                status, content = server.replies.pop(0) if server.replies else (500, "script exhausted")
                payload = (
                    {
                        "id": "chatcmpl-1",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body["model"],
                        "choices": [
                            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
                        ],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                    }
                    if status == 200
                    else {"error": {"message": content, "type": "server_error"}}
                )
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def reply(self, content: Any, status: int = 200) -> None:
        self.replies.append((status, content if isinstance(content, str) else json.dumps(content)))


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    scripted = ScriptedServer()
    scripted.thread.start()
    yield scripted
    scripted.httpd.shutdown()
    scripted.httpd.server_close()


def judge(server: ScriptedServer, retries: int = 2) -> LLMJudgeScorer:
    return LLMJudgeScorer(JudgeConfig(base_url=server.url, model="judge-model", retries=retries, timeout_s=5))


def test_claims_are_decomposed_then_verified(server: ScriptedServer) -> None:
    server.reply({"claims": ["Devices reject replayed manifests.", "The broker port is 8883."]})
    server.reply(
        {
            "verdicts": [
                {
                    "claim": "Devices reject replayed manifests.",
                    "verdict": "supported",
                    "evidence": "Devices reject a manifest",
                },
                {"claim": "The broker port is 8883.", "verdict": "unsupported", "evidence": ""},
            ]
        }
    )
    result = judge(server).score(
        answer="Devices reject replayed manifests and the broker port is 8883.", contexts=CONTEXT, question="Why?"
    )
    assert result.score == 0.5
    first, second = result.claims
    assert first.verdict == "supported" and first.best_span is not None
    assert first.best_span.context_index == 0 and first.best_span.text == "Devices reject a manifest"
    assert second.verdict == "unsupported" and second.best_span is None
    sent = [r["body"] for r in server.requests]
    assert [r["path"] for r in server.requests] == ["/v1/chat/completions"] * 2
    assert all(b["model"] == "judge-model" and b["temperature"] == 0 for b in sent)
    assert sent[0]["response_format"] == {"type": "json_object"}
    assert "ANSWER: Devices reject" in sent[0]["messages"][1]["content"]
    assert "[1] The broker port is 1883." in sent[1]["messages"][1]["content"]


def test_invalid_json_and_server_errors_are_retried(server: ScriptedServer) -> None:
    server.reply("Sure! Here are the claims: not json")
    server.reply("overloaded", status=503)
    server.reply('```json\n{"claims": ["The broker port is 1883."]}\n```')
    server.reply({"verdicts": [{"claim": "x", "verdict": "maybe"}]})  # fails schema validation
    server.reply(
        {"verdicts": [{"claim": "The broker port is 1883.", "verdict": "supported", "evidence": "port is 1883"}]}
    )
    result = judge(server).score(answer="The broker port is 1883.", contexts=CONTEXT)
    assert result.score == 1.0
    assert len(server.requests) == 5


def test_gives_up_with_a_clear_error(server: ScriptedServer) -> None:
    for _ in range(2):
        server.reply({"not_claims": []})
    with pytest.raises(JudgeError, match="attempt 2: invalid reply"):
        judge(server, retries=1).score(answer="The broker port is 1883.", contexts=CONTEXT)


def test_verdict_count_mismatch_is_an_error(server: ScriptedServer) -> None:
    server.reply({"claims": ["a claim", "another claim"]})
    server.reply({"verdicts": [{"claim": "a claim", "verdict": "supported"}]})
    with pytest.raises(JudgeError, match="1 verdicts for 2 claims"):
        judge(server).score(answer="A claim. Another claim.", contexts=CONTEXT)


def test_empty_inputs_never_give_nan(server: ScriptedServer) -> None:
    assert judge(server).score(answer="", contexts=CONTEXT).score == 1.0
    assert server.requests == []
    server.reply({"claims": []})
    assert judge(server).score(answer="Hello there!", contexts=CONTEXT).score == 1.0
    server.reply({"claims": ["The broker port is 1883."]})
    server.reply({"verdicts": [{"claim": "The broker port is 1883.", "verdict": "supported", "evidence": "1883"}]})
    # With no context nothing is supported, whatever the judge says.
    no_context = judge(server).score(answer="The broker port is 1883.", contexts=[])
    assert no_context.score == 0.0 and "empty context" in no_context.note


def test_parse_json_reply_tolerates_prose() -> None:
    assert parse_json_reply('Here you go: {"claims": ["a"]} hope it helps') == {"claims": ["a"]}
    with pytest.raises(json.JSONDecodeError):
        parse_json_reply("no json at all")
