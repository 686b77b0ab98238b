"""The quantisation pipeline registers dataset → run → version → fp32 → int8, walkable over HTTP."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from control_plane.db.session import Database
from control_plane.registry import pipeline
from control_plane.registry.store import ArtifactStore
from control_plane.settings import Settings


@pytest.fixture(scope="module")
def trained() -> tuple[pipeline.TrainingData, object]:
    data = pipeline.load_sklearn_dataset("wine")  # small, so training takes well under a second
    return data, pipeline.train_mlp(data, hidden=(64,))


def test_pipeline_registers_quantised_model_with_lineage(
    client: TestClient, admin_headers: dict[str, str], database: Database, settings: Settings,
    trained: tuple[pipeline.TrainingData, object],
) -> None:
    data, estimator = trained
    with database.transaction() as session:
        result = pipeline.register_quantized_model(
            session=session, store=ArtifactStore(settings.artifacts_dir, settings.max_artifact_bytes),
            actor="admin:test", model_name="wine-mlp", data=data, estimator=estimator, params={"hidden": [64]},
        )
    # A 13x64 model is small next to the graph overhead; the 256x256 digits model reaches ~3.8x (benchmarks).
    assert result.size_ratio > 1.2 and abs(result.accuracy_delta) < 0.1 and result.accuracy_int8 > 0.85

    version = client.get("/api/v1/models/wine-mlp/versions/1", headers=admin_headers).json()
    by_quantization = {a["quantization"]: a for a in version["artifacts"]}
    assert by_quantization["int8"]["parent_id"] == by_quantization["fp32"]["id"]
    assert by_quantization["int8"]["metrics"]["size_ratio_vs_parent"] == pytest.approx(result.size_ratio, rel=1e-3)

    dataset = client.get(f"/api/v1/datasets/{result.dataset_id}", headers=admin_headers).json()
    assert dataset["baseline"]["n_features"] == 13 and len(dataset["schema"]["features"]) == 13

    up = client.get(f"/api/v1/lineage/artifact/{result.int8_artifact_id}", params={"direction": "upstream"},
                    headers=admin_headers).json()
    assert {n["kind"] for n in up["nodes"]} == {"dataset", "run", "model_version", "artifact"}
    relations = {(e["src"].split(":")[0], e["relation"], e["dst"].split(":")[0]) for e in up["edges"]}
    assert relations == {("dataset", "trained", "run"), ("run", "produced", "model_version"),
                         ("model_version", "packaged_as", "artifact"), ("artifact", "quantized_to", "artifact")}
    labels = {n["kind"]: n["label"] for n in up["nodes"] if n["kind"] != "artifact"}
    assert labels["model_version"] == "wine-mlp v1"

    down = client.get(f"/api/v1/lineage/dataset/{result.dataset_id}", params={"direction": "downstream"},
                      headers=admin_headers).json()
    assert len([n for n in down["nodes"] if n["kind"] == "artifact"]) == 2
    missing = client.get("/api/v1/lineage/model_version/mv_nope", headers=admin_headers)
    assert missing.status_code == 404
    assert client.get("/api/v1/lineage/spaceship/x", headers=admin_headers).status_code == 422
