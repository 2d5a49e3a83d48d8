# Issue 7's load and fault runs; results are recorded in docs/reliability.md.
.PHONY: load fault-pg fault-kill

# Mixed API/DNS/sign load on Postgres with a lost-write check (DURATION, DOMAINS, WORKERS).
load:
	scripts/load.sh

# The same load with Postgres stopped for 30 s in the middle (stops the machine's Postgres: needs root).
fault-pg:
	FAULT=pg-stop DURATION=$(or $(DURATION),90s) scripts/load.sh

# SIGKILL of the rotation leader among two replicas under load.
fault-kill:
	scripts/fault-kill.sh
