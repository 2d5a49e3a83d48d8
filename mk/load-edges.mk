# A bounded hostile mix against one dkimd serve for DURATION (default 1m):
# garbage on every port, idle milter and DNS TCP sessions up to and past the
# caps, slow writers, bad-login and DNS floods from 127.0.1.x, while a
# well-behaved client on 127.0.0.1 signs (HTTP and milter), queries DNS (UDP
# and TCP) and calls the API. Prints that client's errors (must be 0) and
# p99s and dkimd's peak RSS; loopback only (bench/edges,
# docs/reliability.md "Hostile input: load-edges").
# make load-edges DURATION=30s MILTER_MAX_CONNS=100 DNS_TCP_MAX=100 HEADROOM=-50 (past the caps)
.PHONY: load-edges
load-edges: build
	go run ./bench/edges -dkimd $(BIN) -duration $(or $(DURATION),1m) $(if $(HEADROOM),-headroom $(HEADROOM)) \
		$(if $(MILTER_MAX_CONNS),-milter-max-conns $(MILTER_MAX_CONNS)) $(if $(DNS_TCP_MAX),-dns-tcp-max $(DNS_TCP_MAX))
