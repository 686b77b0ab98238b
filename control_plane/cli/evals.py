"""`edgeloop eval` commands: push datasets, run evals (exit 1 when the gate fails), show and compare runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from control_plane.cli.context import CLI_ACTOR, console, db_session, err_console, load_settings
from control_plane.errors import EdgeloopError
from control_plane.evals import datasets
from control_plane.evals.models import EvalRun
from control_plane.evals.schemas import EvalRunCreate, Thresholds

eval_app = typer.Typer(help="Evaluations: datasets, runs, comparisons.", no_args_is_help=True)
dataset_app = typer.Typer(help="Eval datasets.", no_args_is_help=True)
eval_app.add_typer(dataset_app, name="dataset")


def _fail(exc: EdgeloopError) -> typer.Exit:
    err_console.print(f"[red]error[/]: {exc.message}")
    return typer.Exit(2)


def _bounds(items: list[str] | None, option: str) -> dict[str, float]:
    bounds: dict[str, float] = {}
    for item in items or []:
        metric, sep, value = item.partition("=")
        try:
            bounds[metric] = float(value)
        except ValueError:
            sep = ""
        if not sep or not metric:
            err_console.print(f"[red]error[/]: {option} takes metric=number, got {item!r}")
            raise typer.Exit(2)
    return bounds


@dataset_app.command("push")
def dataset_push(
    name: str,
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="JSONL or CSV")],
    collection: Annotated[str | None, typer.Option(help="RAG collection for rows without contexts.")] = None,
    message: Annotated[str, typer.Option("--message", "-m")] = "",
) -> None:
    """Store FILE as the next version of dataset NAME (unchanged content is a no-op)."""
    try:
        rows = datasets.parse_rows(file.read_bytes(), filename=file.name)
        request = datasets.build_request(rows, collection=collection, commit_message=message)
        with db_session() as session:
            version, created = datasets.create_version(session=session, name=name, request=request,
                                                       actor=CLI_ACTOR, allow_unchanged=True)
            line = f"{name}@{version.version} ({version.sample_count} samples, {version.content_hash[:12]})"
    except EdgeloopError as exc:
        raise _fail(exc) from exc
    console.print(f"{'stored' if created else 'unchanged'} {line}")


@eval_app.command("ingest")
def eval_ingest(
    collection: str,
    directory: Annotated[Path, typer.Argument(exists=True, file_okay=True, readable=True, help="Markdown files")],
) -> None:
    """Ingest Markdown into the RAG collection eval runs retrieve from (unchanged files are a no-op)."""
    from control_plane.evals import service  # lazy: it loads chromadb, which most commands never need

    store = service.environment(load_settings()).store_factory()
    report = store.ingest(collection, directory)
    console.print(f"{collection}: {len(report.added)} added, {len(report.updated)} updated, "
                  f"{len(report.unchanged)} unchanged, {len(report.removed)} removed, "
                  f"{store.count(collection)} chunks")


@dataset_app.command("list")
def dataset_list() -> None:
    """List eval datasets and their latest version."""
    table = Table("dataset", "latest", "samples", "collection")
    with db_session(write=False) as session:
        for dataset in datasets.list_datasets(session=session, limit=1000):
            latest = dataset.versions[-1] if dataset.versions else None
            table.add_row(dataset.name, str(latest.version if latest else "-"),
                          str(latest.sample_count if latest else "-"), (latest.collection if latest else "") or "")
    console.print(table)


@eval_app.command("run")
def eval_run(
    dataset: Annotated[str, typer.Option(help="NAME or NAME@VERSION")],
    prompt: Annotated[str | None, typer.Option(help="NAME@label or NAME@N (generates missing answers)")] = None,
    tier: Annotated[str, typer.Option(help="auto, offline or llm")] = "auto",
    k: int = 4,
    mode: Annotated[str, typer.Option(help="dense, lexical or hybrid retrieval")] = "lexical",
    minimum: Annotated[list[str] | None, typer.Option("--min", help="metric=value, repeatable")] = None,
    maximum: Annotated[list[str] | None, typer.Option("--max", help="metric=value, repeatable")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Run an eval; exit 1 when it fails its thresholds (the prompt's gate unless --min/--max are given)."""
    from control_plane.evals import service  # lazy: it loads chromadb, which most commands never need

    thresholds = None
    if minimum or maximum:
        thresholds = Thresholds(minimums=_bounds(minimum, "--min"), maximums=_bounds(maximum, "--max"))
    settings = load_settings()
    try:
        request = EvalRunCreate(dataset=dataset, prompt=prompt, scorer_tier=tier,
                                k=k, retrieval_mode=mode, thresholds=thresholds)
    except ValueError as exc:
        err_console.print(f"[red]error[/]: {exc}")
        raise typer.Exit(2) from exc
    try:
        with db_session(settings) as session:
            run = service.create_run(session=session, request=request, actor=CLI_ACTOR,
                                     env=service.environment(settings))
            summary = _summary(run)
    except EdgeloopError as exc:
        raise _fail(exc) from exc
    if as_json:
        console.print_json(json.dumps(summary))
    else:
        _print_run(summary)
    if not summary["passed"]:
        raise typer.Exit(1)


