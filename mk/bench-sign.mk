# Signing benchmark: library, HTTP endpoint and milter on 2 KB and 100 KB
# messages, RSA-2048 and RSA+Ed25519, next to bare crypto sign loops, to
# go-msgauth alone and to OpenDKIM (Debian opendkim) through the milter
# protocol (bench/sign); the references run in slices interleaved with each
# row.
# make bench-sign DURATION=5s CONCURRENCY=2 SIZES=2,100 ONLY=milter
.PHONY: bench-sign
bench-sign:
	go run ./bench/sign -duration $(or $(DURATION),3s) $(if $(CONCURRENCY),-c $(CONCURRENCY)) \
		$(if $(SIZES),-sizes $(SIZES)) $(if $(ONLY),-only $(ONLY))
