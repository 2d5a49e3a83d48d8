#!/usr/bin/env bash
# DNS benchmark: dkimd against NSD serving the same zone, taken from dkimd by
# AXFR. See docs/performance.md for results and how to read them.
#
#   N=10000 DURATION=10 scripts/bench-dns.sh      # or: make bench-dns N=100000
#   DKIMD_PROCS=1 (GOMAXPROCS of dkimd), ROUNDS=2, CLIENTS=4, KEEP=1 (keep the
#   temp dir), REUSE=<kept dir> (skip loading), SETTLE=5 (seconds between the
#   transfer and the measurement), *_PORT to move the listeners.
#
# dkimd runs with response-rate limiting off (--dns-rrl 0, as NSD's
# rrl-ratelimit: 0 here). RRL=1 (the default; RRL=0 skips it) also runs a
# second dkimd, "dkimd-rrl", on a copy of the store with it on
# (--dns-rrl 200) and the load generator's address exempted, so that the
# cost of the limiter's path is measured beside it. BASE=<git revision>
# runs a third, "dkimd-base", built from that revision (with BASE_FLAGS),
# to show a change does not make dkimd slower, in the same run.
#
# Needs nsd, dnsperf and dig (Debian: nsd dnsperf bind9-dnsutils). Everything
# listens on 127.0.0.1; all state lives in a temporary directory.
set -euo pipefail

N=${N:-10000}
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-2}
CLIENTS=${CLIENTS:-4}
DNS_PORT=${DNS_PORT:-25353}
NSD_PORT=${NSD_PORT:-25354}
API_PORT=${API_PORT:-28080}
OPS_PORT=${OPS_PORT:-29090}
ZONE=oxcloud.zone
# dkimd's GOMAXPROCS; NSD runs one server process (server-count: 1).
DKIMD_PROCS=${DKIMD_PROCS:-$(nproc)}

for tool in nsd dnsperf dig go; do
	command -v "$tool" >/dev/null || { echo "bench-dns: $tool is missing" >&2; exit 1; }
done

