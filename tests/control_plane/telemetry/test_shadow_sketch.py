"""Shadow sketch bounds: every field checked before it may reach a column, each refusal with its own reason."""

from __future__ import annotations

import json
from typing import Any

import pytest

from control_plane.telemetry.sanity import Rejected
from control_plane.telemetry.shadow import ERROR_BUCKETS, parse_sketch
from tests.control_plane.telemetry.shadow_sketches import sketch


def test_a_valid_sketch_becomes_bounded_column_values() -> None:
    values = parse_sketch(sketch("ro_1"), "d0", 7)
    assert (values["rows"], values["agree"], values["candidate_version"]) == (100, 97, 2)
    assert values["kind"] == "classification"
    assert json.loads(values["labels"]) == {"0": 50, "1": 50} and values["error_counts"] is None
    regression = sketch("ro_1", kind="regression", candidate_labels={}, error_buckets=list(ERROR_BUCKETS),
                        error_counts=[90, 10, 0, 0, 0, 0, 0, 0], agree=90)
    assert json.loads(parse_sketch(regression, "d0", 8)["error_counts"])[:2] == [90, 10]


@pytest.mark.parametrize(("change", "reason"), [
    ({"schema": "edgeloop.other/v1"}, "shadow_malformed"),
    ({"extra": 1}, "shadow_malformed"),
    ({"rows": 2**64}, "shadow_out_of_range"),
    ({"agree": -1}, "shadow_out_of_range"),
    ({"dropped": True}, "shadow_out_of_range"),
    ({"samples": 1e300}, "shadow_out_of_range"),
    ({"sample_rate": float("nan")}, "shadow_out_of_range"),
    ({"max_latency_ms": float("inf")}, "shadow_out_of_range"),
    ({"candidate_labels": {str(i): 1 for i in range(1000)}}, "shadow_out_of_range"),
    ({"candidate_labels": {"0": {"nested": [1, 2]}}}, "shadow_out_of_range"),
    ({"candidate_labels": {"x" * 101: 100}}, "shadow_out_of_range"),
    ({"latency_counts": [[1]] * 13}, "shadow_out_of_range"),
    ({"latency_counts": [0] * 12}, "shadow_out_of_range"),
    ({"latency_buckets_ms": [1, 2, 3]}, "shadow_bad_buckets"),
    ({"candidate": {"name": "digits", "version": 2, "sha256": "zz"}}, "shadow_bad_candidate"),
    ({"candidate": {"name": "a\u0000b", "version": 2, "sha256": "a" * 64}}, "shadow_bad_candidate"),
    ({"candidate": {"name": "digits", "version": 2**31, "sha256": "a" * 64}}, "shadow_bad_candidate"),
    ({"rollout_id": "ro/../x"}, "shadow_malformed"),
    ({"kind": "ranking"}, "shadow_malformed"),
    ({"stopped": "x" * 500}, "shadow_malformed"),
    ({"agree": 101}, "shadow_inconsistent"),
    ({"samples": 99}, "shadow_inconsistent"),
    ({"error_counts": [1] * 8}, "shadow_malformed"),
])
def test_bad_sketches_are_refused_with_a_reason(change: dict[str, Any], reason: str) -> None:
    with pytest.raises(Rejected) as refused:
        parse_sketch(sketch("ro_1", **change), "d0", 7)
    assert refused.value.reason == reason and refused.value.device_id == "d0" and refused.value.window_seq == 7


@pytest.mark.parametrize("bad", [None, [], "shadow", 3, {"schema": None}])
def test_not_an_object_is_malformed(bad: Any) -> None:
    with pytest.raises(Rejected) as refused:
        parse_sketch(bad, "d0", 1)
    assert refused.value.reason == "shadow_malformed"
