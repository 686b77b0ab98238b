"""Property-based API conformance with schemathesis: every operation, admin token, SQLite and PostgreSQL.

For each operation, schemathesis generates schema-valid (positive) and schema-violating (negative) requests and
runs its built-in checks: no 5xx, documented status codes, documented content types, bodies matching the response
schema, invalid input rejected with 4xx and valid input not rejected with 422.

Both engines, because the failures differ: PostgreSQL refuses NUL in text and has 32-bit INTEGER columns, where
SQLite stores the NUL and overflows only at 2^63. Server errors are reported first and separately: there must be none.

schemathesis' own pytest plugin (``schema.parametrize``/``from_fixture``) does not run under pytest 9, so the
operations are driven through its Python API (``as_strategy`` + ``call_and_validate``) inside Hypothesis.
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter, defaultdict

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

# Per operation and generation mode, on each engine: bounded for CI (the whole test takes about a minute per engine
# on 2 busy cores); raise it locally (EDGELOOP_SCHEMATHESIS_EXAMPLES=100) for a deeper search.
EXAMPLES_PER_OPERATION = int(os.environ.get("EDGELOOP_SCHEMATHESIS_EXAMPLES", "10"))
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
    # Cross-field rules: each clear threshold at most its raise threshold; at most 500 buckets per report.
    "POST /api/v1/drift/monitors": [positive_data_acceptance],
    "GET /api/v1/drift/report": [positive_data_acceptance],
    # A question may not hold control characters (other than tab and newlines), which the schema does not state.
    "POST /api/v1/assistant/threads/{thread_id}/messages": [positive_data_acceptance],
    # A decision time must carry a zone and lie between the device's provisioning and now (data, not a shape).
    "GET /api/v1/fleet/devices/{device_id}/decision": [positive_data_acceptance],
    # Cross-field rules: one label per feature row, and every row of a window the same width.
    "POST /api/v1/training/rows": [positive_data_acceptance],
}
# A Server-Sent Events stream never ends, so a buffering test client cannot read one; tests/control_plane/events
# cover it with a real server.
SKIPPED_OPERATIONS = frozenset({"GET /api/v1/events"})
# Rules that hold for every operation (docs/api-limits.md) but that JSON Schema cannot state for free-form values:
# no NUL character anywhere (PostgreSQL cannot store one), integers within 64 bits inside free-form JSON, and
# integers sent as integers (JSON Schema's "integer" admits 3.0; the API is strict and refuses it). And 2**63:
# FastAPI's OpenAPI model types bounds as floats, so a generator can round the exclusive 2**63 bound's last valid
# value (2**63 - 1) up to 2**63. A schema-valid request refused by one of these is expected; any other refusal of
# schema-valid data still fails the test.
GLOBAL_REFUSALS = ("NUL character", "integer outside the signed 64-bit range", "Input should be a valid integer",
                   "Input should be less than 9223372036854775808")


def excluded_checks(label: str) -> list[schemathesis.CheckFunction]:
    """Return the checks an operation is exempt from, with the reason recorded above."""
    return list(EXCLUDED_CHECKS.get(label, []))


def refused_by_a_global_rule(response: schemathesis.Response) -> bool:
    """Return whether a 422 names only rules from GLOBAL_REFUSALS."""
    if response.status_code != 422:
        return False
    error = response.json()["error"]
    messages = [e["message"] for e in error["details"].get("errors", [])] or [error["message"]]
    return all(any(rule in message for rule in GLOBAL_REFUSALS) for message in messages)


def run_operation(operation: schemathesis.APIOperation, mode: GenerationMode, failures: dict[str, list[str]],
                  statuses: dict[str, Counter[int]], server_errors: list[str]) -> None:
    """Run a bounded, reproducible Hypothesis search on one operation; collect failures instead of raising."""
    skip = excluded_checks(operation.label)
    key = f"{operation.label} [{mode.value}]"

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def exercise(case: schemathesis.Case) -> None:
        try:
            response = case.call()
        except Exception as exc:  # the app raised instead of answering: a 500 in production
            server_errors.append(f"{key}: {type(exc).__name__}: {str(exc).strip()[:500]}")
            return
        statuses[operation.label][response.status_code] += 1
        if response.status_code >= 500:
            server_errors.append(f"{key}: {response.status_code} {case.method} {case.formatted_path} "
                                 f"query={case.query} body={str(case.body)[:300]}: {response.text[:300]}")
        exempt = [positive_data_acceptance] if refused_by_a_global_rule(response) else []
        try:
            case.validate_response(response, excluded_checks=[*skip, *exempt])
        except (Exception, BaseExceptionGroup) as exc:  # report every operation's failures at once
            failures[key].append(str(exc).strip())

    # Unsatisfiable: nothing to negate (no parameters and no body); the positive run covered the operation.
    with contextlib.suppress(Unsatisfiable):
        exercise()


@pytest.mark.slow  # about 75 s on SQLite and 150 s on PostgreSQL at a load average of 14 on 2 cores
def test_every_operation_conforms(app: FastAPI, admin_headers: dict[str, str]) -> None:
    # The token goes in as the OpenAPI security scheme's credentials, so negative cases that drop or mangle the
    # Authorization header are recognised as auth cases rather than as accepted invalid input.
    token = admin_headers["Authorization"].removeprefix("Bearer ")
    config = schemathesis.Config.from_dict({"auth": {"openapi": {"HTTPBearer": {"bearer": token}}}})
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
    failures: dict[str, list[str]] = defaultdict(list)
    statuses: dict[str, Counter[int]] = defaultdict(Counter)
    server_errors: list[str] = []
    operations = [op for op in (result.ok() for result in schema.get_all_operations())  # type: ignore[union-attr]
                  if op.path.startswith(CHECKED_PREFIXES) and op.label not in SKIPPED_OPERATIONS]
    assert len(operations) >= 20, f"only {len(operations)} operations found in the OpenAPI document"
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            run_operation(operation, mode, failures, statuses, server_errors)
    assert not server_errors, f"{len(server_errors)} server errors:\n" + "\n".join(server_errors[:20])
    report = "\n\n".join(f"== {label}: {len(found)} failing examples\n{found[0][:1500]}"
                         for label, found in sorted(failures.items()))
    assert not failures, report
    # Guard the harness: the token must actually be sent, so most operations see more than 401s.
    succeeded = sorted(label for label, seen in statuses.items() if any(200 <= code < 300 for code in seen))
    only_401 = sorted(label for label, seen in statuses.items() if set(seen) == {401})
    assert len(succeeded) >= 12 and not only_401, (succeeded, only_401)
