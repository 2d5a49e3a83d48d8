# DNS benchmark: dkimd against NSD on the same zone (scripts/bench-dns.sh).
# make bench-dns N=100000 DURATION=10
.PHONY: bench-dns
bench-dns:
	N=$(or $(N),10000) DURATION=$(or $(DURATION),10) scripts/bench-dns.sh
