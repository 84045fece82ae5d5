"""The promotion rule under no true difference, simulated (pure; issue 29): 2,000 experiments whose users each
send correlated feedback (their own hit propensity and taste), looked at every hour as users arrive. The
platform's fixed-horizon, user-clustered rule promotes in at most alpha of them (within the binomial
interval); the rule it replaced (events as independent trials, re-tested at every look) promotes far more
often, which is what shows this test can fail. Figures: docs/benchmarks/reliability.md."""

from __future__ import annotations

import math

import numpy as np

from mlops.online_metrics import VariantStats, decide, normal_sf

EXPERIMENTS = 2000
LOOKS = 24  # hourly looks over a day
NEW_USERS_PER_LOOK = 30  # per variant, on average
HORIZON = 200  # users per variant (PROMOTION_MIN_USERS)
ALPHA = 0.05


class Arm:
    """One variant's users so far: top-k events and hits per user, and scored pairs with their users."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.trials, self.hits = [], []
        self.scores, self.liked, self.owners = [], [], []

    def grow(self, first_user: int) -> int:
        """New users arrive, each with correlated events (the same distribution in both arms: H0)."""
        n = int(self.rng.poisson(NEW_USERS_PER_LOOK))
        propensity = self.rng.beta(0.6, 4.4, n)  # mean 0.12, a user's events far from independent
        trials = 1 + self.rng.poisson(7, n)
        self.trials.append(trials.astype(float))
        self.hits.append(self.rng.binomial(trials, propensity).astype(float))
        pairs = 1 + self.rng.poisson(3, n)
        owners = np.repeat(np.arange(first_user, first_user + n), pairs)
        liked = self.rng.random(len(owners)) < 0.5
        taste = self.rng.normal(0, 0.8, n)[owners - first_user]
        self.scores.append(taste + 0.6 * liked + self.rng.normal(0, 1, len(owners)))
        self.liked.append(liked)
        self.owners.append(owners)
        return first_user + n

    def stats(self, variant: str) -> VariantStats:
        join = np.concatenate
        return VariantStats(variant, variant, 0, join(self.trials), join(self.hits), join(self.scores),
                            join(self.liked), join(self.owners))  # fmt: skip


def _naive_promotes(champion: VariantStats, challenger: VariantStats) -> bool:
    """The old rule: events as independent trials (pooled two-proportion z), significant at alpha."""
    n_a, n_b = champion.hit_trials, challenger.hit_trials
    if min(n_a, n_b) < HORIZON:
        return False
    pooled = (champion.hits + challenger.hits) / (n_a + n_b)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    return se > 0 and normal_sf((challenger.hits / n_b - champion.hits / n_a) / se) < ALPHA


def test_under_no_difference_hourly_looks_promote_at_most_alpha_of_the_time() -> None:
    rng = np.random.default_rng(2026)
    promoted = naive_promoted = decided = 0
    for _ in range(EXPERIMENTS):
        champion, challenger = Arm(rng), Arm(rng)
        next_user = 0
        platform_done = naive_done = False
        for _look in range(LOOKS):
            next_user = challenger.grow(champion.grow(next_user))
            a, b = champion.stats("champion"), challenger.stats("challenger")
            if not platform_done:
                decision = decide(a, b, HORIZON, ALPHA)
                if decision.final:  # the platform records the first decision at the horizon and stops testing
                    platform_done, decided = True, decided + 1
                    promoted += decision.promote
            if not naive_done and _naive_promotes(a, b):
                naive_done, naive_promoted = True, naive_promoted + 1
            if platform_done and naive_done:
                break
    rate, naive_rate = promoted / EXPERIMENTS, naive_promoted / EXPERIMENTS
    margin = 3 * math.sqrt(ALPHA * (1 - ALPHA) / EXPERIMENTS)  # about a 99.9% one-sided binomial bound
    print(f"\nfalse promotions over {EXPERIMENTS} null experiments, {LOOKS} hourly looks: platform {rate:.4f} "
          f"(alpha {ALPHA}, bound {ALPHA + margin:.4f}), event-level re-tested rule {naive_rate:.4f}")  # fmt: skip
    assert decided == EXPERIMENTS  # every experiment reached the horizon: the rate is not low by never deciding
    assert rate <= ALPHA + margin
    assert naive_rate > 2 * ALPHA  # the rule this replaced fails the same check: the test has teeth
