#!/usr/bin/env bash
# Starts (or stops) a throwaway PostgreSQL 15 server on 127.0.0.1:55432 for
# the tests, and prints the TEST_DATABASE_URL to use.
#
#   scripts/test-postgres.sh start   # then: export TEST_DATABASE_URL=...
#   scripts/test-postgres.sh stop
#
# PostgreSQL refuses to run as root, so the server runs as `postgres` in a
# directory that user owns. fsync is off: this server is for tests only.
set -euo pipefail

PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
DATA=${TEST_PG_DATA:-/tmp/gateway-test-pg}
SOCK=${TEST_PG_SOCK:-/tmp/gateway-test-pgsock}
PORT=${TEST_PG_PORT:-55432}
URL="postgres://postgres@127.0.0.1:${PORT}/postgres"

as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "${1:-start}" in
  start)
    [ -x "$PGBIN/initdb" ] || { echo "PostgreSQL server binaries not found (set PGBIN)" >&2; exit 1; }
    if [ -f "$DATA/postmaster.pid" ] && as_postgres "$PGBIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
      echo "$URL"; exit 0
    fi
    rm -rf "$DATA" "$SOCK"
    if [ "$(id -u)" = 0 ]; then
      install -d -o postgres -g postgres "$DATA" "$SOCK"
    else
      mkdir -p "$DATA" "$SOCK"
    fi
    as_postgres "$PGBIN/initdb" -D "$DATA" -A trust -U postgres --no-sync -E UTF8 >/dev/null
    as_postgres "$PGBIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w \
      -o "-c listen_addresses=127.0.0.1 -p $PORT -k $SOCK -c fsync=off -c max_connections=300" start >/dev/null
    echo "$URL"
    ;;
  stop)
    as_postgres "$PGBIN/pg_ctl" -D "$DATA" -m fast stop >/dev/null 2>&1 || true
    ;;
  *)
    echo "usage: $0 start|stop" >&2; exit 2
    ;;
esac
