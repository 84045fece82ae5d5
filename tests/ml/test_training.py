"""Training on point-in-time features: it learns, it is reproducible, bad feature sets are refused."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from mlops import features as fx
from mlops.errors import DataError
from mlops.training.evaluate import core_of, evaluate, rank_all
from mlops.training.fit import fit, user_rows
from mlops.training.offline_data import check
from mlops.training.rating_examples import held_out_rows


def test_training_is_reproducible_and_beats_chance(offline):
    m1 = fit(offline, seed=42)
    m2 = fit(offline, seed=42)
    metrics1, _ = evaluate(m1, offline)
    metrics2, _ = evaluate(m2, offline)
    assert metrics1 == metrics2  # same data, seed and parameters: identical metrics
    x = held_out_rows(core_of(m1, offline).retrievers, offline, user_rows(offline)).x
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


def test_candidate_recall_of_the_union_and_of_each_retriever(offline):
    """candidate_recall: the share of test movies the union of the retrievers' top-N reaches; each retriever's
    own share is at most the union's, and top-k never holds a movie outside the user's candidates."""
    from mlops import evaluation
    from mlops.model.retrievers import RETRIEVERS
    from mlops.training.evaluate import candidate_recall

    model = fit(offline, seed=42)
    relevant, _ = evaluation.relevant_sets(offline.test)
    recall = candidate_recall(model, offline, relevant)
    assert set(recall) == {"candidate_recall", *(f"candidate_recall_{r}" for r in RETRIEVERS)}
    for name in RETRIEVERS:
        assert 0 < recall[f"candidate_recall_{name}"] <= recall["candidate_recall"] <= 1.0, name
    metrics, _ = evaluate(model, offline)
    assert metrics["candidate_recall"] == recall["candidate_recall"]


@pytest.mark.parametrize("family", ["ranker", "blend", "als", "cooccurrence", "popularity"])
def test_every_family_serves_through_the_same_path(offline, family):
    """Each family of the table ranks through RankerCore, never returns a rated movie, and is deterministic."""
    from mlops.training.fit import labelled_table

    table = labelled_table(offline, 100.0)
    model = fit(offline, seed=42, family_name=family, table=table)
    users = sorted(offline.online_users["user_id"].tolist())[:15]
    recs = rank_all(model, offline, users, k=5)
    assert recs == rank_all(fit(offline, seed=42, family_name=family, table=table), offline, users, k=5)
    rated = offline.online_users.set_index("user_id")[fx.RATED_COLUMN]
    for u in users:
        assert len(recs[u]) == 5 and not set(recs[u]) & {int(m) for m in rated.loc[u]}


def test_a_learned_family_without_labelled_candidates_is_refused(offline):
    with pytest.raises(ValueError, match="labelled candidates"):
        fit(offline, seed=42, family_name="ranker")


def test_the_ranker_features_never_see_the_labels(offline):
    """Point in time for the ranker: its features come from the history's world, its labels from the held-out
    ratings. Changing every held-out rating and half of the held-out movies changes labels only: every
    (user, movie) candidate present in both tables has the very same features."""
    from mlops.training.fit import labelled_table

    rng = np.random.default_rng(3)
    changed = offline.test.copy()
    changed["rating"] = rng.permutation(changed["rating"].to_numpy())
    swap = rng.random(len(changed)) < 0.5
    changed.loc[swap, "movie_id"] = rng.choice(offline.online_items["movie_id"].to_numpy(), int(swap.sum()))
    a = labelled_table(offline, 100.0)
    b = labelled_table(dataclasses.replace(offline, test=changed), 100.0)
    rows_a = {(u, m): (x.tobytes(), y) for u, m, x, y in zip(a.users, a.movies, a.x, a.y, strict=True)}
    rows_b = {(u, m): (x.tobytes(), y) for u, m, x, y in zip(b.users, b.movies, b.x, b.y, strict=True)}
    common = rows_a.keys() & rows_b.keys()
    assert len(common) > 100
    assert all(rows_a[k][0] == rows_b[k][0] for k in common)  # features: identical
    assert any(rows_a[k][1] != rows_b[k][1] for k in common)  # labels: changed (the check can fail)


def test_an_empty_history_cannot_fit_the_retrievers():
    import pandas as pd

    from mlops.model.retrievers import RetrieverError, Retrievers

    with pytest.raises(RetrieverError, match="history is empty"):
        Retrievers.fit(pd.DataFrame({"user_id": [], "movie_id": []}), np.array([1, 2]), np.zeros((2, 3)), 10.0)


def test_the_family_with_the_best_validation_figure_is_chosen_ties_to_the_simpler():
    from mlops.training.choose_family import choose

    assert choose({"ranker": 0.3, "blend": 0.2, "ease": 0.25}) == "ranker"
    assert choose({"ranker": 0.25, "blend": 0.25, "ease": 0.25}) == "ease"
