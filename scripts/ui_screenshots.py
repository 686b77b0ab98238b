"""Regenerate docs/screenshots/*.png: run the demo's loop, feed real telemetry with a drifted cohort, shoot each page.

    python scripts/ui_screenshots.py [--out docs/screenshots]

Everything shown is real: the demo model trained and quantised, a private broker, simulated edge agents that
really install it, telemetry windows recorded by the edge agent's own WindowRecorder over the model's real
predictions and posted with each device's token; the last hour of one cohort has a brightness shift.
"""

from __future__ import annotations

import argparse
import functools
import operator
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
from playwright.sync_api import sync_playwright

from control_plane.bootstrap import prepare
from control_plane.demo import api_server, broker_for, ensure_demo_model, provision, roll_out
from control_plane.logs import configure_cli_logging
from control_plane.mqtt.broker import free_port
from control_plane.preflight import chromium_path
from control_plane.registry import pipeline
from control_plane.registry.store import ArtifactStore
from control_plane.settings import Settings
from edge_agent.config import EdgeConfig
from edge_agent.simulator import Fleet
from edge_agent.telemetry import MemorySink, WindowRecorder

REPO = Path(__file__).resolve().parents[1]
PAGES = [("approvals", "/ui/approvals"),
         ("fleet", "/ui/fleet"), ("drift", "/ui/drift?hours=3&buckets=12"), ("registry", "/ui/registry"),
         ("audit", "/ui/audit?verify=1"), ("prompts", "/ui/prompts")]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def feed_telemetry(client: httpx.Client, settings: Settings, configs: list[EdgeConfig]) -> None:
    """Record three hours of 15-minute windows per device from the real int8 model; the last hour of half the
    devices sees brighter images (a covariate shift)."""
    version = client.get("/api/v1/models/digits-mlp/versions/1").json()
    int8 = next(a for a in version["artifacts"] if a["quantization"] == "int8")
    run = client.get(f"/api/v1/runs/{version['run_id']}").json()
    baseline = client.get(f"/api/v1/datasets/{run['dataset_id']}").json()["baseline"]
    model_path = ArtifactStore(settings.artifacts_dir, settings.max_artifact_bytes).open_existing(int8["sha256"])
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    test = pipeline.load_sklearn_dataset("digits").x_test.astype(np.float32)
    rng = np.random.default_rng(7)
    start = time.time() - 3 * 3600
    for index, config in enumerate(configs):
        now = [start]
        outbox = MemorySink()
        recorder = WindowRecorder(baseline, device_id=config.device_id, model_name="digits-mlp", model_version=1,
                                  sink=outbox, window_seconds=900, clock=functools.partial(operator.itemgetter(0), now))
        for step in range(12):
            rows = test[rng.integers(0, len(test), 120)]
            if index % 2 == 0 and step >= 8:
                rows = np.clip(rows * 1.6 + 2.0, 0, 16).astype(np.float32)
            outputs = session.run(None, {input_name: rows})
            recorder.observe(rows, np.asarray(outputs[0]), None, 0.0004, error=False)
            now[0] += 900
            recorder.close_window(now=now[0])
        response = client.post("/api/v1/telemetry/windows", json=outbox.messages,
                               headers={"Authorization": f"Bearer {config.device_token}"})
        response.raise_for_status()


