#!/usr/bin/env bash
# API fuzzing: schemathesis generates requests from the gateway's own
# /openapi.json and holds every answer to that document: no 5xx, only
# documented status codes and content types, bodies that match the response
# schemas. It runs against the real binary, on a fresh data dir and database,
# as an admin, so that every operation gets past authentication.
#
#   scripts/api-fuzz.sh BINARY [sqlite|postgres] [--max-time SECONDS]
#                       [--max-examples N] [--seed N] [--workers N]
#                       [-- SCHEMATHESIS-RUN-OPTIONS...]
#
#   scripts/api-fuzz.sh target/debug/gateway sqlite
#   TEST_DATABASE_URL=$(scripts/test-postgres.sh start) \
#     scripts/api-fuzz.sh target/debug/gateway postgres
#   API_FUZZ_MAX_TIME=1800 scripts/api-fuzz.sh target/release/gateway   # a long run
#
# --max-time (or API_FUZZ_MAX_TIME) is the budget of the whole schemathesis
# run: it keeps generating until the budget is spent, so a longer budget is
# a deeper run. The default is 120 s, or 90 s when CI is set (as CI
# services do): with the gateway's start-up that keeps a run under two
# minutes per database once schemathesis is installed. --max-examples
# (API_FUZZ_MAX_EXAMPLES) caps the cases per operation in each round,
# --seed (API_FUZZ_SEED) replays a run (schemathesis prints the seed it
# used), --workers (API_FUZZ_WORKERS, default 2) sets its concurrency.
# Options after `--` go to `schemathesis run` as they are, for example
# `-- --include-path-regex '^/v1/'` or `-- --baseline FILE`.
#
# postgres needs TEST_DATABASE_URL, a server whose user may create
# databases: the run gets a database of its own, dropped at the end, so
# thousands of fuzzed rows never meet the tests' data (and a leftover
# database from an earlier run cannot hide a migration problem).
#
# schemathesis is installed once, pinned, into a venv under
# ${API_FUZZ_CACHE:-${XDG_CACHE_HOME:-~/.cache}/gateway-api-fuzz} (cache
# that directory in CI). scripts/api-fuzz.toml, next to this script, is its
# config file: the few documented exceptions to the checks, each explained.
# Exits 0 when nothing failed; on failure the work dir (the gateway's log,
# schemathesis' output and a JUnit report) is kept and named.
set -euo pipefail

SCHEMATHESIS_VERSION=4.32.5

usage() {
  sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0" >&2
  exit 2
}

[ $# -ge 1 ] || usage
case "$1" in -h | --help) usage ;; esac
binary=$1
shift
db=sqlite
case "${1:-}" in sqlite | postgres) db=$1 && shift ;; esac
case "${CI:-}" in '' | false | 0) default_max_time=120 ;; *) default_max_time=90 ;; esac
max_time=${API_FUZZ_MAX_TIME:-$default_max_time}
max_examples=${API_FUZZ_MAX_EXAMPLES:-}
seed=${API_FUZZ_SEED:-}
# Two workers keep the client from starving the gateway of CPU on a small
# CI machine; more mostly measures the scheduler.
workers=${API_FUZZ_WORKERS:-2}
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --max-time) max_time=${2:?--max-time needs seconds} && shift 2 ;;
    --max-examples) max_examples=${2:?--max-examples needs a number} && shift 2 ;;
    --seed) seed=${2:?--seed needs a number} && shift 2 ;;
    --workers) workers=${2:?--workers needs a number} && shift 2 ;;
    --) shift && extra=("$@") && break ;;
    *) echo "api-fuzz: unknown argument: $1 (see --help)" >&2 && exit 2 ;;
  esac
done

[ -x "$binary" ] || { echo "api-fuzz: $binary is not an executable" >&2; exit 2; }
binary=$(cd "$(dirname "$binary")" && pwd)/$(basename "$binary")
st_config=$(cd "$(dirname "$0")" && pwd)/api-fuzz.toml
[ -f "$st_config" ] || { echo "api-fuzz: $st_config is missing" >&2; exit 2; }
if [ "$db" = postgres ] && [ -z "${TEST_DATABASE_URL:-}" ]; then
  echo "api-fuzz: postgres needs TEST_DATABASE_URL (scripts/test-postgres.sh start)" >&2
  exit 2
fi

started=$(date +%s)
say() { echo "==> [api-fuzz $db $(( $(date +%s) - started ))s] $*"; }

# --- schemathesis ------------------------------------------------------------

cache=${API_FUZZ_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gateway-api-fuzz}
venv=$cache/venv-$SCHEMATHESIS_VERSION
# The marker is written last: an interrupted install is redone, not trusted.
if [ ! -f "$venv/.installed" ]; then
  say "installing schemathesis $SCHEMATHESIS_VERSION into $venv"
  rm -rf "$venv"
  mkdir -p "$cache"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
  touch "$venv/.installed"
fi
python=$venv/bin/python

# --- the gateway ---------------------------------------------------------------

work=$(mktemp -d "${TMPDIR:-/tmp}/gateway-api-fuzz.XXXXXX")
log=$work/gateway.log
gateway_pid=
fuzz_pid=
pg_admin_url=
pg_database=
ok=

