.PHONY: demo

# The whole brand guide (docs/brand-guide.md) on one machine, on the README's
# ports, with the stand-in public resolver of cmd/dkimd-standin-resolver.
demo:
	scripts/demo.sh
