"""Online metrics of the champion/challenger experiment and the promotion rule, as pure functions.

Two metrics per variant, each from the feedback credited to what that variant served:
- **hit rate**: of the feedback events on a top-k answer, the share whose movie was among the recommended
  ones (a binomial proportion; 95% Wilson interval);
- **AUC**: of the feedback events on a score answer, how well the served P(like) ranks liked (rating >= 4)
  above not-liked movies (Mann-Whitney AUC; 95% interval from the Hanley-McNeil standard error).

The rule (`decide`): the variants are compared on every metric for which both have at least
`min_feedback` observations (and, for AUC, at least MIN_CLASS liked and not-liked pairs). Hit rates are
compared by a two-proportion z-test (pooled), AUCs by a z-test on their difference with the two
Hanley-McNeil standard errors (the variants serve disjoint users, so the samples are independent). Each
test is one-sided at alpha / m for m metrics compared (Bonferroni), in both directions. The challenger is
promoted only when it is significantly better on at least one metric and significantly worse on none.
Too little feedback on every metric, or no significant difference, keeps the champion and says why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import rankdata

Z95 = 1.959963984540054
MIN_CLASS = 10
"""An AUC needs both liked and not-liked pairs; with fewer than this many of either it is not compared."""


@dataclass(frozen=True)
class VariantStats:
    """The feedback credited to one variant's model version."""

    variant: str
    model_version: str | None
    credited: int = 0  # feedback events joined to an answer of this variant
    hit_trials: int = 0  # of them, on a top-k answer
    hits: int = 0  # of those, on a recommended movie
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))  # served P(like) of rated, scored movies
    liked: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))  # rating >= 4 for each score


def normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion (sensible near 0 and 1 and for small n, unlike p +- z*se)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def two_proportion_z(hits_a: int, n_a: int, hits_b: int, n_b: int) -> float:
    """z of p_b - p_a under H0 p_a = p_b (pooled variance); 0 when the pooled rate is 0 or 1."""
    pooled = (hits_a + hits_b) / (n_a + n_b)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    return 0.0 if se == 0 else (hits_b / n_b - hits_a / n_a) / se


def auc(scores: np.ndarray, liked: np.ndarray) -> float:
    """Mann-Whitney AUC: P(a liked pair scores above a not-liked one), ties counted half. NaN without both."""
    positives = int(liked.sum())
    negatives = len(liked) - positives
    if positives == 0 or negatives == 0:
        return math.nan
    ranks = rankdata(scores)  # average ranks: ties count half
    return float((ranks[liked].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def auc_se(area: float, positives: int, negatives: int) -> float:
    """Hanley & McNeil (1982) standard error of an AUC."""
    q1, q2 = area / (2 - area), 2 * area * area / (1 + area)
    variance = (area * (1 - area) + (positives - 1) * (q1 - area * area) + (negatives - 1) * (q2 - area * area)) / (
        positives * negatives
    )
    return math.sqrt(max(variance, 0.0))


@dataclass(frozen=True)
class MetricSummary:
    """One metric of one variant: estimate, 95% interval, observations."""

    value: float
    low: float
    high: float
    n: int

    def __str__(self) -> str:
        if self.n == 0 or math.isnan(self.value):
            return f"- (n={self.n})"
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}] (n={self.n})"


def hit_rate(stats: VariantStats) -> MetricSummary:
    """Share of top-k answers whose recommendations included the movie later liked, with a Wilson 95% interval."""
    low, high = wilson(stats.hits, stats.hit_trials)
    value = stats.hits / stats.hit_trials if stats.hit_trials else math.nan
    return MetricSummary(value, low, high, stats.hit_trials)


def auc_summary(stats: VariantStats) -> MetricSummary:
    """AUC of the served scores against the feedback, 95% interval; NaN (interval 0-1) while a class is missing."""
    area = auc(stats.scores, stats.liked)
    if math.isnan(area):
        return MetricSummary(math.nan, 0.0, 1.0, len(stats.scores))
    positives = int(stats.liked.sum())
    se = auc_se(area, positives, len(stats.liked) - positives)
    return MetricSummary(area, max(0.0, area - Z95 * se), min(1.0, area + Z95 * se), len(stats.scores))


