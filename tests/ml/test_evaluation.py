"""Ranking metrics against hand-computed cases, and the baselines on a case small enough to check by eye."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from mlops.evaluation import baseline_recommendations, ranking_metrics, relevant_sets, user_metrics
from mlops.model import retrievers


def test_user_metrics_hand_computed():
    # Hits at ranks 1 and 3 of 5; 4 relevant items; k = 5.
    m = user_metrics([10, 20, 30, 40, 50], {10, 30, 99, 98}, k=5)
    dcg = 1 / math.log2(2) + 1 / math.log2(4)
    idcg = sum(1 / math.log2(i + 2) for i in range(4))
    assert m["ndcg"] == pytest.approx(dcg / idcg)
    assert m["precision"] == pytest.approx(2 / 5)
    assert m["recall"] == pytest.approx(2 / 4)
    assert m["map"] == pytest.approx((1 / 1 + 2 / 3) / 4)


def test_user_metrics_perfect_and_empty_lists():
    assert user_metrics([1, 2], {1, 2}, k=10)["ndcg"] == pytest.approx(1.0)
    assert user_metrics([1, 2], {1, 2}, k=10)["precision"] == pytest.approx(0.2)  # precision divides by k
    assert user_metrics([], {1}, k=10) == {"ndcg": 0.0, "precision": 0.0, "recall": 0.0, "map": 0.0}


def test_ranking_metrics_average_over_users_with_relevant_items():
    recs = {1: [5, 6], 2: [7, 8]}
    rel = {1: {5}, 2: {9}, 3: set()}  # user 3 has nothing relevant: not counted
    out = ranking_metrics(recs, rel, k=2)
    assert out["ndcg_at_2"] == pytest.approx(0.5)
    assert out["precision_at_2"] == pytest.approx(0.25)
    assert set(out) == {"ndcg_at_2", "precision_at_2", "recall_at_2", "map_at_2"}
    assert set(ranking_metrics(recs, rel, k=2, suffix="_liked")) == {
        "ndcg_at_2_liked", "precision_at_2_liked", "recall_at_2_liked", "map_at_2_liked",
    }  # fmt: skip


def test_ranking_metrics_refuses_no_relevant_items():
    with pytest.raises(ValueError, match="no user has a relevant item"):
        ranking_metrics({1: [1]}, {1: set()})


def test_relevant_sets_split_liked():
    test = pd.DataFrame({"user_id": [1, 1, 2], "movie_id": [10, 11, 12], "rating": [5.0, 2.0, 4.0]})
    all_, liked = relevant_sets(test)
    assert all_ == {1: {10, 11}, 2: {12}}
    assert liked == {1: {10}, 2: {12}}


def test_baselines_exclude_rated_and_follow_counts():
    # Movie 1 is the most popular; users 1 and 2 co-rate 2 and 3; user 3 rated only 2.
    train = pd.DataFrame(
        {"user_id": [1, 1, 1, 2, 2, 2, 3, 4], "movie_id": [1, 2, 3, 1, 2, 3, 2, 1], "rating": [4.0] * 8}
    )
    recs = baseline_recommendations(train, [3], k=2)
    assert recs["popularity"][3] == [1, 3]  # 1 (3 ratings) before 3 (2 ratings); 2 excluded (rated)
    # co-occurrence with movie 2: movie 1 co-rated by users 1, 2 (2), movie 3 by users 1, 2 (2): tie -> id order
    assert recs["cooccurrence"][3] == [1, 3]
    assert 2 not in recs["cooccurrence"][3]


def test_a_catalog_over_the_cap_is_scored_on_its_most_rated_movies(monkeypatch):
    # Popularity: movie 1 (4 ratings), 2 (3), 3 (2), 4 (1). User 5 rated 1; 4 co-occurs with 1 (user 4) but is
    # the least rated, so under a cap of 3 movies it is out of both co-occurrence and EASE.
    train = pd.DataFrame(
        {
            "user_id": [1, 1, 1, 2, 2, 2, 3, 3, 4, 4, 5],
            "movie_id": [1, 2, 3, 1, 2, 3, 1, 2, 1, 4, 1],
            "rating": [4.0] * 11,
        }
    )
    full = baseline_recommendations(train, [5], k=3, ease_lambda=1.0)
    assert 4 in full["cooccurrence"][5]
    monkeypatch.setattr(retrievers, "EASE_MAX_ITEMS", 3)
    capped = baseline_recommendations(train, [5], k=3, ease_lambda=1.0)
    assert capped["cooccurrence"][5] == [2, 3] and 4 not in capped["ease"][5]
    assert capped["popularity"][5] == full["popularity"][5]  # popularity ranks the whole catalog still


def test_ease_weights_hand_computed():
    """Items a, b, c; users {a, b}, {a}, {c}; lambda 1. G + I = [[3,1,0],[1,2,0],[0,0,2]],
    P = inv = [[2/5,-1/5,0],[-1/5,3/5,0],[0,0,1/2]], B_ij = -P_ij / P_jj: B_ab = 1/3, B_ba = 1/2, rest 0."""
    from mlops.model.retrievers import ease_weights, gram, interactions

    train = pd.DataFrame({"user_id": [1, 1, 2, 3], "movie_id": [10, 20, 10, 30]})
    r = interactions(train, np.array([10, 20, 30]))
    g = gram(r, np.arange(3))
    np.testing.assert_allclose(ease_weights(g, 1.0), [[0, 1 / 3, 0], [1 / 2, 0, 0], [0, 0, 0]], atol=1e-12)
    # user 2 rated a: scores x_u B = [0, 1/3, 0]; a is excluded (seen), b first, then c (score 0)
    recs = baseline_recommendations(train, [2, 3], k=5, ease_lambda=1.0)["ease"]
    assert recs[2] == [20, 30]
    assert 30 not in recs[3] and len(recs[3]) == 2  # never a seen movie


def test_ease_lambda_is_chosen_on_validation_only():
    from mlops.evaluation import choose_ease_lambda
    from mlops.model.retrievers import EASE_LAMBDAS

    train = pd.DataFrame({"user_id": [1, 1, 2, 2, 3, 3, 4], "movie_id": [10, 20, 10, 20, 20, 30, 10]})
    validation = pd.DataFrame({"user_id": [4], "movie_id": [20], "rating": [5.0]})
    best, figures = choose_ease_lambda(train, validation)
    assert best in EASE_LAMBDAS and set(figures) == set(EASE_LAMBDAS)
    assert figures[best] == max(figures.values())


def test_ease_lambda_on_many_users_is_chosen_on_a_fixed_sample_of_them():
    from mlops.evaluation import choose_ease_lambda

    rng = np.random.default_rng(7)
    pairs = pd.DataFrame({"user_id": rng.integers(0, 300, 6000), "movie_id": rng.zipf(1.3, 6000) % 60})
    pairs = pairs.drop_duplicates().sample(frac=1.0, random_state=7)
    cut = len(pairs) * 3 // 4
    train, validation = pairs.iloc[:cut], pairs.iloc[cut:].assign(rating=4.0)
    n_users = validation["user_id"].nunique()
    everyone = choose_ease_lambda(train, validation)
    assert choose_ease_lambda(train, validation, max_users=n_users) == everyone  # at the limit: every user
    sampled = choose_ease_lambda(train, validation, max_users=40)
    assert sampled == choose_ease_lambda(train, validation, max_users=40)  # the same sample every run
    assert sampled[1] != everyone[1]  # the figures are those of 40 users, not of all of them


def test_a_user_without_history_gets_the_popular_list_from_every_baseline():
    train = pd.DataFrame({"user_id": [1, 1, 2, 2, 3], "movie_id": [10, 20, 10, 30, 10], "rating": [4.0] * 5,
                          "timestamp": range(5)})  # fmt: skip
    recs = baseline_recommendations(train, [1, 99], k=2, ease_lambda=1.0)
    assert {name: by_user[99] for name, by_user in recs.items()} == {n: [10, 20] for n in recs}
    assert recs["popularity"][1] == [30]  # a known user still has its rated movies excluded
