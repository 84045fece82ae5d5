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

from mlops.console import words
from mlops.orchestration.steps import DAG_ID
from mlops.services import health
from mlops.settings import Settings


@dataclass(frozen=True)
class ServiceState:
    """One service row: up, with what its check reported, or down, with the reason in words."""

    name: str
    up: bool
    detail: str


def _probe(name: str, check: Callable[[], str]) -> ServiceState:
    try:
        return ServiceState(name, True, check())
    except Exception as exc:  # every failure is a "down" with its reason, whatever the client raised
        return ServiceState(name, False, words.describe(exc))


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


def _s3(settings: Settings) -> str:
    """The S3 check, failing fast on a closed port (the S3 client itself retries with backoff for seconds)."""
    if not health.tcp_open(*health.s3_address(settings)):
        raise ConnectionError(f"nothing listens on {settings.s3_endpoint_url}")
    return health.s3_list_buckets(settings)


def services(settings: Settings, consumer_urls: list[str]) -> list[ServiceState]:
    """Every service's state, probed in parallel so the page waits for the slowest check only; never raises."""
    checks: list[tuple[str, Callable[[], str]]] = [
        ("redis", lambda: health.redis_ping(settings)),
        ("kafka", lambda: health.kafka_metadata(settings)),
        ("s3", lambda: _s3(settings)),
        ("mlflow", lambda: health.mlflow_health(settings)),
        ("airflow", lambda: health.airflow_health(settings)),
    ]
    checks += [(f"inference-{i}", _consumer_check(url)) for i, url in enumerate(consumer_urls)]
    if settings.prometheus_url:
        checks.append(("prometheus", lambda: health.http_ok(health.prometheus_ready_url(settings))))
    with ThreadPoolExecutor(max_workers=len(checks)) as pool:
        states = list(pool.map(lambda c: _probe(*c), checks))
    if not consumer_urls:
        states.append(ServiceState("inference", False, "no consumer configured or resolvable"))
    return states


@dataclass(frozen=True)
class PipelineRun:
    """The last DAG run as the Overview shows it, with a link to it in Airflow's UI."""

    run_id: str
    state: str
    start: str
    end: str
    durations: list[tuple[str, float, str]]  # (task, seconds, state), in the order the tasks started
    link: str


def _short_time(value: str | None) -> str:
    if not value:
        return "-"
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        return value


class AirflowReader:
    """Read-only calls to Airflow's REST API v2 (token from `/auth/token`, as `pipeline.AirflowClient` does).

    Not that client itself: `mlops.orchestration.pipeline` imports the Airflow SDK (through the DAG's
    steps), which costs the console seconds and ~100 MB for two GET requests.
    """

    def __init__(self, settings: Settings, timeout: float = 5) -> None:
        self.base = settings.airflow_url.rstrip("/")
        self.login = {"username": settings.airflow_admin_user, "password": settings.airflow_admin_password}
        self.timeout = timeout
        self.token: str | None = None

    def get(self, path: str, **params: object) -> dict:
        """GET `/api/v2{path}`, logging in on first use; a refused login or a 404 raises a sentence."""
        if self.token is None:
            response = requests.post(f"{self.base}/auth/token", json=self.login, timeout=self.timeout)
            if response.status_code in (401, 403):
                raise PermissionError("Airflow refused the admin login (AIRFLOW_ADMIN_USER / AIRFLOW_ADMIN_PASSWORD)")
            response.raise_for_status()
            self.token = response.json()["access_token"]
        response = requests.get(f"{self.base}/api/v2{path}", params=params, timeout=self.timeout,
                                headers={"Authorization": f"Bearer {self.token}"})  # fmt: skip
        if response.status_code == 404:
            raise LookupError(f"Airflow has no {path} (is the DAG {DAG_ID} deployed?)")
        response.raise_for_status()
        return response.json()


def last_pipeline_run(settings: Settings, public_airflow: str) -> PipelineRun | None:
    """The most recent run of the batch DAG with its task durations (in the order they started); None when
    it never ran. Raises when Airflow is down or refuses the login: the page says which."""
    client = AirflowReader(settings)
    runs = client.get(f"/dags/{DAG_ID}/dagRuns", order_by="-run_after", limit=1).get("dag_runs") or []
    if not runs:
        return None
    run = runs[0]
    run_id = run["dag_run_id"]
    tasks = client.get(f"/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}/taskInstances")["task_instances"]
    tasks.sort(key=lambda ti: (ti.get("start_date") or "9999", ti["task_id"]))
    durations = [(ti["task_id"], float(ti.get("duration") or 0.0), ti.get("state") or "none") for ti in tasks]
    link = f"{public_airflow.rstrip('/')}/dags/{DAG_ID}/runs/{quote(run_id, safe='')}"
    return PipelineRun(run_id, run.get("state") or "-", _short_time(run.get("start_date")),
                       _short_time(run.get("end_date")), durations, link)  # fmt: skip