def propose_from_the_drift(client: httpx.Client, settings: Settings, configs: list[EdgeConfig]) -> str:
    """Open an incident for the drifted cohort, post an RCA report citing the drift, and propose as the agent role."""
    from control_plane.auth import service as auth
    from control_plane.auth.roles import Role
    from control_plane.auth.schemas import TokenCreate
    from control_plane.cli.context import db_session

    with db_session(settings) as session:
        _, agent_token = auth.create_token(session=session, actor="admin:screenshots",
                                           request=TokenCreate(name="remediator", role=Role.AGENT))
    agent = {"Authorization": f"Bearer {agent_token}"}
    incident = client.post("/api/v1/incidents", json={"title": "digits-mlp v1: brighter inputs on half the fleet",
                                                       "severity": "critical"}).json()
    drift = {"kind": "drift_report", "query": {"model": "digits-mlp", "version": 1}}
    client.post(f"/api/v1/incidents/{incident['id']}/timeline", headers=agent, json={
        "kind": "rca_report", "summary": "covariate drift in the last hour on the even-numbered devices",
        "hypotheses": [{"rank": 1, "title": "covariate drift (input brightness shift)", "confidence": 0.82,
                        "explanation": "pixel features shifted by PSI > 0.5 since the last hour; no deployment "
                                       "changed in that time", "evidence": [drift]},
                       {"rank": 2, "title": "bad model version", "confidence": 0.08, "evidence": [drift]}]},
                ).raise_for_status()
    device = configs[0].device_id
    proposal = client.post("/api/v1/proposals", headers=agent, json={
        "action": {"kind": "device.quarantine", "device_id": device}, "incident_id": incident["id"],
        "evidence": [drift], "risk": "low",
        "expected_effect": f"{device}'s drifted telemetry leaves the fleet drift; rollouts skip it"})
    proposal.raise_for_status()
    return str(incident["id"])


def shoot(base_url: str, token: str, out: Path, incident_id: str) -> list[Path]:
    """Sign in through the login page and save a full-page screenshot of each page."""
    executable = chromium_path()
    if executable is None:
        raise SystemExit("chromium is not installed (apt-get install chromium)")
    saved = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1360, "height": 900})
        page.goto(f"{base_url}/ui/login")
        page.get_by_label("API token").fill(token)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{base_url}/ui/fleet")
        for name, path in PAGES:
            page.goto(base_url + path)
            target = out / f"{name}.png"
            page.screenshot(path=str(target), full_page=False)
            saved.append(target)
        page.goto(f"{base_url}/ui/incidents/{incident_id}")
        page.screenshot(path=str(out / "incident.png"))
        saved.append(out / "incident.png")
        page.goto(f"{base_url}/ui/chat")
        page.get_by_label("Ask").fill("why did digits-mlp degrade?")
        page.get_by_role("button", name="Send").click()
        page.locator(".turn.assistant .text").last.wait_for()
        page.wait_for_timeout(3000)
        page.screenshot(path=str(out / "chat.png"))
        saved.append(out / "chat.png")
        rollout = page.goto(f"{base_url}/ui/fleet") and page.locator("table a").first.get_attribute("href")
        if rollout:
            page.goto(base_url + rollout)
            page.screenshot(path=str(out / "rollout.png"))
            saved.append(out / "rollout.png")
        browser.close()
    return saved


def main() -> None:
    """Build the loop in a scratch data dir and write the screenshots."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    parser.add_argument("--devices", type=int, default=8)
    args = parser.parse_args()
    configure_cli_logging(None, debug=False)  # onnxruntime's and uvicorn's chatter stays off the console
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edgeloop-shots-") as scratch:
        settings = Settings(data_dir=Path(scratch), port=free_port(), prompts_dir=str(REPO / "prompts"))
        prepare(settings)
        ensure_demo_model(settings)
        token = (settings.data_dir / "admin.token").read_text().strip()
        with broker_for(settings), api_server(settings):
            client = httpx.Client(base_url=settings.base_url, headers={"Authorization": f"Bearer {token}"},
                                  timeout=30)
            configs = [EdgeConfig(**{**c, "state_dir": settings.data_dir / "sim" / c["device_id"]})
                       for c in provision(client, args.devices)]
            fleet = Fleet(configs, shared_root=settings.data_dir / "sim" / "_shared", workers=2)
            fleet.start()
            try:
                roll_out(client, timeout=120)
                feed_telemetry(client, settings, configs)
                incident_id = propose_from_the_drift(client, settings, configs)
                for path in shoot(settings.base_url, token, args.out, incident_id):
                    print(f"wrote {path}")
            finally:
                fleet.stop()
                client.close()


if __name__ == "__main__":
    main()
