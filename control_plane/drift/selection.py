"""Pick the test per feature, correct p-values across features, and assemble typed drift reports."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from control_plane.drift.stats import (
    Band,
    KsMethod,
    adjust_pvalues,
    category_counts,
    chi2_homogeneity_from_counts,
    jensen_shannon_from_counts,
    ks_pvalue,
    psi_band,
    psi_from_counts,
    raw_numeric_stats,
)

TestName = Literal["ks", "psi", "chi2", "js", "wasserstein"]
Method = Literal["auto", "ks", "psi", "chi2", "js", "wasserstein"]
Correction = Literal["bh", "bonferroni", "none"]
FeatureKind = Literal["numeric", "categorical"]


@dataclass(frozen=True)
class DriftConfig:
    """Knobs of the test choice; defaults are the documented rule in docs/drift.md."""

    method: Method = "auto"
    alpha: float = 0.05
    correction: Correction = "bh"
    psi_threshold: float = 0.10
    js_threshold: float = 0.10
    wasserstein_threshold: float = 0.10  # on W1 divided by the reference standard deviation
    min_samples: int = 30
    large_sample: int = 10_000  # above this (smaller side) hypothesis tests flag negligible shifts
    drift_share: float = 0.5
    ks_method: KsMethod = "auto"


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's verdict plus every statistic computed for it (the alert evidence)."""

    feature: str
    kind: FeatureKind
    test: TestName
    statistic: float
    threshold: float
    p_value: float | None
    p_adjusted: float | None
    drifted: bool
    status: Literal["tested", "insufficient"]
    n_reference: int
    n_current: int
    psi: float
    band: Band
    ks: float | None = None
    ks_upper: float | None = None
    chi2: float | None = None
    chi2_dof: int | None = None
    js: float | None = None
    wasserstein: float | None = None
    nonfinite_current: int = 0


@dataclass(frozen=True)
class DriftReport:
    """Drift verdicts for all features of one comparison."""

    mode: Literal["exact", "sketch"]
    features: tuple[FeatureDrift, ...]
    alpha: float
    correction: Correction
    n_drifted: int
    share_drifted: float
    dataset_drifted: bool
    extra: dict[str, Any] = field(default_factory=dict)

    def drifted_features(self) -> list[FeatureDrift]:
        """Return the features flagged as drifted."""
        return [f for f in self.features if f.drifted]

    def by_name(self) -> dict[str, FeatureDrift]:
        """Return the verdicts keyed by feature name."""
        return {f.feature: f for f in self.features}

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return asdict(self)


@dataclass
class FeatureArrays:
    """Per-feature statistics as parallel arrays (NaN where a statistic was not computed)."""

    names: list[str]
    kinds: list[FeatureKind]
    n_ref: np.ndarray
    n_cur: np.ndarray
    psi: np.ndarray
    ks: np.ndarray
    ks_upper: np.ndarray
    chi2: np.ndarray
    chi2_dof: np.ndarray
    chi2_p: np.ndarray
    js: np.ndarray
    wasserstein: np.ndarray  # already normed by the reference std
    nonfinite_cur: np.ndarray

    @classmethod
    def empty(cls, names: list[str], kinds: list[FeatureKind]) -> FeatureArrays:
        """Return arrays of NaN (zeros for counts) for the given features."""
        n = len(names)
        nan = np.full(n, np.nan)
        zeros = np.zeros(n, dtype=np.int64)
        return cls(
            names,
            kinds,
            zeros.copy(),
            zeros.copy(),
            nan.copy(),
            nan.copy(),
            nan.copy(),
            nan.copy(),
            zeros.copy(),
            nan.copy(),
            nan.copy(),
            nan.copy(),
            zeros.copy(),
        )


def choose_tests(arrays: FeatureArrays, config: DriftConfig) -> list[TestName]:
    """Return the deciding test per feature: by type and sample size unless `config.method` forces one."""
    if config.method != "auto":
        chosen: list[TestName] = []
        for kind in arrays.kinds:
            forced = config.method
            if kind == "categorical" and forced in ("ks", "wasserstein"):
                forced = "chi2"  # no order on categories
            chosen.append(forced)
        return chosen
    smaller = np.minimum(arrays.n_ref, arrays.n_cur)
    result: list[TestName] = []
    for kind, n in zip(arrays.kinds, smaller, strict=True):
        if n > config.large_sample:
            result.append("psi")
        else:
            result.append("ks" if kind == "numeric" else "chi2")
    return result


