"""Online metrics of the champion/challenger experiment and the promotion rule, as pure functions.

Users are what the experiment randomizes (`mlops.variants` splits by user), so users are the unit of every
statistic here: one user's feedback events are correlated (the same tastes, the same lists), and treating
them as independent trials makes the standard errors too small. Two metrics per variant:
- **hit rate**: of the feedback events on a top-k answer, the share whose movie was among the recommended
  ones: a ratio estimator (hits over events, summed over users) with its delta-method variance clustered by
  user; 95% interval from it;
- **AUC**: of the feedback events on a score answer, how well the served P(like) ranks liked (rating >= 4)
  above not-liked movies (Mann-Whitney), with Obuchowski's (1997) variance for clustered data (each user a
  cluster of pairs).

The rule (`decide`) is a **fixed-horizon** test: a metric is compared once both variants have at least
`min_users` users with feedback on it (and, for AUC, MIN_CLASS liked and not-liked pairs); the caller
(`mlops.online_promotion`) records the first decision taken at that horizon and never re-tests the growing
data, so looking every hour does not inflate the false-promotion rate. Each comparison is a z-test on the
difference with the two clustered standard errors (the variants serve disjoint users), one-sided at
alpha / m for m metrics compared (Bonferroni), in both directions. The challenger is promoted only when it is
significantly better on at least one metric and significantly worse on none. `plan` says how many users a
decision needs and the smallest difference it can see.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import norm

Z95 = 1.959963984540054
MIN_CLASS = 10
"""An AUC needs both liked and not-liked pairs; with fewer than this many of either it is not compared."""
POWER = 0.8
"""The power `plan` sizes the experiment for."""


def _empty(dtype: type = float) -> np.ndarray:
    return np.zeros(0, dtype=dtype)


@dataclass(frozen=True)
class VariantStats:
    """The feedback credited to one variant's model version, per user.

    `user_trials` / `user_hits`: for each user with feedback on a top-k answer, their events and hits;
    `scores` / `liked` / `pair_users`: each rated, scored movie's served P(like), whether it was liked, and the
    user who rated it."""

    variant: str
    model_version: str | None
    credited: int = 0  # feedback events joined to an answer of this variant
    user_trials: np.ndarray = field(default_factory=_empty)
    user_hits: np.ndarray = field(default_factory=_empty)
    scores: np.ndarray = field(default_factory=_empty)
    liked: np.ndarray = field(default_factory=lambda: _empty(bool))
    pair_users: np.ndarray = field(default_factory=lambda: _empty(np.int64))

    @property
    def hit_trials(self) -> int:
        """Feedback events on top-k answers."""
        return int(self.user_trials.sum())

    @property
    def hits(self) -> int:
        """Of them, on a recommended movie."""
        return int(self.user_hits.sum())

    @property
    def hit_users(self) -> int:
        """Users with feedback on a top-k answer: the hit rate's sample size."""
        return len(self.user_trials)

    @property
    def auc_users(self) -> int:
        """Users with rated, scored movies: the AUC's sample size."""
        return len(np.unique(self.pair_users))


def normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def clustered_rate(hits: np.ndarray, trials: np.ndarray) -> tuple[float, float]:
    """Hits over events summed over users, and its standard error with users as clusters (the delta method for
    a ratio estimator): NaN without two users or any event."""
    n, total = len(trials), float(np.sum(trials))
    if n < 2 or total == 0:
        return math.nan, math.nan
    rate = float(np.sum(hits)) / total
    residual = hits - rate * trials
    return rate, math.sqrt(n / (n - 1) * float(residual @ residual)) / total


