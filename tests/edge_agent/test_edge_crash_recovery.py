"""Crash recovery against real agent processes: an agent crash is retried, a model crash loop is reverted."""

from __future__ import annotations

import collections
import contextlib
import functools
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from control_plane.mqtt.broker import free_port
from edge_agent.daemon import EdgeAgent

pytestmark = pytest.mark.mqtt
REPO = Path(__file__).resolve().parents[2]


def _until(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(interval)
    return result


STEPS = ("early", "downloading", "verified", "trial", "committed")


class Agent:
    """`python -m edge_agent` for one state dir; restartable, killable with SIGKILL."""

    def __init__(self, config: Any, crash_on: str | None = None) -> None:
        self.port = free_port()
        self.env = {
            **os.environ, "PYTHONPATH": str(REPO),
            "EDGELOOP_EDGE_DEVICE_ID": config.device_id, "EDGELOOP_EDGE_DEVICE_TOKEN": config.device_token,
            "EDGELOOP_EDGE_BROKER_URL": config.broker_url,
            "EDGELOOP_EDGE_CONTROL_PLANE_URL": config.control_plane_url,
            "EDGELOOP_EDGE_STATE_DIR": str(config.state_dir),
            "EDGELOOP_EDGE_TRUSTED_PUBLIC_KEY": config.trusted_public_key,
            "EDGELOOP_EDGE_PREDICT_PORT": str(self.port), "EDGELOOP_EDGE_DOWNLOAD_BACKOFF_S": "0.05",
            "EDGELOOP_EDGE_RECONNECT_MIN_S": "1", "EDGELOOP_EDGE_OTA_RETRY_BACKOFF_S": "0.05",
        }
        self.crash_on = crash_on
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = dict(self.env)
        if self.crash_on:
            env["EDGELOOP_EDGE_TEST_CRASH_SHA256"] = self.crash_on
        self.process = subprocess.Popen([sys.executable, "-m", "edge_agent", "--log-level", "ERROR"], env=env,
                                        stderr=subprocess.DEVNULL)

    def kill9(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def predict(self, rows: Any) -> dict[str, Any] | None:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/predict", method="POST",
                                         data=json.dumps({"inputs": rows.tolist()}).encode())
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return dict(json.load(response))
        except OSError:
            return None


@pytest.fixture
def committed_v1(agent_factory: Callable[..., EdgeAgent], harness: Any) -> Callable[[], EdgeAgent]:
    """Return a factory of state dirs that hold committed v1 (installed in-process, then stopped)."""
    def make() -> EdgeAgent:
        agent = agent_factory()
        harness.deploy(agent, 1, harness.models["v1_zipmap"])
        agent.stop()
        return agent
    return make


def _state(agent: EdgeAgent, name: str) -> dict[str, Any]:
    path = Path(agent.config.state_dir) / name
    return dict(json.loads(path.read_text())) if path.exists() else {}


def _phase(harness: Any, agent: EdgeAgent, sequence: int, sha256: str) -> str:
    """Name the step of the update a kill landed in, from the durable files and the last status seen."""
    if _state(agent, "active.json").get("sha256") == sha256:
        return "committed"
    if (Path(agent.config.state_dir) / "trial.json").exists():
        return "trial"
    states = [e["state"] for e in harness.observer.statuses(agent.config.device_id) if e["sequence"] == sequence]
    return states[-1] if states else "before_receipt"


@pytest.mark.slow
def test_kill9_at_random_points_always_converges(committed_v1: Callable[[], EdgeAgent], harness: Any) -> None:
    lanes, trials_per_lane = 3, 17
    seed = int(os.environ.get("EDGELOOP_KILL9_SEED", time.time()))
    rng = random.Random(seed)
    # Each kill aims at one step of the update (chosen at random) plus a random jitter, so every step is hit.
    plans = [[(rng.choice(STEPS), rng.uniform(0.0, 0.03), rng.random() < 0.3, rng.uniform(0.0, 1.5))
              for _ in range(trials_per_lane)] for _ in range(lanes)]
    models = [harness.models[name] for name in ("v2_int8", "v1_plain", "v2_plain", "v1_zipmap")]
    results: list[dict[str, Any]] = []
    errors: list[BaseException] = []

    def reached(state: EdgeAgent, step: str, sequence: int, sha256: str) -> bool:
        root = Path(state.config.state_dir)
        if step == "downloading":
            return any(root.glob(f"slots/*/{sha256}.partial"))
        if step == "verified":
            return any(e["state"] == "verified" for e in harness.observer.statuses(state.config.device_id)
                       if e["sequence"] == sequence)
        if step == "trial":
            return (root / "trial.json").exists()
        return _state(state, "active.json").get("sha256") == sha256

    def lane(state: EdgeAgent, plan: list[tuple[str, float, bool, float]]) -> None:
        agent = Agent(state.config)
        agent.start()
        try:
            for trial, (step, jitter, kill_again, second_kill) in enumerate(plan):
                sequence, model = trial + 2, models[trial % len(models)]
                manifest = harness.manifest(state.config.device_id, sequence, model)
                harness.fault(manifest, chunk_delay_s=0.01)  # a download long enough to be hit
                harness.publish(state.config.device_id, manifest)
                if step != "early":
                    with contextlib.suppress(AssertionError):  # a missed step still kills, somewhere later
                        _until(functools.partial(reached, state, step, sequence, model.sha256), 10, 0.001)
                time.sleep(jitter)
                agent.kill9()
                phases = [_phase(harness, state, sequence, model.sha256)]
                agent.start()
                if kill_again:  # a second crash, which may land in the boot or the retry
                    time.sleep(second_kill)
                    agent.kill9()
                    phases.append(_phase(harness, state, sequence, model.sha256))
                    agent.start()
                def settled(sequence: int = sequence, model: Any = model) -> bool:
                    ota = _state(state, "ota.json")
                    return bool(ota.get("last_accepted") == sequence and ota.get("outcome") != "in_progress"
                                and (answer := agent.predict(model.inputs)) and answer["labels"] == model.labels)
                with contextlib.suppress(AssertionError):  # classified below
                    _until(settled, 60)
                answer = agent.predict(model.inputs)
                bricked = answer is None  # no model serves at all
                converged = (answer is not None and answer["labels"] == model.labels
                             and _state(state, "active.json").get("sha256") == model.sha256
                             and _state(state, "ota.json").get("outcome") == "activated"
                             and not (Path(state.config.state_dir) / "trial.json").exists())
                results.append({"phases": phases, "bricked": bricked, "converged": converged})
        except BaseException as exc:  # re-raised in the test thread
            errors.append(exc)
        finally:
            agent.stop()

    states = [committed_v1() for _ in range(lanes)]
    started = time.monotonic()
    threads = [threading.Thread(target=lane, args=(state, plan)) for state, plan in zip(states, plans, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(600)
    elapsed = time.monotonic() - started
    phases = collections.Counter(p for r in results for p in r["phases"])
    summary = {"seed": seed, "trials": len(results), "kills": sum(phases.values()),
               "bricked": sum(r["bricked"] for r in results), "converged": sum(r["converged"] for r in results),
               "phases": dict(phases), "wall_s": round(elapsed, 1), "load": os.getloadavg()[0]}
    print("kill -9 trials:", json.dumps(summary))
    assert not errors, f"{errors[0]!r} after {summary}"
    assert summary["trials"] == lanes * trials_per_lane >= 50
    assert summary["bricked"] == 0 and summary["converged"] == summary["trials"], summary


def _supervise(agent: Agent, harness: Any, device_id: str, sequence: int, limit: int = 8) -> int:
    """Restart the agent whenever it dies, like systemd's Restart=always, until it reverts; return the crashes."""
    crashes = 0
    agent.start()
    while True:
        reverted = [e for e in harness.observer.statuses(device_id)
                    if e["sequence"] == sequence and e["state"] == "reverted"]
        if reverted:
            assert reverted[-1]["reason"] == "crash_loop"
            return crashes
        assert agent.process is not None
        if agent.process.poll() is not None:
            crashes += 1
            assert crashes <= limit, "the crash loop was never broken"
            agent.start()
        time.sleep(0.05)


def test_a_model_that_crashes_the_agent_is_reverted_and_stays_reverted(
    committed_v1: Callable[[], EdgeAgent], harness: Any
) -> None:
    state = committed_v1()
    device_id = state.config.device_id
    v1, bad = harness.models["v1_zipmap"], harness.models["v2_int8"]
    agent = Agent(state.config, crash_on=bad.sha256)  # any load of this model kills the process (a segfault)
    try:
        harness.publish(device_id, harness.manifest(device_id, 2, bad))
        assert _supervise(agent, harness, device_id, 2) == 3  # ota_max_attempts
        assert _until(lambda: agent.predict(v1.inputs))["labels"] == v1.labels
        # Restarts do not try it again: the retained manifest is recognised as handled.
        agent.stop()
        agent.start()
        assert _until(lambda: agent.predict(v1.inputs))["labels"] == v1.labels
        time.sleep(1.0)
        assert agent.process is not None and agent.process.poll() is None
        assert _state(state, "ota.json")["outcome"] == "reverted"
        assert [e["state"] for e in harness.observer.statuses(device_id) if e["sequence"] == 2].count("reverted") == 1

        # A committed model that kills the agent whenever it loads at boot also ends reverted.
        agent.stop()
        good_until_boot = harness.models["v2_plain"]
        agent.crash_on = None
        agent.start()
        harness.publish(device_id, harness.manifest(device_id, 3, good_until_boot))
        harness.observer.wait_status(device_id, "activated", 3)
        agent.stop()
        agent.crash_on = good_until_boot.sha256
        assert _supervise(agent, harness, device_id, 3) == 3
        assert _until(lambda: agent.predict(v1.inputs))["labels"] == v1.labels
        assert _state(state, "active.json")["sha256"] == v1.sha256
        assert _state(state, "ota.json")["outcome"] == "reverted"
        agent.stop()
        agent.start()
        assert _until(lambda: agent.predict(v1.inputs))["labels"] == v1.labels
    finally:
        agent.stop()
