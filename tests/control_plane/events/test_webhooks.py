"""Webhooks: signed bodies with the event id, retries with backoff, dead letters, and no slow-down from others."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from fastapi.testclient import TestClient

from control_plane.events.webhooks import backoff
from control_plane.main import create_app
from control_plane.settings import Settings
from tests.conftest import TokenFactory
from tests.control_plane.fleet.conftest import wait_for


class Receiver:
    """A local endpoint: /ok answers 204, /fail answers 500, /hang holds the request until released."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.hanging = 0
        self.release = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.received.append({"path": self.path, "body": body, "headers": dict(self.headers)})
                if self.path == "/hang":
                    outer.hanging += 1
                    outer.release.wait(30)
                    outer.hanging -= 1
                code = 204 if self.path == "/ok" else 500
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

        return Handler

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    endpoint = Receiver()
    yield endpoint
    endpoint.close()


def test_backoff_doubles_and_caps() -> None:
    assert [backoff(n, 1.0, 10.0) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_signed_delivery_retries_dead_letters_and_isolation(settings: Settings, receiver: Receiver,
                                                            make_headers: TokenFactory) -> None:
    settings = settings.model_copy(update={"webhook_timeout_seconds": 1.0, "webhook_max_attempts": 3,
                                           "webhook_backoff_seconds": 0.1, "webhook_poll_seconds": 0.05})
    admin = make_headers("admin")
    with TestClient(create_app(settings)) as client:
        hooks = {}
        for path in ("hang", "fail", "ok"):
            created = client.post("/api/v1/webhooks", headers=admin,
                                  json={"url": f"{receiver.url}/{path}", "resource_types": ["model"]})
            assert created.status_code == 201, created.text
            hooks[path] = created.json()
        assert "secret" not in client.get(f"/api/v1/webhooks/{hooks['ok']['id']}", headers=admin).json()
        assert client.get("/api/v1/webhooks", headers=make_headers("operator")).status_code == 403
        assert client.post("/api/v1/models", json={"name": "m"}, headers=admin).status_code == 201

        ok = wait_for(lambda: [r for r in receiver.received if r["path"] == "/ok"], timeout=20)
        delivery = ok[0]
        event = json.loads(delivery["body"])
        assert event["action"] == "model.create" and delivery["headers"]["X-Edgeloop-Event-Id"] == str(event["seq"])
        expected = hmac.new(hooks["ok"]["secret"].encode(),
                            delivery["headers"]["X-Edgeloop-Timestamp"].encode() + b"." + delivery["body"],
                            hashlib.sha256).hexdigest()
        assert delivery["headers"]["X-Edgeloop-Signature"] == f"sha256={expected}"

        def dead(path: str) -> list[dict[str, Any]]:
            rows = client.get(f"/api/v1/webhooks/{hooks[path]['id']}/deliveries", params={"state": "dead"},
                              headers=admin).json()
            return list(rows)

        failed = wait_for(lambda: dead("fail"), timeout=30)
        assert failed[0]["attempts"] == 3 and failed[0]["last_status"] == 500
        assert len([r for r in receiver.received if r["path"] == "/fail"]) == 3
        hung = wait_for(lambda: dead("hang"), timeout=30)
        assert hung[0]["attempts"] == 3 and "Timeout" in hung[0]["last_error"]
        delivered = client.get(f"/api/v1/webhooks/{hooks['ok']['id']}/deliveries", headers=admin).json()
        assert [(d["state"], d["attempts"]) for d in delivered] == [("delivered", 1)]

        retried = client.post(f"/api/v1/webhooks/{hooks['fail']['id']}/deliveries/{failed[0]['id']}/retry",
                              headers=admin)
        assert retried.status_code == 200 and retried.json()["state"] == "pending"
        wait_for(lambda: len([r for r in receiver.received if r["path"] == "/fail"]) >= 4, timeout=20)
        again = client.post(f"/api/v1/webhooks/{hooks['ok']['id']}/deliveries/{delivered[0]['id']}/retry",
                            headers=admin)
        assert again.status_code == 409
        bad = client.post("/api/v1/webhooks", headers=admin, json={"url": "ftp://x", "actions": []})
        assert bad.status_code == 422
        assert client.post("/api/v1/webhooks", headers=admin,
                           json={"url": f"{receiver.url}/ok", "actions": ["Bad Filter"]}).status_code == 422
        audit = client.get("/api/v1/audit/entries", params={"action": "webhook.create"}, headers=admin).json()
        assert len(audit) == 3 and all(h["secret"] not in json.dumps(audit) for h in hooks.values())


def test_a_hanging_endpoint_never_slows_the_others(settings: Settings, receiver: Receiver,
                                                   make_headers: TokenFactory) -> None:
    # Requests to /hang stay open for the whole (30 s) timeout; /ok must get every event well before that.
    settings = settings.model_copy(update={"webhook_timeout_seconds": 30.0, "webhook_poll_seconds": 0.05,
                                           "webhook_concurrency": 1})
    admin = make_headers("admin")
    with TestClient(create_app(settings)) as client:
        for path in ("hang", "ok"):
            assert client.post("/api/v1/webhooks", headers=admin, json={"url": f"{receiver.url}/{path}"}
                               ).status_code == 201
        client.post("/api/v1/models", json={"name": "first"}, headers=admin)
        wait_for(lambda: receiver.hanging >= 1, timeout=20)
        client.post("/api/v1/models", json={"name": "second"}, headers=admin)
        names = lambda: [json.loads(r["body"])["data"].get("name") for r in receiver.received  # noqa: E731
                         if r["path"] == "/ok"]
        wait_for(lambda: {"first", "second"} <= set(names()), timeout=15)
        assert receiver.hanging == 1  # the first /hang request is still open; with one slot, no second one
        assert len([r for r in receiver.received if r["path"] == "/hang"]) == 1
