"""Signed manifest envelope: verify the ed25519 signature, then parse and validate the payload."""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import math
import re
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge_agent.keyring import KeyRejected, KeyRing, KeySet
from edge_agent.strict_json import INT64_LIMIT, StrictJsonError, loads_strict

MANIFEST_SCHEMA = "edgeloop.manifest/v1"
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_ROLLOUT_RE = re.compile(r"[A-Za-z0-9._-]{1,128}")


class ManifestRejected(Exception):
    """The manifest must not be applied; reason is a protocol reason code."""

    def __init__(self, reason: str, detail: str = "", manifest: Manifest | None = None) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.manifest = manifest


@dataclass(frozen=True)
class SelfTest:
    """Inputs and expected outputs the device checks before activating a model."""

    inputs: list[list[float]]
    expected_labels: list[Any]
    expected_scores: list[list[float]] | None
    tolerance: float
    max_latency_ms: float


@dataclass(frozen=True)
class Manifest:
    """A signature-verified, schema-checked manifest payload."""

    device_id: str
    sequence: int
    rollout_id: str | None
    issued_at: float
    expires_at: float
    model: dict[str, Any]
    sha256: str
    size: int
    url: str
    quantization: str | None
    input_schema: dict[str, Any]
    self_test: SelfTest
    baseline: Any
    telemetry: dict[str, Any]
    payload_sha256: str
    raw: dict[str, Any] = field(repr=False)
    stage_only: bool = False  # blue-green: verify and self-test into the inactive slot, activate on a cut-over
    shadow: dict[str, float] | None = None  # stage_only: also run the candidate on a sample of live inputs


