"""Helpers of `edgeloop fleet deploy --strategy ab` and `edgeloop fleet experiment`: parse arms, print a report."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from control_plane.cli.context import console
from control_plane.fleet.abtest_schemas import ExperimentRead


def ab_design(arms: list[str], *, mde: float | None, alpha: float, power: float, baseline_rate: float,
              samples_per_device: int | None, salt: str | None) -> dict[str, Any]:
    """Build strategy.ab from `--arm VERSION:WEIGHT` options and the design flags (validated by the schema)."""
    if mde is None or samples_per_device is None:
        raise typer.BadParameter("--strategy ab needs --mde and --samples-per-device")
    parsed = []
    for arm in arms:
        version, sep, weight = arm.partition(":")
        try:
            parsed.append({"version": int(version), "weight": float(weight) if sep else 1.0 / len(arms)})
        except ValueError:
            raise typer.BadParameter(f"expected VERSION:WEIGHT, got {arm!r}") from None
    return {"arms": parsed, "mde": mde, "alpha": alpha, "power": power, "baseline_rate": baseline_rate,
            "expected_samples_per_device": samples_per_device, "salt": salt}


def print_experiment(read: ExperimentRead) -> None:
    """Print an experiment's arms, tests and decision."""
    console.print(f"{read.id} [{read.state}] {read.model} rollout {read.rollout_id}: {read.required_per_arm} labelled "
                  f"outcomes per arm required (alpha {read.alpha_per_comparison:g} per comparison)",
                  highlight=False, markup=False)
    table = Table("arm", "version", "weight", "devices", "n (horizon)", "n total", "accuracy", "CI")
    for arm in read.arms:
        table.add_row(str(arm.index), str(arm.version), f"{arm.weight:g}", str(arm.devices), str(arm.n),
                      str(arm.n_total), "" if arm.rate is None else f"{arm.rate:.4f}",
                      "" if arm.ci_low is None else f"[{arm.ci_low:.4f}, {arm.ci_high:.4f}]")
    console.print(table)
    for c in read.comparisons:
        if c.p_value is not None and c.difference is not None:
            console.print(f"arm {c.arm} vs control: difference {c.difference:+.4f} [{c.ci_low:.4f}, {c.ci_high:.4f}]"
                          f", {c.method} p = {c.p_value:.4g}{' (significant)' if c.significant else ''}",
                          highlight=False, markup=False)
    if read.predictions is not None and read.predictions.p_value is not None:
        console.print(f"prediction distributions: chi2 {read.predictions.chi2:.3f}, dof {read.predictions.dof}, "
                      f"p = {read.predictions.p_value:.4g}", highlight=False, markup=False)
    winner = f"winner v{read.winner['version']}" if read.winner else "no winner"
    console.print(f"{winner}: {read.reason}" + (f" (proposal {read.proposal_id})" if read.proposal_id else ""),
                  highlight=False, markup=False)
