"""What `./run.sh` dispatches to: `python -m mlops.cli [--local|--docker] [verb] [args]`.

Verbs (docs/contracts.md): none = up + pipeline + restart consumers + verify, then the run's summary and
the URLs; `up`, `down [--purge]`, `status`, `test`, `pipeline`, `verify`, `bench [--json]`, `promote`, and the
stream pokes `recommend`, `score`, `dlq`, `prediction` (`mlops.poke`). The mode defaults to Docker when
an engine answers `docker info`, else local (native processes).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from mlops import prediction_budget
from mlops.services.backend import Backend
from mlops.services.errors import ServiceError
from mlops.settings import PROJECT_ROOT, Settings, SettingsError, get_settings

POKE_VERBS = ("recommend", "score", "dlq", "prediction")
VERBS = ("all", "up", "down", "status", "test", "pipeline", "verify", "bench", "promote", *POKE_VERBS)
VERB_HELP = {
    "all": "(default) up, pipeline, restart the inference consumers, verify; ends with the run's summary and URLs",
    "up": "start or repair every service (idempotent)",
    "down": "[--purge] stop what this project started; --purge also deletes local state",
    "status": "services, topics and consumer lag, DLQ by reason, feature set, champion and its metrics",
    "pipeline": "run the DAG mlops_platform, follow it live, end with its summary",
    "verify": "[--feedback USERS | --parity] 1,000 requests and malformed messages through the stream, every answer"
    " checked (--feedback: test ratings replayed as feedback, the join checked; --parity: the evaluation set served"
    " reproduces the logged nDCG@10 and AUC)",
    "bench": "[--json] [--feedback USERS] benchmarks (figures, never pass/fail); --feedback: an A/B replay too",
    "promote": "[--json] online champion/challenger from the feedback so far; promotes only on a significant win",
    "test": "[pytest args] ruff check and format check, then the test suite",
    "recommend": "USER [--k K] a user's top-k through the stream, with titles, model version, latency",
    "score": "USER MOVIE... P(like) of movies for a user, through the stream",
    "dlq": "[--reason R] [--last N] [--json] the newest dead letters, decoded",
    "prediction": "REQUEST_ID a stored result (Redis), with titles",
}
VERIFY_SCRIPT = PROJECT_ROOT / "verification" / "verify_streaming.py"


def docker_available() -> bool:
    """Whether Docker is usable (CLI on PATH, daemon answering): the default mode when neither flag is given."""
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def make_backend(mode: str, settings: Settings, *, assume_yes: bool = False, monitoring: bool = False) -> Backend:
    """The services backend for `mode`; each is imported on demand, so one mode never needs the other's modules."""
    if mode == "docker":
        from mlops.services.compose import ComposeBackend

        return ComposeBackend(settings, assume_yes=assume_yes, monitoring=monitoring)
    from mlops.services.local import LocalBackend

    return LocalBackend(settings)


def run_pipeline(settings: Settings, summary: bool = True) -> tuple[int, str | None]:
    """(exit code, the run's id or None when none was triggered)."""
    from mlops.orchestration import pipeline

    outcome = pipeline.run_pipeline(settings, summary=summary)
    return outcome.code, outcome.run_id


def run_verify(settings: Settings, feedback_users: int = 0, parity: bool = False) -> int:
    """Run the end-to-end stream check in a child process, the settings passed in its environment; its exit code."""
    from mlops.services.specs import settings_environ

    env = {**_environ(), **settings_environ(settings)}
    extra = ["--feedback", str(feedback_users)] if feedback_users else []
    extra += ["--parity", "--timeout", "600"] if parity else []
    return subprocess.run([sys.executable, str(VERIFY_SCRIPT), *extra], env=env, cwd=PROJECT_ROOT,
                          check=False).returncode  # fmt: skip


def run_bench(argv: Sequence[str]) -> int:
    """The `bench` verb: run the stream benchmark in this process and return its exit code."""
    from mlops.bench import main as bench_main

    return int(bench_main(list(argv)) or 0)


def run_tests(extra: Sequence[str]) -> int:
    """`ruff check .` and `ruff format --check .`, then the whole pytest suite (extra arguments go to pytest)."""
    bin_dir = Path(sys.executable).parent
    for gate in (["check", "."], ["format", "--check", "."]):
        print("== ruff " + " ".join(gate), flush=True)
        ruff = subprocess.run([str(bin_dir / "ruff"), *gate], cwd=PROJECT_ROOT, check=False)
        if ruff.returncode != 0:
            print(f"test: ruff {gate[0]} failed (fix the findings above; `ruff format .` fixes the layout)",
                  file=sys.stderr)  # fmt: skip
            return ruff.returncode
    print("== pytest " + " ".join(extra), flush=True)
    code = subprocess.run([sys.executable, "-m", "pytest", *extra], cwd=PROJECT_ROOT, check=False).returncode
    if code == 5:
        print("test: pytest collected no tests: that is a failure, not a pass", file=sys.stderr)
        return 1
    return code


