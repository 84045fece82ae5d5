"""Training on point-in-time features: it learns, it is reproducible, bad feature sets are refused."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from mlops import features as fx
from mlops.errors import DataError
from mlops.training.evaluate import evaluate, rank_all
from mlops.training.fit import fit
from mlops.training.offline_data import check


def test_training_is_reproducible_and_beats_chance(offline):
    m1 = fit(offline, seed=42)
    m2 = fit(offline, seed=42)
    metrics1, _ = evaluate(m1, offline)
    metrics2, _ = evaluate(m2, offline)
    assert metrics1 == metrics2  # same data, seed and parameters: identical metrics
    x = fx.build_matrix(offline.eval_examples, offline.eval_examples)
    np.testing.assert_array_equal(m1.p_like(x), m2.p_like(x))
    assert metrics1["test_auc"] > 0.6  # the synthetic ratings follow latent tastes: learnable
    for name in ("ndcg_at_10", "precision_at_10", "recall_at_10", "map_at_10", "ndcg_at_10_liked",
                 "baseline_popularity_ndcg_at_10", "baseline_cooccurrence_ndcg_at_10", "test_logloss"):  # fmt: skip
        assert 0.0 <= metrics1[name] <= (1.0 if name != "test_logloss" else 10.0)


def test_empty_features_are_a_data_error(offline):
    empty = dataclasses.replace(offline, train_examples=offline.train_examples.iloc[0:0])
    with pytest.raises(DataError, match="train_examples: empty"):
        check(empty)
    missing = dataclasses.replace(offline, online_items=offline.online_items.drop(columns=["i_pop_share"]))
    with pytest.raises(DataError, match="online_items: missing column"):
        check(missing)


def test_recommendations_exclude_rated_movies_and_respect_k(offline):
    model = fit(offline, seed=42)
    users = sorted(offline.online_users["user_id"].tolist())[:10]
    recs = rank_all(model, offline, users, k=7)
    rated = offline.online_users.set_index("user_id")[fx.RATED_COLUMN]
    for u in users:
        assert len(recs[u]) == 7 and len(set(recs[u])) == 7
        assert not set(recs[u]) & {int(m) for m in rated.loc[u]}


def test_candidate_recall_counts_what_reranking_can_reach(offline):
    """The model is scored exactly as served: only its candidates are re-ranked. candidate_recall is the
    share of test movies among them: it grows with the counts and is 1 when every unrated movie is one."""
    from mlops import evaluation
    from mlops.model.ranking import CandidateCounts
    from mlops.training.evaluate import candidate_recall

    model = fit(offline, seed=42)
    relevant, _ = evaluation.relevant_sets(offline.test)
    small = candidate_recall(model, offline, relevant, CandidateCounts(cf=10, popular=0))
    larger = candidate_recall(model, offline, relevant, CandidateCounts(cf=30, popular=10))
    everything = candidate_recall(model, offline, relevant, CandidateCounts(cf=len(offline.online_items), popular=0))
    assert 0 < small < larger < everything == 1.0
    metrics, _ = evaluate(model, offline, CandidateCounts(cf=10, popular=0))
    assert metrics["candidate_recall"] == small
    assert metrics["full_catalog_ndcg_at_10"] != metrics["ndcg_at_10"]  # 10 + 0 candidates rank differently
    # Each user's top-k never holds a movie outside that user's candidates, nor one rated in train.
    recs = rank_all(model, offline, sorted(relevant), CandidateCounts(cf=10, popular=0))
    assert all(len(r) <= 10 for r in recs.values())
