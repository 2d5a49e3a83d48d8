# dkimd's milter and OpenDKIM (Debian opendkim) behind the same private
# Postfix instance, RSA-2048 on 2 KB and 100 KB messages: messages per
# signer CPU-second of each and dkimd/OpenDKIM, from one run
# (bench/postfix). Runs as root; Postfix and opendkim come from .ci/run.
# make bench-postfix DURATION=10s CLIENTS=16 SIZES=2,100 RSA_BACKEND=go
.PHONY: bench-postfix
bench-postfix:
	go run ./bench/postfix -duration $(or $(DURATION),10s) $(if $(CLIENTS),-c $(CLIENTS)) \
		$(if $(SIZES),-sizes $(SIZES)) $(if $(RSA_BACKEND),-rsa-backend $(RSA_BACKEND))
