# Scale test: N domains bulk-loaded into a throw-away Postgres database, then
# start-up time, memory, DNS qps, API GET/PUT latency (key pool on and off)
# and change-to-DNS time (bench/scale/scale.sh, docs/reliability.md "Scale").
# make scale N=100000
.PHONY: scale
scale:
	N=$(or $(N),1000000) bench/scale/scale.sh
