#!/usr/bin/env bash
# Bounded load run against a dkimd on Postgres (issue 7): brand API calls
# (GET-heavy, some PUT/DELETE), DNS queries and sign requests for DURATION,
# then a check that no acknowledged write was lost. Only loopback is used.
#
#   scripts/load.sh                    # 2 minutes, 200 domains, 8 workers
#   DURATION=5m scripts/load.sh
#   FAULT=pg-stop scripts/load.sh      # stops Postgres for 30 s mid-run (needs root)
#
# Postgres: $DKIMD_TEST_POSTGRES_URL or postgres://postgres@127.0.0.1:5432/postgres;
# a throw-away database is created and dropped.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-2m}
DOMAINS=${DOMAINS:-200}
WORKERS=${WORKERS:-8}
FAULT=${FAULT:-}
admin=${DKIMD_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable}
db=dkimd_load_$$
work=$(mktemp -d)
api_port=$((20000 + RANDOM % 10000)); dns_port=$((api_port + 1)); sign_port=$((api_port + 2)); ops_port=$((api_port + 3))

go build -o "$work/dkimd" ./cmd/dkimd
go build -o "$work/dkimd-load" ./cmd/dkimd-load

psql "$admin" -qc "CREATE DATABASE $db" >/dev/null
url=$(sed -E "s#/postgres(\?|$)#/$db\1#" <<<"$admin")
export DKIMD_DATABASE_URL=$url DKIMD_DATA_DIR=$work/data
export DKIMD_API_ADDR=127.0.0.1:$api_port DKIMD_DNS_ADDR=127.0.0.1:$dns_port
export DKIMD_SIGN_ADDR=127.0.0.1:$sign_port DKIMD_OPS_ADDR=127.0.0.1:$ops_port DKIMD_MILTER_ADDR=off
export DKIMD_RESOLVER=127.0.0.1:9 DKIMD_LOG_LEVEL=warn
# The load client is well-behaved: response-rate limiting is not what this measures.
export DKIMD_DNS_RRL_EXEMPT=127.0.0.1

cleanup() {
  [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  pg_isready -q -h 127.0.0.1 || pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start || true
  psql "$admin" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# A Postgres deployment brings its own KEK: dkimd generates one only for an
# empty embedded store.
(umask 077 && printf 'k1 %s\n' "$(head -c 32 /dev/urandom | base64)" >"$work/kek")
export DKIMD_MASTER_KEY_FILE=$work/kek
"$work/dkimd" migrate
secret=$("$work/dkimd" brand create loadtest 2>/dev/null)
for i in $(seq 0 $((DOMAINS - 1))); do echo "load-$i.example"; done |
  xargs -P 4 -I{} "$work/dkimd" maildomain add loadtest {} 2>/dev/null

"$work/dkimd" serve 2>"$work/dkimd.log" &
pid=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$ops_port/readyz" >/dev/null && break; sleep 0.1; done

if [ "$FAULT" = pg-stop ]; then
  (
    sleep 20
    echo "== stopping Postgres for 30 s"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main stop -m fast
    sleep 5
    echo "== during the outage: readyz says:"; curl -s "http://127.0.0.1:$ops_port/readyz"; echo
    echo "== during the outage: DNS still answers:"; dig +short +norec @127.0.0.1 -p "$dns_port" SOA oxcloud.zone || true
    sleep 25
    echo "== starting Postgres again"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
    t0=$(date +%s.%N)
    until curl -sf "http://127.0.0.1:$ops_port/readyz" >/dev/null; do sleep 0.1; done
    echo "== ready again $(echo "$(date +%s.%N) - $t0" | bc) s after Postgres was started"
  ) &
  fault_pid=$!
  extra=(--allow-503)
fi

status=0
DKIMD_LOAD_SECRET=$secret "$work/dkimd-load" --api "http://127.0.0.1:$api_port" --dns "127.0.0.1:$dns_port" \
  --sign "http://127.0.0.1:$sign_port" --brand loadtest --domains "$DOMAINS" --workers "$WORKERS" \
  --duration "$DURATION" "${extra[@]+"${extra[@]}"}" || status=$?
# Only the fault's subshell: a bare wait would also wait for dkimd serve.
[ -n "${fault_pid:-}" ] && wait "$fault_pid"
echo "dkimd log lines at error level: $(grep -c '"level":"ERROR"' "$work/dkimd.log" || true)"
grep '"level":"ERROR"' "$work/dkimd.log" | cut -c1-400 | sort | uniq -c | sort -rn | head -5 || true
exit $status
