"""The CLI's stream verbs (`./run.sh recommend|score|dlq|prediction`) and `status` against the real stack:
the session's broker, Redis and MLflow, the pipeline's own champion, and a real consumer (`app.build`) on
the contract's topics, as the platform runs it. Also what that consumer exports (lag, model load time)."""

from __future__ import annotations

import io
import re
import threading
import time

import pytest
from confluent_kafka import Producer
from prometheus_client import generate_latest

from mlops import catalog, cli, dlq, kafka_auth, poke
from mlops.consumer import app
from mlops.status import stream_report
from mlops.topics import REQUESTS

pytestmark = [pytest.mark.integration, pytest.mark.slow]


class Running:
    """A consumer of the contract's `inference-requests` (the topic the CLI sends to) in a thread."""

    def __init__(self, settings) -> None:
        self.service, watcher = app.build(settings, 0)
        assert app.wait_for_model(watcher, self.service)
        self.metrics = self.service.metrics
        self.thread = threading.Thread(target=self.service.run, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Stop and wait: the loop finishes the batch in hand first."""
        self.service.stop()
        self.thread.join(60)
        assert not self.thread.is_alive()


@pytest.fixture(scope="module")
def consumer(settings, champion):
    running = Running(settings)
    yield running
    if running.thread.is_alive():
        running.stop()


def _poke(settings, *argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = poke.main(argv[0], list(argv[1:]), settings, out=out)
    return code, out.getvalue()


def _broker_reports_members(settings) -> bool:
    from confluent_kafka.admin import AdminClient

    from mlops.topics import CONSUMER_GROUP

    admin = AdminClient(kafka_auth.client_config(settings, kafka_auth.PLATFORM))
    return bool(admin.describe_consumer_groups([CONSUMER_GROUP])[CONSUMER_GROUP].result(timeout=10).members)


def _known_user_and_movies(settings, champion) -> tuple[int, list[int]]:
    from mlops.feature_store import RedisFeatureStore

    store = RedisFeatureStore.from_settings(settings)
    return min(store.ids(champion.feature_set, "user")), sorted(store.ids(champion.feature_set, "item"))[:3]


def test_recommend_prints_titles_genres_model_version_and_latency(settings, champion, consumer):
    user, _ = _known_user_and_movies(settings, champion)
    code, text = _poke(settings, "recommend", str(user), "--k", "5")
    assert code == 0, text
    lines = text.splitlines()
    assert lines[0].startswith(f"user {user}: {settings.model_name} v{champion.model_version} (champion)")
    assert re.search(r", \d+ ms through the stream; request cli-[0-9a-f]+$", lines[0])
    assert "score = the model family's ranking score" in text
    rows = [line for line in lines if re.match(r"\s+\d+\. ", line)]
    assert len(rows) == 5
    movies = catalog.movies(settings, champion.feature_set)
    first_id = int(rows[0].split()[2])
    assert movies[first_id].title[:60] in rows[0]  # the title joined from the run's catalog
    assert movies[first_id].genre_list[0] in rows[0]

    # The same answer, read back by its request id from Redis.
    request_id = lines[0].rsplit("request ", 1)[1]
    code, stored = _poke(settings, "prediction", request_id)
    assert code == 0 and f"request {request_id}" in stored and rows[0] in stored and "created_at" in stored


def test_score_prints_p_like_for_each_movie(settings, champion, consumer):
    user, movie_ids = _known_user_and_movies(settings, champion)
    code, text = _poke(settings, "score", str(user), *map(str, movie_ids))
    assert code == 0, text
    assert "score = P(rating >= 4 | the user rates it)" in text
    rows = [line for line in text.splitlines() if re.match(r"\s+\d+\. ", line)]
    assert sorted(int(r.split()[2]) for r in rows) == movie_ids


def test_unknown_user_is_answered_by_the_fallback_and_said_so(settings, champion, consumer):
    code, text = _poke(settings, "recommend", "987654321", "--k", "3")
    assert code == 0, text
    assert f"user 987654321 is unknown to feature set {champion.feature_set}" in text
    assert "cold-start fallback (popular movies)" in text


def test_what_goes_wrong_is_one_sentence(settings, champion, consumer, capsys, free_port):
    assert _poke(settings, "prediction", "never-sent-xyz")[0] == 1
    assert "no prediction for request 'never-sent-xyz' in Redis" in capsys.readouterr().err
    assert _poke(settings, "recommend", "1", "--k", "0")[0] == 2
    assert "k is 0" in capsys.readouterr().err
    down = settings.replace(kafka_bootstrap_servers=f"127.0.0.1:{free_port()}")
    assert _poke(down, "recommend", "1")[0] == 1
    assert "is not reachable: is the stack up?" in capsys.readouterr().err
    assert _poke(down, "dlq")[0] == 1
    # Through the CLI entry point: the verb and its options reach the poke module.
    assert cli.main(["prediction", "never-sent-xyz"]) == 1


def test_dlq_decodes_and_counts_the_verifier_apart_and_status_shows_it(settings, champion, consumer):
    mark = dlq.verifier_tag()
    producer = Producer(kafka_auth.client_config(settings, kafka_auth.PLATFORM))
    producer.produce(REQUESTS, key=b"1", value=f"client garbage {mark[-6:]}".encode())  # not from verify
    producer.produce(REQUESTS, key=b"1", value=f"this is not json {mark}".encode())  # what verify sends
    producer.produce(REQUESTS, key=b"1", value=b'{"request_id": "cli-k", "user_id": 1, "k": 500}')
    assert producer.flush(10) == 0

    def newest() -> list[dlq.DeadLetter]:
        return dlq.read(settings)

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any(mark.encode() in d.original for d in newest()):
        time.sleep(0.5)
    letters = newest()
    mine = [d for d in letters if mark[-6:].encode() in d.original]
    assert [(d.reason, d.verifier) for d in mine] == [("not_json", False), ("not_json", True)]

    code, text = _poke(settings, "dlq", "--reason", "k_out_of_range", "--last", "1")
    assert code == 0 and "k_out_of_range  from inference-requests" in text and '"k": 500' in text
    code, text = _poke(settings, "dlq", "--last", "2")
    assert f"this is not json {mark}" in text and "not_json  [verify]" in text
    counts = dlq.tally(letters)
    assert counts.verifier >= 1 and counts.by_reason["not_json"] >= 1 and counts.by_reason["k_out_of_range"] >= 1
    assert f"({counts.verifier} sent by ./run.sh verify on purpose" in text

    report = stream_report(settings)
    dlq_line = next(line for line in report.splitlines() if line.startswith("DLQ size:"))
    assert "sent by ./run.sh verify on purpose; clients': " in dlq_line and "k_out_of_range" in dlq_line
    if _broker_reports_members(settings):  # Tansu (the fixture broker without KAFKA_HOME) reports none
        assert re.search(r"^  inference-0 +partitions p\d", report, re.M), report  # the live consumer, its lag
    else:
        assert "consumers: none in group 'inference-consumers' right now" in report
    assert f"@champion): v{champion.model_version}" in report
    assert re.search(r"^  nDCG@10: model \d\.\d{4} \| popularity \d\.\d{4}", report, re.M), report


def test_the_consumer_exports_lag_and_model_load_time_without_created_series(settings, champion, consumer):
    user, _ = _known_user_and_movies(settings, champion)
    assert _poke(settings, "recommend", str(user))[0] == 0
    text = generate_latest(consumer.metrics.registry).decode()
    assert "_created" not in text
    load = float(re.search(r"^inference_model_load_seconds (\S+)$", text, re.M).group(1))
    assert 0 < load < 600
    assert re.search(r'^inference_consumer_lag\{partition="\d+"\} \d', text, re.M), text
    assert 'inference_requests_total{kind="rank_score",type="topk",variant="champion"}' in text
    assert "inference_dead_letters_total{" in text and "inference_errors_total" not in text


def test_no_answer_in_time_is_said(settings, champion, consumer, capsys):
    """Last: stops the consumer, so nothing answers."""
    consumer.stop()
    user, _ = _known_user_and_movies(settings, champion)
    assert _poke(settings, "recommend", str(user), "--timeout", "2")[0] == 1
    assert "within 2s: is an inference consumer running" in capsys.readouterr().err


def test_dlq_names_the_valid_reasons_and_refuses_another(capsys):
    """`dlq --reason` takes only a reason the DLQ can hold; its help and its refusal list them all."""
    from mlops import poke
    from mlops.schemas import REASONS

    assert poke.parser("dlq").parse_args(["--reason", "not_json"]).reason == "not_json"
    with pytest.raises(SystemExit):
        poke.parser("dlq").parse_args(["--reason", "notjson"])
    refusal = capsys.readouterr().err
    assert "invalid choice: 'notjson'" in refusal and all(reason in refusal for reason in REASONS)
    assert all(reason in poke.parser("dlq").format_help() for reason in REASONS)
