"""The password policy of both modes: no empty, placeholder or well-known password reaches a service.

Docker mode publishes its services on ports and local mode's listen on loopback, where every local user
reaches them, so before anything starts `ensure_strong_passwords` refuses weak values (naming the setting)
and, with consent, writes strong random ones into `.env`. `./run.sh` creates a missing `.env` with strong
random passwords (`python -m mlops.services.passwords --init`), so a fresh clone starts with no question;
a placeholder put back by hand is refused. `python -m mlops.services.passwords` fixes an existing `.env`
without starting anything. Every file holding a secret is written by `write_secret_file`: mode 600 from
its first byte, and renamed into place, so no reader ever sees it half-written or world-readable.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from dotenv import dotenv_values

from mlops.services.errors import ServiceError
from mlops.settings import PROJECT_ROOT, Settings, load_settings

ENV_EXAMPLE = PROJECT_ROOT / ".env.example"

# The settings that are passwords: Docker mode exposes services on ports, so none may be guessable.
PASSWORD_SETTINGS = (
    "redis_password",
    "s3_secret_key",
    "postgres_password",
    "airflow_admin_password",
    "grafana_admin_password",
    "mlflow_tracking_password",
    "mlflow_admin_password",
    "kafka_admin_password",
    "kafka_inference_password",
    "kafka_platform_password",
    "kafka_feedback_password",
    "kafka_console_password",
    "kafka_ui_password",
)
# Embedded in connection URLs (redis://:pw@..., postgresql://user:pw@...) or in the broker's quoted JAAS lines:
# must need no quoting.
URL_EMBEDDED = ("redis_password", "postgres_password", *(n for n in PASSWORD_SETTINGS if n.startswith("kafka_")))
URL_SAFE = re.compile(r"^[A-Za-z0-9._~-]+$")
MIN_LENGTH = 8  # also MinIO's minimum for the root password (S3_SECRET_KEY)
MIN_LENGTHS = {"mlflow_tracking_password": 12, "mlflow_admin_password": 12}  # MLflow's basic-auth minimum
WELL_KNOWN = frozenset(
    {
        "password", "passw0rd", "admin", "administrator", "root", "secret", "changeme", "change-me", "default",
        "minioadmin", "minio123", "airflow", "postgres", "redis", "mlflow", "grafana", "kafka", "mlops",
        "123456", "12345678", "123456789", "qwerty", "letmein", "test", "guest",
    }
)  # fmt: skip


@dataclass(frozen=True)
class WeakPassword:
    """A password setting Docker mode refuses, and the rule its value breaks (empty, placeholder, too short...)."""

    name: str  # the variable name, e.g. REDIS_PASSWORD
    reason: str


def placeholder_values(example: Path = ENV_EXAMPLE) -> set[str]:
    """The password values `.env.example` ships with: public, so as weak as "password"."""
    if not example.exists():
        return set()
    values = dotenv_values(example)
    return {v for k, v in values.items() if v and k.lower() in PASSWORD_SETTINGS}


def password_problem(setting: str, value: str, placeholders: set[str] = frozenset()) -> str | None:
    """Why `value` may not be used for the password setting `setting`, or None when it may."""
    if not value:
        return "is empty"
    lowered = value.lower()
    if value in placeholders or lowered.startswith("change-me") or lowered in WELL_KNOWN:
        return "is a well-known or placeholder value"
    minimum = MIN_LENGTHS.get(setting, MIN_LENGTH)
    if len(value) < minimum:
        return f"is shorter than {minimum} characters"
    if setting in URL_EMBEDDED and not URL_SAFE.match(value):
        return "must use only A-Z a-z 0-9 . _ ~ - (it is embedded in connection URLs)"
    return None


def weak_passwords(settings: Settings, placeholders: set[str] | None = None) -> list[WeakPassword]:
    """Every password setting Docker mode refuses, with the reason. A missing setting counts as empty."""
    placeholders = placeholder_values() if placeholders is None else placeholders
    weak = []
    for name in PASSWORD_SETTINGS:
        problem = password_problem(name, str(getattr(settings, name, "")), placeholders)
        if problem:
            weak.append(WeakPassword(name.upper(), problem))
    return weak


def generate_password() -> str:
    """32 URL-safe characters (192 bits): valid in every URL, config file and shell we pass it through."""
    return secrets.token_urlsafe(24)


def write_env_values(env_file: Path, values: dict[str, str], example: Path = ENV_EXAMPLE) -> None:
    """Set `NAME=value` lines in `.env` (created from `.env.example` if absent), keeping every other line."""
    source = env_file if env_file.exists() else example
    lines = source.read_text().splitlines() if source.exists() else []
    pending = dict(values)
    for i, line in enumerate(lines):
        key = line.split("=", 1)[0].strip()
        if "=" in line and not line.lstrip().startswith("#") and key in pending:
            lines[i] = f"{key}={pending.pop(key)}"
    lines += [f"{key}={value}" for key, value in pending.items()]
    write_secret_file(env_file, "\n".join(lines) + "\n")


def write_secret_file(path: Path, text: str) -> None:
    """Write `text` to `path` atomically, mode 600 from the first byte: a temporary file created 600 (any
    stale one removed first, so its old mode cannot carry over), then renamed over `path`."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    tmp.replace(path)


