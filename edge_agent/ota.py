"""The OTA update state machine: verify, download, trial, self-test, commit or revert."""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import onnxruntime as ort
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge_agent.bluegreen import CUTOVER_PAUSE_POINTS, BlueGreen, Scheduler
from edge_agent.config import EdgeConfig
from edge_agent.download import DownloadError, download_artifact
from edge_agent.inference import InferenceEngine, ModelRuntime, make_session, run_self_test
from edge_agent.keyring import KeyRing
from edge_agent.manifest import Manifest, ManifestRejected, artifact_url, check_policy, open_with_keys, parse_payload
from edge_agent.slots import SlotStore, attempts_of

log = logging.getLogger(__name__)
STATUS_SCHEMA = "edgeloop.status/v1"
PAUSE_POINTS = ("downloaded", "before_commit", "after_commit", *CUTOVER_PAUSE_POINTS)
MAX_RETRY_DELAY_S = 300.0

StatusSink = Callable[[dict[str, Any]], None]


class ArtifactCache(Protocol):
    """Where verified artifacts and their sessions may be shared (the simulator shares per sha256)."""

    def stored(self, sha256: str) -> Path | None:
        """Return a verified on-disk copy of the artifact, if this process already has one."""

    def store(self, sha256: str, path: Path) -> None:
        """Offer a freshly verified artifact for reuse."""

    def release(self, sha256: str) -> None:
        """Signal that the caller that got None from stored() is done (success or not)."""

    def session(self, sha256: str, path: Path) -> ort.InferenceSession:
        """Return an onnxruntime session for the artifact at path."""


class PrivateArtifacts:
    """Share nothing: every device loads its own session (the real daemon)."""

    def stored(self, sha256: str) -> Path | None:
        """Return None: a real device keeps no cache beyond its slots."""
        return None

    def store(self, sha256: str, path: Path) -> None:
        """Do nothing."""

    def release(self, sha256: str) -> None:
        """Do nothing."""

    def session(self, sha256: str, path: Path) -> ort.InferenceSession:
        """Load a fresh session."""
        return make_session(path)


