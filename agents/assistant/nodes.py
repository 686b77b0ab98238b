"""Deterministic answers: one handler per intent, every number taken from a tool result, every answer cited."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from agents.assistant.tools import ToolBox
from control_plane.rag.bm25 import bm25_terms

TEMPLATED = "Templated answer (no LLM configured; facts from the tool calls listed):"
NEEDS_LLM = ("That needs an LLM configured (EDGELOOP_LLM_BASE_URL). Without one I answer these: why did a model "
             "degrade, which devices run vN, what changed in the last hour, drift for a feature, rollout status, the "
             "approval queue, explain an alert, the production prompt and its last eval, runbook how-tos, the audit "
             "log, and rollback proposals.")


@dataclass
class Answer:
    """A turn's text, its runbook citations and the entities a follow-up may refer to."""

    text: str
    runbook_hits: list[dict[str, Any]] = field(default_factory=list)
    entities: dict[str, Any] = field(default_factory=dict)


@dataclass
class TurnInput:
    """What a handler gets: the question's entities, the tool box, runbook search and the thread id."""

    entities: dict[str, Any]
    tools: ToolBox
    search_runbooks: Callable[[str], list[dict[str, Any]]]
    thread_id: str
    question: str
    clock: Callable[[], float] = time.time
    models: list[str] | None = None


def _items(data: Any) -> list[dict[str, Any]]:
    """Return the rows of a list or of a page ({"items": [...]})."""
    rows = data.get("items", []) if isinstance(data, dict) else data if isinstance(data, list) else []
    return [row for row in rows if isinstance(row, dict)]


def _models(turn: TurnInput) -> list[str]:
    if turn.models is not None:
        return turn.models
    result = turn.tools.call("list_models", {})
    return [m["name"] for m in _items(result.data) if "name" in m] if result.ok else []


def _model(turn: TurnInput) -> tuple[str | None, str | None]:
    """Return (model, None) or (None, why not): the named model if it exists, else the only registered one."""
    models = _models(turn)
    named = turn.entities.get("model")
    if named:
        return (named, None) if named in models else (None, f"There is no model named '{named}' registered "
                                                           f"(registered: {', '.join(models) or 'none'}).")
    if len(models) == 1:
        return models[0], None
    return None, f"Which model? Registered: {', '.join(models) or 'none'}."


def _latest_version(turn: TurnInput, model: str) -> int | None:
    if turn.entities.get("version"):
        return int(turn.entities["version"])
    alerts = turn.tools.call("list_alerts", {"model": model, "limit": 20})
    versions = [a["model_version"] for a in _items(alerts.data)] if alerts.ok else []
    return max(versions) if versions else None


def degrade(turn: TurnInput) -> Answer:
    """Explain a degradation from the model's alerts and its drift report (optionally of one group)."""
    model, why_not = _model(turn)
    if model is None:
        return Answer(str(why_not))
    group = turn.entities.get("group")
    alerts = turn.tools.call("list_alerts", {"model": model, "limit": 20})
    open_alerts = [a for a in _items(alerts.data) if a.get("state") != "resolved"] if alerts.ok else []
    lines = [f"{model}{' in ' + group if group else ''}:"]
    if open_alerts:
        lines.append(f"{len(open_alerts)} open alert(s): " + "; ".join(
            f"{a['id']} {a['check']} v{a['model_version']} ({a['severity']}): {a['title']}" for a in open_alerts[:5]))
    else:
        lines.append("no open alerts.")
    version = turn.entities.get("version") or max((a["model_version"] for a in open_alerts), default=None)
    if not version:  # no alert names a version: the drift of the newest one still answers "why"
        version = _newest_version(turn, model)
    if version:
        report = turn.tools.call("get_drift_report", {"model": model, "version": int(version), "hours": 6.0,
                                                      "device_group": group})
        lines.append(_drift_summary(report.data if report.ok else None, int(version), group))
    return Answer("\n".join(lines), entities={"model": model, "group": group, "version": version})


def _newest_version(turn: TurnInput, model: str) -> int | None:
    models = turn.tools.call("list_models", {})
    for entry in _items(models.data) if models.ok else []:
        if entry.get("name") == model and isinstance(entry.get("latest_version"), int):
            return int(entry["latest_version"])
    return None


