"""Pick the test per feature, correct p-values across features, and assemble typed drift reports."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from control_plane.drift.effects import range_pvalue, total_variation_from_counts
from control_plane.drift.inputs import check_numeric_columns
from control_plane.drift.stats import (
    Band,
    KsMethod,
    adjust_pvalues,
    category_counts,
    chi2_homogeneity_from_counts,
    jensen_shannon_from_counts,
    ks_limit_pvalue,
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
    # The KS D (numeric) or total variation distance (categorical) that a change must significantly exceed:
    # the share of probability mass that moved. Continuous in n, unlike the old switch to PSI at 10,000 rows;
    # 0 gives the plain KS / chi-squared tests (docs/drift.md, "Decision rule").
    min_effect: float = 0.025
    # Share of current values outside the reference's [min, max] that a significant out-of-range test
    # must also reach (the constant-feature and tail cases that binned statistics cannot see).
    min_out_of_range: float = 0.01
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
    p_effect_adjusted: float | None = None
    tvd: float | None = None
    out_of_range: float | None = None
    range_p_value: float | None = None
    range_p_adjusted: float | None = None
    range_drifted: bool = False


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
    tvd: np.ndarray
    outside: np.ndarray  # current values outside the reference range; NaN where unknown (categorical, output)

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
            nan.copy(),
            nan.copy(),
        )


def choose_tests(arrays: FeatureArrays, config: DriftConfig) -> list[TestName]:
    """Return the deciding test per feature: by type unless `config.method` forces one (never by sample size)."""
    chosen: list[TestName] = []
    for kind in arrays.kinds:
        if config.method == "auto":
            chosen.append("ks" if kind == "numeric" else "chi2")
        elif kind == "categorical" and config.method in ("ks", "wasserstein"):
            chosen.append("chi2")  # no order on categories
        else:
            chosen.append(config.method)
    return chosen


def assemble_report(arrays: FeatureArrays, config: DriftConfig, mode: Literal["exact", "sketch"]) -> DriftReport:
    """Apply the test choice, the corrections, the effect floors and the range check (docs/drift.md)."""
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
    decision = adjust_pvalues(_effect_pvalues(arrays, tests, sufficient, ks_p, config), config.correction)
    # The out-of-range test is a second family, corrected on its own across the features that have a range.
    ranged = sufficient & ~np.isnan(arrays.outside)
    range_raw = np.where(ranged, range_pvalue(np.nan_to_num(arrays.outside), arrays.n_ref, arrays.n_cur), np.nan)
    range_adjusted = adjust_pvalues(range_raw, config.correction)
    with np.errstate(invalid="ignore", divide="ignore"):
        out_share = np.where(arrays.n_cur > 0, arrays.outside / np.maximum(arrays.n_cur, 1), np.nan)
    features = []
    for i, (name, kind, test) in enumerate(zip(arrays.names, arrays.kinds, tests, strict=True)):
        statistic, threshold = _statistic_and_threshold(arrays, i, test, config)
        if not sufficient[i]:
            drifted = False
        elif test in ("ks", "chi2"):
            drifted = bool(decision[i] < config.alpha)
        else:
            drifted = bool(statistic >= threshold)
        range_drifted = bool(ranged[i] and range_adjusted[i] < config.alpha and out_share[i] >= config.min_out_of_range)
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
                p_effect_adjusted=_opt(decision[i]),
                drifted=drifted or range_drifted,
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
                tvd=_opt(arrays.tvd[i]),
                out_of_range=_opt(out_share[i]),
                range_p_value=_opt(range_raw[i]),
                range_p_adjusted=_opt(range_adjusted[i]),
                range_drifted=range_drifted,
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


def _effect_pvalues(arrays: FeatureArrays, tests: list[TestName], sufficient: np.ndarray, plain_ks: np.ndarray,
                    config: DriftConfig) -> np.ndarray:
    """Return per feature the p-value that decides: is the effect significantly above `config.min_effect`?

    KS: `ks_pvalue(D - min_effect)`. The observed D exceeds the true one by at most the sup of the ECDF noise,
    which is the KS null for equal distributions and close to it for distributions near the floor: a
    minimum-effect test, exact at min_effect = 0 (the plain KS test), asymptotically valid at the floor.
    Chi-squared: its p-value where the total variation reaches the floor, else 1.
    NaN for features that are not judged by these tests.
    """
    effect_p = np.full(len(tests), np.nan)
    ks_rows = np.array([sufficient[i] and t == "ks" for i, t in enumerate(tests)], dtype=bool)
    excess = np.nan_to_num(arrays.ks) - config.min_effect
    shifted = ks_rows & (excess > 0)
    effect_p[ks_rows] = 1.0
    if config.min_effect <= 0:
        effect_p[ks_rows] = plain_ks[ks_rows]
    elif shifted.any():
        # An asymptotic bound anyway, so the vectorised limit rather than scipy's exact O(n) routine per feature.
        effect_p[shifted] = ks_limit_pvalue(excess[shifted], arrays.n_ref[shifted], arrays.n_cur[shifted])
    for i, test in enumerate(tests):
        if sufficient[i] and test == "chi2":
            effect_p[i] = arrays.chi2_p[i] if np.nan_to_num(arrays.tvd[i]) >= config.min_effect else 1.0
    return effect_p


def _statistic_and_threshold(arrays: FeatureArrays, i: int, test: TestName, config: DriftConfig) -> tuple[float, float]:
    if test == "psi":
        return float(arrays.psi[i]), config.psi_threshold
    if test == "ks":
        return float(np.nan_to_num(arrays.ks[i])), config.min_effect
    if test == "chi2":
        return float(np.nan_to_num(arrays.tvd[i])), config.min_effect
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
    arrays.tvd[rows] = total_variation_from_counts(ref_counts, cur_counts)


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
    check_numeric_columns(ref, numeric, "reference")
    check_numeric_columns(cur, numeric, "current")
    if numeric.size:
        raw = raw_numeric_stats(ref, cur, wasserstein=config.method == "wasserstein", workers=workers, columns=numeric)
        arrays.ks[numeric] = raw.ks
        arrays.n_ref[numeric], arrays.n_cur[numeric] = raw.n_ref, raw.n_cur
        arrays.nonfinite_cur[numeric] = raw.nonfinite_cur
        arrays.outside[numeric] = raw.outside
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
