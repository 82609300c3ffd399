#!/usr/bin/env bash
# Installs what building and testing model-pusher needs, on a fresh Debian machine or again on one
# already set up (each step is skipped when its result is there):
#   - a toolchain for wasm32-unknown-unknown: rustup's target when it is installed, else Debian's
#     rustc-web, cargo-web, rust-web-src and lld (which build std for wasm32 offline);
#   - .venv: MLflow 3.17.2 (with basic auth) and scikit-learn, for the test servers and the
#     pyfunc load check, and the Kubeflow Pipelines SDK (kfp, kfp-kubernetes 2.17.3), which
#     compiles kubeflow/pipeline.py in the tests, and psycopg2 (binary wheel), MLflow's driver for
#     the PostgreSQL backend store;
#   - postgresql: Debian's server, for the tests against an MLflow server whose backend store is
#     PostgreSQL (scripts/postgres.sh runs a private cluster for them);
#   - .venv-mlflow2: MLflow 2.22.2, the generation DagsHub runs.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'setup: %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    log "need root to run: $*"; exit 1
  fi
}

apt_install() {
  local missing=()
  for package in "$@"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" ||
      missing+=("$package")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]} (apt)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

if rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
  log "wasm32-unknown-unknown: rustup target installed"
else
  apt_install rustc-web cargo-web rust-web-src lld
fi

apt_install postgresql

venv() {
  local dir=$1; shift
  local marker="$dir/.model-pusher-requirements"
  if [ -x "$dir/bin/python" ] && [ "$(cat "$marker" 2>/dev/null)" = "$*" ]; then
    log "$dir: up to date"
    return 0
  fi
  log "$dir: pip install $*"
  python3 -m venv "$dir"
  "$dir/bin/pip" install --quiet --disable-pip-version-check "$@"
  printf '%s' "$*" > "$marker"
}

# componentize-py builds the Python policies (cargo xtask python-policies).
venv .venv 'mlflow[auth]==3.17.2' scikit-learn 'kfp==2.17.3' 'kfp-kubernetes==2.17.3' \
  psycopg2-binary 'componentize-py==0.25.1'
venv .venv-mlflow2 'mlflow[auth]==2.22.2' 'sqlalchemy<2.1'