def _drift_summary(report: dict[str, Any] | None, version: int, group: str | None) -> str:
    overall = (report or {}).get("overall")
    if not overall:
        return f"No telemetry for v{version}{' in ' + group if group else ''} in the last 6 hours."
    drifted = sorted((f for f in overall.get("features", []) if f.get("drifted")), key=lambda f: -f["psi"])
    parts = [f"Drift report v{version}{' in ' + group if group else ''} (last 6 h): {overall['n']} rows from "
             f"{overall['devices']} device(s)"]
    if overall.get("error_rate") is not None:
        parts.append(f"error rate {overall['error_rate']:.4f}")
    parts.append("drifted features: " + (", ".join(f"{f['feature']} (PSI {f['psi']:.3f})" for f in drifted[:5])
                                         if drifted else "none"))
    return "; ".join(parts) + "."


def devices_on_version(turn: TurnInput) -> Answer:
    """List devices whose reported model version is vN."""
    version = turn.entities.get("version")
    result = turn.tools.call("list_devices", {})
    if not version:
        return Answer("Which version? Ask e.g. 'which devices still run v3?'.")
    items = _items(result.data)
    model = turn.entities.get("model")
    running = [d for d in items if _reported_version(d) == int(version)
               and (not model or (d.get("reported") or {}).get("model", {}).get("name") == model)]
    if not result.ok and result.status != "no_data":
        return Answer(f"I could not list devices: {result.error}")
    if not running:
        return Answer(f"No device reports v{version}.", entities={"version": version})
    names = ", ".join(f"{d['id']} ({d.get('group') or 'no group'})" for d in running[:50])
    return Answer(f"{len(running)} device(s) report v{version}: {names}.", entities={"version": version})


def _reported_version(device: dict[str, Any]) -> int | None:
    model = (device.get("reported") or {}).get("model")
    return model.get("version") if isinstance(model, dict) else None


def recent_changes(turn: TurnInput) -> Answer:
    """List audited changes of the last hour."""
    result = turn.tools.call("list_changes", {"limit": 200})
    cutoff = turn.clock() - 3600
    entries = [e for e in _items(result.data) if _epoch(e.get("ts")) >= cutoff] if result.ok else []
    if not entries:
        return Answer("No audited change in the last hour." if result.status != "error"
                      else f"I could not read the audit log: {result.error}")
    shown = "; ".join(f"#{e['seq']} {e['action']} {e['resource_type']} {e['resource_id']} by {e['actor']}"
                      for e in entries[-20:])
    return Answer(f"{len(entries)} change(s) in the last hour: {shown}.")


def _epoch(value: Any) -> float:
    try:
        return datetime.fromisoformat(str(value)).replace(tzinfo=UTC).timestamp() if value else 0.0
    except ValueError:
        return 0.0


def feature_drift(turn: TurnInput) -> Answer:
    """Show one feature's drift for the model's newest alerted (or named) version."""
    model, why_not = _model(turn)
    if model is None:
        return Answer(str(why_not))
    feature = turn.entities.get("feature")
    version = _latest_version(turn, model)
    if not feature or not version:
        return Answer(f"Name the feature{' and version' if not version else ''}, e.g. 'show drift for feature "
                      f"pixel_12 of {model} v2'.")
    hours = 24.0 if "yesterday" in turn.question.lower() else 6.0
    report = turn.tools.call("get_drift_report", {"model": model, "version": version, "hours": hours,
                                                  "device_group": turn.entities.get("group")})
    overall = (report.data or {}).get("overall") if report.ok else None
    match = [f for f in (overall or {}).get("features", []) if f.get("feature") == feature]
    if not match:
        return Answer(f"No drift data for feature {feature} of {model} v{version} in the last {hours:.0f} h.",
                      entities={"model": model, "version": version, "feature": feature})
    f = match[0]
    return Answer(f"{feature} of {model} v{version} over the last {hours:.0f} h: PSI {f['psi']:.3f} "
                  f"({f['band']}), {f['test']} statistic {f['statistic']:.3f}, drifted: "
                  f"{'yes' if f['drifted'] else 'no'}, {f['n_current']} rows.",
                  entities={"model": model, "version": version, "feature": feature})


