"""The console's data sources against real servers: MLflow's registry and artifact proxy, the object
store's normalized tables. Small stand-ins for a trained run (a PNG, a few metrics, two rows of movies)
keep these fast; the browser test covers the whole platform."""

from __future__ import annotations

import pyarrow as pa
import pytest

from mlops import catalog
from mlops.console import model
from mlops.layout import normalized_key
from mlops.spark_io import write_table

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def registered(settings, mlflow_server):
    """Version 1 (champion) and 2 (challenger) of the model, each with metrics and a PNG under plots/."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    client = MlflowClient(settings.mlflow_tracking_uri)
    mlflow.set_experiment("console-sources")
    client.create_registered_model(settings.model_name)
    for version, ndcg in (("1", 0.30), ("2", 0.25)):
        with mlflow.start_run() as run:
            mlflow.log_metrics({"ndcg_at_10": ndcg, "test_logloss": 0.5 + ndcg, "custom_metric": 1.0})
            fig, ax = plt.subplots(figsize=(2, 2))
            ax.plot([0, 1], [0, 1])
            mlflow.log_figure(fig, "plots/roc_curve.png")
            plt.close(fig)
            mlflow.log_text("not an image", "model_card.md")
        mv = client.create_model_version(
            settings.model_name,
            f"{run.info.artifact_uri}/plots",
            run.info.run_id,
            tags={"feature_set": f"fs-{version}", "pipeline_run_id": f"run-{version}"},
        )
        assert mv.version == version
    client.set_registered_model_alias(settings.model_name, "champion", "1")
    client.set_registered_model_alias(settings.model_name, "challenger", "2")
    return client


def test_champion_and_challenger_with_metrics_tags_and_plots(settings, registered):
    champion, challenger = model.champion_and_challenger(settings)
    assert (champion.version, challenger.version) == ("1", "2")
    assert champion.metrics["ndcg_at_10"] == pytest.approx(0.30) and champion.feature_set == "fs-1"
    assert champion.plots == ["plots/roc_curve.png"]  # the markdown is not an image
    assert model.metric_names(champion, challenger) == ["test_logloss", "ndcg_at_10", "custom_metric"]
    body, content_type = model.artifact(settings, champion.run_id, "plots/roc_curve.png")
    assert content_type == "image/png" and body.startswith(b"\x89PNG")


def test_an_alias_that_is_not_set_is_none(settings, registered):
    registered.delete_registered_model_alias(settings.model_name, "challenger")
    try:
        assert model.version_by_alias(settings, "challenger") is None
    finally:
        registered.set_registered_model_alias(settings.model_name, "challenger", "2")


def test_titles_and_a_users_ratings_from_the_runs_normalized_tables(settings):
    run_id = "console-catalog"
    movies = pa.table(
        {
            "movie_id": [1, 2, 3],
            "title": ["Heat (1995)", "Up (2009)", "Alien (1979)"],
            "year": [1995, 2009, 1979],
            "genres": ["Action|Crime", "Animation", "Horror|Sci-Fi"],
        }
    )
    ratings = pa.table({"user_id": [7, 7, 8, 7], "movie_id": [1, 2, 3, 3], "rating": [3.0, 5.0, 4.0, 5.0],
                        "timestamp": [10, 20, 30, 40]})  # fmt: skip
    write_table(movies, normalized_key(run_id, "movies"), settings, {"step": "test"})
    write_table(ratings, normalized_key(run_id, "ratings"), settings, {"step": "test"})
    titles = catalog.movies(settings, run_id)
    assert titles[3].title == "Alien (1979)" and titles[3].genre_list == ["Horror", "Sci-Fi"]
    rated = catalog.rated(settings, run_id, 7)
    assert [(r.movie.title, r.rating) for r in rated] == [
        ("Alien (1979)", 5.0),
        ("Up (2009)", 5.0),
        ("Heat (1995)", 3.0),
    ]  # best first, newest among equals
    assert catalog.rated(settings, run_id, 999) == []
    assert catalog.movie(titles, 42).title == "(movie 42: not in this run's catalog)"
