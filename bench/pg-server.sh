# Sourced by the PostgreSQL benchmarks: starts a private server (or uses
# STOCKSHIFT_TEST_PG_URL) and creates database $DB. Sets ADMIN, PSQL and URL;
# the server is stopped and removed on exit.
#
# With STOCKSHIFT_TEST_PG_URL set (its user must be allowed to CREATE DATABASE;
# psql must be on PATH) that server is used. Otherwise a private cluster is made
# the way the tests do (tests/pg.rs): initdb on a temporary folder (as user
# `postgres` when run as root), pg_ctl on a free port of 127.0.0.1 with
# fsync=off. When the server binaries are missing and the script runs as root,
# the `postgresql` package is installed.
# PG_EXTRA_OPTS adds server options (e.g. "-c max_connections=200").
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }

DB=stockshift_bench_$$
if [ -n "${STOCKSHIFT_TEST_PG_URL:-}" ]; then
  ADMIN=$STOCKSHIFT_TEST_PG_URL
  PSQL=psql
  trap 'psql -q "$ADMIN" -c "DROP DATABASE IF EXISTS $DB" >/dev/null 2>&1 || true' EXIT
else
  BINDIR=$(bindir)
  if [ -z "$BINDIR" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing the postgresql package..." >&2
    (apt-get install -y -qq --no-install-recommends postgresql ||
      (apt-get update -qq && apt-get install -y -qq --no-install-recommends postgresql)) >/dev/null 2>&1
    BINDIR=$(bindir)
  fi
  [ -n "$BINDIR" ] || { echo "no PostgreSQL server binaries; install postgresql or set STOCKSHIFT_TEST_PG_URL" >&2; exit 1; }
  PSQL=$BINDIR/psql
  PGD=$(mktemp -d /tmp/stockshift-bench-pg.XXXXXX)
  [ "$(id -u)" = 0 ] && chown postgres: "$PGD"
  PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  (cd "$PGD" && as_pg "$BINDIR/initdb" -D "$PGD/data" -U postgres -A trust -E UTF8 --no-locale --no-sync >/dev/null)
  (cd "$PGD" && as_pg "$BINDIR/pg_ctl" -D "$PGD/data" -l "$PGD/server.log" -w -o \
    "-p $PORT -k $PGD -c listen_addresses=127.0.0.1 -c fsync=off ${PG_EXTRA_OPTS:-}" start >/dev/null)
  trap '(cd "$PGD" && as_pg "$BINDIR/pg_ctl" -D "$PGD/data" -m immediate stop >/dev/null 2>&1); rm -rf "$PGD"' EXIT
  ADMIN=postgres://postgres@127.0.0.1:$PORT/postgres
fi
"$PSQL" -q -v ON_ERROR_STOP=1 "$ADMIN" -c "CREATE DATABASE $DB" >/dev/null
URL=${ADMIN%/*}/$DB
