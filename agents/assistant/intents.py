"""Deterministic intent routing: patterns first, then BM25 retrieval over example questions, then follow-ups."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from control_plane.rag.bm25 import BM25Index

INTENTS = ("degrade", "devices_on_version", "recent_changes", "feature_drift", "rollout_status", "pending_approvals",
           "explain_alert", "prompt_production", "runbook", "audit_intact", "propose_rollback", "open_ended")

_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("propose_rollback", re.compile(r"^\s*(please\s+)?(roll\s*(it\s+)?back|rollback|revert)\b(?!.*\bhow\b)", re.I)),
    ("runbook", re.compile(r"\bhow (do|should|can) (i|we|you)\b|\bsteps? to\b|\brunbook\b|\bprocedure\b", re.I)),
    ("degrade", re.compile(r"\b(degrad\w*|worse|broken|fail(?:ing|ed|s)?|regress\w*)\b", re.I)),
    ("devices_on_version", re.compile(r"\bdevices?\b.*\b(run|running|on|still)\b.*\bv\d+\b", re.I)),
    ("recent_changes", re.compile(r"\bwhat\b.*\bchanged\b|\brecent changes\b", re.I)),
    ("feature_drift", re.compile(r"\bdrift\b.*\bfeature\b|\bfeature\b.*\bdrift\b", re.I)),
    ("rollout_status", re.compile(r"\bro_[A-Za-z0-9]+|\brollout\b.*\b(doing|status|going|progress)\b", re.I)),
    ("pending_approvals", re.compile(r"\b(waiting|pending|awaiting)\b.*\bapprov\w*|\bapproval queue\b", re.I)),
    ("explain_alert", re.compile(r"\b(explain|what is|tell me about|describe)\b.*\balert\b", re.I)),
    ("prompt_production", re.compile(r"\bprompt\b.*\b(production|prod|live)\b|\b(production|prod)\b.*\bprompt\b",
                                     re.I)),
    ("audit_intact", re.compile(r"\baudit\b.*\b(intact|ok|tamper\w*|valid|verif\w*|broken)\b", re.I)),
)

_EXAMPLES: dict[str, tuple[str, ...]] = {
    "degrade": ("why did the model degrade", "why is the model getting worse in the group", "what went wrong with the "
                "model", "why are errors up for the model", "root cause of the model problem"),
    "devices_on_version": ("which devices still run version", "devices on old version", "list devices with v3"),
    "recent_changes": ("what changed in the last hour", "show recent changes", "recent deployments and label moves",
                       "what happened recently"),
    "feature_drift": ("show drift for feature", "is the feature drifting", "psi of the feature since yesterday"),
    "rollout_status": ("how is the rollout doing", "rollout progress", "status of the rollout"),
    "pending_approvals": ("what is waiting for approval", "show the approval queue", "pending proposals",
                          "anything to approve"),
    "explain_alert": ("explain alert", "what does this alert mean", "details of alert"),
    "prompt_production": ("which prompt version is production", "what prompt is live", "production prompt eval"),
    "runbook": ("how do I roll back a canary", "how to recover from a broker outage", "ota failure reasons",
                "how do i triage a drift alert"),
    "audit_intact": ("is the audit log intact", "has anyone tampered with the audit log", "verify the audit chain"),
}
_EXAMPLE_INTENTS = [intent for intent, texts in _EXAMPLES.items() for _ in texts]
_EXAMPLE_INDEX = BM25Index([text for texts in _EXAMPLES.values() for text in texts])
# BM25 score below which a nearest example is a coincidence (one shared word such as "devices" or "last").
_MIN_RETRIEVAL_SCORE = 4.0
_FOLLOW_UP = re.compile(r"^\s*(and|what about|how about|same for)\b", re.I)


@dataclass
class Routed:
    """The intent and the entities a question names (merged with the thread's context for follow-ups)."""

    intent: str
    entities: dict[str, Any] = field(default_factory=dict)
    how: str = "pattern"


def extract_entities(question: str, *, models: list[str], groups: list[str]) -> dict[str, Any]:
    """Return the model, group, version, feature, rollout, alert and prompt a question names."""
    found: dict[str, Any] = {}
    lowered = question.lower()
    for name in sorted(models, key=len, reverse=True):
        if re.search(rf"(?<![\w-]){re.escape(name.lower())}(?![\w-])", lowered):
            found["model"] = name
            break
    for group in sorted(groups, key=len, reverse=True):
        if re.search(rf"(?<![\w-]){re.escape(group.lower())}(?![\w-])", lowered):
            found["group"] = group
            break
    if "group" not in found and (named := re.search(r"\bin (?:group )?([a-z][a-z0-9_-]*-[a-z0-9_-]+)\b", lowered)):
        found["group"] = named.group(1)
    if version := re.search(r"\bv(?:ersion\s*)?(\d{1,9})\b", lowered):
        found["version"] = int(version.group(1))
    if feature := re.search(r"\bfeature\s+([A-Za-z_][\w.-]{0,99})", question):
        found["feature"] = feature.group(1)
    if rollout := re.search(r"\b(ro_[A-Za-z0-9_-]{1,60})", question):
        found["rollout_id"] = rollout.group(1)
    if alert := re.search(r"\balert\s+#?([A-Za-z0-9_-]{1,60})", question):
        found["alert_id"] = alert.group(1)
    if prompt := re.search(r"\b(?:for|of)\s+(?:the\s+)?([a-z][a-z0-9_-]{0,99})(?:\s+prompt)?\b", lowered):
        found["prompt"] = prompt.group(1)
    if unknown := re.search(r"\b(?:did|does|is|has)\s+(?:the\s+)?(?:model\s+)?([a-z][a-z0-9_-]*-[a-z0-9_-]+)\s+"
                            r"(?:degrad|get|go|fail|regress|break)", lowered):
        found.setdefault("model", unknown.group(1))
    return found


def route(question: str, *, models: list[str], groups: list[str], context: dict[str, Any]) -> Routed:
    """Pick an intent for ``question``; follow-ups reuse the previous intent and fill in its entities."""
    entities = extract_entities(question, models=models, groups=groups)
    previous = context.get("intent")
    if _FOLLOW_UP.match(question) and previous and previous != "open_ended":
        return Routed(previous, {**context.get("entities", {}), **entities}, "follow-up")
    for intent, pattern in _PATTERNS:
        if pattern.search(question):
            if intent == "propose_rollback":
                entities = {**context.get("entities", {}), **entities}
            return Routed(intent, entities, "pattern")
    ranked = _EXAMPLE_INDEX.top(question, 1)
    if ranked and ranked[0][1] >= _MIN_RETRIEVAL_SCORE:
        return Routed(_EXAMPLE_INTENTS[ranked[0][0]], entities, "retrieval")
    return Routed("open_ended", entities, "none")
