#!/usr/bin/env bash
# The one entry point: bootstraps a fresh machine, then hands over to `python -m mlops.cli`.
# Usage: ./run.sh [--local|--docker] [up|down [--purge]|status|test|pipeline|verify|bench [--json]]
# Kept thin on purpose: everything past the bootstrap lives in mlops/cli.py.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
VENV=.venv
STAMP="$VENV/.installed-pyproject.sha256"

say() { printf '[run.sh] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

find_python() {
  local candidate
  for candidate in python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c 'import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] < (3, 13) else 1)' 2>/dev/null; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}

has_arg() {
  local want=$1 arg
  shift
  for arg in "$@"; do [[ "$arg" == "$want" ]] && return 0; done
  return 1
}

# Whether `test` was asked for the `containers` tests (`-m containers`, or a path under tests/containers).
wants_containers() {
  local arg
  for arg in "$@"; do [[ "$arg" == *containers* ]] && return 0; done
  return 1
}

# System packages local mode needs: redis-server, Java (Spark, Kafka, S3Proxy) and Maven, which fetches
# the pinned Kafka and S3Proxy jars once (jvm/*/pom.xml). The tests drive the console in Debian's
# headless chromium (through its chromedriver) and Docker Engine with debootstrap (a private engine and a
# stand-in base image); the `containers` tests also need Podman with runc and catatonit, and PostgreSQL
# (the metadata database they run against).
system_packages() {
  local missing=()
  if has_arg test "$@"; then
    command -v chromium >/dev/null 2>&1 || missing+=(chromium)
    command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
    # Debian's Docker Engine on a private socket and a debootstrap base (tests/containers: CI's Docker slice,
    # and the whole compose stack with -m containers). Not where systemd runs: there the package would start
    # an engine on the default socket, and every later ./run.sh would switch to Docker mode.
    if [[ ! -d /run/systemd/system ]]; then
      command -v dockerd >/dev/null 2>&1 || [[ -x /usr/sbin/dockerd ]] || missing+=(docker.io)
    fi
    command -v debootstrap >/dev/null 2>&1 || [[ -x /usr/sbin/debootstrap ]] || missing+=(debootstrap)
  fi
  if has_arg test "$@" && wants_containers "$@"; then
    command -v podman >/dev/null 2>&1 || missing+=(podman)
    command -v runc >/dev/null 2>&1 || [[ -x /usr/sbin/runc ]] || missing+=(runc)
    [[ -x /usr/libexec/podman/catatonit ]] || missing+=(catatonit) # podman run --init, as compose's init: true
    compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
  fi
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)  # local mode's metrics and alert rules
  command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
  command -v mvn >/dev/null 2>&1 || missing+=(maven)
  if ! "${PY:-python3}" -m venv --help >/dev/null 2>&1 || ! "${PY:-python3}" -c 'import ensurepip' 2>/dev/null; then
    missing+=(python3-venv)
  fi
  ((${#missing[@]} == 0)) && return 0
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    say "installing system packages: ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    die "missing system packages: ${missing[*]}. Install them with:
    sudo apt-get update && sudo apt-get install -y ${missing[*]}"
  fi
}

PY=$(find_python) || die "Python 3.11 or 3.12 is required (found: $(python3 --version 2>&1 || echo none)).
    On Debian/Ubuntu: sudo apt-get install -y python3 python3-venv"

has_arg --docker "$@" || system_packages "$@"

if [[ ! -x "$VENV/bin/python" ]]; then
  say "creating $VENV with $($PY --version)"
  "$PY" -m venv "$VENV"
fi

want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [[ ! -f "$STAMP" || "$(cat "$STAMP")" != "$want" ]]; then
  say "installing the project into $VENV (first run: several minutes)"
  [[ -x "$VENV/bin/uv" ]] || "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check uv
  "$VENV/bin/uv" pip install --quiet --python "$VENV/bin/python" -e '.[dev]'
  echo "$want" >"$STAMP"
fi

# A missing .env, or a password setting it does not name yet (a newer version's), gets a strong random value,
# mode 600 from the first byte; a value set by hand is never replaced (a placeholder is refused at start).
"$VENV/bin/python" -m mlops.services.passwords --init

# As if activated: child processes (pytest, spark-submit, airflow, the services) find the venv's tools.
export VIRTUAL_ENV="$PWD/$VENV"
export PATH="$VIRTUAL_ENV/bin:$PATH"
exec "$VENV/bin/python" -m mlops.cli "$@"
