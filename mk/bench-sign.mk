# Signing benchmark: library, HTTP endpoint and milter on 2 KB and 100 KB
# messages, RSA-2048 and RSA+Ed25519, each beside `openssl speed rsa2048` on
# one core (run between the row's slices, with Go's bare Ed25519 for dual
# signatures), beside the same bare signatures in the benchmark's process
# and beside OpenDKIM (Debian opendkim) through the milter protocol
# (bench/sign).
# make bench-sign DURATION=5s CONCURRENCY=2 SIZES=2,100 ONLY=milter RSA_BACKEND=go
.PHONY: bench-sign
bench-sign:
	go run ./bench/sign -duration $(or $(DURATION),3s) $(if $(CONCURRENCY),-c $(CONCURRENCY)) \
		$(if $(SIZES),-sizes $(SIZES)) $(if $(ONLY),-only $(ONLY)) $(if $(RSA_BACKEND),-rsa-backend $(RSA_BACKEND))
