#!/usr/bin/env bash
# Scale test: N domains bulk-loaded into a throw-away Postgres database
# (bench/scale/bulkload), then dkimd on it: start-up time to /readyz 200,
# resident memory, DNS queries/second (dnsperf), API GET and PUT latency
# (bench/scale/apilat) with and without the key pool, and the time for a
# change to reach DNS. Results and how to read them: docs/reliability.md,
# "Scale".
#
#   N=100000 bench/scale/scale.sh          # or: make scale N=1000000
#   PGURL (server URL without database, default postgres://postgres@127.0.0.1:5432),
#   DURATION (dnsperf and GET seconds, 10), PUTS (per pool setting, 100),
#   PUT_RATE (PUTs/s, 4), SLOW_PUTS (also at 1/s, 30), PROPAGATE (PUTs timed to DNS, 20), KEEP=1 keeps
#   the temp dir and the database, *_PORT move the listeners.
#
# Needs Postgres (psql), dnsperf, dig, curl and go. Everything listens on 127.0.0.1.
set -euo pipefail

N=${N:-1000000}
DURATION=${DURATION:-10}
PUTS=${PUTS:-100}
PUT_RATE=${PUT_RATE:-4}
PROPAGATE=${PROPAGATE:-20}
SLOW_PUTS=${SLOW_PUTS:-30}
CLIENTS=${CLIENTS:-4}
PGURL=${PGURL:-postgres://postgres@127.0.0.1:5432}
DNS_PORT=${DNS_PORT:-35353}
API_PORT=${API_PORT:-38080}
OPS_PORT=${OPS_PORT:-39090}
SIGN_PORT=${SIGN_PORT:-38081}
ZONE=oxcloud.zone
BRAND=scale
SPARE=$((2 * (PUTS + SLOW_PUTS) + PROPAGATE + 10))
DB=dkimd_scale_$$

[ "$N" -ge 1 ] || { echo "scale: N must be at least 1" >&2; exit 1; }
LAST_DOMAIN=$(printf 'd%07d.example.com' $((N - 1)))
LAST_TXT=selector1-$(printf 'd%07d-example-com' $((N - 1)))._domainkey.$ZONE

for tool in psql dnsperf dig curl go; do
	command -v "$tool" >/dev/null || { echo "scale: $tool is missing" >&2; exit 1; }
done

WORK=$(mktemp -d /tmp/dkimd-scale.XXXXXX)
DKIMD_PID=
stop_dkimd() {
	if [ -n "$DKIMD_PID" ]; then
		kill "$DKIMD_PID" 2>/dev/null || true
		wait "$DKIMD_PID" 2>/dev/null || true
		DKIMD_PID=
	fi
}
cleanup() {
	stop_dkimd
	if [ -z "${KEEP:-}" ]; then
		psql -q "$PGURL/postgres" -c "DROP DATABASE IF EXISTS $DB" >/dev/null 2>&1 || echo "scale: could not drop database $DB" >&2
		rm -rf "$WORK"
	else
		echo "kept $WORK and database $DB"
	fi
}
trap cleanup EXIT

cd "$(dirname "$0")/../.."
echo "== machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -g | awk '/Mem:/{print $2}') GiB, $(go version | cut -d' ' -f3), $(psql -At "$PGURL/postgres" -c 'SHOW server_version')"
echo "== building"
go build -o "$WORK/dkimd" ./cmd/dkimd
go build -o "$WORK/bulkload" ./bench/scale/bulkload
go build -o "$WORK/apilat" ./bench/scale/apilat

psql -q "$PGURL/postgres" -c "CREATE DATABASE $DB"
DBURL="$PGURL/$DB"

echo "== bulk-loading $N domains (+$SPARE spare maildomains) into database $DB"
t0=$(date +%s.%N)
SECRET=$(nice -n 10 "$WORK/bulkload" -database-url "$DBURL" -data-dir "$WORK/data" -brand "$BRAND" -zone "$ZONE" \
	-n "$N" -spare "$SPARE" -queries "$WORK/queries.txt" 2>"$WORK/bulkload.log") || { cat "$WORK/bulkload.log"; exit 1; }
grep -E 'generated .* key pairs|committed|analyzed' "$WORK/bulkload.log"
echo "bulk load took $(echo "$(date +%s.%N) - $t0" | bc) s; database size $(psql -At "$DBURL" -c "SELECT pg_size_pretty(pg_database_size('$DB'))")"

ms_since() { echo "($(date +%s%N) - $1) / 1000000" | bc; }
rss_mib() { awk '/VmRSS/{printf "%d", $2 / 1024}' /proc/"$DKIMD_PID"/status; }
heap_mib() { curl -s "127.0.0.1:$OPS_PORT/metrics" | awk '/^go_memstats_heap_inuse_bytes /{printf "%d", $2 / 1048576}'; }

start_dkimd() { # pool-size
	local t0
	t0=$(date +%s%N)
	"$WORK/dkimd" serve --database-url "$DBURL" --data-dir "$WORK/data" --master-key-file "$WORK/data/master.key" --zone "$ZONE" \
		--dns-addr "127.0.0.1:$DNS_PORT" --api-addr "127.0.0.1:$API_PORT" --ops-addr "127.0.0.1:$OPS_PORT" \
		--sign-addr "127.0.0.1:$SIGN_PORT" --milter-addr "" --resolver "127.0.0.1:$DNS_PORT" \
		--dns-rrl-exempt 127.0.0.1 --key-pool-size "$1" --log-level warn >>"$WORK/dkimd.log" 2>&1 &
	DKIMD_PID=$!
	until curl -sf -o /dev/null "127.0.0.1:$OPS_PORT/readyz"; do
		alive "$t0"
		sleep 0.05
	done
	local ready
	ready=$(ms_since "$t0")
	# /readyz alone is not enough: it has answered 200 while the zone was
	# still loading (docs/reliability.md, "Scale"). Serving means DNS answers
	# the last loaded domain's TXT and the API returns it.
	until [ -n "$(dig @127.0.0.1 -p "$DNS_PORT" +short +norec +time=1 +tries=1 TXT "$LAST_TXT" 2>/dev/null | grep DKIM1)" ]; do
		alive "$t0"
		sleep 0.05
	done
	local dns
	dns=$(ms_since "$t0")
	until curl -sf -o /dev/null -u "$BRAND:$SECRET" "127.0.0.1:$API_PORT/cloudapi/v2/mail/dkim/$BRAND/$LAST_DOMAIN"; do
		alive "$t0"
		sleep 0.05
	done
	echo "dkimd (--key-pool-size $1): /readyz 200 after $ready ms, DNS answers the last domain after $dns ms, API GET 200 after $(ms_since "$t0") ms"
	echo "  serving: VmRSS $(rss_mib) MiB, Go heap in use $(heap_mib) MiB ($(echo "$(rss_mib) * 1048576 / $N" | bc) bytes RSS per domain)"
}

alive() { # start-ns
	kill -0 "$DKIMD_PID" 2>/dev/null || { echo "dkimd exited"; tail -20 "$WORK/dkimd.log"; exit 1; }
	[ "$(ms_since "$1")" -lt 1800000 ] || { echo "dkimd not serving after 30 min"; exit 1; }
}

wait_pool_full() { # size
	for _ in $(seq 600); do
		[ "$(curl -s "127.0.0.1:$OPS_PORT/metrics" | awk '/^dkimd_keypool_keys /{print $2}')" = "$1" ] && return
		sleep 0.1
	done
	echo "key pool did not fill to $1"
	exit 1
}

# CPU seconds (user+system) dkimd has used so far.
cpu_s() { sed 's/.*) //' /proc/"$DKIMD_PID"/stat | awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($12 + $13) / hz}'; }
misses() { curl -s "127.0.0.1:$OPS_PORT/metrics" | awk '/^dkimd_keypool_misses_total /{print $2}'; }

# put LABEL FIRST COUNT RATE: one PUT run, with what dkimd's CPU and the key
# pool did meanwhile, and the machine's load (it is shared: read PUT figures
# with it).
put() {
	local c0 m0 out
	c0=$(cpu_s)
	m0=$(misses)
	out=$(apilat -mode put -first "$2" -count "$3" -rate "$4")
	printf '%-16s %s\n' "$1" "$out"
	printf '%-16s dkimd CPU %.2f s (%.0f ms per PUT), key pool misses %s, load average %s\n' "" \
		"$(echo "$(cpu_s) - $c0" | bc)" "$(echo "($(cpu_s) - $c0) * 1000 / $3" | bc)" \
		"$(echo "${m0:-0} ${m0:+$(misses)}" | awk '{print NF == 2 ? $2 - $1 : "n/a"}')" "$(cut -d' ' -f1-3 /proc/loadavg)"
}

apilat() { "$WORK/apilat" -api "http://127.0.0.1:$API_PORT" -brand "$BRAND" -secret "$SECRET" -n "$N" "$@"; }

echo "== dkimd on Postgres, key pool 16"
start_dkimd 16

# A domain near the end of the load signs with its own (unsealed) key.
# The sign listener binds a moment after the API listener,
# hence the retries.
dom=$LAST_DOMAIN
hdrs=$(printf 'From: a@%s\r\nTo: b@example.org\r\nSubject: scale\r\nDate: Sun, 29 Nov 2026 07:00:00 +0000\r\nMessage-ID: <1@%s>\r\n\r\nbody\r\n' "$dom" "$dom" |
	curl -s -D - -o "$WORK/sig.txt" --retry 20 --retry-connrefused --retry-max-time 10 --data-binary @- \
		"127.0.0.1:$SIGN_PORT/v1/sign") || true
echo "$hdrs" | grep -qi "^Dkim-Mode: aligned" || { echo "signing for $dom failed:"; echo "$hdrs"; cat "$WORK/sig.txt"; exit 1; }
echo "signing for $dom: $(echo "$hdrs" | grep -i '^Dkim-Selector' | tr -d '\r'), aligned"

echo "== dnsperf -l $DURATION -c $CLIENTS -T 1, $(wc -l <"$WORK/queries.txt") queries, 90% existing TXT, 10% NXDOMAIN"
for round in 1 2; do
	dnsperf -s 127.0.0.1 -p "$DNS_PORT" -d "$WORK/queries.txt" -l "$DURATION" -c "$CLIENTS" -T 1 >"$WORK/perf.out" 2>&1
	printf 'round %s: qps %s  lost %s  avg latency %s s\n' "$round" \
		"$(awk '/Queries per second/{print $4}' "$WORK/perf.out")" \
		"$(awk '/Queries lost/{print $3, $4}' "$WORK/perf.out")" \
		"$(awk -F': *' '/Average Latency/{print $2}' "$WORK/perf.out" | cut -d' ' -f1)"
done

echo "== API latency"
apilat -mode get -n "$N" -c 1 -duration 1s >/dev/null # warm the credential cache
apilat -mode get -n "$N" -c "$CLIENTS" -duration "${DURATION}s"
apilat -mode get -n "$N" -c 1 -duration "${DURATION}s"
wait_pool_full 16
put "pool 16 (warm)" 0 "$PUTS" "$PUT_RATE"
wait_pool_full 16
put "pool 16 (warm)" "$PUTS" "$SLOW_PUTS" 1
wait_pool_full 16
apilat -mode propagate -first $((PUTS + SLOW_PUTS)) -count "$PROPAGATE" -dns "127.0.0.1:$DNS_PORT" -zone "$ZONE"
echo "after the tests: VmRSS $(rss_mib) MiB, Go heap in use $(heap_mib) MiB"
stop_dkimd

echo "== dkimd restarted, key pool 0 (every PUT generates its two keys inline)"
start_dkimd 0
apilat -mode get -n "$N" -c 1 -duration 1s >/dev/null
first=$((PUTS + SLOW_PUTS + PROPAGATE))
put "pool 0" "$first" "$PUTS" "$PUT_RATE"
put "pool 0" $((first + PUTS)) "$SLOW_PUTS" 1
stop_dkimd
echo "== done (N=$N)"
