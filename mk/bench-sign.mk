# Signing benchmark: library, HTTP endpoint and milter on 2 KB and 100 KB
# messages, RSA-2048 and RSA+Ed25519, next to bare crypto sign loops and to
# OpenDKIM (Debian opendkim) through the milter protocol (bench/sign).
# make bench-sign DURATION=5s CONCURRENCY=2
.PHONY: bench-sign
bench-sign:
	go run ./bench/sign -duration $(or $(DURATION),3s) $(if $(CONCURRENCY),-c $(CONCURRENCY))
