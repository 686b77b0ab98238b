"""The OTA update state machine: verify, download, trial, self-test, commit or revert."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import onnxruntime as ort
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge_agent.config import EdgeConfig
from edge_agent.download import DownloadError, download_artifact
from edge_agent.inference import InferenceEngine, ModelRuntime, make_session, run_self_test
from edge_agent.manifest import Manifest, ManifestRejected, check_policy, open_envelope, parse_payload
from edge_agent.slots import SlotStore

log = logging.getLogger(__name__)
STATUS_SCHEMA = "edgeloop.status/v1"
PAUSE_POINTS = ("downloaded", "before_commit", "after_commit")

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
        key: Ed25519PublicKey,
        slots: SlotStore,
        engine: InferenceEngine,
        emit: StatusSink,
        artifacts: ArtifactCache | None = None,
        pause_at: str | None = None,
        on_activated: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.config = config
        self.key = key
        self.slots = slots
        self.engine = engine
        self.emit = emit
        self.artifacts = artifacts or PrivateArtifacts()
        self.pause_at = pause_at
        self.on_activated = on_activated
        self._lock = threading.Lock()

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

    def boot(self) -> None:
        """Resolve a crash-interrupted update, then load the committed active model."""
        resolution = self.slots.resolve_boot()
        active = self.slots.active()
        if resolution is not None:
            self.slots.set_outcome(resolution.state, resolution.reason)
            slot = active["slot"] if active else None
            log.warning("boot: trial of sequence %s resolved as %s", resolution.record.get("sequence"),
                        resolution.state)
            self.status(resolution.state, reason=resolution.reason, info=resolution.record, slot=slot)
        ota = self.slots.ota_record()
        in_progress = ota.get("outcome") == "in_progress"
        if active and in_progress and ota.get("last_accepted") == active.get("sequence"):
            self.slots.set_outcome("activated")  # Crashed after the commit but before recording it.
        if active is not None:
            self._load_committed(active)

    def _load_committed(self, active: dict[str, Any]) -> None:
        """Load the active model; if it is damaged fall back to the previous one."""
        for candidate in (active, active.get("previous")):
            if not candidate:
                continue
            path = self.slots.model_path(candidate["slot"])
            try:
                if file_sha256(path) != candidate["sha256"]:
                    raise ValueError("sha256 of the slot file does not match")
                runtime = ModelRuntime(self.artifacts.session(candidate["sha256"], path), candidate)
            except Exception as exc:
                log.error("slot %s is unusable: %s", candidate["slot"], exc)
                continue
            if candidate is not active:
                self.slots.commit(candidate)
                self.status("reverted", reason="load_failed", info=active, slot=candidate["slot"])
            self.engine.swap(runtime)
            return
        log.error("no loadable model on this device")

    def handle(self, message: bytes) -> None:
        """Process one manifest message; never raises, always reports."""
        with self._lock:
            self._current: Manifest | None = None
            try:
                self._handle(message)
            except ManifestRejected as exc:
                log.warning("manifest rejected: %s", exc)
                info = self._info(exc.manifest) if exc.manifest else None
                self.status("rejected", reason=exc.reason, info=info)
            except Exception:
                log.exception("update crashed")
                self._recover()
                # Name the rollout and sequence when the manifest got that far, so the control plane can attribute it.
                info = self._info(self._current) if self._current is not None else None
                self.status("failed", reason="internal_error", info=info)

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

    def _handle(self, message: bytes) -> None:
        manifest = parse_payload(open_envelope(message, self.key))
        self._current = manifest
        ota = self.slots.ota_record()
        if (
            manifest.device_id == self.config.device_id
            and manifest.sequence == ota.get("last_accepted")
            and manifest.payload_sha256 == ota.get("payload_sha256")
        ):
            # The retained manifest again (reconnect, restart, QoS 1 duplicate): not a replay.
            if ota.get("outcome") != "in_progress":
                log.debug("manifest %s already handled (%s)", manifest.sequence, ota.get("outcome"))
                return
            active = self.slots.active()
            if active and active.get("sequence") == manifest.sequence:
                self.slots.set_outcome("activated")
                return
            check_policy(manifest, device_id=self.config.device_id, last_sequence=None,
                         max_bytes=self.config.max_artifact_bytes)
            log.info("resuming interrupted update to sequence %d", manifest.sequence)
        else:
            check_policy(manifest, device_id=self.config.device_id, last_sequence=self.slots.last_sequence(),
                         max_bytes=self.config.max_artifact_bytes)
            self.slots.accept(sequence=manifest.sequence, payload_sha256=manifest.payload_sha256,
                              info={"rollout_id": manifest.rollout_id, "sha256": manifest.sha256})
        self._apply(manifest)

    def _fail(self, state: str, reason: str, manifest: Manifest, slot: str, detail: str) -> None:
        log.warning("update to sequence %d %s: %s (%s)", manifest.sequence, state, reason, detail)
        self.slots.set_outcome(state, reason)
        self.status(state, reason=reason, info=self._info(manifest), slot=slot)

    def _download(self, manifest: Manifest, dest: Path | None) -> None:
        download_artifact(
            url=urllib.parse.urljoin(self.config.control_plane_url, manifest.url),
            token=self.config.device_token, dest=dest, sha256=manifest.sha256,
            declared_size=manifest.size, max_bytes=self.config.max_artifact_bytes,
            attempts=self.config.download_attempts, backoff_s=self.config.download_backoff_s,
            timeout_s=self.config.download_timeout_s,
        )

    def _apply(self, manifest: Manifest) -> None:
        info = self._info(manifest)
        slot = self.slots.inactive_slot()
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
            runtime = ModelRuntime(self.artifacts.session(manifest.sha256, path), record)
        except Exception as exc:
            self.slots.end_trial()
            self._fail("failed", "load_failed", manifest, slot, str(exc))
            return
        result = run_self_test(runtime, manifest.self_test)
        if not result.ok:
            self.slots.end_trial()
            self._fail("failed", result.reason or "self_test_failed", manifest, slot, result.detail)
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
