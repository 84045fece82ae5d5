"""The original design, kept only as the benchmark's baseline: one message at a time.

Per message: one Redis GET of the features, one model call, one SET of the result (plus publishing it,
so the benchmark can time it the same way as the stream). Offsets are auto-committed, which is lenient
to the baseline (no synchronous commit per message). Same model, same feature code, same topics layout.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence

import redis
from confluent_kafka import Consumer, Producer

from mlops import schemas
from mlops.consumer.app import prelude
from mlops.consumer.kafka import consumer_config, producer_config
from mlops.feature_store import RedisFeatureStore
from mlops.kafka_auth import INFERENCE
from mlops.registry import CHAMPION

log = logging.getLogger("mlops.bench.naive")


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the namespace's requests one at a time until SIGTERM: the baseline the stream is timed against."""
    from mlops.serving import Ranker

    parser = argparse.ArgumentParser(description="naive one-message-at-a-time consumer (benchmark baseline)")
    _, settings, topics = prelude(parser, argv, namespace_required=True)
    store = RedisFeatureStore.from_settings(settings)
    ranker = Ranker.load(settings, store, alias=CHAMPION)
    info = ranker.info
    client = redis.Redis.from_url(settings.redis_url)
    consumer = Consumer(consumer_config(settings, topics.group, role=INFERENCE, **{"enable.auto.commit": True}))
    producer = Producer(producer_config(settings, role=INFERENCE))
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    consumer.subscribe([topics.requests])
    log.info("naive consumer ready on %s", topics.requests)
    while not stopping:
        message = consumer.poll(0.5)
        if message is None or message.error() is not None:
            continue
        try:
            request = schemas.parse_request(message.value())
        except schemas.InvalidRequest:
            continue
        if request.kind == schemas.SCORE:
            movies = list(request.movie_ids)
            online = store.get_online_features([request.user_id], movies, info.feature_set, live=ranker.live)
            scores, flags = ranker.score_with_flags([ranker.users(online)[request.user_id]], [movies])
            payload = schemas.score_result(request, scores[0], str(info.model_version), str(info.feature_set),
                                           bool(flags[0]), schemas.utc_now_iso())  # fmt: skip
        else:
            online = store.get_online_features([request.user_id], [], info.feature_set, live=ranker.live)
            recs, flags = ranker.recommend_with_flags([ranker.users(online)[request.user_id]], [request.k])
            payload = schemas.topk_result(request, recs[0], str(info.model_version), str(info.feature_set),
                                          bool(flags[0]), schemas.utc_now_iso())  # fmt: skip
        client.set(schemas.prediction_key(request.request_id), payload, ex=settings.prediction_ttl_seconds)
        producer.produce(topics.predictions, payload, schemas.request_key(request.user_id))
        producer.poll(0)
    consumer.close()
    producer.flush(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
