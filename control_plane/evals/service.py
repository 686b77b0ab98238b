"""Eval runs: plan, score every sample, store results and pass/fail; compare two runs."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from control_plane.audit import service as audit
from control_plane.errors import Invalid, NotFound, PayloadTooLarge, ServiceUnavailable
from control_plane.evals import datasets
from control_plane.evals.llm import ChatClient, LLMConfig, LLMError, LLMJudgeScorer
from control_plane.evals.models import EvalRun, EvalSampleResult
from control_plane.evals.runner import RunPlan, SampleError, SampleOutcome, aggregate, extractive_answer, score_sample
from control_plane.evals.schemas import EvalRunCreate, MetricDelta, RunComparison, SampleFlip
from control_plane.lineage import service as lineage
from control_plane.lineage.schemas import NodeKind
from control_plane.prompts import service as prompts
from control_plane.prompts.gate import DEFAULT_GATE, OFFLINE_GENERATOR, OFFLINE_REASON, gate_of, thresholds_of
from control_plane.prompts.models import PromptVersion
from control_plane.rag import RagStore
from control_plane.settings import Settings
from evals.metrics import evaluate_thresholds
from evals.scorers.base import Scorer
from evals.scorers.registry import default_scorer
from evals.scorers.text import ScorerInputError


@dataclass(frozen=True, slots=True)
class EvalEnvironment:
    """What runs may use: a RAG store factory and, optionally, an LLM endpoint."""

    store_factory: Callable[[], RagStore]
    llm: LLMConfig | None = None
    # A run is scored inside its request: this bounds how long one request can hold a worker.
    budget_seconds: float = 600.0


def environment(settings: Settings, *, store: RagStore | None = None) -> EvalEnvironment:
    """Build the run environment: chromadb under data_dir/chroma (or EDGELOOP_CHROMA_URL), LLM if configured."""

    def store_factory() -> RagStore:
        return store or RagStore(data_dir=settings.data_dir / "chroma", url=settings.chroma_url)

    llm = None
    if settings.llm_base_url:
        llm = LLMConfig(base_url=settings.llm_base_url, model=settings.llm_model or "default",
                        api_key=settings.llm_api_key)
    return EvalEnvironment(store_factory=store_factory, llm=llm, budget_seconds=settings.eval_run_budget_seconds)


def _messages(version: PromptVersion, variables: dict[str, Any]) -> list[dict[str, str]]:
    text, messages = prompts.render_version(version, variables)
    return messages if messages else [{"role": "user", "content": text}]


def _plan(request: EvalRunCreate, collection: str | None, version: PromptVersion | None,
          env: EvalEnvironment) -> tuple[RunPlan, str, str, ChatClient | None]:
    tier = request.scorer_tier
    if tier == "auto":
        tier = "llm" if env.llm is not None else "offline"
    if tier == "llm" and env.llm is None:
        raise Invalid("scorer_tier 'llm' needs an LLM: set EDGELOOP_LLM_BASE_URL (and EDGELOOP_LLM_MODEL)")
    client = ChatClient(env.llm) if tier == "llm" and env.llm is not None else None
    # Offline, the shipped detector (tier 2) scores when its model is present, else tier 1; run.scorer says which.
    scorer: Scorer = LLMJudgeScorer(client) if client else default_scorer()
    store = None
    if collection is not None:
        try:
            store = env.store_factory()
            count = store.count(collection)
        except Exception as exc:  # chromadb raises its own types; any failure here means the store is unusable
            raise ServiceUnavailable(f"RAG store unavailable: {type(exc).__name__}: {exc}") from exc
        if count == 0:
            raise Invalid(f"collection {collection!r} is empty or missing: ingest documents before running")
    renderer = generator = None
    generator_name = "dataset"
    if version is not None:
        renderer = lambda variables: _messages(version, variables)  # noqa: E731
        if client is not None:
            params = version.model_params
            generator = lambda messages, _sample: client.complete(  # noqa: E731
                messages, model=params.get("model"), temperature=float(params.get("temperature") or 0.0),
                max_tokens=params.get("max_tokens"))
            generator_name = f"llm:{version.model_params.get('model') or env.llm.model}"  # type: ignore[union-attr]
        else:
            generator, generator_name = extractive_answer, OFFLINE_GENERATOR
    plan = RunPlan(scorer=scorer, collection=collection, store=store, k=request.k,
                   retrieval_mode=request.retrieval_mode, renderer=renderer, generator=generator)
    return plan, tier, generator_name, client


def _outcomes(samples: list[dict[str, Any]], plan: RunPlan, budget_seconds: float) -> list[SampleOutcome]:
    outcomes = []
    started = time.monotonic()
    for index, sample in enumerate(samples):
        # Checked between samples: one sample's cost is bounded by the scorers' input limits (seconds at worst).
        if index and time.monotonic() - started > budget_seconds:
            raise PayloadTooLarge(
                f"the run passed its {budget_seconds:g} s budget after {index} of {len(samples)} samples and was "
                "stopped; nothing was stored. Split the dataset into smaller versions, or raise "
                "EDGELOOP_EVAL_RUN_BUDGET_SECONDS", samples_scored=index, samples=len(samples))
        try:
            outcomes.append(score_sample(index, sample, plan))
        except SampleError as exc:
            raise Invalid(str(exc), sample=index) from exc
        except ScorerInputError as exc:
            raise Invalid(f"sample {index}: {exc}", sample=index) from exc
        except Invalid as exc:
            raise Invalid(f"sample {index} ({sample.get('id') or index!r}): {exc.message}", sample=index,
                          **exc.details) from exc
        except LLMError as exc:
            raise ServiceUnavailable(str(exc)) from exc
    return outcomes


def create_run(*, session: Session, request: EvalRunCreate, actor: str, env: EvalEnvironment) -> EvalRun:
    """Score a dataset version (generating answers with a prompt version if given); write nothing on failure."""
    dataset_version = datasets.resolve(session=session, ref=request.dataset)
    version = prompts.resolve_ref(session=session, ref=request.prompt) if request.prompt else None
    if request.thresholds is not None:
        thresholds = request.thresholds.model_dump()
    else:
        thresholds = thresholds_of(gate_of(version.prompt) if version is not None else DEFAULT_GATE)
    plan, tier, generator_name, client = _plan(request, dataset_version.collection, version, env)
    try:
        outcomes = _outcomes(dataset_version.samples, plan, env.budget_seconds)
    finally:
        if client is not None:
            client.close()
    if not any(o.generated for o in outcomes):
        generator_name = "dataset" if any(o.claims or o.answer for o in outcomes) else "none"
    metrics = aggregate(outcomes)
    gate = evaluate_thresholds(metrics, thresholds["minimums"], thresholds["maximums"])
    checks = [{"metric": c.metric, "value": c.value if math.isfinite(c.value) else None, "threshold": c.threshold,
               "higher_is_better": c.higher_is_better, "passed": c.passed} for c in gate.checks]
    # Which answers were scored says what the run judged: a gate counts only answers its prompt generated.
    answers = {"generated": sum(1 for o in outcomes if o.generated),
               "dataset": sum(1 for o in outcomes if not o.generated and (o.answer or o.claims))}
    config: dict[str, Any] = {"k": request.k, "retrieval_mode": request.retrieval_mode,
                              "collection": dataset_version.collection, "prompt_ref": request.prompt,
                              "dataset_ref": request.dataset, "answers": answers}
    if generator_name == OFFLINE_GENERATOR:
        config["note"] = (f"{OFFLINE_REASON}: no LLM is configured, so answers were made by copying context "
                          "sentences instead of running the prompt; a gate on answer metrics will not count this run")
    run = EvalRun(dataset_version_id=dataset_version.id, prompt_version_id=version.id if version else None,
                  scorer_tier=tier, scorer=plan.scorer.name, generator=generator_name, config=config,
                  metrics=metrics, thresholds=thresholds, checks=checks, passed=gate.passed,
                  sample_count=len(outcomes), created_by=actor)
    session.add(run)
    session.flush()
    session.add_all(EvalSampleResult(run_id=run.id, sample_index=o.sample_index, sample_id=o.sample_id,
                                     answer=o.answer, contexts=o.contexts, metrics=o.metrics, claims=o.claims,
                                     passed=o.passed, note=o.note) for o in outcomes)
    session.flush()
    if version is not None:
        lineage.link(session, (NodeKind.PROMPT_VERSION, version.id), (NodeKind.EVAL_RUN, run.id), "evaluated_by")
    audit.record(session, actor=actor, action="eval_run.create", resource=("eval_run", run.id),
                 data={"dataset_version_id": dataset_version.id, "prompt_version_id": run.prompt_version_id,
                       "scorer_tier": tier, "passed": gate.passed, "metrics": metrics})
    return run


def get_run(*, session: Session, run_id: str) -> EvalRun:
    """Return an eval run or raise NotFound."""
    run = session.get(EvalRun, run_id)
    if run is None:
        raise NotFound(f"eval run {run_id!r} not found")
    return run


def list_runs(*, session: Session, prompt_version_id: str | None = None, limit: int = 100) -> list[EvalRun]:
    """Return eval runs, newest first."""
    query = select(EvalRun).order_by(EvalRun.created_at.desc(), EvalRun.id).limit(limit)
    if prompt_version_id:
        query = query.where(EvalRun.prompt_version_id == prompt_version_id)
    return list(session.scalars(query))


def _delta(base: Any, head: Any) -> MetricDelta:
    b = float(base) if isinstance(base, int | float) else None
    h = float(head) if isinstance(head, int | float) else None
    return MetricDelta(base=b, head=h, delta=round(h - b, 6) if b is not None and h is not None else None)


def compare(*, session: Session, base_id: str, head_id: str) -> RunComparison:
    """Return per-metric deltas and the samples whose pass/fail flipped (matched by sample id)."""
    base, head = get_run(session=session, run_id=base_id), get_run(session=session, run_id=head_id)
    metrics = {name: _delta(base.metrics.get(name), head.metrics.get(name))
               for name in sorted(set(base.metrics) | set(head.metrics))}
    base_samples = {s.sample_id: s for s in base.samples}
    flips = [
        SampleFlip(sample_id=s.sample_id, base_passed=base_samples[s.sample_id].passed, head_passed=s.passed,
                   base_faithfulness=base_samples[s.sample_id].metrics.get("faithfulness"),
                   head_faithfulness=s.metrics.get("faithfulness"))
        for s in head.samples if s.sample_id in base_samples and base_samples[s.sample_id].passed != s.passed
    ]
    return RunComparison(base_run_id=base.id, head_run_id=head.id,
                         same_dataset_version=base.dataset_version_id == head.dataset_version_id, metrics=metrics,
                         flips=flips, regressions=sum(1 for f in flips if f.base_passed),
                         fixes=sum(1 for f in flips if f.head_passed))


def _label_runs(session: Session, ids: list[str]) -> dict[str, str]:
    rows = session.execute(select(EvalRun.id, EvalRun.passed, EvalRun.scorer_tier).where(EvalRun.id.in_(ids)))
    return {r.id: f"eval {'passed' if r.passed else 'failed'} ({r.scorer_tier})" for r in rows}


lineage.register_labeler(NodeKind.EVAL_RUN, _label_runs)
