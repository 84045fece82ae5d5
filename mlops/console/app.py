"""The console's routes: a login, five pages, an image proxy and a health endpoint.

Every page gathers its sections with `attempt`, so a service that is down turns into a sentence in its
section while the rest of the page renders; an unexpected error anywhere becomes a short error page
(the traceback goes to the console's log, never to the browser).

Hardening (`mlops.console.auth` holds the logic): a state change only on POST with a CSRF token (login,
logout, Try-it); every response carries a Content-Security-Policy (no script at all, no framing),
`nosniff` and `X-Frame-Options: DENY`; artifacts other than raster images are sandboxed attachments; failed
logins are throttled per client; logout revokes the session; no body over MAX_BODY_BYTES is read, before
or after the login.
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
MAX_BODY_BYTES = 16 * 1024  # the console's forms are a few fields
PAGE_POLICY = ("default-src 'none'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; form-action 'self'; "
               "frame-ancestors 'none'; base-uri 'none'")  # fmt: skip
ARTIFACT_POLICY = "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; sandbox"
RASTER = ("image/png", "image/jpeg")
MAX_MESSAGES = 500  # the most messages a Kafka page lists


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


class BodyTooLarge(ValueError):
    """A request body over MAX_BODY_BYTES: refused before it is read whole."""


async def posted_form(request: Request) -> dict[str, str]:
    """An url-encoded form body as field -> first value, read up to MAX_BODY_BYTES (`BodyTooLarge` past it)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise BodyTooLarge(f"the form is larger than {MAX_BODY_BYTES} bytes")
    return {k: v[0] for k, v in parse_qs(body.decode(errors="replace")).items()}


def secure(response: Response, policy: str = PAGE_POLICY) -> Response:
    """The headers every answer carries: what it may load and that no page of another site may frame it."""
    response.headers.setdefault("Content-Security-Policy", policy)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    return response


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def create_app(
    settings: Settings, links: Links | None = None, consumers_host: str | None = None, sample: bool = True
) -> FastAPI:
    """The console app; `sample=False` skips the background sampler (tests: the Stream page then samples once)."""
    links = links or Links(settings.airflow_url, settings.mlflow_tracking_uri)
    sessions, throttle = auth.Sessions(), auth.LoginThrottle()
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

    def session(request: Request) -> auth.Session | None:
        return sessions.current(request.cookies.get(auth.COOKIE))

    def render(request: Request, template: str, status: int = 200, csrf: str | None = None,
               **context: Any) -> HTMLResponse:  # fmt: skip
        current = session(request)
        if csrf is None and current is not None:
            csrf = auth.csrf_token(sessions.key, current.sid)
        context.update(links=links, user=current.user if current else None, path=request.url.path,
                       settings=settings, csrf=csrf)  # fmt: skip
        return TEMPLATES.TemplateResponse(request, template, context, status_code=status)

    def refused(request: Request, status: int, message: str) -> HTMLResponse:
        return render(request, "error.html", status=status, message=message)

    def csrf_checked(request: Request, form: dict[str, str]) -> bool:
        current = session(request)
        return current is not None and auth.csrf_ok(sessions.key, current.sid, form.get("csrf"))

    @app.middleware("http")
    async def guard(request: Request, call_next):
        length = request.headers.get("content-length", "")
        if length.isascii() and length.isdigit() and int(length) > MAX_BODY_BYTES:
            return secure(PlainTextResponse(f"request body over {MAX_BODY_BYTES} bytes", status_code=413))
        if request.url.path in OPEN_PATHS or session(request):
            return secure(await call_next(request))
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return secure(RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303))

    @app.exception_handler(BodyTooLarge)
    async def too_large(request: Request, exc: BodyTooLarge) -> Response:
        return secure(PlainTextResponse(str(exc), status_code=413))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("console: %s failed", request.url.path)
        return secure(render(request, "error.html", status=500, message=f"This page failed: {type(exc).__name__}. "
                             "The console's log has the details."))  # fmt: skip

    @app.get("/healthz", response_class=PlainTextResponse)
    async def healthz() -> str:
        return "ok"

    def login_page(request: Request, target: str, status: int = 200, error: str | None = None) -> HTMLResponse:
        """The form, bound to a pre-login cookie (set here when absent) by its CSRF token."""
        nonce = request.cookies.get(auth.LOGIN_COOKIE) or auth.new_nonce()
        response = render(request, "login.html", status=status, csrf=auth.csrf_token(sessions.key, nonce),
                          next=target, error=error)  # fmt: skip
        response.set_cookie(auth.LOGIN_COOKIE, nonce, max_age=3600, httponly=True, samesite="strict")
        return response

    @app.get("/login", response_class=HTMLResponse)
    async def login_form(request: Request, next: str = "/") -> HTMLResponse:
        return login_page(request, auth.safe_next(next))

    @app.post("/login")
    async def login(request: Request) -> Response:
        wait = throttle.retry_after(_client(request))
        if wait:
            response = refused(request, 429, f"Too many failed logins from this address: try again in {wait} s.")
            response.headers["Retry-After"] = str(wait)
            return response
        form = await posted_form(request)
        target = auth.safe_next(form.get("next"))
        if not auth.csrf_ok(sessions.key, request.cookies.get(auth.LOGIN_COOKIE), form.get("csrf")):
            return login_page(request, target, 403, "The login form expired or came from another site: try again.")
        if not auth.credentials_match(form.get("username", ""), form.get("password", ""),
                                      settings.airflow_admin_user, settings.airflow_admin_password):  # fmt: skip
            throttle.failed(_client(request))
            return login_page(request, target, 401,
                              "Wrong user name or password (the console uses the Airflow admin login).")  # fmt: skip
        throttle.succeeded(_client(request))
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(auth.COOKIE, auth.make_session(sessions.key, form["username"]),
                            max_age=auth.SESSION_SECONDS, httponly=True, samesite="strict")  # fmt: skip
        response.delete_cookie(auth.LOGIN_COOKIE)
        return response

    @app.post("/logout")
    async def logout(request: Request) -> Response:
        form = await posted_form(request)
        if not csrf_checked(request, form):
            return refused(request, 403, "The logout form expired or came from another site: reload the page.")
        current = session(request)
        if current is not None:
            sessions.revoke(current)  # the cookie is dead even if a copy of it survives
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
        n = max(1, min(n, MAX_MESSAGES))

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
        n = max(1, min(n, MAX_MESSAGES))

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
        headers = {"Cache-Control": "private, max-age=300"}
        if content_type not in RASTER:  # an SVG can hold script: never a page of this origin
            headers["Content-Disposition"] = "attachment"
        return secure(Response(body, media_type=content_type, headers=headers), ARTIFACT_POLICY)

    @app.get("/try", response_class=HTMLResponse)
    async def try_form(request: Request, user: str = "") -> HTMLResponse:
        """The form only (pre-filled with `user`): asking the stream is a POST."""
        view = await run_in_threadpool(tryit.page, settings)
        view.user_input = user
        return render(request, "tryit.html", view=view, k=tryit.K)

    @app.post("/try", response_class=HTMLResponse)
    async def try_it(request: Request) -> HTMLResponse:
        form = await posted_form(request)
        if not csrf_checked(request, form):
            return refused(request, 403, "The form expired or came from another site: reload the Try-it page.")
        view = await run_in_threadpool(tryit.run, settings, form.get("pick") or form.get("user", ""))
        return render(request, "tryit.html", status=400 if view.bad_input else 200, view=view, k=tryit.K)

    return app
