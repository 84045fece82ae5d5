"""The monitoring profile scrapes every consumer replica and its dashboard charts metrics that exist."""

from __future__ import annotations

import json
import re

import yaml
from prometheus_client.parser import text_string_to_metric_families

from mlops.consumer.metrics import ConsumerMetrics
from mlops.services.compose_spec import CONSUMER
from mlops.settings import PROJECT_ROOT, Settings

DOCKER = PROJECT_ROOT / "docker"
PROMQL_FUNCTIONS = {"sum", "rate", "increase", "histogram_quantile", "time", "count", "max", "min", "avg", "by", "le"}


def exported_series() -> set[str]:
    """Every series name the consumer exposes (counters get `_total`, histograms `_bucket`/`_sum`/`_count`)."""
    from prometheus_client import generate_latest

    metrics = ConsumerMetrics()
    metrics.requests.labels(type="score", kind="p_like").inc()
    metrics.dead_letters.labels(reason="not_json").inc()
    metrics.retries.labels(reason="redis_unavailable").inc()
    metrics.lag.labels(partition="0").set(3)
    metrics.model_load_seconds.set(1.5)
    metrics.set_model("1", "v1")
    text = generate_latest(metrics.registry).decode()
    names = set()
    for family in text_string_to_metric_families(text):
        names.update(sample.name for sample in family.samples)
    return names


def test_prometheus_scrapes_every_replica_on_the_metrics_port() -> None:
    config = yaml.safe_load((DOCKER / "prometheus" / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    (sd,) = job["dns_sd_configs"]
    assert sd["names"] == [CONSUMER] and sd["type"] == "A", "one A record per `--scale` replica"
    assert sd["port"] == Settings().inference_metrics_port == 9108
    assert job["metrics_path"] == "/metrics"


def test_dashboard_queries_only_exported_metrics() -> None:
    dashboard = json.loads((DOCKER / "grafana" / "dashboards" / "inference.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    assert len(exprs) >= 10
    exported = exported_series() | {"up"}
    for expr in exprs:
        for name in set(re.findall(r"\b(inference_[a-z_]+|up)\b", expr)) - PROMQL_FUNCTIONS:
            assert name in exported, f"dashboard queries {name}, which the consumer does not export: {expr}"
    joined = " ".join(exprs)
    for family in ("inference_requests_total", "inference_dead_letters_total", "inference_retries_total",
                   "inference_end_to_end_seconds_bucket", "inference_batch_size", "inference_model_info",
                   "inference_consumer_lag", "inference_model_load_seconds"):  # fmt: skip
        assert family in joined, f"dashboard has no panel for {family}"


def test_grafana_is_provisioned_with_prometheus_and_the_dashboard(resolved: dict) -> None:
    datasources = yaml.safe_load((DOCKER / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (source,) = datasources["datasources"]
    assert source["url"] == "http://prometheus:9090" and "prometheus" in resolved["services"]
    dashboard = json.loads((DOCKER / "grafana" / "dashboards" / "inference.json").read_text())
    uids = {t["datasource"]["uid"] for p in dashboard["panels"] for t in p.get("targets", [])}
    assert uids == {source["uid"]}
    providers = yaml.safe_load((DOCKER / "grafana" / "provisioning" / "dashboards" / "dashboards.yml").read_text())
    path = providers["providers"][0]["options"]["path"]
    mounted = [v for v in resolved["services"]["grafana"]["volumes"]
               if (v["target"] if isinstance(v, dict) else v.split(":")[1]) == path]  # fmt: skip
    assert mounted, f"grafana: nothing mounted at the provider path {path}"
