"""Markdown for model cards and decision records; every stored value is escaped, so none can inject markup."""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from control_plane.governance.schemas import DecisionRecord, ModelCard

# Inline markup characters are backslash-escaped everywhere; block markers only where a value starts a line (values
# are folded to one line, so that is the only place). "<", ">" and "&" become entities (a backslash before "&"
# would leave an entity live), so no raw HTML survives either.
_INLINE = re.compile(r"([\\`*_\[\]|~!])")
_BLOCK_START = re.compile(r"^(\d{1,9})([.)])(?=\s|$)|^([#+=-])")
_HTML = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def escape(value: Any) -> str:
    """Return ``value`` as inline Markdown text: one line, markup escaped, HTML characters as entities."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str) \
        if isinstance(value, dict | list) else "" if value is None else str(value)
    text = " ".join(text.split())  # newlines would start blocks (headings, lists, tables) of their own
    text = _INLINE.sub(r"\\\1", text)
    text = _BLOCK_START.sub(lambda m: f"{m.group(1)}\\{m.group(2)}" if m.group(1) else f"\\{m.group(3)}", text)
    return "".join(_HTML.get(ch, ch) for ch in text)


def _when(value: datetime | None) -> str:
    return escape(value.isoformat(timespec="seconds")) if value is not None else "-"


def _number(value: Any) -> str:
    # Numbers the control plane recorded are not text anyone typed: shown as they are (a leading "-" inside a
    # sentence or table cell starts no block); anything else is escaped.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return escape(value) if value is not None else "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows),
            ""]


def _missing(text: str) -> list[str]:
    return [f"_{escape(text)}_", ""]


def card_markdown(card: ModelCard) -> str:
    """Render a model card as Markdown."""
    out = [f"# Model card: {escape(card.model)} v{card.version}", "",
           f"Generated {_when(card.generated_at)} from the registry, lineage, fleet, incidents, approvals and "
           "audit log. Values recorded by people are shown escaped, as text.", "",
           "## Intended use", ""]
    out += [escape(card.intended_use), ""] if card.intended_use.strip() else _missing("no intended use recorded")
    if card.version_description.strip():
        out += [f"Version notes: {escape(card.version_description)}", ""]
    out += [f"Registered by {escape(card.registered_by)} at {_when(card.registered_at)}; version id "
            f"{escape(card.version_id)}; aliases: {escape(', '.join(card.aliases)) or 'none'}.", ""]
    out += _training(card) + _metrics(card) + _quantisation(card) + _limitations(card) + _fleet(card)
    out += _incidents(card) + _decisions(card)
    out += ["## Lineage (upstream)", ""]
    out += [f"- {escape(edge)}" for edge in card.lineage] + [""] if card.lineage else _missing("no upstream lineage")
    if card.other_actions:
        out += ["## Other recorded actions", ""]
        out += _table(["audit seq", "time", "actor", "action"], [
            [str(a.seq), _when(a.ts), escape(a.actor), escape(a.action)] for a in card.other_actions])
    out += ["## Missing data", ""]
    out += [f"- {escape(m)}" for m in card.missing] + [""] if card.missing else ["Nothing recorded as missing.", ""]
    return "\n".join(out)


def _training(card: ModelCard) -> list[str]:
    out = ["## Training data", ""]
    run = card.training
    if run is None:
        return out + _missing("no training run recorded")
    out += [f"Run {escape(run.run_name)} ({escape(run.run_id)}) by {escape(run.created_by)} at "
            f"{_when(run.created_at)}; code commit {escape(run.code_commit or 'not recorded')}.", "",
            f"Parameters: {escape(run.params) if run.params else 'none recorded'}", ""]
    dataset = run.dataset
    if dataset is None:
        return out + _missing("no training dataset recorded")
    rows = escape(", ".join(f"{k} {v}" for k, v in dataset.rows.items())) if dataset.rows else "not recorded"
    out += _table(["dataset", "version", "fingerprint", "rows", "features"], [[
        escape(dataset.name), escape(dataset.version), escape(dataset.fingerprint), rows,
        str(len(dataset.features)) if dataset.features else "not recorded"]])
    if dataset.description:
        out += [escape(dataset.description), ""]
    if dataset.features:
        names = [f"{f.get('name', '?')} ({f.get('dtype', '?')})" for f in dataset.features]
        out += [f"Features: {escape(', '.join(names))}", ""]
    return out


def _metrics(card: ModelCard) -> list[str]:
    metrics = card.metrics
    out = ["## Metrics", "", "### Overall, at registration", ""]
    if metrics.registration:
        out += _table(["metric", "value"], [[escape(k), _number(v)] for k, v in sorted(metrics.registration.items())])
    else:
        out += _missing("no overall metrics recorded at registration")
    out += ["### In the field (ground-truth labels)", ""]
    if metrics.field is not None:
        out += [f"Accuracy {_number(metrics.field.get('accuracy'))} over {_number(metrics.field.get('labelled'))} "
                f"labelled predictions in {_number(metrics.field.get('windows'))} telemetry windows.", ""]
    else:
        out += _missing("no labelled field telemetry")
    out += ["### Per cohort", ""]
    if not metrics.per_cohort:
        return out + _missing("no per-cohort metrics recorded")
    return out + _table(["cohort", "source", "metrics"], [
        [escape(c.cohort), escape(c.source), escape(c.metrics)] for c in metrics.per_cohort])


def _quantisation(card: ModelCard) -> list[str]:
    out = ["## Quantisation", ""]
    q = card.quantisation
    if q is None:
        return out + _missing("no fp32/int8 pair: quantisation not measured")
    return out + _table(["", "fp32", "int8"], [
        ["size (bytes)", _number(q.fp32_bytes), _number(q.int8_bytes)],
        ["accuracy", _number(q.accuracy_fp32), _number(q.accuracy_int8)],
    ]) + [f"Size ratio {_number(q.size_ratio)}; int8 accuracy delta {_number(q.accuracy_delta)}.", ""]


def _limitations(card: ModelCard) -> list[str]:
    out = ["## Known limitations", ""]
    if not card.limitations:
        return out + _missing("no limitations stated, and no alerts or weak cohorts recorded")
    return out + [f"- \\[{escape(item.source)}\\] {escape(item.text)}" for item in card.limitations] + [""]


def _fleet(card: ModelCard) -> list[str]:
    out = ["## Deployments and outcomes", ""]
    if not card.deployments and not card.rollouts:
        return out + _missing("never deployed")
    if card.deployments:
        out += _table(["deployment", "created by", "at", "audit seq", "selector"], [
            [escape(d.id), escape(d.created_by), _when(d.created_at), _number(d.audit_seq), escape(d.selector)]
            for d in card.deployments])
    if card.rollouts:
        out += _table(["rollout", "kind", "role", "state", "devices by state", "created by", "finished", "reason"], [
            [escape(r.id), escape(r.kind), escape(r.role), escape(r.state),
             escape(", ".join(f"{k} {v}" for k, v in r.targets.items())), escape(r.created_by),
             _when(r.finished_at), escape(r.reason or "")] for r in card.rollouts])
    return out


def _incidents(card: ModelCard) -> list[str]:
    out = ["## Incidents", ""]
    if not card.incidents:
        return out + _missing("no incidents recorded")
    return out + _table(["incident", "title", "severity", "state", "opened", "resolved"], [
        [escape(i.id), escape(i.title), escape(i.severity), escape(i.state), _when(i.created_at),
         _when(i.resolved_at)] for i in card.incidents])


def _decisions(card: ModelCard) -> list[str]:
    out = ["## Human decisions (approval queue)", ""]
    if not card.decisions:
        return out + _missing("no approval proposals touched this version")
    return out + _table(["proposal", "action", "target", "proposed by", "state", "decided by", "decided at",
                         "reason", "audit seqs"], [
        [escape(d.proposal_id), escape(d.kind), escape(d.target), escape(d.proposer), escape(d.state),
         escape(d.decided_by or "-"), _when(d.decided_at), escape(d.decision_reason or ""),
         escape(", ".join(str(a.seq) for a in d.audit))] for d in card.decisions])


def decision_markdown(record: DecisionRecord) -> str:
    """Render a decision record as Markdown."""
    out = [f"# Which model decided this? {escape(record.device_id)} at {_when(record.at)}", ""]
    if record.status != "active":
        out += _missing("no model activation recorded for this device at or before that time")
    else:
        out += _table(["model", "version", "artifact sha256", "quantisation", "manifest seq", "rollout", "kind",
                       "state"], [[
            escape(record.model or "unknown"), _number(record.version), escape(record.artifact_sha256),
            escape(record.quantization or "-"), _number(record.manifest_sequence), escape(record.rollout_id),
            escape(record.rollout_kind), escape(record.rollout_state)]])
        if record.evidence is not None:
            e = record.evidence
            out += [f"Evidence: device event {e.device_event_id} {escape(e.state)} received "
                    f"{_when(e.received_at)} naming rollout {escape(e.rollout_id)} sequence {_number(e.sequence)}.",
                    ""]
        out += ["## Chain of approvals", ""]
        out += _table(["audit seq", "step", "actor", "time", "proposal", "reason"], [
            [_number(s.audit_seq), escape(s.step), escape(s.actor), _when(s.at), escape(s.proposal_id or ""),
             escape(s.reason or "")] for s in record.approvals])
    out += [f"Rule: {record.rule}.", ""]  # the control plane's own text, with its code spans
    out += [f"- {escape(c)}" for c in record.caveats] + ([""] if record.caveats else [])
    return "\n".join(out)