def file_sha256(path: Path) -> str:
    """Return the hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _pause(state_dir: Path, point: str) -> None:
    """Test hook: announce the pause point in the state dir and block until killed."""
    (state_dir / f"paused-{point}").write_text(str(time.time()))
    log.warning("test hook: paused at %s", point)
    while True:
        time.sleep(3600)


class OtaUpdater:
    """Apply signed manifests to one device; every step is reported through emit()."""

    def __init__(
        self,
        *,
        config: EdgeConfig,
        key: Ed25519PublicKey | KeyRing,
        slots: SlotStore,
        engine: InferenceEngine,
        emit: StatusSink,
        artifacts: ArtifactCache | None = None,
        pause_at: str | None = None,
        on_activated: Callable[[dict[str, Any]], None] | None = None,
        crash_on_sha256: str | None = None,
        on_staged: Callable[[str], None] | None = None,
        schedule: Scheduler | None = None,
    ) -> None:
        self.config = config
        self.keys = key if isinstance(key, KeyRing) else KeyRing(slots.root / "trusted_keys.json", key)
        self.slots = slots
        self.engine = engine
        self.emit = emit
        self.artifacts = artifacts or PrivateArtifacts()
        self.pause_at = pause_at
        self.on_activated = on_activated
        self.crash_on_sha256 = crash_on_sha256  # test hook: SIGKILL ourselves when loading this model
        self._lock = threading.Lock()
        self._offer_lock = threading.Lock()
        self._newest_seen = -1
        self._inflight: int | None = None
        self._cancel = threading.Event()
        self._current: Manifest | None = None
        self._touched = False
        self.blue_green = BlueGreen(self, schedule=schedule, on_staged=on_staged)

    def pause_point(self, point: str) -> None:
        """Test hook: block here (until killed) if this is the configured pause point."""
        if self.pause_at == point:
            _pause(self.slots.root, point)

    def status(
        self,
        state: str,
        *,
        reason: str | None = None,
        info: dict[str, Any] | None = None,
        slot: str | None = None,
    ) -> dict[str, Any]:
        """Build and emit one status event."""
        info = info or {}
        event = {
            "schema": STATUS_SCHEMA, "event_id": str(uuid.uuid4()), "device_id": self.config.device_id,
            "rollout_id": info.get("rollout_id"), "sequence": info.get("sequence"), "state": state,
            "reason": reason, "model": info.get("model"), "slot": slot, "ts": time.time(),
        }
        try:
            self.emit(event)
        except Exception:
            log.exception("could not emit status %s", state)
        return event

    def boot(self) -> bytes | None:
        """Resolve a crash-interrupted update and load the committed model; return a manifest to retry."""
        resolution = self.slots.resolve_boot()
        active = self.slots.active()
        if resolution is not None and resolution.state == "activated":
            self.slots.set_outcome("activated")
            log.warning("boot: trial of sequence %s had been committed", resolution.record.get("sequence"))
            self.status("activated", info=resolution.record, slot=resolution.record.get("slot"))
        ota = self.slots.ota_record()
        retry = None
        if ota.get("outcome") == "in_progress":
            if active and ota.get("last_accepted") == active.get("sequence"):
                self.slots.set_outcome("activated")  # Crashed after the commit but before recording it.
            else:
                retry = self._retry_or_give_up(ota, active)
        if active is not None:
            self._load_committed(active)
        self.blue_green.boot()
        return retry

    def _retry_or_give_up(self, ota: dict[str, Any], active: dict[str, Any] | None) -> bytes | None:
        """An update was cut short by a crash: hand it back for a retry while the attempt budget lasts."""
        attempts = attempts_of(ota)
        info = {"rollout_id": ota.get("rollout_id"), "sequence": ota.get("last_accepted"), "model": ota.get("model")}
        if attempts >= self.config.ota_max_attempts:
            # The same crash every time: most likely the new model (or its artifact) kills the agent.
            log.error("update to sequence %s crashed the agent %d times; staying on the committed model",
                      info["sequence"], attempts)
            self.slots.set_outcome("reverted", "crash_loop")
            self.status("reverted", reason="crash_loop", info=info, slot=active["slot"] if active else None)
            return None
        log.warning("update to sequence %s was interrupted after attempt %d of %d; retrying",
                    info["sequence"], attempts, self.config.ota_max_attempts)
        envelope = ota.get("envelope")
        try:
            return base64.b64decode(envelope, validate=True) if isinstance(envelope, str) else None
        except ValueError:
            return None  # The retained copy on the broker resumes it instead.

    def _session(self, sha256: str, path: Path) -> Any:
        if self.crash_on_sha256 is not None and sha256 == self.crash_on_sha256:
            log.warning("test hook: this model kills the agent")
            os.kill(os.getpid(), signal.SIGKILL)
        return self.artifacts.session(sha256, path)

    def _load_committed(self, active: dict[str, Any]) -> None:
        """Load the active model; if it is damaged or keeps crashing the agent, fall back to the previous one."""
        boots = self.slots.count_boot(active["sha256"])
        crash_loop = boots > self.config.ota_max_attempts
        reason = "crash_loop" if crash_loop else "load_failed"
        for candidate in (active, active.get("previous")):
            if not candidate:
                continue
            path = self.slots.model_path(candidate["slot"])
            try:
                if candidate is active and crash_loop:
                    raise RuntimeError(f"loading it was cut short {boots - 1} times in a row")
                if file_sha256(path) != candidate["sha256"]:
                    raise ValueError("sha256 of the slot file does not match")
                runtime = ModelRuntime(self._session(candidate["sha256"], path), candidate)
            except Exception as exc:
                log.error("slot %s is unusable: %s", candidate["slot"], exc)
                continue
            self.slots.clear_boot()
            if candidate is not active:
                self.slots.commit(candidate)
                if self.slots.ota_record().get("last_accepted") == active.get("sequence"):
                    self.slots.set_outcome("reverted", reason)
                self.status("reverted", reason=reason, info=active, slot=candidate["slot"])
            self.engine.swap(runtime)
            return
        log.error("no loadable model on this device")

    def offer(self, message: bytes) -> None:
        """Pre-empt the update in flight if message is a newer valid manifest for this device (any thread)."""
        try:
            payload, _ = open_with_keys(message, self.keys)
            manifest = parse_payload(payload)
            self._check(manifest, last_sequence=None)
        except Exception:
            return  # The worker reports it, in order.
        with self._offer_lock:
            self._newest_seen = max(self._newest_seen, manifest.sequence)
            if self._inflight is not None and manifest.sequence > self._inflight:
                log.info("manifest %d pre-empts the update to %d", manifest.sequence, self._inflight)
                self._cancel.set()

    def handle(self, message: bytes) -> None:
        """Process one manifest message; never raises, always reports."""
        with self._lock:
            self._current = None
            self._touched = False
            try:
                self._handle(message)
            except ManifestRejected as exc:
                log.warning("manifest rejected: %s", exc)
                info = self._info(exc.manifest) if exc.manifest else None
                self.status("rejected", reason=exc.reason, info=info)
            except Exception:
                log.exception("update crashed")
                if self._touched:  # Before that nothing durable changed, so there is nothing to repair.
                    self._recover()
                # Name the rollout and sequence when the manifest got that far, so the control plane can attribute it.
                info = self._info(self._current) if self._current is not None else None
                self.status("failed", reason="internal_error", info=info)
            finally:
                with self._offer_lock:
                    self._inflight = None

    def _recover(self) -> None:
        """After an unexpected error: drop the trial and make sure memory serves the committed model."""
        try:
            self.slots.end_trial()
            self.slots.set_outcome("failed", "internal_error")
            active = self.slots.active()
            runtime = self.engine.runtime
            if active and (runtime is None or runtime.info.get("sha256") != active.get("sha256")):
                self._load_committed(active)
        except Exception:
            log.exception("recovery after a crashed update failed")

    @staticmethod
    def _info(manifest: Manifest) -> dict[str, Any]:
        return {"rollout_id": manifest.rollout_id, "sequence": manifest.sequence, "model": manifest.model}

    def _check(self, manifest: Manifest, *, last_sequence: int | None) -> None:
        config = self.config
        check_policy(manifest, device_id=config.device_id, last_sequence=last_sequence,
                     max_bytes=config.max_artifact_bytes, max_validity_s=config.manifest_max_validity_s,
                     clock_skew_s=config.manifest_clock_skew_s, control_plane_url=config.control_plane_url)

    def _handle(self, message: bytes) -> None:
        payload, keys = open_with_keys(message, self.keys)
        manifest = parse_payload(payload)
        self._current = manifest
        if keys is not None:
            self.keys.commit(keys)  # Rotation documents are signed on their own; keep them once the payload parses.
        with self._offer_lock:
            self._inflight = manifest.sequence
            self._cancel.clear()
            if self._newest_seen > manifest.sequence:
                self._cancel.set()
        ota = self.slots.ota_record()
        if (
            manifest.device_id == self.config.device_id
            and manifest.sequence == ota.get("last_accepted")
            and manifest.payload_sha256 == ota.get("payload_sha256")
        ):
            # The retained manifest again (reconnect, restart, QoS 1 duplicate) or our own retry: not a replay.
            if ota.get("outcome") != "in_progress":
                log.debug("manifest %s already handled (%s)", manifest.sequence, ota.get("outcome"))
                return
            active = self.slots.active()
            self._touched = True
            if active and active.get("sequence") == manifest.sequence:
                self.slots.set_outcome("activated")
                return
            self._check(manifest, last_sequence=None)
            attempts = attempts_of(ota)
            if attempts >= self.config.ota_max_attempts:
                self._fail("reverted", "crash_loop", manifest, self.slots.inactive_slot(), f"{attempts} attempts")
                return
            delay = min(self.config.ota_retry_backoff_s * 2 ** max(attempts - 1, 0), MAX_RETRY_DELAY_S)
            log.info("resuming interrupted update to sequence %d in %.1fs", manifest.sequence, delay)
            if attempts and self._cancel.wait(delay):
                self._fail("failed", "superseded", manifest, self.slots.inactive_slot(), "during back-off")
                return
        else:
            self._check(manifest, last_sequence=self.slots.last_sequence())
            self._touched = True
            self.slots.accept(sequence=manifest.sequence, payload_sha256=manifest.payload_sha256,
                              info={"rollout_id": manifest.rollout_id, "sha256": manifest.sha256,
                                    "model": manifest.model, "attempts": 0,
                                    "envelope": base64.b64encode(message).decode()})
        self.slots.note_attempt()
        self._apply(manifest)

    def _fail(self, state: str, reason: str, manifest: Manifest, slot: str, detail: str) -> None:
        log.warning("update to sequence %d %s: %s (%s)", manifest.sequence, state, reason, detail)
        self.slots.set_outcome(state, reason)
        self.status(state, reason=reason, info=self._info(manifest), slot=slot)

    def _download(self, manifest: Manifest, dest: Path | None) -> None:
        config = self.config
        download_artifact(
            url=artifact_url(config.control_plane_url, manifest.url),
            token=config.device_token, dest=dest, sha256=manifest.sha256,
            declared_size=manifest.size, max_bytes=config.max_artifact_bytes,
            attempts=config.download_attempts, backoff_s=config.download_backoff_s,
            timeout_s=config.download_timeout_s,
            deadline_s=config.download_grace_s + manifest.size / config.download_min_rate_bps,
            cancelled=self._cancel.is_set,
        )

    def _apply(self, manifest: Manifest) -> None:
        info = self._info(manifest)
        slot = self.slots.inactive_slot()
        self.blue_green.forget_staged()  # Whatever was staged in the inactive slot is about to be overwritten.
        self.status("received", info=info, slot=slot)
        self.status("downloading", info=info, slot=slot)
        try:
            cached = self.artifacts.stored(manifest.sha256)
            if cached is not None:
                # Still fetch and hash over HTTP with this device's token; only the disk copy is shared.
                self._download(manifest, None)
                path = self.slots.install(slot, cached, link=True)
            else:
                try:
                    self._download(manifest, self.slots.partial_path(slot, manifest.sha256))
                    path = self.slots.install(slot, self.slots.partial_path(slot, manifest.sha256))
                    self.artifacts.store(manifest.sha256, path)
                finally:
                    self.artifacts.release(manifest.sha256)
        except DownloadError as exc:
            self._fail("failed", exc.reason, manifest, slot, exc.detail)
            return
        self.status("verified", info=info, slot=slot)
        if self.pause_at == "downloaded":
            _pause(self.slots.root, "downloaded")
        record = {
            **info, "slot": slot, "sha256": manifest.sha256, "size": manifest.size,
            "quantization": manifest.quantization, "input_schema": manifest.input_schema,
            "baseline": manifest.baseline, "telemetry": manifest.telemetry,
        }
        self.slots.begin_trial(record)
        try:
            runtime = ModelRuntime(self._session(manifest.sha256, path), record)
        except Exception as exc:
            self.slots.end_trial()
            self._fail("failed", "load_failed", manifest, slot, str(exc))
            return
        result = run_self_test(runtime, manifest.self_test)
        if not result.ok:
            self.slots.end_trial()
            self._fail("failed", result.reason or "self_test_failed", manifest, slot, result.detail)
            return
        if manifest.stage_only:
            self.slots.end_trial()
            record["self_test_p50_ms"] = result.latency_p50_ms
            self.blue_green.stage(record, runtime)
            if manifest.shadow is not None:
                self.blue_green.start_shadow(record, runtime, manifest.shadow)
            self.slots.set_outcome("staged")
            self.status("staged", info=info, slot=slot)
            return
        if self.pause_at == "before_commit":
            _pause(self.slots.root, "before_commit")
        record["activated_at"] = time.time()
        record["self_test_p50_ms"] = result.latency_p50_ms
        self.slots.commit(record)
        if self.pause_at == "after_commit":
            _pause(self.slots.root, "after_commit")
        self.slots.end_trial()
        self.slots.set_outcome("activated")
        self.engine.swap(runtime)
        log.info("activated %s v%s in slot %s", manifest.model.get("name"), manifest.model.get("version"),
                 slot)
        self.status("activated", info=info, slot=slot)
        if self.on_activated is not None:
            self.on_activated(record)