def clustered_auc(scores: np.ndarray, liked: np.ndarray, users: np.ndarray) -> tuple[float, float]:
    """Mann-Whitney AUC and its standard error with users as clusters (Obuchowski 1997: each liked pair's and
    each not-liked pair's placement, summed per user); NaN without both classes or two users."""
    positives, negatives = scores[liked], scores[~liked]
    m, n = len(positives), len(negatives)
    ids, cluster = np.unique(users, return_inverse=True)
    k = len(ids)
    if m == 0 or n == 0 or k < 2:
        return math.nan, math.nan
    below, at = _placements(np.sort(negatives), positives)
    v10 = (below + 0.5 * at) / n  # each liked pair: the share of not-liked pairs it outscores
    below_p, at_p = _placements(np.sort(positives), negatives)
    v01 = (m - below_p - at_p + 0.5 * at_p) / m  # each not-liked pair: the share of liked pairs above it
    area = float(v10.mean())
    m_k = np.bincount(cluster[liked], minlength=k)
    n_k = np.bincount(cluster[~liked], minlength=k)
    d10 = np.bincount(cluster[liked], weights=v10, minlength=k) - m_k * area
    d01 = np.bincount(cluster[~liked], weights=v01, minlength=k) - n_k * area
    scale = k / (k - 1)
    variance = scale * (d10 @ d10 / (m * m) + d01 @ d01 / (n * n) + 2 * (d10 @ d01) / (m * n))
    return area, math.sqrt(max(variance, 0.0))


