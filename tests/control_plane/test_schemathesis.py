"""Property-based API conformance with schemathesis: every operation, admin token, SQLite.

For each operation, schemathesis generates schema-valid (positive) and schema-violating (negative) requests and
runs its built-in checks: no 5xx, documented status codes, documented content types, bodies matching the response
schema, invalid input rejected with 4xx and valid input not rejected with 422.

schemathesis' own pytest plugin (``schema.parametrize``/``from_fixture``) does not run under pytest 9, so the
operations are driven through its Python API (``as_strategy`` + ``call_and_validate``) inside Hypothesis.
"""

from __future__ import annotations

import contextlib
import shutil
from collections import Counter, defaultdict
from pathlib import Path

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

EXAMPLES_PER_OPERATION = 5
# Every domain: the /api/v1 router documents the shared error responses (control_plane.errors).
CHECKED_PREFIXES = ("/api/v1/", "/healthz", "/readyz")
# Rules JSON Schema as generated cannot express; each one is a documented exception, not a silenced bug.
EXCLUDED_CHECKS = {
    # device_id is required for, and only for, the device role: a cross-field rule pydantic does not export.
    "POST /api/v1/tokens": [positive_data_acceptance],
    # A declared ?sha256= that does not match the uploaded bytes is refused by design (integrity check).
    "POST /api/v1/artifacts": [positive_data_acceptance],
    # Referenced prompt versions must exist: referential integrity, not a shape.
    "POST /api/v1/agent-runs": [positive_data_acceptance],
    # "exactly one of": reference by dataset_id or by rows; version or alias; template or messages.
    "POST /api/v1/drift/exact": [positive_data_acceptance],
    # A dataset's baseline must pass the strict baseline schema (docs/drift.md), which OpenAPI does not carry.
    "POST /api/v1/datasets": [positive_data_acceptance],
    "POST /api/v1/prompts/{name}/versions": [positive_data_acceptance],
    # A selector needs at least one criterion, and a waves strategy its percent list.
    "POST /api/v1/fleet/deployments": [positive_data_acceptance],
    "POST /api/v1/fleet/rollouts/{rollout_id}/rollback": [positive_data_acceptance],
    # A sample without contexts needs the dataset to name a collection to retrieve from.
    "POST /api/v1/eval-datasets/{name}/versions": [positive_data_acceptance],
    # Depends on server configuration (a prompts directory), which no request can supply.
    "POST /api/v1/prompts/sync": [positive_data_acceptance],
    # Ranks 1..n with non-increasing confidence, and evidence that points at existing resources.
    "POST /api/v1/incidents/{incident_id}/timeline": [positive_data_acceptance],
    "POST /api/v1/proposals/{proposal_id}/verification": [positive_data_acceptance],
    # Cross-field rules: a retrain window must end after it starts; the action's target must exist.
    "POST /api/v1/proposals": [positive_data_acceptance],
    # A webhook URL's port range and IPv6 literal are checked by the HTTP client, beyond the pattern.
    "POST /api/v1/webhooks": [positive_data_acceptance],
}
# A Server-Sent Events stream never ends, so a buffering test client cannot read one; tests/control_plane/events
# cover it with a real server.
SKIPPED_OPERATIONS = frozenset({"GET /api/v1/events"})


@pytest.fixture
def db_url(tmp_path: Path, sqlite_template: Path) -> str:
    """Run on SQLite only: the HTTP contract does not depend on the engine (and this keeps the test fast)."""
    path = tmp_path / "edgeloop.db"
    shutil.copyfile(sqlite_template, path)
    return f"sqlite:///{path}"


def excluded_checks(label: str) -> list[schemathesis.CheckFunction]:
    """Return the checks an operation is exempt from, with the reason recorded above."""
    return list(EXCLUDED_CHECKS.get(label, []))


def run_operation(operation: schemathesis.APIOperation, mode: GenerationMode, failures: dict[str, list[str]],
                  statuses: dict[str, Counter[int]]) -> None:
    """Run a bounded, reproducible Hypothesis search on one operation; collect failures instead of raising."""
    skip = excluded_checks(operation.label)
    key = f"{operation.label} [{mode.value}]"

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def exercise(case: schemathesis.Case) -> None:
        try:
            response = case.call()
            statuses[operation.label][response.status_code] += 1
            case.validate_response(response, excluded_checks=skip)
        except (Exception, BaseExceptionGroup) as exc:  # report every operation's failures at once
            failures[key].append(str(exc).strip())

    # Unsatisfiable: nothing to negate (no parameters and no body); the positive run covered the operation.
    with contextlib.suppress(Unsatisfiable):
        exercise()


def test_every_operation_conforms(app: FastAPI, admin_headers: dict[str, str]) -> None:
    # The token goes in as the OpenAPI security scheme's credentials, so negative cases that drop or mangle the
    # Authorization header are recognised as auth cases rather than as accepted invalid input.
    token = admin_headers["Authorization"].removeprefix("Bearer ")
    config = schemathesis.Config.from_dict({"auth": {"openapi": {"HTTPBearer": {"bearer": token}}}})
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
    failures: dict[str, list[str]] = defaultdict(list)
    statuses: dict[str, Counter[int]] = defaultdict(Counter)
    operations = [op for op in (result.ok() for result in schema.get_all_operations())  # type: ignore[union-attr]
                  if op.path.startswith(CHECKED_PREFIXES) and op.label not in SKIPPED_OPERATIONS]
    assert len(operations) >= 20, f"only {len(operations)} operations found in the OpenAPI document"
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            run_operation(operation, mode, failures, statuses)
    report = "\n\n".join(f"== {label}: {len(found)} failing examples\n{found[0][:1500]}"
                         for label, found in sorted(failures.items()))
    assert not failures, report
    # Guard the harness: the token must actually be sent, so most operations see more than 401s.
    succeeded = sorted(label for label, seen in statuses.items() if any(200 <= code < 300 for code in seen))
    only_401 = sorted(label for label, seen in statuses.items() if set(seen) == {401})
    assert len(succeeded) >= 12 and not only_401, (succeeded, only_401)