def rollout_status(turn: TurnInput) -> Answer:
    """Report a rollout's state and progress."""
    rollout_id = turn.entities.get("rollout_id")
    if not rollout_id:
        return Answer("Which rollout? Give its id (ro_...).")
    result = turn.tools.call("get_rollout", {"rollout_id": rollout_id})
    if not result.ok:
        return Answer(f"There is no rollout {rollout_id}." if result.status == "no_data"
                      else f"I could not read rollout {rollout_id}: {result.error}")
    r, p = result.data, result.data["progress"]
    return Answer(f"Rollout {r['id']} ({r['model']['name']} v{r['model']['version']}) is {r['state']}: wave "
                  f"{r['current_wave']} of {len(r['wave_plan'])}; {p['succeeded']} of {p['total']} device(s) "
                  f"succeeded, {p['failed']} failed, {p['finished']} finished.",
                  entities={"rollout_id": r["id"], "model": r["model"]["name"]})


def pending_approvals(turn: TurnInput) -> Answer:
    """List the approval queue."""
    result = turn.tools.call("list_pending_proposals", {})
    if result.status == "error":
        return Answer(f"I could not read the approval queue: {result.error}")
    items = _items(result.data)
    if not items:
        return Answer("Nothing is waiting for approval.")
    shown = "; ".join(f"{p['id']} {p['kind']} on {p['target_type']} {p['target_id']} proposed by {p['proposer']}"
                      for p in items[:20])
    return Answer(f"{len(items)} proposal(s) waiting for approval: {shown}.")


def explain_alert(turn: TurnInput) -> Answer:
    """Explain one alert from its stored record."""
    alert_id = turn.entities.get("alert_id")
    if not alert_id:
        return Answer("Which alert? Give its id.")
    result = turn.tools.call("get_alert", {"alert_id": alert_id})
    if not result.ok:
        return Answer(f"There is no alert {alert_id}." if result.status == "no_data"
                      else f"I could not read alert {alert_id}: {result.error}")
    a = result.data
    evidence = ", ".join(f"{k}={v}" for k, v in list(a.get("evidence", {}).items())[:8])
    return Answer(f"Alert {a['id']} is {a['state']} ({a['severity']}): a {a['check']} check on {a['model_name']} "
                  f"v{a['model_version']}{' feature ' + a['feature'] if a.get('feature') else ''}, seen "
                  f"{a['occurrences']} time(s). Title (data, quoted): \"{a['title']}\"."
                  + (f" Evidence: {evidence}." if evidence else ""),
                  entities={"model": a["model_name"], "version": a["model_version"], "alert_id": a["id"],
                            "rollout_id": a.get("rollout_id")})


def prompt_production(turn: TurnInput) -> Answer:
    """Name a prompt's production version and its newest eval run."""
    name = turn.entities.get("prompt")
    if not name:
        return Answer("Which prompt? e.g. 'which prompt version is production for triage?'.")
    prompt = turn.tools.call("get_prompt", {"prompt": name})
    if not prompt.ok:
        return Answer(f"There is no prompt named '{name}'." if prompt.status == "no_data"
                      else f"I could not read prompt {name}: {prompt.error}")
    label = next((lb for lb in prompt.data.get("labels", []) if lb["label"] == "production"), None)
    if label is None:
        return Answer(f"Prompt {name} has no production label.", entities={"prompt": name})
    runs = turn.tools.call("list_eval_runs", {"prompt_version_id": label["version_id"], "limit": 1})
    text = f"{name}: production is v{label['version']} (set by {label['updated_by']})."
    if runs.ok and _items(runs.data):
        run = _items(runs.data)[0]
        metrics = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                            for k, v in list(run.get("metrics", {}).items())[:6])
        text += (f" Its last eval run {run['id']} on {run['dataset']}@{run['dataset_version']} "
                 f"{'passed' if run['passed'] else 'failed'} over {run['sample_count']} samples: {metrics}.")
    else:
        text += " It has no eval run."
    return Answer(text, entities={"prompt": name})


