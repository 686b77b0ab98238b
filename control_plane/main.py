"""The application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

from control_plane import __version__
from control_plane.api import include_api_routers
from control_plane.approvals.execution import approval_workers
from control_plane.assistant.service import prepare_checkpointer as prepare_assistant_checkpointer
from control_plane.audit.checkpoints import CheckpointSink
from control_plane.db.session import Database
from control_plane.errors import install_error_handlers
from control_plane.events.hub import event_workers
from control_plane.fleet.abtest_flows import experiment_worker
from control_plane.fleet.bridge import fleet_bridge
from control_plane.fleet.manifests import ManifestFactory
from control_plane.keys.service import KeyStore
from control_plane.limits import RequestGuard, body_limits
from control_plane.observability.routes import install_observability
from control_plane.private_files import ensure_private_dir
from control_plane.prompts.sync import sync_on_startup
from control_plane.registry.store import ArtifactStore
from control_plane.retention import RetentionPolicy, retention_worker
from control_plane.runtime import serving_gc
from control_plane.settings import Settings
from control_plane.telemetry.workers import telemetry_workers
from control_plane.training.worker import training_workers
from control_plane.ui.routes import install_ui
from control_plane.workers import Worker, audit_checkpointer


def build_workers(app: FastAPI, settings: Settings) -> list[Worker]:
    """Return the background workers this configuration needs."""
    workers: list[Worker] = [
        audit_checkpointer(app.state.database, app.state.audit_signer, settings.audit_checkpoint_seconds,
                           CheckpointSink.from_settings(settings))
    ]
    if settings.mqtt_url:
        workers.append(fleet_bridge(app, settings))
    workers += telemetry_workers(app, settings)  # ingest consumers (when mqtt_url is set) and drift monitors
    # Built here, so a retention shorter than the ingest's dedup horizon stops start-up with the reason.
    workers += approval_workers(app, settings)  # exactly-once executor and proposal expiry
    workers.append(experiment_worker(app, settings))  # A/B tests: decide at the horizon, propose the winner
    workers += training_workers(app, settings)  # approved retraining requests -> challenger -> canary proposal
    workers += event_workers(app, settings)  # SSE hub (LISTEN/NOTIFY or a short poll) and webhook dispatcher
    workers.append(retention_worker(app.state.database, RetentionPolicy.from_settings(settings),
                                    settings.retention_interval_seconds))
    return workers


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build a control-plane app; all state hangs off ``app.state``, none is global."""
    settings = settings or Settings()
    ensure_private_dir(settings.data_dir)  # the SQLite database, keys and tokens live here: owner only

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Before anything runs: a replica whose keys disagree with the database refuses to start (KeyStoreError).
        app.state.audit_signer = app.state.key_store.load("audit")
        app.state.fleet_factory = ManifestFactory.from_settings(settings, app.state.artifact_store, app.state.key_store)
        sync_on_startup(app.state.database, settings)  # prompts/*.md → registry; idempotent, replica-safe
        # Before any request holds a transaction: PostgreSQL checkpointer setup builds indexes CONCURRENTLY.
        await run_in_threadpool(prepare_assistant_checkpointer, settings)
        workers = build_workers(app, settings)
        for worker in workers:
            await worker.start()
        try:
            with serving_gc():
                yield
        finally:
            for worker in reversed(workers):
                await worker.stop()
            app.state.database.dispose()

    app = FastAPI(title="Edgeloop control plane", version=__version__, lifespan=lifespan)
    app.state.settings = settings
    app.state.database = Database(settings.resolved_database_url)
    app.state.artifact_store = ArtifactStore(settings.artifacts_dir, settings.max_artifact_bytes)
    app.state.key_store = KeyStore(settings, app.state.database)
    install_error_handlers(app)
    include_api_routers(app)
    install_ui(app, settings)
    app.add_middleware(RequestGuard, limits=body_limits(settings))  # before routing, parsing and authentication
    install_observability(app, settings)  # request ids, /metrics, /healthz and /readyz
    return app
