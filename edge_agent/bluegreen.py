"""Blue-green on the A/B slots: a staged model waits in the inactive slot for one signed group cut-over.

Staging is an ordinary OTA update whose manifest says ``stage_only``: download, verify, load and self-test
into the inactive slot, then record ``staged.json`` instead of committing. The cut-over is one signed
``edgeloop.cutover/v1`` command, published retained on ``edgeloop/rollouts/<rollout_id>/cutover``, that
names the model to serve (by sha256). A device switches only to a model it holds verified: the staged one,
or the previous one still in the other slot (switching back). The commit point stays ``active.json``, so a
reboot at any moment comes back on exactly one valid model; ``cutover.json`` lets the boot report which.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edge_agent.durable import read_json, remove_durably, write_json_atomic
from edge_agent.inference import ModelRuntime
from edge_agent.manifest import ManifestRejected, open_with_keys
from edge_agent.strict_json import INT64_LIMIT, StrictJsonError, loads_strict

if TYPE_CHECKING:
    from edge_agent.ota import OtaUpdater

log = logging.getLogger(__name__)
CUTOVER_SCHEMA = "edgeloop.cutover/v1"
CUTOVER_PAUSE_POINTS = ("cutover_before_commit", "cutover_after_commit")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_ROLLOUT_RE = re.compile(r"[A-Za-z0-9._-]{1,128}")
Scheduler = Callable[[float, Callable[[], None]], None]


def cutover_topic(rollout_id: str) -> str:
    """Return edgeloop/rollouts/{rollout_id}/cutover (the id is checked: no MQTT wildcards or separators)."""
    if not _ROLLOUT_RE.fullmatch(rollout_id):
        raise ValueError(f"rollout id {rollout_id[:40]!r} is not topic-safe")
    return f"edgeloop/rollouts/{rollout_id}/cutover"


@dataclass(frozen=True)
class Cutover:
    """A signature-verified cut-over command."""

    rollout_id: str
    sequence: int
    target_sha256: str
    at: float | None
    issued_at: float
    expires_at: float


def _num(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value and abs(value) < 1e15


def parse_cutover(payload: bytes) -> Cutover:
    """Parse signed cut-over payload bytes, rejecting anything off-schema as malformed."""
    try:
        raw = loads_strict(payload)
    except StrictJsonError as exc:
        raise ManifestRejected("malformed", f"cut-over is not acceptable JSON: {exc}") from exc
    ok = (
        isinstance(raw, dict) and raw.get("schema") == CUTOVER_SCHEMA
        and isinstance(raw.get("rollout_id"), str) and bool(_ROLLOUT_RE.fullmatch(raw["rollout_id"]))
        and isinstance(raw.get("sequence"), int) and not isinstance(raw["sequence"], bool)
        and 0 <= raw["sequence"] < INT64_LIMIT
        and isinstance(raw.get("target_sha256"), str) and bool(_SHA256_RE.fullmatch(raw["target_sha256"]))
        and (raw.get("at") is None or _num(raw.get("at")))
        and _num(raw.get("issued_at")) and _num(raw.get("expires_at")) and 0 < raw["issued_at"] < raw["expires_at"]
    )
    if not ok:
        raise ManifestRejected("malformed", f"not a valid {CUTOVER_SCHEMA} payload")
    at = raw.get("at")
    return Cutover(raw["rollout_id"], raw["sequence"], raw["target_sha256"], float(at) if at is not None else None,
                   float(raw["issued_at"]), float(raw["expires_at"]))


class BlueGreen:
    """The device half of blue-green: remember the staged model, apply cut-over commands, report."""

    def __init__(self, updater: OtaUpdater, *, schedule: Scheduler | None = None,
                 on_staged: Callable[[str], None] | None = None) -> None:
        self.updater = updater
        self.staged_path = updater.slots.root / "staged.json"
        self.cutover_path = updater.slots.root / "cutover.json"
        self.schedule = schedule or _thread_timer
        self.on_staged = on_staged  # called with the cut-over topic to subscribe (at staging and at boot)
        self.standby: ModelRuntime | None = None  # the other model, loaded, so a switch costs a pointer swap

    def staged(self) -> dict[str, Any] | None:
        """Return the staged record if its slot is still the inactive one, else None."""
        record = read_json(self.staged_path)
        if not isinstance(record, dict) or record.get("slot") != self.updater.slots.inactive_slot():
            return None
        return record

    def forget_staged(self) -> None:
        """Drop the staged record (a newer update is about to overwrite the inactive slot)."""
        self.stop_shadow()
        if self.staged_path.exists():
            remove_durably(self.staged_path)
        self.standby = None

    def stop_shadow(self) -> None:
        """End shadowing of the staged candidate, if any."""
        shadow, self.updater.engine.shadow = self.updater.engine.shadow, None
        if shadow is not None:
            shadow.stop()

    def start_shadow(self, record: dict[str, Any], runtime: ModelRuntime, settings: dict[str, float]) -> None:
        """Run the staged candidate on a sample of live inputs (never answering with it)."""
        from edge_agent.shadow import ShadowRunner  # lazy: only devices asked to shadow pay for it

        def stopped(reason: str, sketch: dict[str, Any]) -> None:
            self.updater.engine.shadow = None
            self.updater.engine.shadow_final = sketch  # the numbers behind the verdict go out with the next window
            info = {"rollout_id": record.get("rollout_id"), "sequence": record.get("sequence"),
                    "model": record.get("model")}
            self.updater.status("shadow_stopped", reason=reason, info=info, slot=record.get("slot"))

        self.stop_shadow()
        self.updater.engine.shadow = ShadowRunner(runtime, sample_rate=settings["sample_rate"],
                                                  max_latency_ms=settings["max_latency_ms"], on_stop=stopped)

    def stage(self, record: dict[str, Any], runtime: ModelRuntime) -> None:
        """Record a verified, self-tested model in the inactive slot as staged and wait for the cut-over."""
        write_json_atomic(self.staged_path, {**record, "staged_at": time.time()})
        self.standby = runtime
        self._subscribe(record.get("rollout_id"))

    def _subscribe(self, rollout_id: Any) -> None:
        if self.on_staged is not None and isinstance(rollout_id, str):
            try:
                self.on_staged(cutover_topic(rollout_id))
            except Exception:
                log.exception("could not subscribe to the cut-over of %s", rollout_id)

    def boot(self) -> None:
        """Report how a cut-over cut short by a reboot ended, and listen again for a staged model's cut-over."""
        state = read_json(self.cutover_path)
        state = state if isinstance(state, dict) else {}
        pending = state.get("pending")
        active = self.updater.slots.active()
        if isinstance(pending, dict):
            switched = active is not None and active.get("sha256") == pending.get("target_sha256")
            if switched:
                state["done"] = {"rollout_id": pending.get("rollout_id"), "sequence": pending.get("sequence")}
            state.pop("pending", None)
            write_json_atomic(self.cutover_path, state)
            # Before the commit: still on the old model, and the retained command will be applied again.
            self.updater.status("switched" if switched else "staged", reason="cutover_interrupted",
                                info={**(active or {}), "rollout_id": pending.get("rollout_id")},
                                slot=active.get("slot") if active else None)
        staged = self.staged()
        if staged is not None:
            self._subscribe(staged.get("rollout_id"))

    def offer(self, message: bytes) -> None:
        """Apply one cut-over message (worker thread); never raises, always reports."""
        try:
            payload, _ = open_with_keys(message, self.updater.keys)
            command = parse_cutover(payload)
            self._check(command)
        except ManifestRejected as exc:
            log.warning("cut-over rejected: %s", exc)
            self.updater.status("rejected", reason=exc.reason)
            return
        delay = (command.at - time.time()) if command.at is not None else 0.0
        if delay > 0.05:
            self.updater.status("scheduled", info={"rollout_id": command.rollout_id, "sequence": command.sequence})
            self.schedule(delay, lambda: self._switch_locked(command))
            return
        self._switch_locked(command)

    def _check(self, command: Cutover) -> None:
        config = self.updater.config
        now = time.time()
        if command.expires_at <= now:
            raise ManifestRejected("expired", f"expired at {command.expires_at}")
        if command.issued_at > now + config.manifest_clock_skew_s:
            raise ManifestRejected("issued_in_future", f"issued at {command.issued_at}")
        if command.expires_at - command.issued_at > config.manifest_max_validity_s:
            raise ManifestRejected("validity_too_long", "cut-over valid for too long")

    def _switch_locked(self, command: Cutover) -> None:
        with self.updater._lock:  # one writer of the slot records at a time, OTA included
            try:
                self._switch(command)
            except Exception:
                log.exception("cut-over crashed")
                self.updater.status("failed", reason="internal_error",
                                    info={"rollout_id": command.rollout_id, "sequence": command.sequence})

    def _done(self, command: Cutover) -> bool:
        state = read_json(self.cutover_path)
        done = state.get("done") if isinstance(state, dict) else None
        if not isinstance(done, dict) or done.get("rollout_id") != command.rollout_id:
            return False
        last = done.get("sequence")
        return isinstance(last, int) and command.sequence <= last

    def _record(self, command: Cutover, pending: dict[str, Any] | None) -> None:
        key = {"rollout_id": command.rollout_id, "sequence": command.sequence, "target_sha256": command.target_sha256}
        write_json_atomic(self.cutover_path, {"pending": key} if pending is not None else {"done": key})

    def _switch(self, command: Cutover) -> None:
        if self._done(command):
            return  # The retained command again (reconnect, resubscribe) or an older one: already applied.
        slots = self.updater.slots
        active = slots.active()
        info = {"rollout_id": command.rollout_id, "sequence": command.sequence}
        if active is not None and active.get("sha256") == command.target_sha256:
            self._record(command, None)
            self.updater.status("switched", reason="already_active", info={**info, "model": active.get("model")},
                                slot=active.get("slot"))
            return
        staged = self.staged()
        previous = active.get("previous") if active else None
        candidate = None
        if staged is not None and staged.get("sha256") == command.target_sha256:
            candidate = {k: v for k, v in staged.items() if k not in ("staged_at", "previous")}
        elif isinstance(previous, dict) and previous.get("sha256") == command.target_sha256 \
                and previous.get("slot") == slots.inactive_slot():
            candidate = dict(previous)  # Switching back: the old model never left the other slot.
        if candidate is None:
            self._record(command, None)
            self.updater.status("not_switched", reason="not_staged",
                                info={**info, "model": (active or {}).get("model")}, slot=(active or {}).get("slot"))
            return
        runtime = self.standby if self.standby is not None and \
            self.standby.info.get("sha256") == candidate["sha256"] else None
        if runtime is None:
            runtime = self._load(candidate)
            if runtime is None:
                self._record(command, None)
                self.updater.status("not_switched", reason="load_failed",
                                    info={**info, "model": (active or {}).get("model")},
                                    slot=(active or {}).get("slot"))
                return
        self._record(command, candidate)
        self.stop_shadow()
        self.updater.pause_point("cutover_before_commit")
        candidate["activated_at"] = time.time()
        slots.commit(candidate)  # The commit point: a reboot from here on comes back on the new model.
        self.updater.pause_point("cutover_after_commit")
        self._record(command, None)
        if staged is not None and staged.get("sha256") == candidate["sha256"]:
            remove_durably(self.staged_path)
        old = self.updater.engine.runtime
        self.updater.engine.swap(runtime)
        self.standby = old
        slots.set_outcome("activated")
        log.info("cut over to %s in slot %s", candidate.get("model"), candidate.get("slot"))
        self.updater.status("switched", info={**info, "model": candidate.get("model")}, slot=candidate.get("slot"))
        if self.updater.on_activated is not None:
            self.updater.on_activated(candidate)

    def _load(self, record: dict[str, Any]) -> ModelRuntime | None:
        from edge_agent.ota import file_sha256  # lazy: ota imports this module

        path = self.updater.slots.model_path(record["slot"])
        try:
            if file_sha256(path) != record["sha256"]:
                raise ValueError("sha256 of the slot file does not match")
            return ModelRuntime(self.updater._session(record["sha256"], path), record)
        except Exception as exc:
            log.error("slot %s cannot be switched to: %s", record.get("slot"), exc)
            return None


def _thread_timer(delay: float, fn: Callable[[], None]) -> None:
    timer = threading.Timer(delay, fn)
    timer.daemon = True
    timer.start()
