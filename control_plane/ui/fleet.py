"""Fleet pages: devices and rollouts, with role-gated pause / resume / abort / rollback (confirmed, with a reason)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Request
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.responses import Response

from control_plane.auth.roles import Scope
from control_plane.deps import SessionDep
from control_plane.errors import Invalid
from control_plane.events import service as events
from control_plane.fleet import rollouts, service, shadow
from control_plane.fleet.abtest_models import Experiment
from control_plane.fleet.manifests import factory_for
from control_plane.fleet.schemas import TERMINAL_ROLLOUT_STATES, RolloutState, Strategy
from control_plane.ui.auth import CheckedForm, CurrentViewer, Viewer
from control_plane.ui.rendering import redirect, render

router = APIRouter(prefix="/ui/fleet", include_in_schema=False)
RolloutId = Annotated[str, Path(max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
Action = Literal["pause", "resume", "abort", "rollback"]
REASON_MAX = 500


def available_actions(state: str) -> list[str]:
    """Return the actions that make sense for a rollout in ``state``."""
    if state == RolloutState.IN_PROGRESS:
        return ["pause", "abort"]
    if state == RolloutState.PAUSED:
        return ["resume", "abort"]
    if state in (RolloutState.SUCCEEDED, RolloutState.FAILED, RolloutState.ABORTED):
        return ["rollback"]
    return []


@router.get("")
def fleet_page(request: Request, viewer: CurrentViewer, session: SessionDep) -> Response:
    """Show devices (online, version, slot, last seen, update state) and rollouts with their progress."""
    devices = [service.device_read(d) for d in service.list_devices(session=session, limit=1000)]
    rollout_rows = [service.rollout_read(session, r) for r in service.list_rollouts(session=session, limit=50)]
    return render(request, "fleet.html", {"viewer": viewer, "title": "Fleet", "devices": devices,
                                          "rollouts": rollout_rows, "terminal": TERMINAL_ROLLOUT_STATES})


def _rollout_context(session: Session, viewer: Viewer, rollout_id: str) -> dict[str, Any]:
    rollout = service.rollout_read(session, service.get_rollout(session=session, rollout_id=rollout_id))
    actions = [a for a in available_actions(rollout.state)
               if viewer.can(Scope.APPROVE if a == "rollback" else Scope.WRITE)]
    experiment = session.scalar(select(Experiment.id).where(Experiment.rollout_id == rollout_id))
    return {"viewer": viewer, "title": f"Rollout {rollout.id}", "rollout": rollout, "actions": actions,
            "experiment_id": experiment,
            "targets": service.list_targets(session=session, rollout_id=rollout_id),
            "shadow": _shadow_view(session, rollout.id) if rollout.kind in ("shadow", "canary") else None,
            "live": rollout.state not in TERMINAL_ROLLOUT_STATES, "rendered_at": events.head_seq(session)}


def _fmt(value: float | None, unit: str = "") -> str:
    return "-" if value is None else f"{value:.3g}{unit}"


def _shadow_view(session: Session, rollout_id: str) -> dict[str, Any] | None:
    """Return the shadow comparison as display rows (the template only loops and escapes)."""
    try:
        report = shadow.report(session, rollout_id)
    except Invalid:
        return None
    rows = [{"cohort": c.cohort, "verdict": c.verdict, "devices": c.devices, "windows": c.windows, "rows": c.rows,
             "agreement": f"{_fmt(c.agreement['estimate'])} [{_fmt(c.agreement['lower'])}, "
                          f"{_fmt(c.agreement['upper'])}]",
             "candidate_p95": f"{_fmt(c.candidate_p95_ms['lower'])}-{_fmt(c.candidate_p95_ms['upper'], ' ms')}",
             "active_p95": f"{_fmt(c.active_p95_ms['lower'])}-{_fmt(c.active_p95_ms['upper'], ' ms')}",
             "errors": f"{_fmt(c.error_rate['estimate'])} [{_fmt(c.error_rate['lower'])}, "
                       f"{_fmt(c.error_rate['upper'])}]",
             "dropped": c.dropped, "stopped": ", ".join(f"{k}: {v}" for k, v in c.stopped.items()) or "-",
             "reasons": "; ".join(c.reasons)} for c in report.cohorts]
    gate = report.gate
    return {"rollout_id": report.rollout_id, "verdict": report.verdict, "windows": report.windows,
            "reasons": report.reasons, "canary": report.canary_rollout_id, "rows": rows,
            "gate": f"agreement ≥ {gate['min_agreement']}, candidate p95 ≤ {gate['max_latency_ms']} ms over "
                    f"≥ {gate['min_windows']} windows ({gate['confidence']:.0%} intervals)",
            "settings": f"sample {report.settings['sample_rate']:.0%}, budget {report.settings['max_latency_ms']} ms"}


@router.get("/rollouts/{rollout_id}")
def rollout_page(request: Request, rollout_id: RolloutId, viewer: CurrentViewer, session: SessionDep,
                 done: str | None = None) -> Response:
    """Show one rollout: its waves, every device's state, and the actions the user may take."""
    context = _rollout_context(session, viewer, rollout_id)
    context["done"] = done if done in ("pause", "resume", "abort", "rollback") else None
    return render(request, "rollout.html", context)


@router.get("/rollouts/{rollout_id}/progress")
def rollout_progress(request: Request, rollout_id: RolloutId, viewer: CurrentViewer, session: SessionDep) -> Response:
    """Render the live part of a rollout page (state, waves, devices); htmx swaps it in as the rollout moves."""
    return render(request, "_rollout_progress.html", _rollout_context(session, viewer, rollout_id))


@router.post("/rollouts/{rollout_id}/{action}")
def rollout_action(request: Request, rollout_id: RolloutId, action: Action, viewer: CurrentViewer,
                   form: CheckedForm, session: SessionDep) -> Response:
    """Run a rollout action through the same service the API uses; audited with the user's reason."""
    viewer.require(Scope.APPROVE if action == "rollback" else Scope.WRITE)
    reason = form.get("reason", "").strip()
    if not reason:
        raise Invalid("a reason is required", field="reason")
    if len(reason) > REASON_MAX or "\x00" in reason:
        raise Invalid(f"the reason must be at most {REASON_MAX} characters of text", field="reason")
    if form.get("confirm") != "yes":
        raise Invalid("tick the confirmation box to go ahead", field="confirm")
    actor = viewer.principal.actor
    if action == "pause":
        rollouts.pause(session, rollout_id, actor, reason)
        target = rollout_id
    elif action == "resume":
        rollouts.resume(session, factory_for(request.app.state), rollout_id, actor, reason)
        target = rollout_id
    elif action == "abort":
        rollouts.abort(session, factory_for(request.app.state), rollout_id, actor, reason)
        target = rollout_id
    else:
        target = rollouts.rollback(session, factory_for(request.app.state), rollout_id, Strategy(), actor, reason).id
    return redirect(f"/ui/fleet/rollouts/{target}?done={action}")
