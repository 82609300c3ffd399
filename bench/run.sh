#!/usr/bin/env bash
# Runs the benchmarks and prints their figures and ratios; see bench/README.md.
#
#   bench/run.sh                  all of them, in this order
#   bench/run.sh push policy      only these: push, registry, large, policy
#
# It installs what it needs first (scripts/setup.sh), builds the policies and the release
# binary, and writes each script's figures as JSON into target/bench/. Run it on an otherwise
# idle machine: the scripts wait for the load average to settle, but cannot make a busy machine
# quiet.
set -euo pipefail
cd "$(dirname "$0")/.."

selected=("$@")
if [[ ${#selected[@]} == 0 ]]; then
  selected=(push registry large policy)
fi

scripts/setup.sh
cargo xtask policies
cargo build --release --locked -p model-pusher
mkdir -p target/bench

for name in "${selected[@]}"; do
  echo
  case $name in
    push) .venv/bin/python bench/push.py --json target/bench/push.json ;;
    registry) .venv/bin/python bench/registry_size.py --json target/bench/registry_size.json ;;
    large) .venv/bin/python bench/large_model.py --json target/bench/large_model.json ;;
    policy) cargo bench --locked -p model-pusher --bench policy ;;
    *)
      echo "bench/run.sh: unknown benchmark $name (push, registry, large, policy)" >&2
      exit 2
      ;;
  esac
done
