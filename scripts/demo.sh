#!/usr/bin/env bash
# Shows model-pusher doing its job end to end on this machine, from a fresh clone:
#   1. installs what the build and the local MLflow need (scripts/setup.sh),
#   2. builds the bundled policies and the release binary,
#   3. starts a throwaway MLflow tracking server on a free loopback port (sqlite backend and
#      artifact directory in a temporary directory, artifacts served through the server),
#   4. makes two candidates as the training pipeline would (accuracy 0.90, then 0.91),
#   5. pushes both: the first finds no champion and is promoted; the second improves accuracy
#      by 1.1%, under the 5% that params.yaml requires, and is held,
#   6. prints both decisions.
# The server is stopped on exit, unless --keep is given: then it keeps running so that its UI
# and registry can be looked at, and the command that stops it is printed.
#
# usage: scripts/demo.sh [--keep]
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL_NAME=spam_detection_model
PUSHER=target/release/model-pusher
PYTHON=.venv/bin/python

usage() {
  sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
}

step() { printf '\n==> %s\n' "$*" >&2; }
die() {
  printf 'demo: %s\n' "$*" >&2
  exit 1
}

keep=false
for arg in "$@"; do
  case $arg in
    --keep) keep=true ;;
    -h | --help)
      usage
      exit 0
      ;;
    *)
      usage >&2
      die "unknown argument '$arg'"
      ;;
  esac
done

command -v setsid >/dev/null ||
  die "setsid is needed to give the server its own process group; install util-linux"

step "Installing the toolchain and the MLflow virtualenvs (scripts/setup.sh)"
scripts/setup.sh

step "Building the bundled policies (cargo xtask policies)"
cargo xtask policies

step "Building model-pusher (cargo build --release -p model-pusher)"
cargo build --release -p model-pusher

work=$(mktemp -d "${TMPDIR:-/tmp}/model-pusher-demo.XXXXXX")
server_pgid=

stop_server() {
  [ -n "$server_pgid" ] || return 0
  # The server runs in its own process group: the mlflow CLI, uvicorn and their workers.
  kill -TERM -- "-$server_pgid" 2>/dev/null || return 0
  for _ in $(seq 1 50); do
    kill -0 -- "-$server_pgid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL -- "-$server_pgid" 2>/dev/null || true
}

on_exit() {
  local status=$?
  if [ "$keep" = true ] && [ "$status" -eq 0 ]; then
    return
  fi
  stop_server
  if [ "$status" -eq 0 ]; then
    rm -rf "$work"
  else
    printf 'demo: stopped with status %s; the server log and the fixtures are kept in %s\n' \
      "$status" "$work" >&2
  fi
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step "Starting a local MLflow server"
port=$("$PYTHON" -c '
import socket
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])
')
url="http://127.0.0.1:$port"
# setsid makes the server the leader of a new process group, whose id is therefore $!.
setsid scripts/mlflow-server.sh "$port" "$work/server" >"$work/server.log" 2>&1 &
server_pgid=$!

healthy() {
  "$PYTHON" -c '
import sys, urllib.request
urllib.request.urlopen(sys.argv[1] + "/health", timeout=2)
' "$url" 2>/dev/null
}
deadline=$((SECONDS + 90))
until healthy; do
  if ! kill -0 "$server_pgid" 2>/dev/null; then
    tail -n 20 "$work/server.log" >&2 || true
    die "the MLflow server exited before answering $url/health; see its log above"
  fi
  if [ "$SECONDS" -ge "$deadline" ]; then
    tail -n 20 "$work/server.log" >&2 || true
    die "the MLflow server did not answer $url/health within 90 s; see $work/server.log"
  fi
  sleep 0.5
done
printf 'MLflow is up at %s (state in %s)\n' "$url" "$work/server" >&2

push() {
  local fixture=$1
  local command=(
    "$PUSHER" push
    --model-name "$MODEL_NAME"
    --param-path "$fixture/params.yaml"
    --model-path "$fixture/model"
    --metrics-path "$fixture/metrics"
    --decision-out "$fixture/decision.json"
    --log-file "$work/Model_Pusher.log"
  )
  printf '$ MLFLOW_TRACKING_URI=%s %s\n' "$url" "${command[*]}" >&2
  # The decision also goes to stdout; it is printed once, from the file, at the end.
  MLFLOW_TRACKING_URI=$url "${command[@]}" >"$fixture/push.out"
}

step "Candidate 1 (accuracy 0.90): no champion yet, so it should be promoted"
"$PYTHON" scripts/make_fixture.py "$work/candidate-1" --accuracy 0.90 --seed 1
push "$work/candidate-1"

step "Candidate 2 (accuracy 0.91): 1.1% better, under the 5% threshold, so it should be held"
"$PYTHON" scripts/make_fixture.py "$work/candidate-2" --accuracy 0.91 --seed 2
push "$work/candidate-2"

for n in 1 2; do
  step "Decision for candidate $n ($work/candidate-$n/decision.json)"
  "$PYTHON" -m json.tool "$work/candidate-$n/decision.json"
done

if [ "$keep" = true ]; then
  step "The MLflow server keeps running"
  cat >&2 <<EOF
UI and API:  $url   (export MLFLOW_TRACKING_URI=$url to point model-pusher or mlflow at it)
state:       $work
stop it:     kill -- -$server_pgid && rm -rf $work
EOF
fi
