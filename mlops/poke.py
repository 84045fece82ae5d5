"""Poke the running stream by hand: `./run.sh recommend|score|dlq|prediction ...`.

`recommend` and `score` send one request through Kafka like any client (`stream_client`), wait for the
consumers' answer and print it with titles and genres (`catalog`, joined here: results carry ids only, so
serving pays nothing for titles), the model version and the latency seen. `dlq` prints decoded dead
letters, `prediction` a stored result by request id. Whatever goes wrong ends as one sentence and a
non-zero exit: the stack down, an unknown user (answered by the cold-start fallback, and said so), no
answer in time.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from mlops import catalog, dlq, stream_client
from mlops.schemas import (
    MAX_K,
    MIN_K,
    PLATFORM,
    REASONS,
    ScoreRequest,
    encode_request,
    parse_request,
    parse_result,
    prediction_key,
)
from mlops.settings import Settings

VERBS = {
    "recommend": "USER [--k K]: the user's top-k through the stream, with titles",
    "score": "USER MOVIE...: P(like) of these movies for the user, through the stream",
    "dlq": "[--reason R] [--last N]: the newest dead letters, decoded",
    "prediction": "REQUEST_ID: the stored result of a request (Redis)",
}
SCORE_MEANS = {
    "recommendations": "score = the model family's ranking score (higher first; not a probability)",
    "scores": "score = P(rating >= 4 | the user rates it)",
}


class Refused(RuntimeError):
    """Why the verb cannot do what was asked, as one sentence for the terminal."""


def _reachable(settings: Settings) -> None:
    """Fail at once, naming the service, when the broker or Redis is down (rather than a timeout later)."""
    import redis

    from mlops.services.health import bootstrap_address, tcp_open

    if not tcp_open(*bootstrap_address(settings)):
        raise Refused(f"the Kafka broker at {settings.kafka_bootstrap_servers} is not reachable: is the stack up? "
                      "(./run.sh up; ./run.sh status)")  # fmt: skip
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=3, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise Refused(f"Redis at {settings.redis_host}:{settings.redis_port} is not reachable ({exc}): is the "
                      "stack up? (./run.sh up; ./run.sh status)") from exc  # fmt: skip
    finally:
        client.close()


def _user_note(settings: Settings, user_id: int) -> str | None:
    """A note when the user is unknown to the serving feature set; raises when nothing can answer at all."""
    from mlops.feature_store import RedisFeatureStore

    store = RedisFeatureStore.from_settings(settings)
    version = store.current_version()
    if version is None:
        raise Refused("no feature set is serving yet (fs:current is empty): run ./run.sh pipeline first")
    if user_id not in set(store.ids(version, "user")):
        return (f"note: user {user_id} is unknown to feature set {version} (no rating history): the answer is "
                "the cold-start fallback")  # fmt: skip
    return None


def _titles(settings: Settings, run_id: str, say: Callable[[str], None]) -> dict[int, catalog.Movie]:
    try:
        return catalog.movies(settings, run_id)
    except Exception as exc:
        say(f"(titles unavailable: the movies of run {run_id} could not be read: {type(exc).__name__}: {exc})")
        return {}


def render_result(result: dict[str, Any], titles: dict[int, catalog.Movie], latency_ms: float | None,
                  model_name: str) -> list[str]:  # fmt: skip
    """A result as lines: who, which model, how fast, then one line per movie with title and genres."""
    timing = "" if latency_ms is None else f", {latency_ms:.0f} ms through the stream"
    variant = result.get("variant", "champion")
    head = (f"user {result['user_id']}: {model_name} v{result.get('model_version')} ({variant}), "
            f"feature set {result.get('feature_set')}{timing}; request {result['request_id']}")  # fmt: skip
    lines = [head]
    if result.get("fallback"):
        lines.append("answered by the cold-start fallback (popular movies), not the model's personal ranking")
    if "recommendations" in result:
        rows = [(int(r["movie_id"]), float(r["score"])) for r in result["recommendations"]]
        lines.append(SCORE_MEANS["recommendations"])
    else:
        rows = sorted(((int(m), float(s)) for m, s in result["scores"].items()), key=lambda r: -r[1])
        lines.append(SCORE_MEANS["scores"])
    for rank, (movie_id, score) in enumerate(rows, 1):
        movie = catalog.movie(titles, movie_id)
        genres = movie.genres.replace("|", ", ")
        lines.append(f"{rank:>3}. {score:.4f}  {movie_id:>7}  {movie.title[:60]:<60}  {genres}")
    return lines


def ask(settings: Settings, request: Any, timeout_s: float, out: TextIO) -> int:
    """Send, wait, print; 0 when answered."""

    def say(line: str) -> None:
        print(line, file=out, flush=True)

    parse_request(encode_request(request))  # InvalidRequest (a ValueError) now, not a dead letter later
    _reachable(settings)
    note = _user_note(settings, request.user_id)
    if note:
        say(note)
    answer = stream_client.ask(settings, request, timeout_s=timeout_s)
    titles = _titles(settings, str(answer.result.get("feature_set")), say)
    for line in render_result(answer.result, titles, answer.latency_ms, settings.model_name):
        say(line)
    return 0


def show_prediction(settings: Settings, request_id: str, out: TextIO) -> int:
    """`prediction`: the stored result of a request with titles; missing, it names the three likely causes."""
    import redis

    _reachable(settings)
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=3, socket_connect_timeout=3)
    try:
        raw = client.get(prediction_key(request_id))
    finally:
        client.close()
    if raw is None:
        ttl = settings.prediction_ttl_seconds
        raise Refused(f"no prediction for request {request_id!r} in Redis: it was never answered, was "
                      f"dead-lettered (./run.sh dlq), or expired (PREDICTION_TTL_SECONDS={ttl})")  # fmt: skip
    result = parse_result(raw)
    titles = _titles(settings, str(result.get("feature_set")), lambda line: print(line, file=out))
    print("\n".join(render_result(result, titles, None, settings.model_name)), file=out)
    print(f"created_at {result.get('created_at')}", file=out, flush=True)
    return 0


def show_dlq(settings: Settings, reason: str | None, last: int, as_json: bool, out: TextIO) -> int:
    """`dlq`: the counts by reason, then the newest dead letters (or one JSON object each with `--json`)."""
    from mlops.services.health import bootstrap_address, tcp_open

    if not tcp_open(*bootstrap_address(settings)):
        raise Refused(f"the Kafka broker at {settings.kafka_bootstrap_servers} is not reachable: is the stack up? "
                      "(./run.sh up; ./run.sh status)")  # fmt: skip
    letters = dlq.read(settings)
    chosen = dlq.select(letters, reason, last)
    if as_json:
        for letter in chosen:
            print(json.dumps(letter.as_dict()), file=out)
        return 0
    counts = dlq.tally(letters)
    print(f"DLQ: {counts.total} records ({counts.verifier} sent by ./run.sh verify on purpose); clients' by reason: "
          + (", ".join(f"{r} {n}" for r, n in counts.by_reason.items()) or "none"), file=out)  # fmt: skip
    which = f" with reason {reason}" if reason else ""
    if not chosen:
        print(f"no dead letters{which}", file=out)
        return 0
    print(f"the newest {len(chosen)}{which}, oldest first:", file=out)
    for d in chosen:
        original = d.original.decode("utf-8", errors="backslashreplace")
        original = original if len(original) <= 160 else original[:160] + f"... ({d.original_size} bytes)"
        tag = "  [verify]" if d.verifier else ""
        print(f"- dlq p{d.partition}@{d.offset}  {d.failed_at}  {d.reason}{tag}  from {d.source}", file=out)
        print(f"    detail:   {d.detail}", file=out)
        print(f"    original: {original}", file=out)
    out.flush()
    return 0


def parser(verb: str) -> argparse.ArgumentParser:
    """The verb's own arguments, with `./run.sh <verb>` as the program name in its help."""
    p = argparse.ArgumentParser(prog=f"./run.sh {verb}", description=VERBS[verb])
    if verb in ("recommend", "score"):
        p.add_argument("user", type=int, metavar="USER", help="user id")
        p.add_argument("--timeout", type=float, default=15.0, help="seconds to wait for the answer (default 15)")
    if verb == "recommend":
        p.add_argument("--k", type=int, default=10, help=f"how many movies, {MIN_K}..{MAX_K} (default 10)")
    elif verb == "score":
        p.add_argument("movies", type=int, nargs="+", metavar="MOVIE", help="movie ids")
    elif verb == "dlq":
        p.add_argument("--reason", default=None, choices=REASONS, metavar="REASON",
                       help=f"only this reason, one of: {', '.join(REASONS)}")  # fmt: skip
        p.add_argument("--last", type=int, default=20, help="how many of the newest records (default 20)")
        p.add_argument("--json", action="store_true", help="one JSON object per record")
    elif verb == "prediction":
        p.add_argument("request_id", help="the request's request_id")
    return p


def main(verb: str, argv: Sequence[str], settings: Settings, out: TextIO = sys.stdout) -> int:
    """Run one verb; 0 done, 1 the stream or the data said no (the reason printed), 2 bad arguments."""
    args = parser(verb).parse_args(list(argv))
    try:
        if verb == "recommend":
            return ask(settings, stream_client.topk_request(args.user, args.k, prefix="cli"), args.timeout, out)
        if verb == "score":
            request = ScoreRequest(stream_client.new_request_id("cli"), args.user, tuple(args.movies), PLATFORM)
            return ask(settings, request, args.timeout, out)
        if verb == "dlq":
            return show_dlq(settings, args.reason, args.last, args.json, out)
        return show_prediction(settings, args.request_id, out)
    except ValueError as exc:  # e.g. k out of range
        print(f"{verb}: {exc}", file=sys.stderr)
        return 2
    except (Refused, stream_client.NoAnswer, LookupError) as exc:
        print(f"{verb}: {exc}", file=sys.stderr)
        return 1
