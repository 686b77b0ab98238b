"""Import every domain's models so Base.metadata is complete (for Alembic and test schemas)."""

from control_plane.alerts import models as alert_models  # noqa: F401  (alerts)
from control_plane.approvals import models as approval_models  # noqa: F401  (proposals, quarantines, retrain)
from control_plane.audit import models as audit_models
from control_plane.auth import models as auth_models
from control_plane.drift import models as drift_models  # noqa: F401  (monitors, hysteresis state)
from control_plane.evals import models as eval_models  # noqa: F401  (eval datasets, runs, results)
from control_plane.events import models as event_models  # noqa: F401  (webhook subscriptions, deliveries)
from control_plane.fleet import abtest_models  # noqa: F401  (A/B experiments and arm assignments)
from control_plane.fleet import models as fleet_models  # noqa: F401  (devices, rollouts, manifests)
from control_plane.incidents import models as incident_models  # noqa: F401  (incidents, timeline, rule)
from control_plane.keys import models as key_models  # noqa: F401  (signing keys shared by replicas)
from control_plane.lineage import models as lineage_models
from control_plane.prompts import models as prompt_models  # noqa: F401  (prompts, labels, agent runs)
from control_plane.registry import models as registry_models
from control_plane.telemetry import models as telemetry_models  # noqa: F401  (windows, quarantine, labels)
from control_plane.training import models as training_models  # noqa: F401  (training jobs, labelled rows)

__all__ = ["audit_models", "auth_models", "lineage_models", "registry_models"]
