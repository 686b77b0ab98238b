"""`edgeloop registry` commands: list, show, register a file, build the demo model, print a model card."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from control_plane.cli.context import CLI_ACTOR, console, db_session, load_settings
from control_plane.errors import NotFound
from control_plane.governance.schemas import CardFormat
from control_plane.registry import artifacts, service
from control_plane.registry.schemas import ArtifactAttach, ModelCreate, Quantization, VersionCreate
from control_plane.registry.store import ArtifactStore

registry_app = typer.Typer(help="Model registry.", no_args_is_help=True)


def _store() -> ArtifactStore:
    settings = load_settings()
    return ArtifactStore(settings.artifacts_dir, settings.max_artifact_bytes)


@registry_app.command("list")
def registry_list() -> None:
    """List registered models with their latest version and aliases."""
    table = Table("model", "latest", "aliases", "description")
    with db_session(write=False) as session:
        for model in service.list_models(session=session, limit=1000):
            latest = service.latest_version_number(session=session, model_id=model.id)
            aliases = ", ".join(f"{a.alias}→v{a.version.version}" for a in model.aliases)
            table.add_row(model.name, str(latest or "-"), aliases, model.description)
    console.print(table)


@registry_app.command("show")
def registry_show(name: str, version: Annotated[int | None, typer.Option()] = None) -> None:
    """Show a model's versions, or one version's artifacts."""
    with db_session(write=False) as session:
        versions = ([service.get_version(session=session, model_name=name, version=version)] if version
                    else service.list_versions(session=session, model_name=name))
        table = Table("version", "id", "run", "artifacts", "metrics")
        for v in versions:
            arts = "\n".join(f"{a.quantization} {a.size:,} B {a.sha256[:12]}" for a in v.artifacts)
            table.add_row(str(v.version), v.id, v.run_id or "", arts, json.dumps(v.metrics)[:60])
    console.print(table)


@registry_app.command("register")
def registry_register(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    model: Annotated[str, typer.Option(help="Registered model name (created if missing).")],
    quantization: Annotated[Quantization, typer.Option()] = Quantization.FP32,
    parent_id: Annotated[str | None, typer.Option(help="Artifact this one was derived from.")] = None,
    description: str = "",
) -> None:
    """Register an ONNX file as a new version of a model."""
    store = _store()
    with file.open("rb") as handle:
        sha256, size, _ = store.put_chunks(iter(lambda: handle.read(1 << 20), b""))
    with db_session() as session:
        try:
            service.get_model(session=session, name=model)
        except NotFound:
            service.create_model(session=session, request=ModelCreate(name=model), actor=CLI_ACTOR)
        version = service.create_version(session=session, model_name=model, actor=CLI_ACTOR,
                                         request=VersionCreate(description=description))
        artifacts.record_blob(session=session, sha256=sha256, size=size, actor=CLI_ACTOR)
        artifact = artifacts.attach(session=session, store=store, model_name=model, version=version.version,
                                    actor=CLI_ACTOR, request=ArtifactAttach(sha256=sha256, quantization=quantization,
                                                                            parent_id=parent_id))
        console.print(f"registered {model} v{version.version}: artifact {artifact.id} ({size:,} bytes, {sha256[:12]})")


@registry_app.command("build-demo")
def registry_build_demo(
    model: str = "digits-mlp",
    dataset: Annotated[str, typer.Option(help="digits, breast_cancer or wine (shipped with scikit-learn)")] = "digits",
    static: Annotated[bool, typer.Option(help="Static (calibrated) instead of dynamic int8.")] = False,
) -> None:
    """Train an MLP, export fp32 ONNX, quantise to int8 and register both with lineage."""
    from control_plane.registry import pipeline  # lazy: scikit-learn and scipy are slow to import

    data = pipeline.load_sklearn_dataset(dataset)
    estimator = pipeline.train_mlp(data)
    with db_session() as session:
        result = pipeline.register_quantized_model(
            session=session, store=_store(), actor=CLI_ACTOR, model_name=model, data=data, estimator=estimator,
            params={"hidden": [256, 256], "dataset": dataset, "quantization": "static" if static else "dynamic"},
            static=static,
        )
    console.print_json(json.dumps(result.as_dict()))


@registry_app.command("card")
def registry_card(
    name: str, version: int,
    output: Annotated[CardFormat, typer.Option("--format", help="markdown or json")] = CardFormat.MARKDOWN,
) -> None:
    """Print the model card of a version: data, metrics, quantisation, limitations, deployments, decisions."""
    from control_plane.governance.cards import build_card
    from control_plane.governance.markdown import card_markdown

    with db_session(write=False) as session:
        card = build_card(session=session, model_name=name, version=version)
    typer.echo(card_markdown(card) if output == CardFormat.MARKDOWN else card.model_dump_json(by_alias=True, indent=2))
