"""The batch steps end to end against real S3 (S3Proxy/MinIO), real Spark and real Redis.

ingest -> validate -> split_dataset on synthetic data; a bad input stopping the run with nothing
overwritten; load_to_redis turning an online snapshot into the current feature set.
"""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from mlops.errors import DataError
from mlops.feature_store import RedisFeatureStore
from mlops.jobs import ingest, load_to_redis, split_dataset, validate
from mlops.jobs.runner import EXIT_DATA_ERROR, run
from mlops.layout import (
    LAST_GOOD_COUNTS,
    features_key,
    manifest_key,
    normalized_key,
    quality_report_key,
    raw_prefix,
    split_key,
)
from mlops.object_store import ObjectStore
from mlops.spark_io import read_manifest, read_pandas, write_parquet

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_ingest_validate_split_on_synthetic(settings, spark):
    run_id = "t-e2e-synthetic"
    ingest.main(["--run-id", run_id, "--dataset", "synthetic"], settings)
    store = ObjectStore.from_settings(settings)
    raw = store.get_json(manifest_key(raw_prefix(run_id)))
    assert raw["source"] == "synthetic" and raw["row_counts"]["ratings"] == settings.synthetic_ratings
    assert {e["file"] for e in raw["files"].values()} == {"ratings.csv", "movies.csv"}
    assert all(len(e["sha256"]) == 64 for e in raw["files"].values())
    assert store.exists(f"{raw_prefix(run_id)}/ratings.csv")
    ratings_manifest = read_manifest(normalized_key(run_id, "ratings"), settings)
    assert ratings_manifest["row_count"] == settings.synthetic_ratings
    assert [c["name"] for c in ratings_manifest["columns"]] == ["user_id", "movie_id", "rating", "timestamp"]

    report = validate.main(["--run-id", run_id], settings)
    assert report["passed"]
    assert store.get_json(LAST_GOOD_COUNTS)[ratings_manifest["dataset_id"]]["run_id"] == run_id

    manifests = split_dataset.main(["--run-id", run_id, "--split-strategy", "temporal"], settings)
    assert sum(manifests["train"]["counts"].values()) == settings.synthetic_ratings
    assert manifests["test"]["strategy"] == "temporal" and manifests["test"]["seed"] == settings.seed
    assert manifests["test"]["validation_fraction"] == settings.validation_fraction
    assert manifests["test"]["users_train_only_too_few_ratings"] == 0  # synthetic users have >= 5 ratings
    train, val, test = (read_pandas(split_key(run_id, p), settings) for p in ("train", "validation", "test"))
    assert [len(train), len(val), len(test)] == [manifests[p]["row_count"] for p in ("train", "validation", "test")]
    n = len(train) + len(val) + len(test)
    assert 0.17 < len(test) / n < 0.23 and 0.07 < len(val) / n < 0.13
    assert set(test["user_id"]) == set(val["user_id"]) == set(train["user_id"])  # every user in all parts
    last_train = train.groupby("user_id")["timestamp"].max()
    first_val, last_val = val.groupby("user_id")["timestamp"].min(), val.groupby("user_id")["timestamp"].max()
    first_test = test.groupby("user_id")["timestamp"].min()
    assert (first_val >= last_train.loc[first_val.index]).all()
    assert (first_test >= last_val.loc[first_test.index]).all()


