"""The demo's retraining leg: labelled rows of the drifted group, the approved retrain job, the challenger's canary."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

import httpx

from agents.control_plane_client import ControlPlaneClient, ControlPlaneError
from control_plane.approvals.schemas import ProposalRead, ProposalState
from control_plane.cli.context import console
from control_plane.demo_loop import wait_for_pending
from control_plane.training.labelling import RowRecorder, post_recorded_rows

RETRAIN_KINDS = frozenset({"retrain.request"})
CANARY_KINDS = frozenset({"rollout.canary"})
TERMINAL_ROLLOUT = ("succeeded", "aborted", "failed", "rolled_back")


@dataclass(frozen=True)
class Retraining:
    """Where the retraining leg ended; ``honest`` is a canary that succeeded or a challenger that did not win."""

    outcome: str  # canary_succeeded | challenger_not_better | failed
    reason: str
    job_id: str | None = None
    job_s: float | None = None
    decision: dict[str, Any] | None = None
    canary_rollout_state: str | None = None
    approval_to_canary_s: float | None = None
    total_s: float | None = None

    @property
    def honest(self) -> bool:
        """The loop reached one of its two honest end states."""
        return self.outcome in ("canary_succeeded", "challenger_not_better")


def post_rows_for(client: httpx.Client, recorder: RowRecorder, devices: list[str], proposal: ProposalRead) -> None:
    """Post the drifted group's labelled rows for its stored windows, so the request's job can learn from them."""
    clock = time.monotonic()
    totals = post_recorded_rows(client, recorder, devices)
    console.print(f"labelled rows for {proposal.kind} {proposal.id}: {totals['stored_rows']:,} rows of "
                  f"{totals['stored_windows']} telemetry windows of {len(devices)} devices posted to "
                  f"/api/v1/training/rows in {time.monotonic() - clock:.1f}s; the training job will use them",
                  highlight=False)


def post_rows_when_requested(approver: ControlPlaneClient, client: httpx.Client, recorder: RowRecorder,
                             devices: list[str], timeout: float, ignore: frozenset[str]) -> ProposalRead | None:
    """Interactive demo: when the retrain.request appears, post its rows so approving it in the UI trains on them."""
    request = wait_for_pending(approver, timeout, kinds=RETRAIN_KINDS, ignore=ignore)
    if request is None:
        console.print(f"no retrain.request within {timeout:.0f}s; no labelled rows posted")
        return None
    post_rows_for(client, recorder, devices, request)
    console.print(f"approve {request.kind} {request.id} in the approval queue to retrain on them; the challenger's "
                  "rollout.canary then waits there too", highlight=False)
    return request


def run_retraining(approver: ControlPlaneClient, client: httpx.Client, recorder: RowRecorder, devices: list[str], *,
                   timeout: float, train_timeout: float, ignore: frozenset[str]) -> Retraining:
    """--auto-approve: rows posted, retrain approved, job followed, a winning challenger's canary approved."""
    started = time.monotonic()
    try:
        result = _run(approver, client, recorder, devices, timeout=timeout, train_timeout=train_timeout,
                      ignore=ignore)
    except ControlPlaneError as exc:
        result = Retraining("failed", f"the control plane refused: {exc.message}")
    result = replace(result, total_s=time.monotonic() - started)
    _print_outcome(result)
    return result


def _run(approver: ControlPlaneClient, client: httpx.Client, recorder: RowRecorder, devices: list[str], *,
         timeout: float, train_timeout: float, ignore: frozenset[str]) -> Retraining:
    request = wait_for_pending(approver, timeout, kinds=RETRAIN_KINDS, ignore=ignore)
    if request is None:
        return Retraining("failed", f"no retrain.request reached the approval queue within {timeout:.0f}s")
    console.print(f"[bold]retraining[/]: pending {request.kind} ({request.id}) for cohort "
                  f"{request.params.get('cohort')}", highlight=False)
    post_rows_for(client, recorder, devices, request)  # before the approval: the job is queued by it
    approver.approve(request.id, "demo --auto-approve: the injected drift is confirmed")
    done = approver.wait_for_proposal(request.id, timeout_seconds=timeout)
    job_id = (done.result or {}).get("training_job_id")
    if done.state != ProposalState.EXECUTED or not job_id:
        return Retraining("failed", f"the retrain.request ended {done.state} ({done.result})")
    job_id = str(job_id)
    console.print(f"approved {request.kind} {request.id}: training job {job_id} queued", highlight=False)
    job, job_s = _follow_job(approver, job_id, train_timeout)
    if job["state"] != "succeeded":
        reason = job.get("error") or f"still {job['state']} after {train_timeout:.0f}s"
        return Retraining("failed", f"training job {job_id}: {reason}", job_id, job_s)
    decision = job["comparison"].get("decision")
    if decision is None:  # no_new_labelled_rows: the rows did not reach the job
        return Retraining("failed", f"training job {job_id}: {job['outcome']}: {job['data'].get('reason')}",
                          job_id, job_s)
    console.print(f"challenger v{job['challenger_version']} vs champion v{job['model_version']}: "
                  f"{_numbers(decision)}", highlight=False, soft_wrap=True)
    if not decision["wins"] or not job.get("proposal_id"):
        return Retraining("challenger_not_better", _incident_note(approver, job) or f"challenger did not win: "
                          f"{decision['reason']}", job_id, job_s, decision)
    return _approve_canary(approver, str(job["proposal_id"]), timeout, Retraining(
        "failed", "", job_id, job_s, decision))