WORK=$(mktemp -d /tmp/bench-dns.XXXXXX)
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	[ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

cd "$(dirname "$0")/.."
echo "== building"
go build -o "$WORK/dkimd" ./cmd/dkimd
go build -o "$WORK/load" ./bench/dns/load
if [ -n "${BASE:-}" ]; then
	echo "== building dkimd at $BASE"
	mkdir "$WORK/base-src"
	git archive "$BASE" | tar -x -C "$WORK/base-src"
	(cd "$WORK/base-src" && go build -o "$WORK/dkimd-base" ./cmd/dkimd)
fi

if [ -n "${REUSE:-}" ]; then
	# REUSE=/tmp/bench-dns.XXXX from an earlier run with KEEP=1: skip the load.
	echo "== reusing the store and query file of $REUSE"
	cp -r "$REUSE/data" "$WORK/data"
	cp "$REUSE/queries.txt" "$WORK/queries.txt"
else
	echo "== loading $N domains"
	t0=$(date +%s.%N)
	"$WORK/load" -data-dir "$WORK/data" -n "$N" -queries "$WORK/queries.txt" -zone "$ZONE" 2>&1 | tail -1
	echo "loaded in $(echo "$(date +%s.%N) - $t0" | bc) s"
fi

SECRET=$(head -c 32 /dev/urandom | base64)
echo "xfr.$ZONE hmac-sha256 $SECRET" > "$WORK/tsig.key"

echo "== starting dkimd on 127.0.0.1:$DNS_PORT (GOMAXPROCS=$DKIMD_PROCS)"
t0=$(date +%s.%N)
GOMAXPROCS=$DKIMD_PROCS "$WORK/dkimd" serve --data-dir "$WORK/data" --zone "$ZONE" \
	--dns-addr "127.0.0.1:$DNS_PORT" --api-addr "127.0.0.1:$API_PORT" --ops-addr "127.0.0.1:$OPS_PORT" \
	--sign-addr "" --milter-addr "" --log-level warn --dns-rrl 0 \
	--tsig-key-file "$WORK/tsig.key" --xfr-allow 127.0.0.1 --secondaries "127.0.0.1:$NSD_PORT" \
	>"$WORK/dkimd.log" 2>&1 &
DKIMD_PID=$!
PIDS+=("$DKIMD_PID")
serial() { dig @127.0.0.1 -p "$1" +short +norec +time=1 +tries=1 SOA "$ZONE" 2>/dev/null | awk 'NF == 7 && $3 ~ /^[0-9]+$/ {print $3}' || true; }
for _ in $(seq 600); do [ -n "$(serial "$DNS_PORT")" ] && break; sleep 0.2; done
SERIAL=$(serial "$DNS_PORT")
[ -n "$SERIAL" ] || { echo "dkimd did not answer"; cat "$WORK/dkimd.log"; exit 1; }
echo "dkimd answers serial $SERIAL after $(echo "$(date +%s.%N) - $t0" | bc) s"

echo "== starting NSD on 127.0.0.1:$NSD_PORT as secondary"
mkdir -p "$WORK/nsd"
cat > "$WORK/nsd/nsd.conf" <<CONF
server:
	ip-address: 127.0.0.1@$NSD_PORT
	port: $NSD_PORT
	username: ""
	chroot: ""
	database: ""
	zonesdir: "$WORK/nsd"
	zonelistfile: "$WORK/nsd/zone.list"
	xfrdfile: "$WORK/nsd/xfrd.state"
	xfrdir: "$WORK/nsd"
	pidfile: "$WORK/nsd/nsd.pid"
	logfile: "$WORK/nsd/nsd.log"
	server-count: 1
	reuseport: yes
	minimal-responses: yes
	rrl-ratelimit: 0
	verbosity: 1
remote-control:
	control-enable: no
key:
	name: "xfr.$ZONE"
	algorithm: hmac-sha256
	secret: "$SECRET"
zone:
	name: "$ZONE"
	zonefile: "$ZONE.zone"
	request-xfr: 127.0.0.1@$DNS_PORT xfr.$ZONE
	allow-notify: 127.0.0.1 xfr.$ZONE
CONF
# What dkimd allocates while NSD takes its first AXFR: the transfer's
# garbage (the Go collector's running total, from /metrics).
allocated() { curl -s "127.0.0.1:$OPS_PORT/metrics" | awk '/^go_memstats_alloc_bytes_total /{printf "%d", $2}'; }
ALLOC0=$(allocated)
t0=$(date +%s.%N)
nsd -d -c "$WORK/nsd/nsd.conf" >"$WORK/nsd/stderr" 2>&1 &
NSD_PID=$!
PIDS+=("$NSD_PID")
for _ in $(seq 3000); do [ "$(serial "$NSD_PORT")" = "$SERIAL" ] && break; sleep 0.2; done
[ "$(serial "$NSD_PORT")" = "$SERIAL" ] || { echo "NSD did not take the zone"; cat "$WORK/nsd/nsd.log"; exit 1; }
echo "NSD has serial $SERIAL (AXFR from dkimd) after $(echo "$(date +%s.%N) - $t0" | bc) s"
ALLOC1=$(allocated)
echo "dkimd allocated $(( (${ALLOC1:-0} - ${ALLOC0:-0}) / 1048576 )) MiB during the first AXFR ($(( (${ALLOC1:-0} - ${ALLOC0:-0}) / N )) bytes per domain)"

# Both must give the same answer before their speed means anything.
Q=$(sed -n 1p "$WORK/queries.txt" | cut -d' ' -f1)
a=$(dig @127.0.0.1 -p "$DNS_PORT" +short TXT "$Q"); b=$(dig @127.0.0.1 -p "$NSD_PORT" +short TXT "$Q")
[ "$a" = "$b" ] && [ -n "$a" ] || { echo "answers differ for $Q: dkimd $a / nsd $b"; exit 1; }

# The other dkimd instances, each on a copy of the store (one serve per
# data dir) and ports of its own: name binary port flags...
INSTANCES=(dkimd)
declare -A PORT_OF=([dkimd]=$DNS_PORT [nsd]=$NSD_PORT) PID_OF=([dkimd]=$DKIMD_PID [nsd]=nsd)
start_other() {
	local name=$1 bin=$2 port=$3
	shift 3
	cp -r "$WORK/data" "$WORK/data-$name"
	rm -f "$WORK/data-$name"/*.lock
	GOMAXPROCS=$DKIMD_PROCS "$bin" serve --data-dir "$WORK/data-$name" --zone "$ZONE" \
		--dns-addr "127.0.0.1:$port" --api-addr "127.0.0.1:$((port + 1000))" --ops-addr "127.0.0.1:$((port + 2000))" \
		--sign-addr "" --milter-addr "" --log-level warn "$@" >"$WORK/$name.log" 2>&1 &
	PIDS+=($!)
	PID_OF[$name]=$!
	PORT_OF[$name]=$port
	INSTANCES+=("$name")
	for _ in $(seq 600); do [ "$(serial "$port")" = "$SERIAL" ] && break; sleep 0.2; done
	[ "$(serial "$port")" = "$SERIAL" ] || { echo "$name did not answer serial $SERIAL"; cat "$WORK/$name.log"; exit 1; }
	echo "$name answers serial $SERIAL on 127.0.0.1:$port ($*)"
}
if [ "${RRL:-1}" != 0 ]; then
	start_other dkimd-rrl "$WORK/dkimd" $((DNS_PORT + 2)) --dns-rrl 200 --dns-rrl-exempt 127.0.0.1
fi
if [ -n "${BASE:-}" ]; then
	# shellcheck disable=SC2086 # BASE_FLAGS is a list of flags
	start_other dkimd-base "$WORK/dkimd-base" $((DNS_PORT + 3)) ${BASE_FLAGS:-}
fi

# Let the servers settle after the transfer (NSD writes the zone out,
# dkimd's update loop catches up) before measuring.
sleep "${SETTLE:-5}"

RSS_KB=$(awk '/VmRSS/{print $2}' /proc/"$DKIMD_PID"/status)
HEAP=$(curl -s "127.0.0.1:$OPS_PORT/metrics" | awk '/^go_memstats_heap_inuse_bytes /{printf "%d", $2}')

# CPU time (user+system, in clock ticks) of a process and its children
# (NSD's server and xfrd processes). The machine is shared, so besides
# queries per second of wall time the script reports queries per CPU-second
# the server itself used, which other load disturbs much less.
# NSD replaces its main process on every reload (after a zone transfer), so
# its processes are found by their config file rather than by a saved pid.
ticks() { # pid, or "nsd"
	local t=0 p pids
	if [ "$1" = nsd ]; then pids=$(pgrep -f "$WORK/nsd/nsd.conf" || true); else pids="$1 $(pgrep -P "$1" || true)"; fi
	for p in $pids; do
		# utime + stime; the command name in parentheses may hold spaces.
		t=$((t + $(sed 's/.*) //' /proc/"$p"/stat 2>/dev/null | awk '{print $12 + $13}' || echo 0)))
	done
	echo "$t"
}
HZ=$(getconf CLK_TCK)

run() { # name port pid
	local t0 t1
	t0=$(ticks "$3")
	dnsperf -s 127.0.0.1 -p "$2" -d "$WORK/queries.txt" -l "$DURATION" -c "$CLIENTS" -T 1 >"$WORK/perf.out" 2>&1
	t1=$(ticks "$3")
	qps=$(awk '/Queries per second/{print $4}' "$WORK/perf.out")
	done_q=$(awk '/Queries completed/{print $3}' "$WORK/perf.out")
	cpu=$(echo "scale=2; ($t1 - $t0) / $HZ" | bc)
	per_cpu=$(echo "scale=0; $done_q / ($cpu + 0.001)" | bc)
	echo "$per_cpu" >>"$WORK/$1.percpu"
	lost=$(awk '/Queries lost/{print $3, $4}' "$WORK/perf.out")
	lat=$(awk -F': *' '/Average Latency/{print $2}' "$WORK/perf.out")
	printf '%-6s qps %10.0f  server CPU %5ss  queries/CPU-second %7s  lost %-12s avg latency (s) %s\n' \
		"$1" "$qps" "$cpu" "$per_cpu" "$lost" "$lat"
	echo "$qps" >>"$WORK/$1.qps"
}

# Latency percentiles at a fixed, moderate load (dnsperf prints no
# percentiles; -v lists each query's latency).
percentiles() { # name port
	dnsperf -s 127.0.0.1 -p "$2" -d "$WORK/queries.txt" -l 3 -c "$CLIENTS" -T 1 -Q 20000 -v 2>/dev/null |
		awk '$1 == ">" {print $NF}' | sort -g | awk -v n="$1" '{v[NR]=$1} END {
			if (NR == 0) { print n, "no latencies"; exit }
			printf "%-6s latency at 20k qps: p50 %.3f ms  p90 %.3f ms  p99 %.3f ms  p99.9 %.3f ms  (%d queries)\n",
				n, v[int(NR*0.5)]*1000, v[int(NR*0.9)]*1000, v[int(NR*0.99)]*1000, v[int(NR*0.999)]*1000, NR }'
}

echo "== dnsperf -l $DURATION -c $CLIENTS -T 1, $(wc -l <"$WORK/queries.txt") queries in the file, 90% existing TXT, 10% NXDOMAIN"
for _ in $(seq "$ROUNDS"); do
	for name in "${INSTANCES[@]}" nsd; do
		run "$name" "${PORT_OF[$name]}" "${PID_OF[$name]}"
	done
done
for name in "${INSTANCES[@]}" nsd; do
	percentiles "$name" "${PORT_OF[$name]}"
done

best() { sort -g "$WORK/$1.qps" | tail -1; }
bestc() { sort -g "$WORK/$1.percpu" | tail -1; }
echo "== summary: N=$N domains on $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"
for name in "${INSTANCES[@]}"; do
	printf '%-10s best qps %7s (%s x NSD %s)  best queries/CPU-second %7s (%s x NSD %s)\n' "$name" \
		"$(best "$name")" "$(echo "scale=2; $(best "$name") / $(best nsd)" | bc)" "$(best nsd)" \
		"$(bestc "$name")" "$(echo "scale=2; $(bestc "$name") / $(bestc nsd)" | bc)" "$(bestc nsd)"
done
echo "dkimd best qps $(best dkimd), NSD best qps $(best nsd), ratio dkimd/NSD $(echo "scale=2; $(best dkimd) / $(best nsd)" | bc)"
echo "dkimd best queries/CPU-second $(bestc dkimd), NSD $(bestc nsd), ratio dkimd/NSD $(echo "scale=2; $(bestc dkimd) / $(bestc nsd)" | bc)"
echo "dkimd RSS $((RSS_KB / 1024)) MiB, Go heap in use $((${HEAP:-0} / 1048576)) MiB: $(echo "scale=0; $RSS_KB * 1024 / $N" | bc) bytes RSS per domain, $(( ${HEAP:-0} / N )) bytes heap per domain"