@dataclass(frozen=True)
class Test:
    """One metric compared: challenger minus champion, its z and one-sided p-values."""

    metric: str
    champion: MetricSummary
    challenger: MetricSummary
    z: float

    @property
    def p_better(self) -> float:
        """One-sided p-value of 'the challenger is better': what a promotion needs to be small."""
        return normal_sf(self.z)

    @property
    def p_worse(self) -> float:
        """One-sided p-value of 'the challenger is worse': a significant loss blocks the promotion."""
        return normal_sf(-self.z)

    def __str__(self) -> str:
        return (f"{self.metric}: challenger {self.challenger} vs champion {self.champion}, z={self.z:+.2f}, "
                f"p(better)={self.p_better:.3g}")  # fmt: skip


@dataclass(frozen=True)
class Decision:
    """What `promote` concludes: `promote` True only on a significant win; `reason` says why in one line."""

    promote: bool
    reason: str
    tests: tuple[Test, ...]
    alpha_per_test: float | None
    champion: VariantStats
    challenger: VariantStats

    def as_dict(self) -> dict:
        """The decision as JSON-ready data (`promote --json`), with both variants' metric summaries."""
        summaries = {
            variant: {"model_version": s.model_version, "credited": s.credited,
                      "hit_rate": str(hit_rate(s)), "auc": str(auc_summary(s))}
            for variant, s in (("champion", self.champion), ("challenger", self.challenger))
        }  # fmt: skip
        return {
            "promote": self.promote, "reason": self.reason, "alpha_per_test": self.alpha_per_test,
            "tests": [{"metric": t.metric, "z": t.z, "p_better": t.p_better, "p_worse": t.p_worse} for t in self.tests],
            **summaries,
        }  # fmt: skip


def _enough_for_auc(stats: VariantStats, min_feedback: int) -> bool:
    positives = int(stats.liked.sum())
    return len(stats.scores) >= min_feedback and min(positives, len(stats.liked) - positives) >= MIN_CLASS


def tests(champion: VariantStats, challenger: VariantStats, min_feedback: int) -> list[Test]:
    """The metrics both variants have enough feedback for, each compared (challenger minus champion)."""
    out = []
    if min(champion.hit_trials, challenger.hit_trials) >= min_feedback:
        z = two_proportion_z(champion.hits, champion.hit_trials, challenger.hits, challenger.hit_trials)
        out.append(Test("hit_rate", hit_rate(champion), hit_rate(challenger), z))
    if _enough_for_auc(champion, min_feedback) and _enough_for_auc(challenger, min_feedback):
        a, b = auc_summary(champion), auc_summary(challenger)
        pa, pb = int(champion.liked.sum()), int(challenger.liked.sum())
        se = math.sqrt(auc_se(a.value, pa, a.n - pa) ** 2 + auc_se(b.value, pb, b.n - pb) ** 2)
        out.append(Test("auc", a, b, 0.0 if se == 0 else (b.value - a.value) / se))
    return out


def decide(champion: VariantStats, challenger: VariantStats, min_feedback: int, alpha: float) -> Decision:
    """The promotion rule (module docstring): promote only on a significant win and no significant loss."""
    compared = tests(champion, challenger, min_feedback)
    if not compared:
        reason = (
            f"too little feedback to compare: each variant needs {min_feedback} feedback events on top-k answers "
            f"or {min_feedback} scored pairs (>= {MIN_CLASS} liked and not liked); champion v{champion.model_version} "
            f"has {champion.hit_trials} and {len(champion.scores)}, challenger v{challenger.model_version} has "
            f"{challenger.hit_trials} and {len(challenger.scores)}"
        )
        return Decision(False, reason, (), None, champion, challenger)
    per_test = alpha / len(compared)
    worse = [t for t in compared if t.p_worse < per_test]
    better = [t for t in compared if t.p_better < per_test]
    shown = "; ".join(str(t) for t in compared)
    if worse:
        names = ", ".join(t.metric for t in worse)
        reason = f"challenger significantly worse on {names} (one-sided alpha {per_test:.3g} per test): {shown}"
        return Decision(False, reason, tuple(compared), per_test, champion, challenger)
    if better:
        names = ", ".join(t.metric for t in better)
        reason = f"challenger significantly better on {names} (one-sided alpha {per_test:.3g} per test): {shown}"
        return Decision(True, reason, tuple(compared), per_test, champion, challenger)
    reason = f"no significant difference (one-sided alpha {per_test:.3g} per test): {shown}"
    return Decision(False, reason, tuple(compared), per_test, champion, challenger)