def _write_csv_dataset(root, n_users: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    lines = ["userId,movieId,rating,timestamp"]
    lines += [
        f"{u},{m},{1 + (u * m) % 5}.0,{900_000_000 + u * 100 + m}" for u in range(1, n_users + 1) for m in range(1, 11)
    ]
    (root / "ratings.csv").write_text("\n".join(lines) + "\n")
    (root / "movies.csv").write_text(
        "movieId,title,genres\n" + "".join(f"{m},Movie {m} (2001),Drama\n" for m in range(1, 11))
    )


def _exit_code(main, argv) -> int:
    with pytest.raises(SystemExit) as info:
        run(main, argv)
    return info.value.code


def test_bad_input_stops_the_run_and_overwrites_nothing(settings, spark, tmp_path):
    store = ObjectStore.from_settings(settings)
    data = tmp_path / "mydata"
    _write_csv_dataset(data, n_users=20)
    good = "t-e2e-good"
    ingest.main(["--run-id", good, "--dataset", str(data)], settings)
    validate.main(["--run-id", good], settings)
    committed = read_manifest(normalized_key(good, "ratings"), settings)
    pointer = store.get_json(LAST_GOOD_COUNTS)
    assert pointer[f"local:{data.resolve()}"]["ratings"] == 200

    # 1. truncated file, same run id: exit code 3, the committed tables of that run are untouched
    shutil.copy(data / "ratings.csv", tmp_path / "ratings.bak")
    text = (data / "ratings.csv").read_text()
    (data / "ratings.csv").write_text(text[: len(text) - 8])
    assert _exit_code(ingest.main, ["--run-id", good, "--dataset", str(data)]) == EXIT_DATA_ERROR
    assert read_manifest(normalized_key(good, "ratings"), settings) == committed
    report = store.get_json(quality_report_key(good, "ingest"))
    assert not report["passed"] and report["error"]["rule"] == "truncated file" and report["error"]["line"] == 201

    # 2. out-of-range rating in a new run: nothing normalized is written for it
    (data / "ratings.csv").write_text(text.replace("\n3,4,", "\n3,4,9", 1))
    assert _exit_code(ingest.main, ["--run-id", "t-e2e-range", "--dataset", str(data)]) == EXIT_DATA_ERROR
    assert store.list_keys(normalized_key("t-e2e-range", "ratings")) == []
    assert store.get_json(quality_report_key("t-e2e-range", "ingest"))["error"]["rule"] == "rating range"

    # 3. big row-count drop against the last good run of the same dataset: validate fails, pointer kept,
    #    and split_dataset refuses the run
    _write_csv_dataset(data, n_users=8)
    drop = "t-e2e-drop"
    ingest.main(["--run-id", drop, "--dataset", str(data)], settings)
    with pytest.raises(DataError, match=r"\[row-count drop\] 80 ratings vs 200 in the last good run t-e2e-good"):
        validate.main(["--run-id", drop], settings)
    assert store.get_json(LAST_GOOD_COUNTS)[f"local:{data.resolve()}"] == pointer[f"local:{data.resolve()}"]
    with pytest.raises(DataError, match="failed the quality gate"):
        split_dataset.main(["--run-id", drop], settings)
    assert store.list_keys(split_key(drop, "train")) == []
    # a deliberate change of data is accepted when said so
    assert validate.main(["--run-id", drop, "--accept-count-change"], settings)["passed"]


def test_split_needs_its_input(settings, spark):
    with pytest.raises(DataError, match="run validate first"):
        split_dataset.main(["--run-id", "t-e2e-nothing"], settings)


def test_load_to_redis_makes_a_new_current_version(settings, spark):
    run_id = "t-e2e-load"
    fs = RedisFeatureStore.from_settings(settings)
    fs.r.flushdb()
    fs.write_feature_set("older", [(1, {"x": 0})], [(1, {"y": 0})], {})
    users = spark.createDataFrame(pd.DataFrame({
        "user_id": range(1, 101), "u_mean": [3.0 + i / 100 for i in range(100)],
        "rated": [[1, 2, i + 1] for i in range(100)],
    }))  # fmt: skip
    items = spark.createDataFrame(pd.DataFrame({"movie_id": range(1, 51), "i_pop": [float(i) for i in range(50)]}))
    meta = spark.createDataFrame([(run_id, [5, 3, 1], 3.5)], "feature_set string, popular_movie_ids array<int>, "
                                 "global_mean double")  # fmt: skip
    for name, df in (("online_users", users), ("online_items", items), ("online_meta", meta)):
        write_parquet(df, features_key(run_id, name), settings, {"run_id": run_id, "inputs": []})

    loaded = load_to_redis.main(["--run-id", run_id, "--batch-size", "16"], settings)
    assert (loaded["n_users"], loaded["n_items"]) == (100, 50)
    assert fs.current_version() == run_id
    meta = fs.metadata(run_id)
    assert meta["popular_movie_ids"] == [5, 3, 1] and meta["global_mean"] == 3.5
    assert meta["user_columns"] == ["u_mean", "rated"]
    got = fs.get_online_features([7, 1000], [50], fs.current_version())
    assert got.version == run_id
    assert got.users[7] == {"u_mean": pytest.approx(3.06), "rated": [1, 2, 7]} and got.users[1000] is None
    assert got.items[50] == {"i_pop": 49.0}
    assert fs.get_online_features([1], [1], version="older").users[1] == {"x": 0}  # previous still readable
    assert fs.r.ttl(RedisFeatureStore.meta_key("older")) > 0

    # idempotent: a re-run rewrites nothing and leaves it current
    fs.r.set(RedisFeatureStore.key(run_id, "user", 7), b'{"marker": 1}')
    load_to_redis.main(["--run-id", run_id], settings)
    assert fs.current_version() == run_id
    assert fs.get_online_features([7], [], run_id).users[7] == {"marker": 1}


def test_load_to_redis_serves_the_serving_set_and_keeps_the_evaluation_set_beside_it(settings, spark):
    """A run with a serving set (every rating): that set becomes the run's version, the evaluation set is
    loaded under `evaluation_set_version` and never made current."""
    from mlops.layout import SERVING_PREFIX, evaluation_set_version

    run_id = "t-e2e-two-sets"
    fs = RedisFeatureStore.from_settings(settings)
    for prefix, rated in (("", [1, 2]), (SERVING_PREFIX, [1, 2, 3])):
        users = spark.createDataFrame(pd.DataFrame({"user_id": [7], "rated": [rated]}))
        items = spark.createDataFrame(pd.DataFrame({"movie_id": [1, 2, 3], "i_pop": [1.0, 2.0, 3.0]}))
        for name, df in (("online_users", users), ("online_items", items)):
            described = "train+validation+test" if prefix else "train+validation"
            write_parquet(df, features_key(run_id, prefix + name), settings, {"run_id": run_id, "history": described})
    loaded = load_to_redis.main(["--run-id", run_id], settings)
    assert fs.current_version() == run_id and loaded["history"] == "train+validation+test"
    assert fs.get_online_features([7], [], run_id).users[7]["rated"] == [1, 2, 3]
    evaluation = evaluation_set_version(run_id)
    assert fs.get_online_features([7], [], evaluation).users[7]["rated"] == [1, 2]
    assert fs.metadata(evaluation)["history"] == "train+validation"


def test_load_to_redis_without_features_names_the_step(settings, spark):
    with pytest.raises(DataError, match="run feature_engineering first"):
        load_to_redis.main(["--run-id", "t-e2e-nofeatures"], settings)
