"""The Overview page's data: every service up or down, the last pipeline run, the champion.

Each service is probed by its protocol-level health check (`mlops.services.health`, the same checks
`up` and `status` use), all at once with a short timeout, so one dead service costs the page seconds,
not minutes, and shows as "down" with the client's reason.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote

import requests

from mlops.services import health
from mlops.settings import Settings


@dataclass(frozen=True)
class ServiceState:
    name: str
    up: bool
    detail: str


def _probe(name: str, check: Callable[[], str]) -> ServiceState:
    try:
        return ServiceState(name, True, check())
    except Exception as exc:  # every failure is a "down" with its reason, whatever the client raised
        first = str(exc).splitlines()[0] if str(exc) else ""
        return ServiceState(name, False, f"{type(exc).__name__}: {first}"[:200])


def _consumer_check(metrics_url: str) -> Callable[[], str]:
    def check() -> str:
        url = metrics_url.removesuffix("/metrics") + "/healthz"
        try:
            response = requests.get(url, timeout=health.TIMEOUT_S)
        except requests.RequestException as exc:
            raise ConnectionError(f"{url} not answering ({type(exc).__name__})") from exc
        detail = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
        if response.status_code != 200:
            raise RuntimeError(f"not serving: {detail.get('problem') or response.status_code}")
        return f"serving model v{detail.get('model_version')}, feature set {detail.get('feature_set')}"

    return check


def services(settings: Settings, consumer_urls: list[str]) -> list[ServiceState]:
    checks: list[tuple[str, Callable[[], str]]] = [
        ("redis", lambda: health.redis_ping(settings)),
        ("kafka", lambda: health.kafka_metadata(settings)),
        ("s3", lambda: health.s3_list_buckets(settings)),
        ("mlflow", lambda: health.mlflow_health(settings)),
        ("airflow", lambda: health.airflow_health(settings)),
    ]
    checks += [(f"inference-{i}", _consumer_check(url)) for i, url in enumerate(consumer_urls)]
    if settings.prometheus_url:
        checks.append(("prometheus", lambda: health.http_ok(settings.prometheus_url.rstrip("/") + "/-/ready")))
    with ThreadPoolExecutor(max_workers=len(checks)) as pool:
        states = list(pool.map(lambda c: _probe(*c), checks))
    if not consumer_urls:
        states.append(ServiceState("inference", False, "no consumer configured or resolvable"))
    return states


@dataclass(frozen=True)
class PipelineRun:
    run_id: str
    state: str
    start: str
    end: str
    durations: list[tuple[str, float, str]]  # (task, seconds, state), in the DAG's step order
    link: str


def _short_time(value: str | None) -> str:
    if not value:
        return "-"
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        return value


def last_pipeline_run(settings: Settings, public_airflow: str) -> PipelineRun | None:
    """The most recent run of the batch DAG with its task durations; None when it never ran.

    Raises `PipelineError` (bad login) or `requests.RequestException` (Airflow down): the page says which.
    """
    from mlops.orchestration import pipeline

    client = pipeline.AirflowClient(settings.airflow_url, settings.airflow_admin_user,
                                    settings.airflow_admin_password, timeout=5)  # fmt: skip
    runs = client.json("GET", f"/dags/{pipeline.DAG_ID}/dagRuns", params={"order_by": "-run_after", "limit": 1})
    if not runs.get("dag_runs"):
        return None
    run = runs["dag_runs"][0]
    order = {task_id: i for i, task_id in enumerate(pipeline.STEPS)}
    tasks = sorted(client.task_instances(pipeline.DAG_ID, run["dag_run_id"]),
                   key=lambda ti: order.get(ti["task_id"], len(order)))  # fmt: skip
    durations = [(ti["task_id"], float(ti.get("duration") or 0.0), ti.get("state") or "none") for ti in tasks]
    link = f"{public_airflow.rstrip('/')}/dags/{pipeline.DAG_ID}/runs/{quote(run['dag_run_id'], safe='')}"
    return PipelineRun(run["dag_run_id"], run.get("state") or "-", _short_time(run.get("start_date")),
                       _short_time(run.get("end_date")), durations, link)  # fmt: skip
