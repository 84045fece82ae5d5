"""Entry points inside Docker mode's containers, for the steps they share with local mode.

`python -m mlops.services.container_entry provision buckets|topics|mlflow-user` (the one-shots minio-init,
kafka-init and mlflow-init), `... mlflow <server options>` (the MLflow server with its basic-auth app) and
`... airflow init|<component>` (airflow-init and the Airflow services): the same functions and configuration
as local mode's `up`, with the `AIRFLOW__*` values compose sets on top.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from mlops.settings import Settings, get_settings


def say(message: str) -> None:
    """Progress for the container's log, flushed at once."""
    print(message, flush=True)


def provision(what: str, settings: Settings, attempts: int = 10) -> None:
    """Buckets, topics or MLflow's platform user, by local mode's functions (retried: a healthcheck can pass a
    moment early)."""
    from mlops.services import mlflow_auth
    from mlops.services import provision as prov

    ensure = {"buckets": prov.ensure_buckets, "topics": prov.ensure_topics, "kafka-access": prov.ensure_kafka_access,
              "mlflow-user": mlflow_auth.ensure_platform_user}[what]  # fmt: skip
    for attempt in range(1, attempts + 1):
        try:
            created = ensure(settings)
            say(f"{what}: ready" + (f" (created {', '.join(created)})" if created else " (all existed)"))
            return
        except Exception as exc:
            if attempt == attempts:
                raise
            say(f"{what}: attempt {attempt}/{attempts} failed ({exc}); retrying in 3s")
            time.sleep(3)


def airflow_container_env(settings: Settings) -> dict[str, str]:
    """Local mode's Airflow environment, with the `AIRFLOW__*` values compose sets (PostgreSQL, 0.0.0.0) on top."""
    from mlops.services.airflow_config import airflow_env

    compose_overrides = {k: v for k, v in os.environ.items() if k.startswith("AIRFLOW__")}
    return {**airflow_env(settings), **compose_overrides}


def run_airflow(component: str, settings: Settings) -> None:
    """`init` migrates the metadata DB; any other name execs that component as local mode starts it."""
    from mlops.services.airflow_config import airflow_commands

    env = airflow_container_env(settings)
    if component == "init":
        say("airflow: migrating the metadata database")
        subprocess.run(["airflow", "db", "migrate"], env=env, check=True)
        return
    commands = {name.removeprefix("airflow-"): argv for name, argv in airflow_commands()}
    if component not in commands:
        raise SystemExit(f"unknown Airflow component {component!r}: expected init or one of {sorted(commands)}")
    argv = commands[component]
    os.execvpe(argv[0], argv, env)


def run_mlflow(settings: Settings, server_args: Sequence[str]) -> None:
    """`mlflow server` with the basic-auth app, as local mode starts it: the app's configuration written
    for MLFLOW_AUTH_DATABASE_URI, the admin's password and the forms' key in the environment, never argv."""
    from mlops.services import mlflow_auth

    config = Path(os.environ.get("MLFLOW_AUTH_CONFIG_DIR", "/auth")) / mlflow_auth.CONFIG_NAME
    config.write_text(mlflow_auth.config_text(os.environ.get("MLFLOW_AUTH_DATABASE_URI", "sqlite:////auth/auth.db")))
    env = {**os.environ, **mlflow_auth.server_environ(settings, config)}
    argv = ["mlflow", "server", "--app-name", "basic-auth", *server_args]
    os.execvpe(argv[0], argv, env)


def build_parser() -> argparse.ArgumentParser:
    """`provision buckets|topics|mlflow-user`, `mlflow <server options>` and `airflow <component>`."""
    parser = argparse.ArgumentParser(prog="python -m mlops.services.container_entry", description=__doc__)
    sub = parser.add_subparsers(dest="verb", required=True)
    p = sub.add_parser("provision", help="create the buckets or the topics")
    p.add_argument("what", nargs="+", choices=("buckets", "topics", "kafka-access", "mlflow-user"))
    m = sub.add_parser("mlflow", help="`mlflow server` with its basic-auth app, serving the artifacts")
    m.add_argument("--host", default="0.0.0.0")
    m.add_argument("--port", type=int, default=5000)
    m.add_argument("--workers", type=int, default=1)
    m.add_argument("--artifacts-destination", help="where the proxied artifacts go (s3://bucket)")
    a = sub.add_parser("airflow", help="run an Airflow component with local mode's configuration")
    a.add_argument("component")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the verb; any failure raises, so the container exits non-zero and compose shows it."""
    args = build_parser().parse_args(argv)
    settings = get_settings()
    if args.verb == "provision":
        for what in args.what:
            provision(what, settings)
    elif args.verb == "mlflow":
        server_args = [f"--host={args.host}", f"--port={args.port}", f"--workers={args.workers}", "--serve-artifacts"]
        if args.artifacts_destination:
            server_args.append(f"--artifacts-destination={args.artifacts_destination}")
        run_mlflow(settings, server_args)
    else:
        run_airflow(args.component, settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