def assemble_report(arrays: FeatureArrays, config: DriftConfig, mode: Literal["exact", "sketch"]) -> DriftReport:
    """Apply the test choice, the multiple-testing correction and the thresholds."""
    tests = choose_tests(arrays, config)
    sufficient = np.minimum(arrays.n_ref, arrays.n_cur) >= config.min_samples
    ks_p = ks_pvalue(np.nan_to_num(arrays.ks), arrays.n_ref, arrays.n_cur, method=config.ks_method)
    raw_p = np.full(len(tests), np.nan)
    for i, test in enumerate(tests):
        if sufficient[i] and test == "ks":
            raw_p[i] = ks_p[i]
        elif sufficient[i] and test == "chi2":
            raw_p[i] = arrays.chi2_p[i]
    adjusted = adjust_pvalues(raw_p, config.correction)
    features = []
    for i, (name, kind, test) in enumerate(zip(arrays.names, arrays.kinds, tests, strict=True)):
        statistic, threshold = _statistic_and_threshold(arrays, i, test, config)
        if not sufficient[i]:
            drifted = False
        elif test in ("ks", "chi2"):
            drifted = bool(adjusted[i] < config.alpha)
        else:
            drifted = bool(statistic >= threshold)
        psi = float(arrays.psi[i])
        features.append(
            FeatureDrift(
                feature=name,
                kind=kind,
                test=test,
                statistic=statistic,
                threshold=threshold,
                p_value=_opt(raw_p[i]),
                p_adjusted=_opt(adjusted[i]),
                drifted=drifted,
                status="tested" if sufficient[i] else "insufficient",
                n_reference=int(arrays.n_ref[i]),
                n_current=int(arrays.n_cur[i]),
                psi=psi,
                band=psi_band(psi),
                ks=_opt(arrays.ks[i]),
                ks_upper=_opt(arrays.ks_upper[i]),
                chi2=_opt(arrays.chi2[i]),
                chi2_dof=int(arrays.chi2_dof[i]) if not np.isnan(arrays.chi2[i]) else None,
                js=_opt(arrays.js[i]),
                wasserstein=_opt(arrays.wasserstein[i]),
                nonfinite_current=int(arrays.nonfinite_cur[i]),
            )
        )
    n_drifted = sum(f.drifted for f in features)
    share = n_drifted / len(features) if features else 0.0
    return DriftReport(
        mode=mode,
        features=tuple(features),
        alpha=config.alpha,
        correction=config.correction,
        n_drifted=n_drifted,
        share_drifted=share,
        dataset_drifted=bool(features) and share >= config.drift_share,
    )


def _statistic_and_threshold(arrays: FeatureArrays, i: int, test: TestName, config: DriftConfig) -> tuple[float, float]:
    if test == "psi":
        return float(arrays.psi[i]), config.psi_threshold
    if test == "ks":
        return float(arrays.ks[i]), config.alpha
    if test == "chi2":
        return float(arrays.chi2[i]), config.alpha
    if test == "js":
        return float(arrays.js[i]), config.js_threshold
    return float(arrays.wasserstein[i]), config.wasserstein_threshold


def _opt(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def counts_into_arrays(arrays: FeatureArrays, rows: np.ndarray, ref_counts: np.ndarray, cur_counts: np.ndarray) -> None:
    """Fill PSI, chi-squared and JS for the given feature rows from (len(rows), bins) counts."""
    arrays.psi[rows] = psi_from_counts(ref_counts, cur_counts)
    chi2, dof, p_value = chi2_homogeneity_from_counts(ref_counts, cur_counts)
    arrays.chi2[rows], arrays.chi2_dof[rows], arrays.chi2_p[rows] = chi2, dof, p_value
    arrays.js[rows] = jensen_shannon_from_counts(ref_counts, cur_counts)


def detect_drift(
    reference: np.ndarray,
    current: np.ndarray,
    *,
    feature_names: Sequence[str] | None = None,
    categorical: Sequence[int] = (),
    config: DriftConfig | None = None,
    workers: int | None = None,
) -> DriftReport:
    """Compare raw samples (rows x features) exactly: KS on raw values, PSI/chi2/JS on reference deciles.

    `workers` threads sort the columns (None: `stats.default_workers()`; 1: the calling thread only).
    """
    config = config or DriftConfig()
    ref = np.asarray(reference)
    cur = np.asarray(current)
    if ref.ndim != 2 or cur.ndim != 2 or ref.shape[1] != cur.shape[1]:
        raise ValueError("reference and current must be 2D with the same number of columns")
    n_features = ref.shape[1]
    names = list(feature_names) if feature_names is not None else [f"f{i}" for i in range(n_features)]
    categorical_set = set(categorical)
    kinds: list[FeatureKind] = ["categorical" if i in categorical_set else "numeric" for i in range(n_features)]
    arrays = FeatureArrays.empty(names, kinds)
    numeric = np.array([i for i in range(n_features) if i not in categorical_set], dtype=np.int64)
    if numeric.size:
        raw = raw_numeric_stats(ref, cur, wasserstein=config.method == "wasserstein", workers=workers, columns=numeric)
        arrays.ks[numeric] = raw.ks
        arrays.n_ref[numeric], arrays.n_cur[numeric] = raw.n_ref, raw.n_cur
        arrays.nonfinite_cur[numeric] = raw.nonfinite_cur
        counts_into_arrays(arrays, numeric, raw.ref_bins, raw.cur_bins)
        if raw.wasserstein is not None:
            std = np.array([np.nanstd(np.where(np.isfinite(ref[:, i]), ref[:, i], np.nan)) for i in numeric])
            arrays.wasserstein[numeric] = raw.wasserstein / np.where(std > 0, std, 1.0)
    for i in sorted(categorical_set):
        _, ref_counts, cur_counts = category_counts(ref[:, i], cur[:, i])
        arrays.n_ref[i], arrays.n_cur[i] = ref_counts.sum(), cur_counts.sum()
        arrays.nonfinite_cur[i] = cur.shape[0] - cur_counts.sum()
        counts_into_arrays(arrays, np.array([i]), ref_counts[None, :], cur_counts[None, :])
    return assemble_report(arrays, config, "exact")