def _environ() -> dict[str, str]:
    import os

    return dict(os.environ)


def print_urls(backend: Backend) -> None:
    """Tell the user where each service of the platform just brought up can be reached."""
    print("\nThe platform is up:")
    for name, url in backend.urls().items():
        print(f"  {name:<22} {url}")


def print_summary(settings: Settings, run_id: str | None, backend: Backend) -> None:
    """What the run did (dataset, split, model, decision), then every URL: how `./run.sh` ends."""
    from mlops.orchestration.summary import gather, render

    if run_id is None:
        print_urls(backend)
        return
    print("\n" + render(gather(settings, run_id), backend.urls(), settings.mlflow_tracking_uri), flush=True)


def parse(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """The ./run.sh mode and verb; a poke verb's own options (and `test`'s) come back unparsed for it to handle."""
    verbs = "\n".join(f"  {verb:<11} {text}" for verb, text in VERB_HELP.items())
    parser = argparse.ArgumentParser(
        prog="./run.sh", description="The platform in one command (docs/reference.md).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"verbs:\n{verbs}\n\n./run.sh VERB --help: the options of recommend, score, dlq and prediction",
    )  # fmt: skip
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--local", dest="mode", action="store_const", const="local", help="native processes")
    mode.add_argument("--docker", dest="mode", action="store_const", const="docker", help="Docker Compose")
    parser.add_argument("verb", nargs="?", default="all", choices=VERBS, metavar="VERB", help="see below")
    parser.add_argument("--purge", action="store_true", help="down: also delete the local state (.local/data)")
    parser.add_argument("--json", action="store_true", help="bench, promote: print one JSON object")
    parser.add_argument(
        "--feedback",
        type=int,
        default=0,
        metavar="USERS",
        help="verify, bench: also replay USERS users' held-out test ratings as feedback",
    )
    parser.add_argument("--parity", action="store_true",
                        help="verify: the champion's evaluation set served over Kafka reproduces its logged "
                        "nDCG@10 and AUC")  # fmt: skip
    parser.add_argument("--yes", action="store_true", help="docker: write generated strong passwords into .env")
    parser.add_argument("--monitoring", action="store_true", help="docker: also start Prometheus and Grafana")
    argv = list(argv)
    modes = [a for a in argv if a in ("--local", "--docker")]
    rest = [a for a in argv if a not in ("--local", "--docker")]
    if rest and rest[0] in POKE_VERBS:  # their own options (--help, --json, ...) are theirs, not ./run.sh's
        return argparse.Namespace(verb=rest[0], mode=modes[-1][2:] if modes else None), rest[1:]
    args, extra = parser.parse_known_args(argv)
    if extra and args.verb != "test":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args, extra


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ./run.sh: dispatch the verb; `all` brings the platform up, runs the pipeline and verifies."""
    args, extra = parse(sys.argv[1:] if argv is None else argv)
    if args.verb == "test":
        return run_tests(extra)
    try:
        settings = get_settings()
    except SettingsError as exc:
        print(f"settings: {exc} (fix it in .env or the environment)", file=sys.stderr)
        return 2
    if args.verb in POKE_VERBS:
        from mlops import poke

        return poke.main(args.verb, extra, settings)
    if args.verb == "bench":
        replay = ["--feedback", str(args.feedback)] if args.feedback else []
        return run_bench((["--json"] if args.json else []) + replay)
    if args.verb == "pipeline":
        return run_pipeline(settings)[0]
    if args.verb == "promote":
        from mlops.online_promotion import main as promote_main

        return promote_main(["--json"] if args.json else [], settings)
    if args.verb == "verify":
        return run_verify(settings, args.feedback, args.parity)

    mode = args.mode or ("docker" if docker_available() else "local")
    try:
        backend = make_backend(mode, settings, assume_yes=args.yes, monitoring=args.monitoring)
        if args.verb == "status":
            return backend.status()
        if args.verb == "down":
            backend.down(purge=args.purge)
            return 0
        budget = prediction_budget.problem(settings)
        if budget and args.verb in ("up", "all"):
            raise ServiceError("redis", budget)
        if mode == "local":  # loopback is shared by every local user: no placeholder there either
            from mlops.services.passwords import ensure_strong_passwords

            settings = ensure_strong_passwords(settings, PROJECT_ROOT / ".env", args.yes, mode="local")
            backend = make_backend(mode, settings, assume_yes=args.yes, monitoring=args.monitoring)
        backend.up()
        settings = getattr(backend, "settings", settings)  # Docker mode's first `up` writes strong passwords
        if args.verb == "up":
            print_urls(backend)
            return 0
        code, run_id = run_pipeline(settings, summary=False)
        if code != 0:
            print(f"pipeline failed (exit {code}); the services stay up: ./run.sh status", file=sys.stderr)
            return code
        backend.restart_consumers()
        code = run_verify(settings)
        print_summary(settings, run_id, backend)
        return code
    except ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        print("see what is up: ./run.sh status", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
