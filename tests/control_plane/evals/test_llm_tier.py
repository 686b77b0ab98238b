"""The LLM tier against a scripted OpenAI-compatible server: judge verdicts per claim, generation with the prompt."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from fastapi.testclient import TestClient

from control_plane.evals.llm import JUDGE_SYSTEM
from control_plane.main import create_app
from control_plane.settings import Settings

API = "/api/v1"


class ScriptedLLM(BaseHTTPRequestHandler):
    """Judges a claim unsupported when it mentions Mars; answers every generation request the same way."""

    requests: list[dict[str, Any]] = []
    garbage = False

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"path": self.path, **body})
        messages = body["messages"]
        if messages[0]["content"] == JUDGE_SYSTEM:
            claims = messages[1]["content"].split("Claims:\n", 1)[1].splitlines()
            verdicts = ["unsupported" if "Mars" in c else "supported" for c in claims]
            content = "not json" if type(self).garbage else json.dumps({"verdicts": verdicts})
        else:
            content = "The broker listens on port 1883. It was moved to Mars."
        reply = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *_: Any) -> None:
        return


@pytest.fixture
def llm_url() -> Iterator[str]:
    """Serve the scripted LLM on a free port."""
    ScriptedLLM.requests, ScriptedLLM.garbage = [], False
    server = ThreadingHTTPServer(("127.0.0.1", 0), ScriptedLLM)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_llm_tier_judges_claims_and_generates_with_prompt_params(
    settings: Settings, llm_url: str, admin_headers: dict[str, str]
) -> None:
    llm_settings = settings.model_copy(update={"llm_base_url": llm_url, "llm_model": "judge-model"})
    h = admin_headers
    with TestClient(create_app(llm_settings)) as client:
        client.post(f"{API}/prompts", json={"name": "qa"}, headers=h)
        client.post(f"{API}/prompts/qa/versions", json={"template": "{{ context }}\nQ: {{ question }}",
                                                        "model_params": {"model": "gen-model", "temperature": 0.3}},
                    headers=h)
        client.post(f"{API}/eval-datasets/golden/versions", headers=h, json={"samples": [
            {"id": "port", "question": "Which port?", "contexts": ["The broker listens on port 1883."]}]})
        run = client.post(f"{API}/eval-runs", json={"dataset": "golden", "prompt": "qa@1"}, headers=h)
        assert run.status_code == 201, run.text
        body = run.json()
        assert (body["scorer_tier"], body["scorer"], body["generator"]) == ("llm", "llm_judge", "llm:gen-model")
        sample = body["samples"][0]
        assert [c["verdict"] for c in sample["claims"]] == ["supported", "unsupported"]
        assert sample["metrics"]["faithfulness"] == 0.5 and not body["passed"]
        generation, judge = ScriptedLLM.requests
        assert generation["path"] == "/v1/chat/completions" and generation["model"] == "gen-model"
        assert generation["temperature"] == 0.3 and "Q: Which port?" in generation["messages"][0]["content"]
        assert judge["model"] == "judge-model" and judge["temperature"] == 0.0

        offline = client.post(f"{API}/eval-runs", json={"dataset": "golden", "prompt": "qa@1",
                                                        "scorer_tier": "offline"}, headers=h).json()
        assert (offline["scorer_tier"], offline["generator"]) == ("offline", "offline_extractive")

        ScriptedLLM.garbage = True
        broken = client.post(f"{API}/eval-runs", json={"dataset": "golden", "prompt": "qa@1"}, headers=h)
        assert broken.status_code == 503 and "not the JSON asked for" in broken.json()["error"]["message"]
        assert len(client.get(f"{API}/eval-runs", headers=h).json()) == 2