def runbook(turn: TurnInput) -> Answer:
    """Answer a how-to from the runbooks, quoting the chunks and citing document and heading."""
    query = _expand(turn.question)
    terms = set(bm25_terms(query))
    # A chunk under a heading (or in a document) named for the question's terms outranks a passing mention.
    hits = sorted(turn.search_runbooks(query), key=lambda h: -len(terms & set(bm25_terms(
        f"{h['document'].rsplit('/', 1)[-1].removesuffix('.md').replace('-', ' ')} {h['heading']}"))))
    if not hits:
        return Answer("No runbook covers that.")
    top = hits[:2]
    body = "\n".join(f"From {h['document']} § {h['heading']}:\n{h['text'][:900]}" for h in top)
    return Answer(body, runbook_hits=top)


_SPELLINGS = {"roll back": "rollback", "rolled back": "rollback", "roll-back": "rollback", "set up": "setup",
              "log in": "login", "over the air": "ota"}


def _expand(question: str) -> str:
    """Add the runbooks' one-word spelling of split terms, so lexical retrieval matches either."""
    lowered = question.lower()
    return " ".join([question, *(joined for split, joined in _SPELLINGS.items() if split in lowered)])


def audit_intact(turn: TurnInput) -> Answer:
    """Verify the audit chain."""
    result = turn.tools.call("verify_audit", {})
    if not result.ok:
        return Answer(f"I could not verify the audit log: {result.error}")
    r = result.data
    if r["ok"]:
        return Answer(f"The audit log is intact: {r['entries']} entries verified up to seq {r['head_seq']}.")
    return Answer(f"The audit log is NOT intact: first broken entry seq {r.get('first_broken_seq')} "
                  f"({r.get('reason') or 'no reason given'}).")


def propose_rollback(turn: TurnInput) -> Answer:
    """Put a rollback of the model's newest rollout into the approval queue (never approve or execute it)."""
    rollout_id = turn.entities.get("rollout_id")
    if not rollout_id:
        model, why_not = _model(turn)
        if model is None:
            return Answer(str(why_not))
        listed = turn.tools.call("list_rollouts", {"limit": 50})
        rollouts = [r for r in _items(listed.data) if r["model"]["name"] == model and r["kind"] != "rollback"
                    and r["state"] != "rolled_back"] if listed.ok else []
        if not rollouts:
            return Answer(f"I found no rollout of {model} to roll back.")
        rollout_id = rollouts[0]["id"]
    group = turn.entities.get("group")
    created = turn.tools.call("propose_action", {"proposal": {
        "action": {"kind": "rollout.rollback", "rollout_id": rollout_id},
        "expected_effect": f"devices reached by {rollout_id}{' in ' + group if group else ''} return to their "
                           f"previous model (asked in assistant thread {turn.thread_id})",
        "risk": "medium", "idempotency_key": f"assistant.{turn.thread_id}.rollback.{rollout_id}"[:200]}})
    if created.status == "approval_required":
        p = created.data
        return Answer(f"I proposed rolling back {rollout_id}: proposal {p['id']} is {p['state']} in the approval "
                      f"queue (/api/v1/proposals/{p['id']}). An approver must approve it; I cannot approve or "
                      f"execute anything.", entities={"rollout_id": rollout_id, "proposal_id": p["id"]})
    if created.error and created.error.startswith("403"):
        return Answer(f"The control plane refused the proposal (403): your token may ask questions but not propose "
                      f"actions. Ask an operator to propose rolling back {rollout_id}.")
    return Answer(f"The rollback proposal for {rollout_id} was not created: {created.error}")


HANDLERS: dict[str, Callable[[TurnInput], Answer]] = {
    "degrade": degrade, "devices_on_version": devices_on_version, "recent_changes": recent_changes,
    "feature_drift": feature_drift, "rollout_status": rollout_status, "pending_approvals": pending_approvals,
    "explain_alert": explain_alert, "prompt_production": prompt_production, "runbook": runbook,
    "audit_intact": audit_intact, "propose_rollback": propose_rollback,
}