def _follow_job(approver: ControlPlaneClient, job_id: str, timeout: float) -> tuple[dict[str, Any], float]:
    """Poll the job until it finishes; a spinner with the elapsed seconds, a line per state."""
    clock, said = time.monotonic(), ""
    job: dict[str, Any] = {}
    with console.status(f"training job {job_id} …") as status:
        while time.monotonic() - clock < timeout:
            job = approver.read_json(f"/training/jobs/{job_id}")
            elapsed = time.monotonic() - clock
            status.update(f"training job {job_id}: {job['state']} ({elapsed:.0f}s)")
            if job["state"] != said:
                console.print(f"training job {job_id}: {job['state']} after {elapsed:.1f}s", highlight=False)
                said = job["state"]
            if job["state"] in ("succeeded", "failed"):
                break
            time.sleep(1.0)
    job_s = time.monotonic() - clock
    timings = job.get("timings") or {}
    if job.get("state") == "succeeded":
        console.print(f"training job {job_id}: {job['outcome']} in {job_s:.1f}s (train {timings.get('train_s')}s, "
                      f"quantise {timings.get('quantise_s')}s, compare {timings.get('eval_s')}s, load average "
                      f"{timings.get('load_average_1m')}; rows {(job.get('data') or {}).get('rows')})",
                      highlight=False)
    return job, job_s


def _incident_note(approver: ControlPlaneClient, job: dict[str, Any]) -> str | None:
    """The job's summary as its incident's timeline records it (what a person reading the incident sees)."""
    if not job.get("incident_id"):
        return None
    notes = [e.body.get("summary") for e in approver.timeline(str(job["incident_id"]))
             if e.body.get("training_job_id") == job["id"]]
    return f"incident {job['incident_id']} notes: {notes[-1]}" if notes and notes[-1] else None


def _approve_canary(approver: ControlPlaneClient, proposal_id: str, timeout: float, so_far: Retraining
                    ) -> Retraining:
    proposal = approver.get_proposal(proposal_id)
    approved = time.monotonic()
    approver.approve(proposal_id, "demo --auto-approve: the challenger beat the champion on the drifted cohort")
    console.print(f"approved {proposal.kind} {proposal_id} (v{proposal.params.get('version')} to "
                  f"{proposal.params.get('selector')}); waiting for the canary rollout …", highlight=False)
    done = approver.wait_for_proposal(proposal_id, timeout_seconds=timeout)
    rollout_id = (done.result or {}).get("rollout_id")
    if done.state != ProposalState.EXECUTED or not rollout_id:
        return replace(so_far, reason=f"the canary proposal ended {done.state} ({done.result})")
    deadline, said, state = time.monotonic() + timeout, "", None
    while time.monotonic() < deadline:
        rollout = approver.read_json(f"/fleet/rollouts/{rollout_id}")
        state, progress = rollout["state"], rollout["progress"]
        line = (f"canary {rollout_id}: {state}, wave {rollout['current_wave'] + 1}/{len(rollout['wave_plan'])}, "
                f"{progress['succeeded']}/{progress['total']} activated, {progress['failed']} failed")
        if line != said:
            console.print(line, highlight=False)
            said = line
        if state in TERMINAL_ROLLOUT:
            break
        time.sleep(0.5)
    ended = replace(so_far, canary_rollout_state=state, approval_to_canary_s=time.monotonic() - approved)
    if state == "succeeded":
        return replace(ended, outcome="canary_succeeded", reason=f"canary {rollout_id} succeeded")
    return replace(ended, reason=f"canary {rollout_id} ended {state}")


def _numbers(decision: dict[str, Any]) -> str:
    return (f"accuracy on the drifted cohort's held-out rows {decision['challenger_recent']} vs "
            f"{decision['champion_recent']} (gain {decision['gain_recent']}, margin {decision['margin']}); "
            f"reference test split {decision['challenger_reference']} vs {decision['champion_reference']}; "
            f"challenger int8 vs fp32 {decision['challenger_int8_delta_vs_fp32']}")


def _print_outcome(result: Retraining) -> None:
    if result.outcome == "canary_succeeded":
        console.print(f"[bold green]retraining → canary succeeded[/]: {result.reason}", highlight=False)
    elif result.outcome == "challenger_not_better":
        console.print(f"[bold yellow]retraining → challenger did not win[/]: {result.reason}", highlight=False,
                      soft_wrap=True)  # one line: scripts and tests read it
    else:
        console.print(f"[bold red]retraining failed[/]: {result.reason}", highlight=False)
