# The README's two set-up commands are `make run` and `make test`.
GO ?= go
BIN := bin/dkimd
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

.PHONY: run build test test-short lint bench-dns bench-sign fuzz clean

# Runs dkimd on the embedded SQLite store under ./data, with no other service.
run: build
	./$(BIN) serve

build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/dkimd

# The whole suite, against the machine's real Postgres, dig, NSD, Postfix
# and python3-dkim (.ci/run installs them).
test: lint
	$(GO) test -race -count=1 -timeout 30m ./...

test-short:
	$(GO) test -short -count=1 ./...

# staticcheck and deadcode at pinned versions, fetched through the module
# proxy on first use; deadcode -test must find nothing unreachable from a
# main or a test.
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
DEADCODE := golang.org/x/tools/cmd/deadcode@v0.52.0

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...
	@out=$$($(GO) run $(DEADCODE) -test ./...); if [ -n "$$out" ]; then echo "deadcode:"; echo "$$out"; exit 1; fi

# Every fuzz target for FUZZTIME (default 30s) each.
fuzz:
	FUZZTIME=$(or $(FUZZTIME),30s) scripts/fuzz.sh

clean:
	rm -rf bin

# Benchmarks and other targets that live beside their code.
-include mk/*.mk
