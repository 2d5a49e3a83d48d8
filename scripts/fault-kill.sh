#!/usr/bin/env bash
# Fault (issue 7): SIGKILL of a replica in the middle of PUTs and rotations.
# Two dkimd replicas share a throw-away Postgres database, with rotation
# intervals of seconds so that rotations run all the time; each replica
# takes its own load. The replica that leads rotation is killed with
# SIGKILL mid-run. Afterwards the database must hold no half-created domain
# and no domain without exactly one active published RSA key, no key that
# signed before it was published, and the survivor must have taken the
# rotation loop over and kept rotating. Only loopback is used.
#
#   scripts/fault-kill.sh            # DURATION=40s per load, kill after 15 s
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-40s}
KILL_AFTER=${KILL_AFTER:-15}
admin=${DKIMD_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable}
db=dkimd_kill_$$
work=$(mktemp -d)
base=$((30000 + RANDOM % 10000))

go build -o "$work/dkimd" ./cmd/dkimd
go build -o "$work/dkimd-load" ./cmd/dkimd-load

psql "$admin" -qc "CREATE DATABASE $db" >/dev/null
url=$(sed -E "s#/postgres(\?|$)#/$db\1#" <<<"$admin")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  psql "$admin" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

export DKIMD_DATABASE_URL=$url DKIMD_DATA_DIR=$work/data DKIMD_MILTER_ADDR=off DKIMD_LOG_LEVEL=warn
# Seconds instead of days, and a resolver that answers nothing: domains stay
# pending-dns, brand fallback keys rotate (they have no CNAME gate).
export DKIMD_PUBLISH_LEAD_TIME=2s DKIMD_ROTATION_INTERVAL=6s DKIMD_RETIRE_GRACE=2s DKIMD_RESOLVER=127.0.0.1:9

# A Postgres deployment brings its own KEK: dkimd generates one only for an
# empty embedded store.
(umask 077 && printf 'k1 %s\n' "$(head -c 32 /dev/urandom | base64)" >"$work/kek")
export DKIMD_MASTER_KEY_FILE=$work/kek
"$work/dkimd" migrate
secret=$("$work/dkimd" brand create killtest 2>/dev/null)
for r in a b; do for i in $(seq 0 59); do echo "$r-$i.example"; done; done |
  xargs -P 4 -I{} "$work/dkimd" maildomain add killtest {} 2>/dev/null

start_replica() { # name offset
  local off=$2
  DKIMD_API_ADDR=127.0.0.1:$((base + off)) DKIMD_DNS_ADDR=127.0.0.1:$((base + off + 1)) \
    DKIMD_SIGN_ADDR=127.0.0.1:$((base + off + 2)) DKIMD_OPS_ADDR=127.0.0.1:$((base + off + 3)) \
    "$work/dkimd" serve 2>>"$work/$1.log" &
  pids+=($!)
  eval "pid_$1=$!"
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$((base + off + 3))/readyz" >/dev/null && return; sleep 0.1; done
  echo "replica $1 never became ready"; cat "$work/$1.log"; exit 1
}
leader_of() { curl -s "http://127.0.0.1:$((base + $1 + 3))/metrics" | awk '$1=="dkimd_rotation_leader"{print $2}'; }
rotations_of() { curl -s "http://127.0.0.1:$((base + $1 + 3))/metrics" | awk '$1 ~ /^dkimd_rotation_rotations_total/ {s+=$2} END {print s+0}'; }

start_replica a 0
sleep 1
start_replica b 10
sleep 2
if [ "$(leader_of 0)" = 1 ]; then victim=a; victim_off=0; survivor_off=10; else victim=b; victim_off=10; survivor_off=0; fi
echo "== rotation leader: replica $victim"

load() { # prefix offset
  DKIMD_LOAD_SECRET=$secret "$work/dkimd-load" --api "http://127.0.0.1:$((base + $2))" --dns "127.0.0.1:$((base + $2 + 1))" \
    --sign "http://127.0.0.1:$((base + $2 + 2))" --brand killtest --domain-prefix "$1-" --domains 60 --workers 4 --duration "$DURATION"
}
load a 0 >"$work/load-a.out" 2>&1 & la=$!
load b 10 >"$work/load-b.out" 2>&1 & lb=$!

sleep "$KILL_AFTER"
victim_pid=pid_$victim
echo "== SIGKILL replica $victim (pid ${!victim_pid}) in the middle of PUTs and rotations"
kill -9 "${!victim_pid}"
before=$(rotations_of "$survivor_off")
taken=""
for _ in $(seq 1 60); do
  [ "$(leader_of "$survivor_off")" = 1 ] && { taken=yes; break; }
  sleep 1
done
[ -n "$taken" ] && echo "== the survivor took the rotation loop over" || { echo "FAIL: the survivor never became leader"; status=1; }

wait "$la" || true; wait "$lb" || true
if [ "$victim" = a ]; then survivor_load=$work/load-b.out; else survivor_load=$work/load-a.out; fi
echo "== load on the survivor:"; cat "$survivor_load"
after=$(rotations_of "$survivor_off")
echo "== survivor's rotations since the kill: $((after - before))"

q() { psql "$url" -Atqc "$1"; }
half=$(q "SELECT count(*) FROM domains d WHERE (SELECT count(*) FROM keys k WHERE k.owner_kind='domain' AND k.owner=d.name) < 2")
noactive=$(q "SELECT count(*) FROM domains d WHERE (SELECT count(*) FROM keys k WHERE k.owner_kind='domain' AND k.owner=d.name AND k.state='active' AND k.algorithm='rsa' AND length(k.public_key) > 0) <> 1")
brandnoactive=$(q "SELECT count(*) FROM brands b WHERE (SELECT count(*) FROM keys k WHERE k.owner_kind='brand' AND k.owner=b.name AND k.state='active') <> 1")
orphans=$(q "SELECT count(*) FROM keys k WHERE k.owner_kind='domain' AND NOT EXISTS (SELECT 1 FROM domains d WHERE d.name=k.owner)")
early=$(q "SELECT count(*) FROM keys WHERE state='active' AND activated_at < published_at")
domains=$(q "SELECT count(*) FROM domains")
echo "== after the kill: $domains domains; half-created $half, without one active key $noactive, brands without one active key $brandnoactive, orphan keys $orphans, keys active before published $early"
status=${status:-0}
for v in "$half" "$noactive" "$brandnoactive" "$orphans" "$early"; do [ "$v" = 0 ] || status=1; done
grep -q " 0 lost" "$survivor_load" || status=1
[ $((after - before)) -gt 0 ] || { echo "FAIL: no rotation after the kill"; status=1; }
[ $status = 0 ] && echo "PASS" || echo "FAIL"
exit $status