def _summary(run: EvalRun) -> dict[str, Any]:
    return {"id": run.id, "passed": run.passed, "scorer_tier": run.scorer_tier, "scorer": run.scorer,
            "generator": run.generator, "metrics": dict(run.metrics), "checks": list(run.checks)}


def _print_run(summary: dict[str, Any]) -> None:
    verdict = "[green]PASSED[/]" if summary["passed"] else "[red]FAILED[/]"
    console.print(f"eval run {summary['id']}: {verdict}  scorer_tier={summary['scorer_tier']} "
                  f"scorer={summary['scorer']} generator={summary['generator']}")
    table = Table("metric", "value", "threshold", "ok")
    checks: dict[str, dict[str, Any]] = {c["metric"]: c for c in summary["checks"]}
    metrics: dict[str, float] = summary["metrics"]
    for metric, value in metrics.items():
        check = checks.get(metric)
        bound = f"{'>=' if check['higher_is_better'] else '<='} {check['threshold']}" if check else ""
        table.add_row(metric, f"{value:.4f}", bound, ("yes" if check["passed"] else "NO") if check else "")
    for metric, check in checks.items():
        if metric not in metrics:
            table.add_row(metric, "missing", str(check["threshold"]), "NO")
    console.print(table)


@eval_app.command("show")
def eval_show(run_id: str) -> None:
    """Show a run's metrics and its failing samples with their unsupported claims."""
    from control_plane.evals import service  # lazy: it loads chromadb, which most commands never need

    try:
        with db_session(write=False) as session:
            run = service.get_run(session=session, run_id=run_id)
            _print_run(_summary(run))
            for sample in run.samples:
                if not sample.passed:
                    bad = [c["claim"] for c in sample.claims if c["verdict"] == "unsupported"]
                    console.print(f"- sample {sample.sample_id}: faithfulness {sample.metrics.get('faithfulness')}"
                                  f"; unsupported: {bad}", markup=False)
    except EdgeloopError as exc:
        raise _fail(exc) from exc


@eval_app.command("compare")
def eval_compare(base: str, head: str) -> None:
    """Compare two runs: per-metric deltas and per-sample flips."""
    from control_plane.evals import service  # lazy: it loads chromadb, which most commands never need

    try:
        with db_session(write=False) as session:
            comparison = service.compare(session=session, base_id=base, head_id=head)
    except EdgeloopError as exc:
        raise _fail(exc) from exc
    table = Table("metric", "base", "head", "delta")
    for metric, delta in comparison.metrics.items():
        table.add_row(metric, str(delta.base), str(delta.head), str(delta.delta))
    console.print(table)
    for flip in comparison.flips:
        change = "regressed" if flip.base_passed else "fixed"
        console.print(f"sample {flip.sample_id}: {change} ({flip.base_faithfulness} → {flip.head_faithfulness})")
    console.print(f"{comparison.regressions} regression(s), {comparison.fixes} fix(es)")




@eval_app.command("agents")
def eval_agents(
    suite: Annotated[Path, typer.Option(help="Folder of scenario cases (evals/scenarios).")],
    case: Annotated[str | None, typer.Option(help="Run only this case.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the full results here.")] = None,
    min_top1: Annotated[float, typer.Option(help="Fail below this top-1 root-cause accuracy.")] = 0.0,
    min_action: Annotated[float, typer.Option(help="Fail below this correct-action rate.")] = 0.0,
    max_forbidden: Annotated[int, typer.Option(help="Fail above this many forbidden actions.")] = 0,
    max_seconds: Annotated[float, typer.Option(help="Fail above this many seconds per incident.")] = 1e9,
) -> None:
    """Score the agents on scenario cases, each on a fresh served control plane (exit 1 below thresholds)."""
    from agents.config import AgentSettings
    from agents.runner import make_llm
    from evals.agent_suite.runner import run_suite

    summary = run_suite(suite, case, make_llm(AgentSettings()))
    table = Table("case", "expected", "top-3 found", "top1", "top3", "actions", "ok", "s/incident")
    for row in summary["results"]:
        table.add_row(row["case"], row["expected_cause"], ", ".join(row["causes"]) or (row["error"] or ""),
                      "✓" if row["top1"] else "✗", "✓" if row["top3"] else "✗", ", ".join(row["actions"]),
                      "✓" if row["action_ok"] else "✗", f"{row['seconds_per_incident']:.2f}")
    console.print(table)
    console.print({k: v for k, v in summary.items() if k not in ("results", "per_cause")})
    if json_out:
        json_out.write_text(json.dumps(summary, indent=2))
    failed = (summary["top1"] < min_top1 or summary["correct_action"] < min_action
              or summary["forbidden_actions"] > max_forbidden or summary["seconds_per_incident_max"] > max_seconds)
    if failed:
        raise typer.Exit(1)


@eval_app.command("assistant")
def eval_assistant(
    output: Annotated[Path | None, typer.Option(help="Write per-case scores and the summary as JSON here.")] = None,
) -> None:
    """Score the chat assistant on evals/assistant/questions.yaml against a freshly seeded control plane."""
    from evals.assistant_eval import run

    report = run()
    if output is not None:
        output.write_text(json.dumps(report, indent=2, default=str))
    typer.echo(json.dumps(report["summary"], indent=2))
