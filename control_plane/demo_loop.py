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
from control_plane.registry.store import ArtifactStore
from control_plane.settings import Settings
from control_plane.training.labelling import RowRecorder
from edge_agent.simulator import TelemetryFeed

ROLLBACK_KINDS = frozenset({"rollout.rollback", "rollout.abort"})
# The rollout state that means the action finished on every device: the rollback rollout succeeded, or the aborted
# canary returned its wave.
FINISHED = {"rollout.rollback": frozenset({"succeeded"}), "rollout.abort": frozenset({"aborted", "rolled_back"})}
FAULTY_CALL_SHARE = 0.7  # the bad version fails this share of its inference calls on-device


@dataclass
class Faults:
    """What is broken right now; the telemetry feed reads it on every step."""

    bad_version: int | None = None
    drifted_group: str | None = None
    groups: dict[str, str] = field(default_factory=dict)
    recorder: RowRecorder | None = None  # set: the drifted group's rows are remembered with their true labels


def register_bad_version(settings: Settings, model_name: str) -> int:
    """Register a new bad candidate: the same training data (one dataset, one baseline) with a two-unit MLP.

    A new version on every start: a rerun's alerts then open fresh instead of refreshing the ones the previous run
    left open (alerts are keyed by model version), so each run proposes and verifies its own rollback.
    """
    with db_session(settings) as session:
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
    # The drifted group's new camera sees images of the training split: its labelled rows then never include a test
    # image, so a challenger trained on them is scored on the registered test split honestly.
    drifted_rows, drifted_labels = np.asarray(data.x_train, dtype=np.float32), np.asarray(data.y_train)
    recorded: set[int] = set()  # each image labelled once: the job's held-out rows are images it did not train on
    rng = np.random.default_rng(7)
    lock = threading.Lock()

    def inputs(device_id: str) -> np.ndarray:
        drifted = bool(faults.drifted_group) and faults.groups.get(device_id) == faults.drifted_group
        source = drifted_rows if drifted else rows
        with lock:  # numpy's Generator is not thread-safe
            indexes = rng.integers(0, len(source), 20)
            fresh = [i for i, row in enumerate(indexes) if drifted and int(row) not in recorded]
            recorded.update(int(indexes[i]) for i in fresh)
        batch = source[indexes].copy()
        if drifted:
            batch = np.clip(batch * 0.5 + 6.0, 0.0, 16.0)  # a new camera: lower contrast, raised black level
            recorder = faults.recorder
            if recorder is not None and fresh:
                recorder.record(device_id, batch[fresh], drifted_labels[indexes[fresh]])
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


def pending_ids(client: ControlPlaneClient) -> set[str]:
    """Return the ids in the approval queue now (a rerun finds the previous run's proposals there)."""
    return {p.id for p in client.list_proposals(state=[ProposalState.PENDING]).items}


def wait_for_pending(client: ControlPlaneClient, timeout: float, *, kinds: frozenset[str] | None = None,
                     ignore: frozenset[str] = frozenset()) -> ProposalRead | None:
    """Poll the approval queue until a pending proposal (of ``kinds``, not in ``ignore``) appears."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proposal in client.list_proposals(state=[ProposalState.PENDING]).items:
            if proposal.id not in ignore and (kinds is None or proposal.kind in kinds):
                return proposal
        time.sleep(0.5)
    return None


@dataclass(frozen=True)
class Recovery:
    """How an approved rollback ended: the proposal, its rollback rollout and whether both prove recovery."""

    proposal: ProposalRead
    rollback_state: str | None

    @property
    def verified(self) -> bool:
        """Executed, the rollback rollout finished on every device, and fresh telemetry says recovered."""
        return (self.proposal.state == ProposalState.EXECUTED
                and self.rollback_state in FINISHED.get(self.proposal.kind, frozenset())
                and self.proposal.verification is not None and self.proposal.verification.value == "recovered")


def approve_and_verify(client: ControlPlaneClient, proposal: ProposalRead, timeout: float) -> Recovery:
    """Approve the proposal, wait for its execution, its rollback rollout and the worker's verification."""
    client.approve(proposal.id, "demo --auto-approve: the injected fault is confirmed")
    console.print(f"approved {proposal.kind} {proposal.id} as a separate approver; waiting for execution …")
    done = client.wait_for_proposal(proposal.id, timeout_seconds=timeout)
    if done.state != ProposalState.EXECUTED:
        return Recovery(done, None)
    rollout_id = (done.result or {}).get("rollback_rollout_id") or done.params.get("rollout_id")
    console.print(f"executed: {done.result}; waiting for the rollback to finish and fresh telemetry to verify "
                  "the recovery …")
    deadline, said, rollout_state = time.monotonic() + timeout, "", None
    while time.monotonic() < deadline:
        done = client.get_proposal(proposal.id)
        rollout = client.read_json(f"/fleet/rollouts/{rollout_id}") if rollout_id else {}
        rollout_state = rollout.get("state")
        progress = rollout.get("progress", {})
        line = (f"rollback {rollout_id}: {rollout_state}, {progress.get('succeeded', 0)}/{progress.get('total', 0)} "
                f"devices back; verification {done.verification.value if done.verification else 'pending'}")
        if line != said:  # what is being waited for, so a slow step names itself
            console.print(line, highlight=False)
            said = line
        if done.verification is not None and rollout_state not in (None, "pending", "in_progress"):
            break
        time.sleep(0.5)
    return Recovery(done, rollout_state)