def fix_command() -> str:
    """The commands that write strong passwords into `.env`, quoted in the refusal."""
    return "python -m mlops.services.passwords   (or ./run.sh up --docker --yes)"


def ensure_strong_passwords(
    settings: Settings, env_file: Path, assume_yes: bool, ask: Callable[[str], str] | None = None,
    mode: str = "docker",
) -> Settings:  # fmt: skip
    """Refuse weak passwords; with consent (prompt on a TTY, or `assume_yes`) write strong ones into `.env`.

    Returns the settings to use (re-read from `.env` when it was changed). `mode` names who refuses.
    """
    weak = weak_passwords(settings)
    if not weak:
        return settings
    listing = "\n".join(f"  {w.name} {w.reason}" for w in weak)
    print(f"{mode.capitalize()} mode will not start with these passwords:\n{listing}", flush=True)
    weak_in = f"weak passwords in {env_file} ({', '.join(w.name for w in weak)})"
    if not assume_yes:
        if ask is None and not sys.stdin.isatty():
            raise ServiceError(mode, f"{weak_in}; generate strong ones with: {fix_command()}")
        answer = (ask or input)(f"Generate strong random ones into {env_file}? [y/N] ").strip().lower()
        if answer not in ("y", "yes"):
            raise ServiceError(mode, f"{weak_in}; set them yourself or run: {fix_command()}")
    write_env_values(env_file, {w.name: generate_password() for w in weak})
    print(f"wrote {len(weak)} new password(s) into {env_file} (mode 600). Data volumes created earlier keep "
          "their old passwords: `./run.sh down --purge --docker` resets them.", flush=True)  # fmt: skip
    fresh = load_settings(env_file)
    still = weak_passwords(fresh)
    if still:
        names = ", ".join(w.name for w in still)
        raise ServiceError(mode, f"{names} still weak after writing {env_file}: an environment variable overrides")
    return fresh


def init_env(env_file: Path, example: Path = ENV_EXAMPLE) -> list[str]:
    """Create a missing `.env` from `.env.example` with a strong random value for every password setting
    (mode 600, atomic), or add one for each password setting an existing `.env` does not name yet (one a
    newer version introduced: no one set it by hand). Returns the names written; other lines stay as they are."""
    present = set(dotenv_values(env_file)) if env_file.exists() else set()
    missing = [name.upper() for name in PASSWORD_SETTINGS if name.upper() not in present]
    if missing:
        write_env_values(env_file, {name: generate_password() for name in missing}, example)
    return missing


def main(argv: Sequence[str] | None = None) -> int:
    """Write strong random passwords into `.env` for every weak one (the consent is running this command);
    with `--init`, only create a missing `.env` with strong ones."""
    parser = argparse.ArgumentParser(prog="python -m mlops.services.passwords", description=__doc__)
    parser.add_argument("--init", action="store_true", help="create a missing .env with strong random passwords")
    args = parser.parse_args(argv)
    env_file = PROJECT_ROOT / ".env"
    if args.init:
        existed = env_file.exists()
        written = init_env(env_file)
        if written and not existed:
            print(f"created {env_file} from .env.example with strong random passwords (mode 600)", flush=True)
        elif written:
            print(f"added strong random passwords for {', '.join(written)} to {env_file}", flush=True)
        return 0
    try:
        settings = ensure_strong_passwords(load_settings(env_file), env_file, assume_yes=True)
    except ServiceError as exc:
        print(exc, file=sys.stderr)
        return 1
    if not weak_passwords(settings):
        print(f"all passwords in {env_file} are strong", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
