"""Prometheus in local mode: the spec `up` uses, the shared rules file, and an alert that really fires.

The integration test runs the real pieces: a consumer process started from its local-mode spec (it serves
/metrics while it waits for a champion, which is all a scrape needs) and Debian's Prometheus started from
`specs.prometheus`, then stops the consumer and waits for the consumer-down alert.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests
import yaml

from mlops import drift
from mlops.services import process, specs
from mlops.settings import Settings
from mlops.status import alerts_line

pytestmark = pytest.mark.skipif(shutil.which("prometheus") is None, reason="Debian's `prometheus` is not installed")

RULES = specs.PROMETHEUS_RULES


def rules() -> dict[str, dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule.get("alert") or rule["record"]: rule for group in groups for rule in group["rules"]}


def test_rules_file_passes_promtool() -> None:
    result = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_cover_the_issue_alerts_and_the_dlq_reasons() -> None:
    found = rules()
    for alert in ("InferenceConsumerDown", "InferenceDeadLettersGrowing", "InferenceConsumerLagHigh",
                  "InferenceLatencyP99High", "InferenceFeatureDrift", "InferencePredictionDrift"):  # fmt: skip
        assert alert in found, alert
    assert "> 0.05" in found["InferenceLatencyP99High"]["expr"]  # the 50 ms p99 target
    for alert in ("InferenceFeatureDrift", "InferencePredictionDrift"):  # the threshold the stream reports by
        assert found[alert]["expr"].endswith(f"> {drift.PSI_THRESHOLD}"), found[alert]["expr"]
    # the DLQ rule counts dead letters (every reason), never retried failures
    assert "inference_dead_letters_total" in found["inference:dead_letters:rate5m"]["expr"]
    assert "inference_retries_total" in found["inference:retries:rate5m"]["expr"]


def test_no_alert_text_prints_a_rate_with_a_metric_prefix() -> None:
    """`humanize` prints 0.01 as "10m", which reads as ten million: rates below one are printed as numbers."""
    for name, rule in rules().items():
        for text in rule.get("annotations", {}).values():
            assert "humanize }}" not in text, f"{name}: {text}"
    summary = rules()["InferenceDeadLettersGrowing"]["annotations"]["summary"]
    assert 'printf "%.3f"' in summary and "dead letters/s" in summary


def test_rules_query_only_metrics_the_consumer_exports() -> None:
    """A renamed metric must not leave a rule that silently matches nothing."""
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from mlops.consumer.drift_watch import DriftGauges
    from mlops.consumer.metrics import ConsumerMetrics

    metrics = ConsumerMetrics()
    metrics.requests.labels(type="score", kind="p_like", variant="champion").inc()
    metrics.dead_letters.labels(reason="not_json").inc()
    metrics.retries.labels(reason="redis_unavailable").inc()
    metrics.lag.labels(partition="0").set(1)
    metrics.latency.observe(0.01)
    gauges = DriftGauges(metrics.registry)
    gauges.feature_psi.labels(feature="f", model_version="1").set(0.1)
    gauges.prediction_psi.labels(model_version="1").set(0.1)
    text = generate_latest(metrics.registry).decode()
    exported = {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}
    for name, rule in rules().items():
        for metric in set(re.findall(r"\b(inference_[a-z_]+)\b", rule["expr"])):
            assert metric in exported, f"rule {name} queries {metric}, which the consumer does not export"


def test_docker_prometheus_loads_the_same_rules_file() -> None:
    docker = specs.PROJECT_ROOT / "docker-compose.yml"
    config = yaml.safe_load((RULES.parent / "prometheus.yml").read_text())
    mounts = yaml.safe_load(docker.read_text())["services"]["prometheus"]["volumes"]
    assert config["rule_files"] == ["/etc/prometheus/rules.yml"]
    assert "./docker/prometheus/rules.yml:/etc/prometheus/rules.yml:ro" in mounts


def test_config_scrapes_every_consumer(base_settings: Settings) -> None:
    settings = base_settings.replace(inference_consumers=3, inference_metrics_port=9300)
    config = specs.prometheus_config(settings)
    (job,) = config["scrape_configs"]
    assert job["static_configs"][0]["targets"] == ["127.0.0.1:9300", "127.0.0.1:9301", "127.0.0.1:9302"]
    assert config["rule_files"] == [str(RULES)]


def _get(url: str) -> dict:
    response = requests.get(url, timeout=5)
    response.raise_for_status()
    return response.json()["data"]


def _wait(what: str, probe, timeout_s: float, log: Path):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = probe()
        if result:
            return result
        time.sleep(1)
    raise AssertionError(f"{what} within {timeout_s:.0f}s; prometheus log: {log.read_text()[-1500:]}")


@pytest.mark.integration
def test_prometheus_scrapes_a_real_consumer_and_fires_consumer_down(
    base_settings: Settings, tmp_path: Path, free_port
) -> None:
    settings = base_settings.replace(prometheus_url=f"http://127.0.0.1:{free_port()}", inference_consumers=1)
    # A test copy of the rules with every `for:` at 0s, so the alert fires at the first evaluation.
    fast_rules = tmp_path / "rules.yml"
    fast_rules.write_text(re.sub(r"for: \S+", "for: 0s", RULES.read_text()))
    (consumer,) = specs.inference(settings)
    prometheus = specs.prometheus(settings, tmp_path / "prometheus", rules=fast_rules)
    consumer_log, prometheus_log = tmp_path / "consumer.log", tmp_path / "prometheus.log"
    consumer_proc = process.start(consumer, consumer_log, die_with_parent=True)
    prometheus_proc = None
    try:
        process.wait_ready(consumer, consumer_proc, consumer_log)
        prometheus_proc = process.start(prometheus, prometheus_log, die_with_parent=True)
        process.wait_ready(prometheus, prometheus_proc, prometheus_log)
        api = settings.prometheus_url + "/api/v1"
        instance = f"127.0.0.1:{consumer.port}"

        def target_health() -> str | None:
            targets = _get(api + "/targets")["activeTargets"]
            return next((t["health"] for t in targets if t["labels"]["instance"] == instance), None)

        _wait("the consumer's target up", lambda: target_health() == "up", 60, prometheus_log)
        scraped = _get(api + "/query?query=" + f'up{{job="inference",instance="{instance}"}}')["result"]
        assert scraped and scraped[0]["value"][1] == "1"
        groups = {g["name"] for g in _get(api + "/rules")["groups"]}
        assert groups == {"inference-recording", "inference-alerts"}

        def down_alert() -> list[dict]:
            return [
                a for a in _get(api + "/alerts")["alerts"]
                if a["labels"]["alertname"] == "InferenceConsumerDown" and a["state"] == "firing"
            ]  # fmt: skip

        assert not down_alert(), "the consumer is up: nothing may fire yet"
        assert alerts_line(settings) == "no alert firing"
        process.stop(consumer_proc.pid)
        (alert,) = _wait("InferenceConsumerDown firing", down_alert, 90, prometheus_log)
        assert alert["labels"]["instance"] == instance and alert["labels"]["severity"] == "critical"
        assert f"InferenceConsumerDown ({instance})" in alerts_line(settings)  # what `./run.sh status` prints
    finally:
        process.stop(consumer_proc.pid)
        if prometheus_proc is not None:
            process.stop(prometheus_proc.pid)