def _placements(sorted_values: np.ndarray, at_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each of `at_values`: how many of `sorted_values` lie below it, and how many equal it."""
    low = np.searchsorted(sorted_values, at_values, side="left")
    return low, np.searchsorted(sorted_values, at_values, side="right") - low


@dataclass(frozen=True)
class MetricSummary:
    """One metric of one variant: estimate, 95% interval, its standard error, and the users and events behind it."""

    value: float
    low: float
    high: float
    users: int
    events: int
    se: float = math.nan

    def __str__(self) -> str:
        if self.users < 2 or math.isnan(self.value):
            return f"- ({self.users} users, {self.events} events)"
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}] ({self.users} users, {self.events} events)"


def _summary(value: float, se: float, users: int, events: int) -> MetricSummary:
    if math.isnan(value):
        return MetricSummary(math.nan, 0.0, 1.0, users, events)
    return MetricSummary(value, max(0.0, value - Z95 * se), min(1.0, value + Z95 * se), users, events, se)


def hit_rate(stats: VariantStats) -> MetricSummary:
    """Share of feedback events on top-k answers whose movie was recommended, 95% interval clustered by user."""
    value, se = clustered_rate(stats.user_hits, stats.user_trials)
    return _summary(value, se, stats.hit_users, stats.hit_trials)


def auc_summary(stats: VariantStats) -> MetricSummary:
    """AUC of the served scores against the feedback, 95% interval clustered by user; NaN while a class is missing."""
    value, se = clustered_auc(stats.scores, stats.liked, stats.pair_users)
    return _summary(value, se, stats.auc_users, len(stats.scores))


@dataclass(frozen=True)
class Test:
    """One metric compared: challenger minus champion, its z and one-sided p-values."""

    metric: str
    champion: MetricSummary
    challenger: MetricSummary

    @property
    def z(self) -> float:
        """The difference over its standard error (the variants' users are disjoint, so their variances add)."""
        se = math.hypot(self.champion.se, self.challenger.se)
        difference = self.challenger.value - self.champion.value
        if math.isnan(se) or math.isnan(difference):
            return 0.0
        if se == 0:  # every user alike on both sides (all hits against all misses): any difference is certain
            return 0.0 if difference == 0 else math.copysign(math.inf, difference)
        return difference / se

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
    """What `promote` concludes: `promote` True only on a significant win; `reason` says why in one line.
    `final` when at least one metric reached the horizon: the caller records it and never tests again."""

    promote: bool
    reason: str
    tests: tuple[Test, ...]
    alpha_per_test: float | None
    champion: VariantStats
    challenger: VariantStats

    @property
    def final(self) -> bool:
        """Taken at the fixed horizon (some metric compared), not a "not yet"."""
        return bool(self.tests)

    def as_dict(self) -> dict:
        """The decision as JSON-ready data (`promote --json`), with both variants' metric summaries."""
        summaries = {
            variant: {"model_version": s.model_version, "credited": s.credited, "hit_users": s.hit_users,
                      "auc_users": s.auc_users, "hit_rate": str(hit_rate(s)), "auc": str(auc_summary(s))}
            for variant, s in (("champion", self.champion), ("challenger", self.challenger))
        }  # fmt: skip
        return {
            "promote": self.promote, "reason": self.reason, "alpha_per_test": self.alpha_per_test, "final": self.final,
            "tests": [{"metric": t.metric, "z": t.z, "p_better": t.p_better, "p_worse": t.p_worse} for t in self.tests],
            **summaries,
        }  # fmt: skip


def _enough_for_auc(stats: VariantStats, min_users: int) -> bool:
    positives = int(stats.liked.sum())
    return stats.auc_users >= min_users and min(positives, len(stats.liked) - positives) >= MIN_CLASS


def tests(champion: VariantStats, challenger: VariantStats, min_users: int) -> list[Test]:
    """The metrics both variants have reached the horizon on, each compared (challenger minus champion)."""
    out = []
    if min(champion.hit_users, challenger.hit_users) >= min_users:
        out.append(Test("hit_rate", hit_rate(champion), hit_rate(challenger)))
    if _enough_for_auc(champion, min_users) and _enough_for_auc(challenger, min_users):
        out.append(Test("auc", auc_summary(champion), auc_summary(challenger)))
    return out


def decide(champion: VariantStats, challenger: VariantStats, min_users: int, alpha: float) -> Decision:
    """The promotion rule (module docstring): promote only on a significant win and no significant loss."""
    compared = tests(champion, challenger, min_users)
    if not compared:
        reason = (
            f"not yet: the test runs once, when both variants have {min_users} users with feedback on top-k "
            f"answers or on scored movies (>= {MIN_CLASS} liked and not liked); champion v{champion.model_version} "
            f"has {champion.hit_users} and {champion.auc_users} users, challenger v{challenger.model_version} "
            f"{challenger.hit_users} and {challenger.auc_users}"
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


@dataclass(frozen=True)
class Plan:
    """What a metric's test can see at the horizon: the smallest difference it detects with POWER, from the
    champion's per-user spread so far, and how many more users each variant needs to get there."""

    metric: str
    per_user_sd: float  # the champion's standard error times the square root of its users
    detectable: float  # at `min_users` users per variant
    users: tuple[int, int]  # champion's, challenger's so far

    def line(self, min_users: int) -> str:
        """One sentence for `promote --plan`."""
        more = [max(0, min_users - n) for n in self.users]
        if math.isnan(self.detectable):
            return (f"{self.metric}: not enough champion feedback yet to size the test (needs 2 users); "
                    f"{more[0]} more champion and {more[1]} more challenger users reach the horizon")  # fmt: skip
        return (f"{self.metric}: at {min_users} users per variant the test detects a difference of "
                f"{self.detectable:.3f} with {POWER:.0%} power (per-user sd {self.per_user_sd:.3f}); "
                f"needs {more[0]} more champion and {more[1]} more challenger users")  # fmt: skip


def plan(champion: VariantStats, challenger: VariantStats, min_users: int, alpha: float) -> list[Plan]:
    """The design of the fixed-horizon test (module docstring), per metric, at one-sided alpha / 2 (both metrics)."""
    z = norm.ppf(1 - alpha / 2) + norm.ppf(POWER)
    out = []
    metrics = (("hit_rate", hit_rate(champion), (champion.hit_users, challenger.hit_users)),
               ("auc", auc_summary(champion), (champion.auc_users, challenger.auc_users)))  # fmt: skip
    for metric, summary, users in metrics:
        sd = summary.se * math.sqrt(summary.users) if summary.users >= 2 else math.nan
        out.append(Plan(metric, sd, z * sd * math.sqrt(2 / min_users), users))
    return out
