"""A/B model slots and the durable update records in the state dir.

Layout (see docs/edge-agent.md):
  slots/{a,b}/model.onnx     a verified artifact
  slots/{a,b}/<sha>.partial  an unfinished download
  active.json                the committed active model (the only commit point)
  trial.json                 present while a new model is being tried; resolved at boot
  ota.json                   last accepted sequence, its payload digest, outcome, attempts and the envelope
  boot.json                  how many boots in a row started loading the active model (crash-loop guard)
  trusted_keys.json          the signing keys after in-band rotations (edge_agent/keyring.py)
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.durable import fsync_dir, read_json, remove_durably, write_json_atomic

log = logging.getLogger(__name__)
SLOTS = ("a", "b")
MODEL_FILE = "model.onnx"


def attempts_of(record: Any, field: str = "attempts") -> int:
    """Return a non-negative int counter from a durable record (0 if absent or damaged)."""
    value = record.get(field) if isinstance(record, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


@dataclass(frozen=True)
class BootResolution:
    """What the boot check did with a leftover trial marker."""

    state: str  # "activated" (the commit had happened) or "reverted"
    reason: str | None
    record: dict[str, Any]


class SlotStore:
    """Own the state dir: slot files, the active pointer, the trial marker and the OTA record."""

    def __init__(self, state_dir: Path) -> None:
        self.root = Path(state_dir)
        for slot in SLOTS:
            (self.root / "slots" / slot).mkdir(parents=True, exist_ok=True)
        self.active_path = self.root / "active.json"
        self.trial_path = self.root / "trial.json"
        self.ota_path = self.root / "ota.json"
        self.boot_path = self.root / "boot.json"

    def slot_dir(self, slot: str) -> Path:
        """Return the directory of slot 'a' or 'b'."""
        if slot not in SLOTS:
            raise ValueError(f"unknown slot {slot!r}")
        return self.root / "slots" / slot

    def model_path(self, slot: str) -> Path:
        """Return the model file path of a slot."""
        return self.slot_dir(slot) / MODEL_FILE

    def active(self) -> dict[str, Any] | None:
        """Return the committed active record, or None on a fresh device."""
        record = read_json(self.active_path)
        return record if isinstance(record, dict) and record.get("slot") in SLOTS else None

    def inactive_slot(self) -> str:
        """Return the slot an update may overwrite (never the active one)."""
        active = self.active()
        return "b" if active is not None and active["slot"] == "a" else "a"

    def partial_path(self, slot: str, sha256: str) -> Path:
        """Return the partial-download path for an artifact in a slot, removing other partials."""
        directory = self.slot_dir(slot)
        for stale in directory.glob("*.partial"):
            if stale.name != f"{sha256}.partial":
                stale.unlink(missing_ok=True)
        return directory / f"{sha256}.partial"

    def install(self, slot: str, source: Path, *, link: bool = False) -> Path:
        """Move (or hard-link) a verified file into slot/model.onnx durably."""
        target = self.model_path(slot)
        if link:
            tmp = target.with_suffix(".linking")
            tmp.unlink(missing_ok=True)
            try:
                os.link(source, tmp)
            except OSError:
                shutil.copyfile(source, tmp)
            source = tmp
        with open(source, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(source, target)
        fsync_dir(target.parent)
        return target

    def begin_trial(self, record: dict[str, Any]) -> None:
        """Durably mark that record's slot is on trial; the active pointer is untouched."""
        write_json_atomic(self.trial_path, record)

    def trial(self) -> dict[str, Any] | None:
        """Return the trial marker, if any."""
        record = read_json(self.trial_path)
        return record if isinstance(record, dict) else None

    def commit(self, record: dict[str, Any]) -> None:
        """Atomically make record the active model, keeping the old one as 'previous' (the commit point)."""
        previous = self.active()
        if previous is not None:
            previous.pop("previous", None)
        write_json_atomic(self.active_path, {**record, "previous": previous})

    def end_trial(self) -> None:
        """Drop the trial marker; before a commit this is the whole revert, as the pointer never moved."""
        remove_durably(self.trial_path)

    def resolve_boot(self) -> BootResolution | None:
        """Resolve a trial left by a crash: keep it if the commit happened, else revert."""
        trial = self.trial()
        if trial is None:
            return None
        active = self.active()
        committed = (
            active is not None
            and active.get("slot") == trial.get("slot")
            and active.get("sha256") == trial.get("sha256")
            and active.get("sequence") == trial.get("sequence")
        )
        self.end_trial()
        if committed:
            return BootResolution("activated", None, trial)
        return BootResolution("reverted", "trial_interrupted", trial)

    def ota_record(self) -> dict[str, Any]:
        """Return the durable OTA record ({} on a fresh device)."""
        record = read_json(self.ota_path)
        return record if isinstance(record, dict) else {}

    def last_sequence(self) -> int | None:
        """Return the last accepted manifest sequence."""
        value = self.ota_record().get("last_accepted")
        return value if isinstance(value, int) else None

    def accept(self, *, sequence: int, payload_sha256: str, info: dict[str, Any]) -> None:
        """Durably record a newly accepted manifest before acting on it (anti-replay)."""
        write_json_atomic(
            self.ota_path,
            {"last_accepted": sequence, "payload_sha256": payload_sha256, "outcome": "in_progress", **info},
        )

    def set_outcome(self, outcome: str, reason: str | None = None) -> None:
        """Durably record how the last accepted manifest ended."""
        record = self.ota_record()
        if record:
            write_json_atomic(self.ota_path, {**record, "outcome": outcome, "reason": reason})

    def note_attempt(self) -> int:
        """Durably count one more attempt at the accepted update (before any of its work) and return it."""
        record = self.ota_record()
        attempts = attempts_of(record) + 1
        write_json_atomic(self.ota_path, {**record, "attempts": attempts})
        return attempts

    def count_boot(self, sha256: str) -> int:
        """Durably count a boot that is about to load the model sha256 and return the count in a row."""
        record = read_json(self.boot_path)
        same = isinstance(record, dict) and record.get("sha256") == sha256
        count = (attempts_of(record, "count") if same else 0) + 1
        write_json_atomic(self.boot_path, {"sha256": sha256, "count": count})
        return count

    def clear_boot(self) -> None:
        """Forget the boot count once the active model has loaded."""
        remove_durably(self.boot_path)
