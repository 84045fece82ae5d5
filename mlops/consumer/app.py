"""Wiring of one consumer process: settings -> store, rankers, Kafka clients, metrics server, model watcher,
feedback reader.

`python inference/queue_consumer.py --index i` runs it; process i serves its metrics on
INFERENCE_METRICS_PORT + i, so the N processes that local mode starts never collide. Without `--index` (Docker's
replicas, which share one command) the process is named after its host, a container's own id.
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis
from confluent_kafka import Consumer, Producer

from mlops import drift_windows
from mlops.consumer import kafka
from mlops.consumer.drift_watch import DriftWatch
from mlops.consumer.failures import describe
from mlops.consumer.feedback import FeedbackReader
from mlops.consumer.kafka import StreamTopics
from mlops.consumer.metrics import ConsumerMetrics, serve
from mlops.consumer.processor import BatchProcessor
from mlops.consumer.reload import ChallengerSource, ModelWatcher, RankerHolder
from mlops.consumer.service import MAX_BACKOFF_S, StreamConsumer
from mlops.feature_store import RedisFeatureStore
from mlops.feedback import FeedbackStore
from mlops.kafka_auth import INFERENCE
from mlops.live_ratings import LiveRatings
from mlops.registry import CHALLENGER, CHAMPION, champion_version
from mlops.settings import Settings, get_settings

log = logging.getLogger("mlops.consumer")

RELOAD_INTERVAL_S = 10.0


def build(
    settings: Settings, index: int | str = 0, topics: StreamTopics | None = None, **consumer_overrides: Any
) -> tuple[StreamConsumer, ModelWatcher]:
    """A consumer and its model watcher, not started; the caller loads the first model and runs them."""
    from mlops.serving import Ranker  # heavy (LightGBM, MLflow): imported when a process really serves

    name = f"inference-{index}"
    topics = topics or StreamTopics()
    metrics = ConsumerMetrics()
    holder = RankerHolder()

    def on_swap(ranker: Any) -> None:
        metrics.set_model(str(ranker.info.model_version), str(ranker.info.feature_set))
        metrics.reloads.inc()
        if drift_watch is not None:
            drift_watch.use(ranker)

    def on_challenger(ranker: Any | None) -> None:
        info = None if ranker is None else ranker.info
        metrics.set_model(info and str(info.model_version), info and str(info.feature_set), CHALLENGER)
        metrics.challenger_share.set(0.0 if ranker is None else share)

    holder.on_swap = on_swap
    holder.on_challenger = on_challenger
    share, problem = settings.challenger_share()
    if problem:
        log.error("%s", problem)
    store = RedisFeatureStore.from_settings(settings)
    client = redis.Redis.from_url(settings.redis_url)
    processor = BatchProcessor(store, client, settings.prediction_ttl_seconds, share)

    def on_client_error(error: Any) -> None:  # librdkafka's client-level errors, e.g. a refused sign-in
        service.client_error(error)

    service = StreamConsumer(
        Consumer(kafka.consumer_config(settings, topics.group, role=INFERENCE,
                                       **{"client.id": name, "error_cb": on_client_error, **consumer_overrides})),
        Producer(kafka.producer_config(settings, role=INFERENCE, **{"client.id": name, "error_cb": on_client_error})),
        processor, holder, metrics, settings.inference_batch_size, settings.inference_batch_timeout_ms, name,
        topics,
    )  # fmt: skip
    drift_watch = None
    if settings.drift_tracking:
        drift_client = redis.Redis.from_url(settings.redis_url, socket_timeout=5)
        drift_watch = DriftWatch(metrics.registry, store, settings.drift_window, service.stopping,
                                 min_rows=settings.drift_min_rows,
                                 consumer=drift_windows.consumer_id(topics.group, name),
                                 publisher=lambda window: drift_windows.publish(drift_client, window))  # fmt: skip
    challenger = None
    if share > 0:  # else the challenger is never looked up nor loaded: the hot path stays the champion's alone
        challenger = ChallengerSource(
            lambda: champion_version(settings, CHALLENGER),
            lambda: _timed_load(lambda: Ranker.load(settings, store, alias=CHALLENGER), metrics),
            share,
        )
    watcher = ModelWatcher(
        holder,
        lambda: champion_version(settings),
        lambda: _timed_load(lambda: Ranker.load(settings, store, alias=CHAMPION), metrics),
        RELOAD_INTERVAL_S,
        service.stopping,
        challenger,
    )
    service.companions.append(FeedbackReader(
        Consumer(kafka.consumer_config(settings, topics.feedback_group, role=INFERENCE,
                                       **{"client.id": f"{name}-feedback", "error_cb": on_client_error})),
        Producer(kafka.producer_config(settings, role=INFERENCE,
                                       **{"client.id": f"{name}-feedback", "error_cb": on_client_error})),
        FeedbackStore.from_settings(settings, client), metrics, topics, service.stopping, LiveRatings(client),
        lambda: None if holder.ranker is None else holder.ranker.core.catalog,
    ))  # fmt: skip
    return service, watcher


def _timed_load(load: Callable[[], Any], metrics: ConsumerMetrics) -> Any:
    """Load a model and record how long it took (inference_model_load_seconds)."""
    started = time.perf_counter()
    ranker = load()
    metrics.model_load_seconds.set(time.perf_counter() - started)
    return ranker


def wait_for_model(watcher: ModelWatcher, service: StreamConsumer) -> bool:
    """Block until a champion is loaded (a fresh stack has none until the first pipeline run; a champion
    whose artifacts cannot be loaded now may load later, or be replaced): retried with backoff, and why
    it waits is what `/healthz` says meanwhile."""
    delay = 1.0
    while not service.stopping.is_set():
        try:
            if watcher.check_once() or watcher.holder.ranker is not None:
                service.report("model", None)
                return True
            reason = f"no `{CHAMPION}` model registered yet (run the pipeline)"
        except Exception as exc:
            reason = f"cannot load the `{CHAMPION}` model: {describe(exc)}"
        log.warning("%s: retrying in %.0fs (requests stay queued)", reason, delay)
        service.report("model", reason)
        service.stopping.wait(delay)
        delay = min(delay * 2, MAX_BACKOFF_S * 6)
    return False


def prelude(parser: argparse.ArgumentParser, argv: Sequence[str] | None, namespace_required: bool = False
            ) -> tuple[argparse.Namespace, Settings, StreamTopics]:  # fmt: skip
    """What every consumer process does first (this service and the benchmark's naive baseline): parse
    the arguments (plus `--namespace`), log to stderr, load the settings, create the namespace's topics."""
    parser.add_argument(
        "--namespace", default=None, required=namespace_required,
        help="use private topics `<topic>.<namespace>` and group (benchmarks, tests); default: the contract's",
    )  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    topics = StreamTopics.namespaced(args.namespace)
    if args.namespace:
        kafka.ensure_topics(settings, topics)
    return args, settings, topics


def consumer_label(index: int | None) -> int | str:
    """What names the process (`inference-<label>`: its client id, its drift window's key): the index local mode
    gives, else the host name. Compose's replicas all run one command, and one shared name would make their
    drift windows overwrite each other."""
    return index if index is not None else socket.gethostname()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of one consumer process: serve metrics and health, wait for a model, consume until signalled."""
    parser = argparse.ArgumentParser(description="Kafka inference consumer (micro-batching, idempotent, hot reload)")
    parser.add_argument(
        "--index",
        type=int,
        default=None,
        help="process number i: metrics on INFERENCE_METRICS_PORT + i (none: port + 0, named after the host)",
    )
    parser.add_argument("--metrics-port", type=int, default=None, help="override the metrics/health port")
    parser.add_argument("--reload-interval", type=float, default=RELOAD_INTERVAL_S, help="seconds between checks")
    args, settings, topics = prelude(parser, argv)
    service, watcher = build(settings, consumer_label(args.index), topics)
    watcher.interval = args.reload_interval
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: service.stop())
    port = args.metrics_port if args.metrics_port is not None else settings.inference_metrics_port + (args.index or 0)
    server = serve(port, service.metrics, service.health, settings.inference_metrics_host)
    try:
        if not wait_for_model(watcher, service):
            return 0
        watcher.start()
        return service.run()
    finally:
        server.shutdown()


if __name__ == "__main__":
    sys.exit(main())
