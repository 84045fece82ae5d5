"""The champion/challenger rule as a pure function (`mlops.promotion.decide`): metrics and tags in, verdict out."""

from __future__ import annotations

import pytest

from mlops.promotion import (
    AUC_FLOOR,
    BELOW_BASELINE,
    LINEAGE_CHANGED,
    LINEAGE_KEYS,
    SAME_SPLIT,
    Champion,
    decide,
    needs_champion_score,
    same_split,
    stands_alone,
)
from mlops.variants import CHALLENGER, CHAMPION

TAGS = {"dataset_checksum": "ab", "split_strategy": "random", "seed": "42", "test_fraction": "0.25",
        "validation_fraction": "0.1"}  # fmt: skip
BASELINES = {"baseline_popularity_ndcg_at_10": 0.2, "baseline_ease_ndcg_at_10": 0.4, "test_auc": 0.8}


def test_same_split_needs_every_lineage_tag_known_and_equal():
    assert same_split(TAGS, dict(TAGS))
    for key in LINEAGE_KEYS:
        assert not same_split(TAGS, TAGS | {key: "other"}), key
        assert not same_split(TAGS, {k: v for k, v in TAGS.items() if k != key}), key  # an old version
    assert not same_split(TAGS | {"dataset_checksum": "unknown"}, TAGS | {"dataset_checksum": "unknown"})


def test_standing_alone_needs_at_least_every_baseline_and_the_auc_floor():
    assert stands_alone(BASELINES | {"ndcg_at_10": 0.41})[0]
    assert stands_alone(BASELINES | {"ndcg_at_10": 0.4})[0]  # serving EASE itself ties EASE: allowed
    passes, why = stands_alone(BASELINES | {"ndcg_at_10": 0.39})
    assert not passes and "< ease 0.4000" in why
    assert not stands_alone(BASELINES | {"ndcg_at_10": 0.5, "test_auc": AUC_FLOOR - 0.01})[0]
    assert not stands_alone({"ndcg_at_10": 0.9, "test_auc": 0.9})[0]  # no baselines: nothing proven


def test_the_first_version_below_its_best_baseline_stays_challenger():
    verdict = decide("1", BASELINES | {"ndcg_at_10": 0.35}, TAGS, None)
    assert (verdict.decision, verdict.basis) == (CHALLENGER, BELOW_BASELINE)
    assert verdict.reason == "below its run's best baseline: ndcg_at_10 0.3500 < ease 0.4000"
    first = decide("1", BASELINES | {"ndcg_at_10": 0.4}, TAGS, None)
    assert (first.decision, first.reason) == (CHAMPION, "no champion yet; ndcg_at_10 0.4000 >= ease 0.4000")


def test_below_baseline_wins_over_every_other_ground():
    """Even against a champion that is gone, or on another split, a version below its baseline never serves."""
    low = BASELINES | {"ndcg_at_10": 0.1}
    for champion in (
        Champion("1", TAGS, gone="NoSuchKey"),
        Champion("1", TAGS | {"seed": "7"}),
        Champion("1", TAGS, 0.0),
    ):
        assert decide("2", low, TAGS, champion).basis == BELOW_BASELINE
        assert not needs_champion_score("2", low, TAGS, champion)  # and the champion is not loaded for it


def test_same_split_compares_with_the_champion_re_measured_here():
    good = BASELINES | {"ndcg_at_10": 0.45}
    champion = Champion("1", TAGS)
    assert needs_champion_score("2", good, TAGS, champion)
    assert decide("2", good, TAGS, Champion("1", TAGS, ndcg=0.44)).decision == CHAMPION
    tie = decide("2", good, TAGS, Champion("1", TAGS, ndcg=0.45))
    assert (tie.decision, tie.basis) == (CHALLENGER, SAME_SPLIT)  # a tie is not a win
    with pytest.raises(ValueError, match="champion's ndcg_at_10"):
        decide("2", good, TAGS, champion)  # the caller forgot to re-measure it


def test_a_tie_goes_to_the_candidate_only_when_it_alone_serves_every_rating():
    good = BASELINES | {"ndcg_at_10": 0.45}
    fresh = TAGS | {"feature_set": "run2", "evaluation_feature_set": "run2.eval"}
    old = TAGS | {"feature_set": "run1"}  # trained before serving sets: its one set is its evaluation set
    tie = decide("2", good, fresh, Champion("1", old, ndcg=0.45))
    assert tie.decision == CHAMPION and "only the candidate serves every ingested rating" in tie.reason
    assert decide("2", good, fresh, Champion("1", old, ndcg=0.46)).decision == CHALLENGER  # worse is worse
    both = decide("2", good, fresh, Champion("1", TAGS | {"feature_set": "r1", "evaluation_feature_set": "r1.eval"},
                                             ndcg=0.45))  # fmt: skip
    assert both.decision == CHALLENGER  # both serve every rating: a tie is not a win


def test_lineage_change_gone_champion_and_already_champion():
    good = BASELINES | {"ndcg_at_10": 0.45}
    other = Champion("1", TAGS | {"seed": "7"})
    assert not needs_champion_score("2", good, TAGS, other)
    moved = decide("2", good, TAGS, other)
    assert (moved.decision, moved.basis) == (CHAMPION, LINEAGE_CHANGED) and "(seed)" in moved.reason
    gone = decide("2", good, TAGS, Champion("1", TAGS, gone="NoSuchKey: model.txt"))
    assert gone.decision == CHAMPION and gone.replaced and "cannot be loaded (NoSuchKey" in gone.reason
    assert decide("1", BASELINES | {"ndcg_at_10": 0.1}, TAGS, Champion("1", TAGS)).decision == CHAMPION
