"""The console's routes: a login, five pages, an image proxy and a health endpoint.

Every page gathers its sections with `attempt`, so a service that is down turns into a sentence in its
section while the rest of the page renders; an unexpected error anywhere becomes a short error page
(the traceback goes to the console's log, never to the browser).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, quote

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from mlops.console import auth, charts, model, monitoring, overview, stream, topics, tryit, words
from mlops.drift import PSI_THRESHOLD
from mlops.schemas import REASONS
from mlops.settings import Settings
from mlops.topics import DLQ, REQUESTS

log = logging.getLogger(__name__)
T = TypeVar("T")
TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
OPEN_PATHS = ("/login", "/healthz")
DRIFT_BARS = 12  # the most drifted inputs charted; the table lists them all


@dataclass(frozen=True)
class Links:
    """Browser-facing URLs of the other UIs (in Docker mode they differ from the in-network ones)."""

    airflow: str
    mlflow: str


def attempt(fn: Callable[[], T], what: str) -> tuple[T | None, str | None]:
    """(value, None) or (None, a sentence saying what could not be read and why)."""
    try:
        return fn(), None
    except Exception as exc:
        log.info("console: %s failed: %s: %s", what, type(exc).__name__, exc)
        return None, f"Could not read {what}: {words.describe(exc, (model.MlflowProblem,))}"[:400]


async def posted_form(request: Request) -> dict[str, str]:
    """An url-encoded form body as field -> first value (no python-multipart needed for two small forms)."""
    return {k: v[0] for k, v in parse_qs((await request.body()).decode(errors="replace")).items()}


def create_app(
    settings: Settings, links: Links | None = None, consumers_host: str | None = None, sample: bool = True
) -> FastAPI:
    """The console app; `sample=False` skips the background sampler (tests: the Stream page then samples once)."""
    links = links or Links(settings.airflow_url, settings.mlflow_tracking_uri)
    key = auth.new_key()
    sampler = stream.Sampler(settings, consumers_host)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        if sample:
            sampler.start()
        yield
        sampler.stop()

    app = FastAPI(title="MLOps platform console", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)  # fmt: skip
    app.state.sampler = sampler

    def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        context.update(links=links, user=auth.session_user(key, request.cookies.get(auth.COOKIE)),
                       path=request.url.path, settings=settings)  # fmt: skip
        return TEMPLATES.TemplateResponse(request, template, context, status_code=status)

    @app.middleware("http")
    async def require_login(request: Request, call_next):
        if request.url.path in OPEN_PATHS or auth.session_user(key, request.cookies.get(auth.COOKIE)):
            return await call_next(request)
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> HTMLResponse:
        log.exception("console: %s failed", request.url.path)
        return render(request, "error.html", status=500, message=f"This page failed: {type(exc).__name__}. "
                      "The console's log has the details.")  # fmt: skip

    @app.get("/healthz", response_class=PlainTextResponse)
    async def healthz() -> str:
        return "ok"

    @app.get("/login", response_class=HTMLResponse)
    async def login_form(request: Request, next: str = "/") -> HTMLResponse:
        return render(request, "login.html", next=auth.safe_next(next), error=None)

    @app.post("/login")
    async def login(request: Request) -> Response:
        form = await posted_form(request)
        target = auth.safe_next(form.get("next"))
        if not auth.credentials_match(form.get("username", ""), form.get("password", ""),
                                      settings.airflow_admin_user, settings.airflow_admin_password):  # fmt: skip
            return render(request, "login.html", status=401, next=target,
                          error="Wrong user name or password (the console uses the Airflow admin login).")  # fmt: skip
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(auth.COOKIE, auth.make_session(key, form["username"]), max_age=auth.SESSION_SECONDS,
                            httponly=True, samesite="strict")  # fmt: skip
        return response

    @app.get("/logout")
    async def logout() -> Response:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(auth.COOKIE)
        return response

    @app.get("/", response_class=HTMLResponse)
    async def overview_page(request: Request) -> HTMLResponse:
        def gather() -> dict[str, Any]:
            urls = stream.consumer_metric_urls(settings, consumers_host)
            services = overview.services(settings, urls)
            run, run_problem = attempt(lambda: overview.last_pipeline_run(settings, links.airflow),
                                       "the last pipeline run from Airflow")  # fmt: skip
            champion, champion_problem = attempt(lambda: model.version_by_alias(settings, "champion"),
                                                 "the champion from MLflow")  # fmt: skip
            durations = charts.bar_chart("Task durations of the last run", [(t, s) for t, s, _ in run.durations],
                                         unit="s") if run else None  # fmt: skip
            return dict(services=services, run=run, run_problem=run_problem, champion=champion,
                        champion_problem=champion_problem, durations_chart=durations, headline=model.HEADLINE,
                        champion_link=model.mlflow_version_link(links.mlflow, settings.model_name, champion.version)
                        if champion else None)  # fmt: skip

        return render(request, "overview.html", **await run_in_threadpool(gather))

    @app.get("/stream", response_class=HTMLResponse)
    async def stream_page(request: Request) -> HTMLResponse:
        def gather() -> dict[str, Any]:
            if not sampler.is_alive() and not sampler.ring.snapshot():
                sampler.sample_once()  # sampling off (tests): one sample so the page has the current state
            v = stream.view(sampler, settings)
            w = v.window

            def points(values: list) -> list[tuple[float, float | None]]:
                return list(zip(w.times, values, strict=True))

            series = v.consumer_series
            throughput = charts.line_chart("Throughput", {"requests in (topic)": points(w.incoming_per_s),
                                                          "answered (consumers)": series["answered_per_s"]},
                                           unit="messages/s")  # fmt: skip
            latency = charts.line_chart("End-to-end latency", {"p50": series["p50_ms"], "p99": series["p99_ms"]},
                                        unit="ms")  # fmt: skip
            lag_chart = charts.line_chart("Consumer lag (all partitions)", {"lag": points(w.lag_total)},
                                          unit="messages")  # fmt: skip
            dlq_chart = charts.line_chart("Dead letters", {"DLQ records/s": points(w.dlq_per_s)}, unit="records/s")
            lag_bars = charts.bar_chart(f"Lag per partition of {REQUESTS} now",
                                        [(f"partition {p}", float(n)) for p, n in v.lag.items()])  # fmt: skip

            def newest(values: list) -> float | None:
                return next((x for x in reversed(values) if x is not None), None)

            last = {"incoming": newest(w.incoming_per_s), "dlq": newest(w.dlq_per_s),
                    **{k: newest([x for _, x in series[f]]) for k, f in
                       (("answered", "answered_per_s"), ("p50", "p50_ms"), ("p99", "p99_ms"))}}  # fmt: skip
            return dict(view=v, charts=[throughput, latency, lag_chart, dlq_chart, lag_bars], last=last,
                        samples=len(sampler.ring.snapshot()), every=stream.SAMPLE_EVERY_S)  # fmt: skip

        return render(request, "stream.html", **await run_in_threadpool(gather))

    @app.get("/kafka", response_class=HTMLResponse)
    async def kafka_page(request: Request, topic: str = REQUESTS, n: int = 20) -> HTMLResponse:
        def gather() -> dict[str, Any]:
            rows, rows_problem = attempt(lambda: topics.topics(settings), "the topics from the broker")
            messages, messages_problem = (None, None)
            if rows is not None:
                messages, messages_problem = attempt(lambda: topics.messages(settings, topic, n),
                                                     f"the latest messages of {topic}")  # fmt: skip
            return dict(rows=rows, rows_problem=rows_problem, topic=topic, n=n, messages=messages,
                        messages_problem=messages_problem, dlq=DLQ)  # fmt: skip

        return render(request, "kafka.html", **await run_in_threadpool(gather))

    @app.get("/kafka/dlq", response_class=HTMLResponse)
    async def dlq_page(request: Request, reason: str = "", n: int = 50) -> HTMLResponse:
        def gather() -> dict[str, Any]:
            records, problem = attempt(lambda: topics.dead_letters(settings, n, reason or None),
                                       f"the dead letters on {DLQ}")  # fmt: skip
            counts: dict[str, int] = {}
            for r in records or []:
                counts[r.reason] = counts.get(r.reason, 0) + 1
            return dict(records=records, problem=problem, reason=reason, n=n, reasons=REASONS, counts=counts,
                        dlq=DLQ)  # fmt: skip

        return render(request, "dlq.html", **await run_in_threadpool(gather))

    @app.get("/model", response_class=HTMLResponse)
    async def model_page(request: Request) -> HTMLResponse:
        def gather() -> dict[str, Any]:
            pair, problem = attempt(lambda: model.champion_and_challenger(settings), "the registry from MLflow")
            champion, challenger = pair or (None, None)
            rows = [
                (m, champion.metrics.get(m) if champion else None, challenger.metrics.get(m) if challenger else None)
                for m in model.metric_names(champion, challenger)
            ]
            drift = monitoring.drift(stream.consumer_metric_urls(settings, sampler.consumers_host))
            drift_chart = charts.bar_chart(
                f"PSI per model input (top {DRIFT_BARS}; above {PSI_THRESHOLD} = drift)",
                [(f.name, f.psi) for f in drift.features[:DRIFT_BARS]],
            ) if drift.features else None  # fmt: skip
            online, online_problem = attempt(
                lambda: monitoring.online(settings, champion and champion.version, challenger and challenger.version),
                "the online experiment's feedback from Redis",
            )  # fmt: skip
            return dict(champion=champion, challenger=challenger, problem=problem, drift=drift,
                        drift_chart=drift_chart, online=online, online_problem=online_problem,
                        rows=[(m, a, b, model.better(m, a, b)) for m, a, b in rows],
                        link=lambda v: model.mlflow_version_link(links.mlflow, settings.model_name,
                                                                 v.version))  # fmt: skip

        return render(request, "model.html", **await run_in_threadpool(gather))

    @app.get("/model/artifact")
    async def model_artifact(run_id: str, path: str) -> Response:
        try:
            body, content_type = await run_in_threadpool(model.artifact, settings, run_id, path)
        except model.MlflowProblem as exc:
            return PlainTextResponse(str(exc), status_code=502)
        return Response(body, media_type=content_type, headers={"Cache-Control": "private, max-age=300"})

    @app.get("/try", response_class=HTMLResponse)
    async def try_form(request: Request, user: str = "") -> HTMLResponse:
        view = await run_in_threadpool(tryit.run if user else lambda s, _u: tryit.page(s), settings, user)
        return render(request, "tryit.html", view=view, k=tryit.K)

    @app.post("/try", response_class=HTMLResponse)
    async def try_it(request: Request) -> HTMLResponse:
        form = await posted_form(request)
        view = await run_in_threadpool(tryit.run, settings, form.get("user", ""))
        return render(request, "tryit.html", view=view, k=tryit.K)

    return app
