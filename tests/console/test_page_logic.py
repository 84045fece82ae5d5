"""Pure parts of the pages: user-id parsing, metric comparison, dead-letter decoding, Prometheus answers."""

from __future__ import annotations

import pytest

from mlops import schemas
from mlops.console import model, stream, topics, tryit


@pytest.mark.parametrize(("text", "words"), [
    ("", "Type a user id"),
    ("abc", "“abc” is not a user id"),
    ("-3", "is not a user id"),
    ("1.5", "is not a user id"),
    ("99999999999999999999", "too large for a user id"),
    ("²", "“²” is not a user id"),  # a digit to str.isdigit, not to int()
    ("１２", "is not a user id"),  # full-width digits
])  # fmt: skip
def test_bad_user_ids_are_refused_in_words(text, words):
    with pytest.raises(tryit.BadUserId, match=words):
        tryit.parse_user_id(text)


def test_user_ids_are_whole_numbers():
    assert tryit.parse_user_id(" 42 ") == 42


def test_better_knows_losses_are_lower_is_better():
    assert model.better("ndcg_at_10", 0.3, 0.2) == 1
    assert model.better("test_logloss", 0.3, 0.2) == -1
    assert model.better("ndcg_at_10", 0.3, None) == 0
    assert model.better("ndcg_at_10", 0.3, 0.3) == 0


def test_metric_names_put_the_contract_first():
    a = model.ModelVersion("champion", "2", "r", {}, {"zeta": 1, "test_auc": 0.7, "ndcg_at_10": 0.3}, "")
    b = model.ModelVersion("challenger", "1", "s", {}, {"alpha": 2, "ndcg_at_10": 0.2}, "")
    assert model.metric_names(a, b) == ["test_auc", "ndcg_at_10", "alpha", "zeta"]
    assert model.metric_names(a, None) == ["test_auc", "ndcg_at_10", "zeta"]


def test_artifact_paths_outside_images_are_refused_before_asking_mlflow():
    settings = None  # never used: the path is refused first
    for path in ("../secrets.png", "plots/../../x.png", "model/MLmodel"):
        with pytest.raises(model.MlflowProblem):
            model.artifact(settings, "run", path)


def test_a_dead_letter_is_decoded_with_its_original_message():
    raw = schemas.dlq_record(b'{"request_id": "p", "user_id": 1, "k": 1000}', b"1", schemas.K_OUT_OF_RANGE,
                             "field 'k' is 1000", "inference-requests", 2, 17)  # fmt: skip
    letter = topics.decode_dead_letter(5, raw)
    assert (letter.offset, letter.reason, letter.key) == (5, "k_out_of_range", "1")
    assert letter.original == '{"request_id": "p", "user_id": 1, "k": 1000}'
    assert letter.source == "inference-requests p2@17" and letter.detail == "field 'k' is 1000"


def test_binary_and_unreadable_records_are_shown_not_raised():
    binary = topics.decode_dead_letter(0, schemas.dlq_record(b"\xff\xfe{", None, "not_json", "d", "t", 0, 0))
    assert binary.original == "\\xff\\xfe{" and binary.key == "(none)"
    junk = topics.decode_dead_letter(1, b"not a dead letter")
    assert junk.reason == "(unreadable record)" and junk.original == "not a dead letter"


def test_prometheus_matrix_reads_nan_as_a_gap():
    doc = {"status": "success", "data": {"resultType": "matrix",
           "result": [{"metric": {}, "values": [[100, "1.5"], [105, "NaN"], [110, "2"]]}]}}  # fmt: skip
    assert stream.matrix_points(doc) == [(100.0, 1.5), (105.0, None), (110.0, 2.0)]
    assert stream.matrix_points({"data": {"result": []}}) == []


def test_consumer_urls_in_local_mode_follow_the_metrics_port(base_settings):
    s = base_settings.replace(inference_consumers=2, inference_metrics_port=9400)
    assert stream.consumer_metric_urls(s) == ["http://127.0.0.1:9400/metrics", "http://127.0.0.1:9401/metrics"]
    assert stream.consumer_metric_urls(s, "localhost") == [
        "http://127.0.0.1:9400/metrics"
    ] or stream.consumer_metric_urls(s, "localhost") == ["http://127.0.0.1:9400/metrics", "http://[::1]:9400/metrics"]
