"""The demo's closed loop: telemetry from real predictions, injected faults, the approval queue, recovery."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agents.control_plane_client import ControlPlaneClient
from control_plane.approvals.schemas import ProposalRead, ProposalState
from control_plane.auth import service as auth_service
from control_plane.auth.roles import Role
from control_plane.auth.schemas import TokenCreate
from control_plane.cli.context import CLI_ACTOR, console, db_session
from control_plane.registry import pipeline
from control_plane.registry import service as registry
from control_plane.registry.store import ArtifactStore
from control_plane.settings import Settings
from edge_agent.simulator import TelemetryFeed

ROLLBACK_KINDS = frozenset({"rollout.rollback", "rollout.abort"})
FAULTY_CALL_SHARE = 0.7  # the bad version fails this share of its inference calls on-device


@dataclass
class Faults:
    """What is broken right now; the telemetry feed reads it on every step."""

    bad_version: int | None = None
    drifted_group: str | None = None
    groups: dict[str, str] = field(default_factory=dict)


def ensure_bad_version(settings: Settings, model_name: str) -> int:
    """Register a bad candidate: the same training data (one dataset, one baseline) with a two-unit MLP."""
    with db_session(settings) as session:
        versions = registry.list_versions(session=session, model_name=model_name)
        if len(versions) >= 2:
            return max(v.version for v in versions)
        data = pipeline.load_sklearn_dataset("digits")
        result = pipeline.register_quantized_model(
            session=session, store=ArtifactStore(settings.artifacts_dir, settings.max_artifact_bytes),
            actor=CLI_ACTOR, model_name=model_name, data=data, estimator=pipeline.train_mlp(data, hidden=(2,)),
            params={"hidden": [2], "dataset": "digits", "quantization": "dynamic"})
    console.print(f"registered the bad candidate {model_name} v{result.version}: a two-unit MLP, "
                  f"accuracy {result.accuracy_int8:.3f}")
    return result.version


def telemetry_feed(faults: Faults, *, window_seconds: float, interval_s: float = 0.5) -> TelemetryFeed:
    """Feed each device rows of the digits test split; the drifted group sees dimmer, offset images."""
    data = pipeline.load_sklearn_dataset("digits")
    rows = np.asarray(data.x_test, dtype=np.float32)
    rng = np.random.default_rng(7)
    lock = threading.Lock()

    def inputs(device_id: str) -> np.ndarray:
        with lock:  # numpy's Generator is not thread-safe
            batch = rows[rng.integers(0, len(rows), 20)].copy()
        if faults.drifted_group and faults.groups.get(device_id) == faults.drifted_group:
            batch = np.clip(batch * 0.5 + 6.0, 0.0, 16.0)  # a new camera: lower contrast, raised black level
        return batch

    def fault(device_id: str, model: dict[str, Any]) -> float:
        return FAULTY_CALL_SHARE if faults.bad_version == model.get("version") else 0.0

    return TelemetryFeed(inputs=inputs, window_seconds=window_seconds, interval_s=interval_s, fault=fault)


def approver_client(settings: Settings) -> ControlPlaneClient:
    """Mint a separate approver token (four eyes: the agent proposes, someone else decides)."""
    with db_session(settings) as session:
        _, token = auth_service.create_token(session=session, actor=CLI_ACTOR, request=TokenCreate(
            name="demo-approver", role=Role.APPROVER))
    return ControlPlaneClient(f"http://127.0.0.1:{settings.port}", token, timeout_seconds=30)


def wait_for_pending(client: ControlPlaneClient, timeout: float, *, kinds: frozenset[str] | None = None
                     ) -> ProposalRead | None:
    """Poll the approval queue until a pending proposal (of ``kinds``) appears."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proposal in client.list_proposals(state=[ProposalState.PENDING]).items:
            if kinds is None or proposal.kind in kinds:
                return proposal
        time.sleep(0.5)
    return None


def approve_and_verify(client: ControlPlaneClient, proposal: ProposalRead, timeout: float) -> ProposalRead:
    """Approve the proposal, wait for its execution and for the worker's verification."""
    client.approve(proposal.id, "demo --auto-approve: the injected fault is confirmed")
    console.print(f"approved {proposal.kind} {proposal.id} as a separate approver; waiting for execution …")
    done = client.wait_for_proposal(proposal.id, timeout_seconds=timeout)
    if done.state != ProposalState.EXECUTED:
        return done
    console.print(f"executed: {done.result}; waiting for fresh telemetry to verify the recovery …")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = client.get_proposal(proposal.id)
        if done.verification is not None:
            break
        time.sleep(0.5)
    return done