def public_key_id(key: Ed25519PublicKey) -> str:
    """Return the protocol key_id: the first 16 hex chars of sha256(raw public key)."""
    from cryptography.hazmat.primitives import serialization  # lazy: ~2 MB RSS a device rarely needs

    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_public_key(spec: str) -> Ed25519PublicKey:
    """Load an ed25519 public key from a file (raw 32 bytes, PEM, or base64 text) or a base64 string."""
    path = Path(spec).expanduser()
    data = path.read_bytes() if len(spec) < 4096 and path.is_file() else spec.encode()
    if data.lstrip().startswith(b"-----BEGIN"):
        from cryptography.hazmat.primitives import serialization  # lazy: PEM keys only

        key = serialization.load_pem_public_key(data)
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("trusted_public_key is not an ed25519 key")
        return key
    if len(data) != 32:
        try:
            data = base64.b64decode(data.strip(), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("trusted_public_key is neither a key file nor base64 raw bytes") from exc
    if len(data) != 32:
        raise ValueError("an ed25519 raw public key is 32 bytes")
    return Ed25519PublicKey.from_public_bytes(data)


def open_envelope(message: bytes, keys: KeyRing | Ed25519PublicKey, now: float | None = None) -> bytes:
    """Check the envelope shape and signature and return the signed payload bytes.

    With a KeyRing, the envelope's rotation documents are applied first; use open_with_keys to get the
    rotated set back without persisting it.
    """
    return open_with_keys(message, keys, now)[0]


def open_with_keys(
    message: bytes, keys: KeyRing | Ed25519PublicKey, now: float | None = None
) -> tuple[bytes, KeySet | None]:
    """Return (payload bytes, the key set after the envelope's rotations) for a valid envelope."""
    try:
        envelope = loads_strict(message)
    except StrictJsonError as exc:
        raise ManifestRejected("malformed", f"envelope is not acceptable JSON: {exc}") from exc
    if not isinstance(envelope, dict):
        raise ManifestRejected("malformed", "envelope is not an object")
    if "payload" not in envelope:
        if "schema" in envelope or "artifact" in envelope:
            raise ManifestRejected("unsigned", "a bare manifest without an envelope")
        raise ManifestRejected("malformed", "envelope has no payload")
    if not envelope.get("signature"):
        raise ManifestRejected("unsigned", "envelope has no signature")
    ring = keys if isinstance(keys, KeyRing) else KeyRing(None, keys)
    try:
        payload, rotated = ring.open(envelope, now)
    except KeyRejected as exc:
        raise ManifestRejected(exc.reason, exc.detail) from exc
    return payload, rotated


def _require(cond: bool, detail: str) -> None:
    if not cond:
        raise ManifestRejected("malformed", detail)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_num(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _parse_self_test(raw: Any) -> SelfTest:
    _require(isinstance(raw, dict), "self_test is not an object")
    inputs, labels = raw.get("inputs"), raw.get("expected_labels")
    _require(isinstance(inputs, list) and len(inputs) > 0, "self_test.inputs is empty")
    _require(all(isinstance(r, list) and r and all(_is_num(v) for v in r) for r in inputs),
             "self_test.inputs must be rows of numbers")
    _require(len({len(r) for r in inputs}) == 1, "self_test.inputs rows must have one length")
    _require(isinstance(labels, list) and len(labels) == len(inputs), "expected_labels length")
    scores = raw.get("expected_scores")
    if scores is not None:
        _require(isinstance(scores, list) and len(scores) == len(inputs), "expected_scores length")
        _require(all(isinstance(r, list) and all(_is_num(v) for v in r) for r in scores),
                 "expected_scores must be rows of numbers")
    tolerance = raw.get("tolerance", 1e-3)
    max_latency = raw.get("max_latency_ms", 1000.0)
    _require(_is_num(tolerance) and tolerance >= 0, "tolerance")
    _require(_is_num(max_latency) and max_latency > 0, "max_latency_ms")
    return SelfTest(inputs, labels, scores, float(tolerance), float(max_latency))


def parse_payload(payload: bytes) -> Manifest:
    """Parse signed payload bytes into a Manifest, rejecting anything off-schema as malformed."""
    try:
        # NaN, Infinity, 1e999, integers beyond int64, invalid UTF-8 and deep nesting all end here.
        raw = loads_strict(payload)
    except StrictJsonError as exc:
        raise ManifestRejected("malformed", f"payload is not acceptable JSON: {exc}") from exc
    _require(isinstance(raw, dict), "payload is not an object")
    _require(raw.get("schema") == MANIFEST_SCHEMA, f"schema must be {MANIFEST_SCHEMA}")
    art, model = raw.get("artifact"), raw.get("model")
    _require(isinstance(raw.get("device_id"), str), "device_id")
    _require(_is_int(raw.get("sequence")) and 0 <= raw["sequence"] < INT64_LIMIT, "sequence")
    _require(_is_num(raw.get("issued_at")) and _is_num(raw.get("expires_at")), "issued_at/expires_at")
    _require(0 < raw["issued_at"] < raw["expires_at"], "issued_at must be positive and before expires_at")
    _require(isinstance(model, dict) and isinstance(model.get("name"), str), "model")
    _require(isinstance(art, dict), "artifact")
    assert isinstance(art, dict) and isinstance(model, dict)
    _require(isinstance(art.get("sha256"), str) and bool(_SHA256_RE.match(art["sha256"])), "artifact.sha256")
    _require(_is_int(art.get("size")) and art["size"] > 0, "artifact.size")
    url = art.get("url")
    # Absolute http(s) URLs per the protocol; a path ("/api/v1/...") is resolved against control_plane_url.
    _require(isinstance(url, str) and url.startswith(("http://", "https://", "/")), "artifact.url")
    _require(art.get("format", "onnx") == "onnx", "artifact.format must be onnx")
    rollout = raw.get("rollout_id")
    _require(rollout is None or isinstance(rollout, str), "rollout_id")
    input_schema = raw.get("input_schema") or {}
    _require(isinstance(input_schema, dict), "input_schema")
    telemetry = raw.get("telemetry") or {}
    _require(isinstance(telemetry, dict), "telemetry")
    stage_only = raw.get("stage_only", False)
    _require(isinstance(stage_only, bool), "stage_only must be a boolean")
    # A staged model waits for a cut-over on a topic named after its rollout, so the id must be topic-safe.
    _require(not stage_only or (isinstance(rollout, str) and bool(_ROLLOUT_RE.fullmatch(rollout))),
             "stage_only needs a rollout_id of 1-128 letters, digits, '.', '_' or '-'")
    shadow = raw.get("shadow")
    if shadow is not None:
        _require(stage_only and isinstance(shadow, dict) and set(shadow) <= {"sample_rate", "max_latency_ms"},
                 "shadow needs stage_only and takes only sample_rate and max_latency_ms")
        rate, budget = shadow.get("sample_rate", 0.1), shadow.get("max_latency_ms", 50.0)
        _require(_is_num(rate) and 0 < rate <= 1, "shadow.sample_rate must be in (0, 1]")
        _require(_is_num(budget) and budget > 0, "shadow.max_latency_ms must be positive")
        shadow = {"sample_rate": float(rate), "max_latency_ms": float(budget)}
    return Manifest(
        device_id=raw["device_id"], sequence=raw["sequence"], rollout_id=rollout,
        issued_at=float(raw["issued_at"]), expires_at=float(raw["expires_at"]), model=dict(model),
        sha256=art["sha256"], size=art["size"], url=art["url"], quantization=art.get("quantization"),
        input_schema=input_schema, self_test=_parse_self_test(raw.get("self_test")),
        baseline=raw.get("baseline"), telemetry=telemetry,
        payload_sha256=hashlib.sha256(payload).hexdigest(), raw=raw, stage_only=stage_only, shadow=shadow,
    )


DEFAULT_MAX_VALIDITY_S = 30 * 86_400.0
DEFAULT_CLOCK_SKEW_S = 300.0
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _check_characters(url: str) -> None:
    # urlsplit silently drops tabs and newlines and IDNA maps look-alikes: refuse them all up front.
    if not url.isascii() or "\\" in url or any(ord(ch) <= 0x20 or ord(ch) == 0x7F for ch in url):
        raise ValueError("non-ASCII, backslash, whitespace or control character in the URL")


def url_origin(url: str) -> tuple[str, str, int]:
    """Return (scheme, host, port) of an http(s) URL, refusing every form that parsers disagree on.

    Refused with ValueError: userinfo (user@host), backslashes, non-ASCII (IDNA look-alikes), whitespace
    and control characters, percent signs in the host, a trailing dot, an empty host and bad ports.
    Scheme and host compare case-insensitively, an omitted port is the scheme's default, and an IP
    literal (IPv6 in brackets included) is compared in its canonical form.
    """
    import ipaddress

    _check_characters(url)
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ValueError(f"scheme {scheme!r} is not http or https")
    if "@" in parts.netloc:
        raise ValueError("userinfo in the URL")
    host = parts.hostname or ""
    if not host or host.endswith(".") or "%" in host:
        raise ValueError("empty host, trailing dot or percent-encoding in the host")
    with contextlib.suppress(ValueError):  # A name stays as given, lower-cased.
        host = ipaddress.ip_address(host).compressed
    port = parts.port  # raises ValueError for a port out of range or not a number
    return scheme, host, port if port is not None else _DEFAULT_PORTS[scheme]


def artifact_url(control_plane_url: str, manifest_url: str) -> str:
    """Resolve the manifest's artifact URL and return it only if it has the control plane's origin."""
    if not manifest_url.startswith(("http://", "https://", "/")) or manifest_url.startswith("//"):
        raise ValueError("artifact.url must be absolute http(s) or a path starting with one '/'")
    _check_characters(manifest_url)
    resolved = urllib.parse.urljoin(control_plane_url, manifest_url)
    if url_origin(resolved) != url_origin(control_plane_url):
        raise ValueError(f"{resolved[:200]!r} is not on the control plane's origin")
    return resolved


def check_policy(
    manifest: Manifest,
    *,
    device_id: str,
    last_sequence: int | None,
    max_bytes: int,
    now: float | None = None,
    max_validity_s: float = DEFAULT_MAX_VALIDITY_S,
    clock_skew_s: float = DEFAULT_CLOCK_SKEW_S,
    control_plane_url: str | None = None,
) -> None:
    """Apply the device-side acceptance rules to a verified manifest (raise ManifestRejected)."""
    if manifest.device_id != device_id:
        raise ManifestRejected("wrong_device", f"for {manifest.device_id!r}", manifest)
    if last_sequence is not None and manifest.sequence <= last_sequence:
        raise ManifestRejected("replayed_sequence", f"{manifest.sequence} <= {last_sequence}", manifest)
    now = time.time() if now is None else now
    if manifest.expires_at <= now:
        raise ManifestRejected("expired", f"expired at {manifest.expires_at}", manifest)
    if manifest.issued_at > now + clock_skew_s:
        raise ManifestRejected("issued_in_future", f"issued at {manifest.issued_at}, now {now:.0f}", manifest)
    if manifest.expires_at - manifest.issued_at > max_validity_s:
        raise ManifestRejected(
            "validity_too_long", f"valid {manifest.expires_at - manifest.issued_at:.0f}s > {max_validity_s}s",
            manifest)
    if manifest.size > max_bytes:
        raise ManifestRejected("size_exceeded", f"declared {manifest.size} > cap {max_bytes}", manifest)
    if control_plane_url is not None:
        try:
            artifact_url(control_plane_url, manifest.url)
        except ValueError as exc:
            raise ManifestRejected("untrusted_url", str(exc), manifest) from exc
