"""A small fleet on a served control plane: a model, a baseline, devices that send real windows over HTTP."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from agents.control_plane_client import ControlPlaneClient
from control_plane.alerts import service as alerts
from control_plane.alerts.schemas import AlertCheck, AlertRaise, Severity
from control_plane.auth import service as auth_service
from control_plane.auth.roles import Role
from control_plane.auth.schemas import TokenCreate
from control_plane.db.session import Database
from edge_agent.telemetry import WindowRecorder
from tests.control_plane.telemetry.simulate import MODEL, ListSink, SimDevice, make_baseline, register_baseline


def token(database: Database, name: str, role: Role) -> str:
    """Mint a token for ``role``."""
    with database.transaction() as session:
        return auth_service.create_token(session=session, actor="admin:test",
                                         request=TokenCreate(name=name, role=role))[1]


@dataclass
class SimFleet:
    """Devices on a served control plane sending telemetry through POST /telemetry/windows."""

    url: str
    database: Database
    admin: dict[str, str] = field(default_factory=dict)
    device_tokens: dict[str, str] = field(default_factory=dict)
    groups: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.admin = {"Authorization": f"Bearer {token(self.database, 'root', Role.ADMIN)}"}
        self.baseline = make_baseline()
        register_baseline(self.database, self.baseline)
        self.http = httpx.Client(base_url=self.url + "/api/v1", timeout=30)

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call the API as admin and return the JSON body (raises on an error status)."""
        response = self.http.request(method, path, headers=self.admin, **kwargs)
        response.raise_for_status()
        return response.json()

    def model(self, *versions: int, name: str = MODEL) -> None:
        """Register the model and its versions."""
        self.call("POST", "/models", json={"name": name})
        for version in versions:
            self.call("POST", f"/models/{name}/versions", json={"version": version})

    def devices(self, group: str, *device_ids: str) -> None:
        """Provision devices in a group."""
        for device_id in device_ids:
            provisioned = self.call("POST", "/fleet/devices", json={"id": device_id, "group": group})
            self.device_tokens[device_id] = provisioned["token"]
            self.groups[device_id] = group

    def send(self, device_id: str, *, windows: int = 4, version: int = 1, start: float | None = None,
             errors: int = 0, shift: dict[int, float] | None = None, seed: int = 0, model: str = MODEL) -> None:
        """Record ``windows`` real windows (edge_agent's WindowRecorder) and post them as the device."""
        sink = ListSink()
        begin = start if start is not None else time.time() - 60 * windows - 30
        sink.seq = int(begin)  # window_seq must grow across calls for one device
        device = SimDevice(device_id, self.baseline, sink, seed=seed or sum(map(ord, device_id)), start=begin,
                           version=version)
        if model != MODEL:
            device.recorder = WindowRecorder(self.baseline.to_dict(), device_id=device_id, model_name=model,
                                             model_version=version, sink=sink, window_seconds=60.0,
                                             clock=lambda: device.now)
        for _ in range(windows):
            device.run_window(rows=200, errors=errors, shift=shift)
        response = self.http.post("/telemetry/windows", json=sink.messages,
                                  headers={"Authorization": f"Bearer {self.device_tokens[device_id]}"})
        response.raise_for_status()
        assert response.json()["stored"] == windows, response.json()

    def alert(self, check: AlertCheck, title: str, *, version: int = 1, feature: str | None = None,
              evidence: dict[str, Any] | None = None, severity: Severity = Severity.CRITICAL, model: str = MODEL,
              rollout_id: str | None = None, deployment_id: str | None = None) -> str:
        """Raise an alert as a monitor would; return its id."""
        with self.database.transaction() as session:
            raised, _ = alerts.raise_alert(session=session, actor="system:monitor", request=AlertRaise(
                fingerprint=f"{model}-{version}-{check}-{feature}", check=check, severity=severity, title=title,
                model_name=model, model_version=version, feature=feature, evidence=evidence or {},
                rollout_id=rollout_id, deployment_id=deployment_id))
            return raised.id

    def close(self) -> None:
        """Close the HTTP client."""
        self.http.close()


def agent_client(url: str, database: Database) -> ControlPlaneClient:
    """A client with a fresh agent-role token."""
    return ControlPlaneClient(url, token(database, "agents", Role.AGENT))