cleanup() {
  if [ -n "$fuzz_pid" ]; then
    kill -TERM "$fuzz_pid" 2>/dev/null || true
    wait "$fuzz_pid" 2>/dev/null || true
  fi
  if [ -n "$gateway_pid" ] && kill -0 "$gateway_pid" 2>/dev/null; then
    kill -TERM "$gateway_pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$gateway_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$gateway_pid" 2>/dev/null || true
    wait "$gateway_pid" 2>/dev/null || true
  fi
  if [ -n "$pg_database" ]; then
    "$psql" -q -d "$pg_admin_url" -c "DROP DATABASE IF EXISTS $pg_database WITH (FORCE)" >/dev/null 2>&1 || true
  fi
  if [ -n "$ok" ]; then
    rm -rf "$work"
  else
    echo "api-fuzz: FAILED ($db); kept $work" >&2
    echo "  gateway log:         $log" >&2
    if [ -f "$work/schemathesis.txt" ]; then
      echo "  schemathesis output: $work/schemathesis.txt" >&2
      echo "  JUnit report:        $work/report/" >&2
    fi
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# An empty config file of our own, so a config/gateway.toml in the current
# directory cannot change what is fuzzed; everything else comes from the
# environment, as an operator would set it.
: >"$work/gateway.toml"
export GATEWAY_CONFIG=$work/gateway.toml
export GATEWAY_DATA_DIR=$work/data
# Port 0: the kernel picks a free port and the gateway logs it, so two runs
# (or a test suite) on one machine cannot race for the same port.
export GATEWAY_BIND=127.0.0.1:0
# Thousands of requests a minute from one address and one user are the point.
export GATEWAY_RATE_LIMITS=off
# With a secret the incoming webhook checks signatures instead of answering
# 503 to everything, which is the code worth fuzzing.
GATEWAY_WEBHOOK_SECRET=api-fuzz-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
export GATEWAY_WEBHOOK_SECRET
export GATEWAY_LOG=info
unset RUST_LOG DATABASE_URL

if [ "$db" = postgres ]; then
  psql=$(command -v psql || ls /usr/lib/postgresql/*/bin/psql 2>/dev/null | sort -V | tail -n 1)
  [ -x "$psql" ] || { echo "api-fuzz: psql not found" >&2; exit 2; }
  pg_admin_url=$TEST_DATABASE_URL
  pg_database=gw_fuzz_$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
  "$psql" -q -v ON_ERROR_STOP=1 -d "$pg_admin_url" -c "CREATE DATABASE $pg_database" >/dev/null
  # The same server and credentials, another database (any ?query is kept).
  base=${pg_admin_url%%\?*}
  query=${pg_admin_url#"$base"}
  authority=${base#*://}
  authority=${authority%%/*}
  DATABASE_URL=${base%%://*}://$authority/$pg_database$query
  export DATABASE_URL
fi

say "starting $binary (work dir $work)"
"$binary" serve >"$log" 2>&1 &
gateway_pid=$!

base_url=
for _ in $(seq 600); do
  addr=$(sed -n 's/.*listening on http:\/\/\([^ ]*\).*/\1/p' "$log" | head -n 1)
  if [ -n "$addr" ] && curl -fsS --max-time 2 -o /dev/null "http://$addr/health" 2>/dev/null; then
    base_url=http://$addr
    break
  fi
  kill -0 "$gateway_pid" 2>/dev/null || { echo "api-fuzz: the gateway exited at start:" >&2; cat "$log" >&2; exit 1; }
  sleep 0.1
done
[ -n "$base_url" ] || { echo "api-fuzz: the gateway was not healthy within 60 s" >&2; exit 1; }
say "gateway healthy at $base_url"

# An admin of the default organization: every operation in the document is
# open to it, so the fuzzer reaches the handlers instead of 403s. The CLI
# shares the gateway's config and database through the environment.
password=api-fuzz-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
printf '%s\n' "$password" |
  "$binary" user create --username api-fuzz-admin --email api-fuzz-admin@example.com \
    --password - --role admin >/dev/null 2>"$work/cli.log" ||
  { echo "api-fuzz: gateway user create failed:" >&2; cat "$work/cli.log" >&2; exit 1; }
token=$(
  curl -fsS "$base_url/api/v1/auth/login" -H 'content-type: application/json' \
    -d "{\"username\":\"api-fuzz-admin\",\"password\":\"$password\"}" |
    "$python" -c 'import json, sys; print(json.load(sys.stdin)["access_token"])'
) || { echo "api-fuzz: logging in as the admin failed" >&2; exit 1; }

# --- the run ---------------------------------------------------------------------

# What the server answers, held to the document. Not positive_data_acceptance
# or negative_data_rejection: most request bodies are documented as `{}` with
# their rules in prose, so those would only restate that.
checks=not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance
args=(
  --config-file "$st_config"
  run "$base_url/openapi.json" --url "$base_url"
  --header "Authorization: Bearer $token"
  --checks "$checks"
  --max-time "$max_time" --workers "$workers"
  --report junit --report-dir "$work/report" --no-color
)
[ -n "$max_examples" ] && args+=(--max-examples "$max_examples")
[ -n "$seed" ] && args+=(--seed "$seed")

say "schemathesis, ${max_time}s budget"
status=0
# From the work dir: schemathesis keeps its example database and replay
# files in the current directory, which must not be the repository. In the
# background, because bash runs the traps (and stops the gateway) only
# between commands: a cancelled CI job must not leave it running for the
# rest of the budget.
(cd "$work" && exec "$venv/bin/schemathesis" "${args[@]}" "${extra[@]}") \
  > >(tee "$work/schemathesis.txt") 2>&1 &
fuzz_pid=$!
wait "$fuzz_pid" || status=$?
fuzz_pid=

# A panic the server survived (a background task, a caught handler panic)
# is a bug even when every answer looked right.
if ! kill -0 "$gateway_pid" 2>/dev/null; then
  echo "api-fuzz: the gateway died during the run" >&2
  status=1
elif grep -q 'panicked' "$log"; then
  echo "api-fuzz: the gateway panicked during the run:" >&2
  grep -m 5 'panicked' "$log" >&2
  status=1
fi

say "done (exit status $status)"
[ "$status" = 0 ] && ok=1
exit "$status"
