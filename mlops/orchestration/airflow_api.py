"""The host-side client of Airflow's REST API (v2): the few calls `./run.sh pipeline` makes.

Logs in with SimpleAuthManager's `/auth/token` lazily and again when the token expires; turns a refused
login, a missing DAG or an error status into a `PipelineError` that says which.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import requests


class PipelineError(RuntimeError):
    """Airflow could not be reached, refused us, or the DAG is not there; the message says which."""


def log_lines(content: Any) -> list[str]:
    """Lines of an API v2 task log: structured entries (`event`, `timestamp`, `level`, `error_detail`) or text."""
    lines: list[str] = []
    for entry in content if isinstance(content, list) else [content]:
        if isinstance(entry, str):
            lines.extend(entry.splitlines())
            continue
        event = str(entry.get("event", ""))
        if event.startswith("::group::") or event.startswith("::endgroup::"):
            continue
        stamp = str(entry.get("timestamp", ""))[11:19]
        level = str(entry.get("level", "")).upper()
        lines.append(" ".join(p for p in (stamp, level, event) if p))
        for exc in entry.get("error_detail") or []:  # the exception a task failed with, as structured data
            first, *rest = f"{exc.get('exc_type', 'Exception')}: {exc.get('exc_value', '')}".splitlines() or [""]
            lines.extend(["  " + first, *("    " + r for r in rest)])
    return lines


class AirflowClient:
    """The few calls the pipeline needs; logs in lazily and again when the token expires."""

    def __init__(self, base_url: str, username: str, password: str, timeout: float = 15) -> None:
        self.base_url = base_url.rstrip("/")
        self.username = username
        self.password = password
        self.timeout = timeout
        self.http = requests.Session()
        self._token: str | None = None

    def login(self) -> None:
        """Get a token from `/auth/token`; a refused login is a `PipelineError` naming the settings to fix."""
        resp = self.http.post(
            f"{self.base_url}/auth/token",
            json={"username": self.username, "password": self.password},
            timeout=self.timeout,
        )
        if resp.status_code in (401, 403):
            raise PipelineError(
                f"Airflow at {self.base_url} refused the login of {self.username!r}: "
                "check AIRFLOW_ADMIN_USER / AIRFLOW_ADMIN_PASSWORD in .env"
            )
        resp.raise_for_status()
        self._token = resp.json()["access_token"]

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """An API v2 call with the token; an expired token (401) is renewed once."""
        if self._token is None:
            self.login()
        for attempt in (1, 2):
            resp = self.http.request(
                method,
                f"{self.base_url}/api/v2{path}",
                headers={"Authorization": f"Bearer {self._token}", "Accept": "application/json"},
                timeout=self.timeout,
                **kwargs,
            )
            if resp.status_code == 401 and attempt == 1:
                self.login()
                continue
            return resp
        raise AssertionError("unreachable")

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        """An API v2 call's JSON body; an error status is a `PipelineError` with the status and the body."""
        resp = self.request(method, path, **kwargs)
        if not resp.ok:
            raise PipelineError(f"{method} {path}: HTTP {resp.status_code}: {resp.text[:500]}")
        return resp.json()

    def health(self) -> dict[str, Any]:
        """The scheduler's and DAG processor's heartbeat status; needs no login."""
        resp = self.http.get(f"{self.base_url}/api/v2/monitor/health", timeout=self.timeout)
        resp.raise_for_status()
        return resp.json()

    def dag(self, dag_id: str) -> dict[str, Any] | None:
        """The DAG, or None while the DAG processor has not parsed it (yet)."""
        resp = self.request("GET", f"/dags/{dag_id}")
        if resp.status_code == 404:
            return None
        if not resp.ok:
            raise PipelineError(f"GET /dags/{dag_id}: HTTP {resp.status_code}: {resp.text[:500]}")
        return resp.json()

    def import_errors(self) -> list[dict[str, Any]]:
        """DAG files that failed to import, with their stack traces: why a DAG never appears."""
        return self.json("GET", "/importErrors")["import_errors"]

    def unpause(self, dag_id: str) -> None:
        """A new DAG starts paused: its runs would stay queued until this."""
        self.json("PATCH", f"/dags/{dag_id}", json={"is_paused": False})

    def trigger(self, dag_id: str, run_id: str, conf: Mapping[str, Any]) -> dict[str, Any]:
        """Start a run with our own run id, so that the caller can follow it and name its outputs."""
        body = {"dag_run_id": run_id, "logical_date": None, "conf": dict(conf)}
        return self.json("POST", f"/dags/{dag_id}/dagRuns", json=body)

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        """The run as the API reports it; its `state` says whether it is still going."""
        return self.json("GET", f"/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """Every task of the run with its state and attempt number: what the live view shows."""
        return self.json("GET", f"/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances")["task_instances"]

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int) -> list[str]:
        """The lines of one attempt's log (see `log_lines`)."""
        path = f"/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances/{task_id}/logs/{try_number}"
        return log_lines(self.json("GET", path, params={"full_content": "true"}).get("content", []))
