"""`./run.sh verify --parity`: the stream, asked through Kafka, reproduces the champion's logged test figures.

Offline evaluation ranks and scores the held-out users on the evaluation set (train + validation history).
Users are answered from the serving set, which knows every rating, so its answers cannot be scored against
the test ratings. This check starts a consumer of its own on private topics with SERVE_FEATURE_SET=evaluation,
asks it for every test user's top-10 and for the P(like) of every test pair, and computes nDCG@10 and AUC
from the answers with the evaluation module's own code. They must equal the metrics logged with the
champion's MLflow run (`ndcg_at_10`, `test_auc`) to TOLERANCE: the same model, features and ranking code,
only now over the real broker, Redis and the consumer's compiled trees.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from mlops import evaluation, schemas
from mlops.consumer.client import exchange
from mlops.consumer.kafka import StreamTopics, delete_topics, ensure_topics
from mlops.consumer.spawn import Process, free_port, wait_healthy
from mlops.layout import split_key
from mlops.registry import CHAMPION, client, version_by_alias
from mlops.schemas import PLATFORM, ScoreRequest, TopKRequest
from mlops.settings import Settings

TOLERANCE = 1e-6
"""Served vs logged: float rounding only (compiled trees agree with LightGBM to ~1e-15)."""


def served_figures(settings: Settings, topics: StreamTopics, test: Any, timeout: float) -> dict[str, float]:
    """nDCG@10 of the served top-10 of every test user and AUC of the served P(like) of every test pair."""
    from sklearn.metrics import roc_auc_score

    relevant, _ = evaluation.relevant_sets(test)
    tag = uuid.uuid4().hex[:8]
    requests: list[Any] = [TopKRequest(f"parity-{tag}-k{u}", u, evaluation.K, PLATFORM) for u in sorted(relevant)]
    pairs = test.groupby("user_id")["movie_id"].apply(lambda s: [int(m) for m in s]).to_dict()
    for user, movies in sorted(pairs.items()):
        for start in range(0, len(movies), schemas.MAX_MOVIE_IDS):
            chunk = tuple(movies[start : start + schemas.MAX_MOVIE_IDS])
            requests.append(ScoreRequest(f"parity-{tag}-s{user}-{start}", int(user), chunk, PLATFORM))
    with exchange(settings, topics) as ex:
        for request in requests:
            ex.sender.send(request)
        ex.sender.flush()
        missing = ex.results.wait_for([r.request_id for r in requests], timeout)
        if missing:
            raise RuntimeError(f"{len(missing)} of {len(requests)} parity requests unanswered in {timeout:.0f}s")
        answers = {r.request_id: schemas.parse_result(ex.results.received[r.request_id][1]) for r in requests}
    recs = {r.user_id: [x["movie_id"] for x in answers[r.request_id]["recommendations"]]
            for r in requests if isinstance(r, TopKRequest)}  # fmt: skip
    scores: dict[tuple[int, int], float] = {}
    for r in requests:
        if isinstance(r, ScoreRequest):
            scores.update({(r.user_id, int(m)): float(p) for m, p in answers[r.request_id]["scores"].items()})
    p = [scores[(int(u), int(m))] for u, m in zip(test["user_id"], test["movie_id"], strict=True)]
    y = (test["rating"] >= evaluation.LIKE_THRESHOLD).astype(int).to_numpy()
    return {"ndcg_at_10": evaluation.ranking_metrics(recs, relevant)["ndcg_at_10"],
            "test_auc": float(roc_auc_score(y, p)), "users": len(recs), "pairs": len(p)}  # fmt: skip


def check_parity(settings: Settings, timeout: float = 300.0) -> int:
    """Start an evaluation-set consumer, compare its served figures with the champion's logged ones; 0 if equal."""
    from mlops.spark_io import read_pandas

    version = version_by_alias(settings, CHAMPION)
    if version is None:
        print(f"FAILED: no `{CHAMPION}` model yet (run the pipeline)")
        return 1
    logged = client(settings).get_run(version.run_id).data.metrics
    run_id = version.tags.get("pipeline_run_id", "")
    test = read_pandas(split_key(run_id, "test"), settings)
    print(f"champion v{version.version} (run {run_id}), evaluation set "
          f"{version.tags.get('evaluation_feature_set', version.tags.get('feature_set'))}: "
          f"{test['user_id'].nunique():,} test users, {len(test):,} test pairs")  # fmt: skip
    namespace = f"parity{uuid.uuid4().hex[:8]}"
    topics = StreamTopics.namespaced(namespace)
    ensure_topics(settings, topics)
    port = free_port()
    consumer = Process(["-m", "mlops.consumer.app", "--namespace", namespace, "--metrics-port", str(port)],
                       f"parity-consumer-{namespace}", settings,
                       {"SERVE_FEATURE_SET": "evaluation", "DRIFT_TRACKING": "false"})  # fmt: skip
    started = time.monotonic()
    try:
        wait_healthy(port, consumer)
        served = served_figures(settings, topics, test, timeout)
    finally:
        consumer.stop()
        delete_topics(settings, topics)
    failed = False
    for name in ("ndcg_at_10", "test_auc"):
        diff = abs(served[name] - logged[name])
        ok = diff <= TOLERANCE
        failed |= not ok
        print(f"  {name:<11} served {served[name]:.6f}  logged {logged[name]:.6f}  |diff| {diff:.1e}  "
              f"{'OK' if ok else 'MISMATCH'}")  # fmt: skip
    print(f"{'FAILED' if failed else 'OK'}: parity over the stream ({served['users']:,} top-10 lists, "
          f"{served['pairs']:,} scored pairs, {time.monotonic() - started:.0f}s)")  # fmt: skip
    return 1 if failed else 0
