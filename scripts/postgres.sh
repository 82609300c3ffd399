#!/usr/bin/env bash
# A private PostgreSQL cluster on loopback, for the tests that run an MLflow server whose backend
# store is PostgreSQL (the store shared deployments use; sqlite serializes writes and can hide
# races).
#
#   scripts/postgres.sh start   initialise the cluster if needed and start it (no-op when running)
#   scripts/postgres.sh stop    stop it
#   scripts/postgres.sh url     print the URL the tests connect to
#
# The cluster trusts local connections from the superuser `mlflow`, listens on 127.0.0.1 only
# (port $MODEL_PUSHER_PG_PORT, default 54329) and runs without fsync: it holds test data only.
# Its data lives in $MODEL_PUSHER_PG_DIR (default /tmp/model-pusher-postgres-<port>), outside
# the checkout because PostgreSQL refuses to run as root: as root the server runs as the
# `postgres` user, which must be able to reach the directory. The tests create one database
# per MLflow server in it.
set -euo pipefail

port=${MODEL_PUSHER_PG_PORT:-54329}
dir=${MODEL_PUSHER_PG_DIR:-/tmp/model-pusher-postgres-$port}

bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
if [[ -z $bin ]]; then
  echo "postgres.sh: PostgreSQL is not installed; run scripts/setup.sh (apt install postgresql)" >&2
  exit 1
fi

# Runs a server command as the cluster's owner: `postgres` when we are root, else ourselves.
as_owner() {
  if [[ $(id -u) == 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

running() {
  "$bin/pg_isready" -q -h 127.0.0.1 -p "$port"
}

case ${1:-start} in
  start)
    if running; then
      exit 0
    fi
    if [[ ! -f $dir/data/PG_VERSION ]]; then
      mkdir -p "$dir"
      [[ $(id -u) == 0 ]] && chown postgres: "$dir"
      as_owner "$bin/initdb" --pgdata "$dir/data" --username mlflow --auth trust \
        --encoding UTF8 --no-sync >"$dir/initdb.log" 2>&1 ||
        { cat "$dir/initdb.log" >&2; exit 1; }
    fi
    as_owner "$bin/pg_ctl" --pgdata "$dir/data" --log "$dir/server.log" --wait start \
      -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir \
          -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
          -c max_connections=200" >/dev/null ||
      { tail -n 20 "$dir/server.log" >&2; exit 1; }
    echo "postgres.sh: PostgreSQL running on 127.0.0.1:$port ($dir)"
    ;;
  stop)
    if running; then
      as_owner "$bin/pg_ctl" --pgdata "$dir/data" --mode fast --wait stop >/dev/null
    fi
    ;;
  url)
    echo "postgresql://mlflow@127.0.0.1:$port"
    ;;
  *)
    echo "usage: scripts/postgres.sh start|stop|url" >&2
    exit 2
    ;;
esac
