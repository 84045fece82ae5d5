"""Reference profiles and drift statistics (PSI, KS): pure numpy, no I/O.

WHY a profile and not the training data: the stream must compare what it serves with what the model
was validated on without reading the training set. Training summarises each model input column (and the
model's predictions) on the evaluation pairs, which carry the online snapshot's features exactly as
serving reads them: decile cut points with the reference share of each bin (for PSI), the share of
missing values (a bin of its own: a feature that goes missing is drift too), and percentiles (for KS,
on columns with enough distinct values for a CDF to mean something). The profile is a small JSON
document, logged with the model version in MLflow and stored with the feature set in Redis.

PSI (population stability index) = sum over bins of (window - reference) * ln(window / reference):
below 0.1 stable, 0.1-0.2 moderate, above PSI_THRESHOLD (0.2) a significant shift, the usual reading.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

PROFILE_FORMAT = 1
PROFILE_ARTIFACT = "reference_profile.json"
"""The MLflow artifact of a training run that holds its model's profile."""
PREDICTION = "prediction"
"""The profile entry of the model's output (P(rating >= 4) of the rating head), beside the features."""
BINS = 10
PSI_THRESHOLD = 0.2
"""PSI above this is drift (the alert rule in docker/prometheus/rules.yml uses the same number)."""
MIN_KS_DISTINCT = 10
"""KS only where the reference has at least this many distinct percentiles (not for flags or counts of few values)."""
_EPS = 1e-4  # floor of a bin's share, so an empty bin on one side gives a large but finite PSI term


class ProfileError(ValueError):
    """A reference profile that cannot be used (wrong format version, missing column)."""


def _column_profile(values: np.ndarray) -> dict[str, Any]:
    finite = values[np.isfinite(values)]
    n = len(values)
    if len(finite) == 0:
        return {"edges": [], "fractions": [1.0], "missing": 1.0 if n else 0.0, "percentiles": None}
    edges = np.unique(np.quantile(finite, np.linspace(0, 1, BINS + 1)[1:-1]))
    counts = np.bincount(np.searchsorted(edges, finite, side="right"), minlength=len(edges) + 1)
    percentiles = np.quantile(finite, np.linspace(0, 1, 101))
    continuous = len(np.unique(percentiles)) >= MIN_KS_DISTINCT
    return {
        "edges": edges.tolist(),
        "fractions": (counts / len(finite)).tolist(),
        "missing": 1 - len(finite) / n,
        "percentiles": percentiles.tolist() if continuous else None,
    }


def reference_profile(x: np.ndarray, names: Sequence[str], predictions: np.ndarray) -> dict[str, Any]:
    """The profile of model inputs `x` (columns `names`) and the model's `predictions` on them."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != len(names) or len(predictions) != len(x):
        raise ProfileError(f"profile: x {x.shape}, {len(names)} names, {len(predictions)} predictions do not match")
    return {
        "format": PROFILE_FORMAT,
        "n_rows": len(x),
        "features": {name: _column_profile(x[:, k]) for k, name in enumerate(names)},
        PREDICTION: _column_profile(np.asarray(predictions, dtype=np.float64)),
    }


def check_profile(profile: dict[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """The profile, or ProfileError naming what makes it unusable for a model over `names`."""
    if profile.get("format") != PROFILE_FORMAT:
        raise ProfileError(f"reference profile format {profile.get('format')!r}, expected {PROFILE_FORMAT}")
    missing = [n for n in names if n not in profile.get("features", {})]
    if missing or PREDICTION not in profile:
        raise ProfileError(f"reference profile lacks {missing[:5] or [PREDICTION]}")
    return profile


@dataclass(frozen=True)
class Drift:
    """One column's drift against its reference; `ks` is None where KS does not fit (few distinct values)."""

    psi: float
    ks: float | None
    rows: int


def psi(reference: dict[str, Any], values: np.ndarray) -> float:
    """PSI of `values` against a column profile: its bins plus the missing-value bin."""
    finite = np.isfinite(values)
    n = len(values)
    counts = np.bincount(np.searchsorted(reference["edges"], values[finite], side="right"),
                         minlength=len(reference["fractions"]))  # fmt: skip
    window = np.append(counts, n - finite.sum()) / n
    ref = np.append(np.asarray(reference["fractions"]) * (1 - reference["missing"]), reference["missing"])
    window, ref = np.maximum(window, _EPS), np.maximum(ref, _EPS)
    return float(np.sum((window - ref) * np.log(window / ref)))


def ks(reference: dict[str, Any], values: np.ndarray) -> float | None:
    """Kolmogorov-Smirnov statistic of the finite `values` against the reference percentiles (its CDF,
    linearly interpolated); None when the column is not continuous or nothing is finite."""
    percentiles = reference.get("percentiles")
    finite = np.sort(values[np.isfinite(values)])
    if percentiles is None or len(finite) == 0:
        return None
    cdf = np.interp(finite, percentiles, np.linspace(0, 1, len(percentiles)))
    n = len(finite)
    above = np.arange(1, n + 1) / n - cdf
    below = cdf - np.arange(n) / n
    return float(max(above.max(), below.max()))


def column_drift(reference: dict[str, Any], values: np.ndarray) -> Drift:
    """PSI and KS of one served column against its reference, with the row count they rest on."""
    values = np.asarray(values, dtype=np.float64)
    return Drift(psi(reference, values), ks(reference, values), len(values))
