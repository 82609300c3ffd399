#!/usr/bin/env bash
# Runs a local MLflow tracking server in the foreground, set up the way model-pusher's tests and
# demo use one: loopback only, a sqlite backend store and an artifact directory under DIR,
# artifacts served through the server's proxy (model-pusher uploads through it), one worker, and
# MLflow 3's background job runner turned off (the registry needs none, and it would start a
# pool of extra processes).
#
# usage: scripts/mlflow-server.sh PORT DIR
#   PORT  a free TCP port on 127.0.0.1
#   DIR   where the server keeps its state: DIR/mlflow.db and DIR/artifacts (created if missing)
# The mlflow executable is $MODEL_PUSHER_MLFLOW, by default .venv/bin/mlflow (MLflow 3.17.2 from
# scripts/setup.sh); .venv-mlflow2/bin/mlflow runs MLflow 2.22.2 instead.
# The server is exec'd, so it keeps this script's process id; stop it with SIGTERM or Ctrl-C.
set -euo pipefail

if [ $# -ne 2 ]; then
  echo "usage: $0 PORT DIR" >&2
  exit 2
fi
port=$1
dir=$2
root=$(cd "$(dirname "$0")/.." && pwd)
mlflow=${MODEL_PUSHER_MLFLOW:-$root/.venv/bin/mlflow}

case $port in
  '' | *[!0-9]*)
    echo "mlflow-server.sh: port '$port' is not a number" >&2
    exit 2
    ;;
esac
if [ ! -x "$mlflow" ]; then
  echo "mlflow-server.sh: no mlflow executable at $mlflow; run scripts/setup.sh first" >&2
  exit 1
fi
mlflow=$(cd "$(dirname "$mlflow")" && pwd)/$(basename "$mlflow")
mkdir -p "$dir/artifacts"
dir=$(cd "$dir" && pwd)

# Settings meant for a client (MLFLOW_TRACKING_URI and the like) must not leak into the server.
for name in "${!MLFLOW_@}"; do
  unset "$name"
done
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false

cd "$dir"
exec "$mlflow" server \
  --backend-store-uri "sqlite:///$dir/mlflow.db" \
  --serve-artifacts \
  --artifacts-destination "$dir/artifacts" \
  --host 127.0.0.1 \
  --port "$port" \
  --workers 1
