# fangd — make run starts the daemon, make test runs every test.
GO      ?= go
BIN     := bin/fangd
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)

.PHONY: build run test vet fmt-check bench fuzz clean

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/fangd

run: build
	./$(BIN) serve

# The gate: formatting, vet, and every test under the race detector.
test: fmt-check vet
	$(GO) test -race -count=1 -timeout 15m ./...

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# Load harness (docs/bench.md): starts bin/fangd on a temp home, drives it
# with wrk and prints the result table (also bench/out/latest.md). wrk comes
# from Debian when missing. Pass flags with BENCH_FLAGS="-duration 30s".
bench: build
	@command -v wrk >/dev/null 2>&1 || (apt-get update && apt-get install -y wrk)
	$(GO) run ./bench -fangd $(BIN) $(BENCH_FLAGS)

# Short fuzzing runs of the committed fuzz targets.
fuzz:
	$(GO) test ./transport/http -run '^$$' -fuzz FuzzDecodeJSON -fuzztime 30s
	$(GO) test ./store/safepath -run '^$$' -fuzz FuzzResolve -fuzztime 30s

clean:
	rm -rf bin
