# fangd — make run starts the daemon, make test runs every test.
GO      ?= go
BIN     := bin/fangd
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
LDFLAGS := -X main.version=$(VERSION) -X main.commit=$(COMMIT) -X main.buildDate=$(shell date -u +%Y-%m-%dT%H:%M:%SZ)

.PHONY: build run test test-race test-cluster checks-then-cluster cluster test-short test-deps vet staticcheck fmt-check bench fuzz clean

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/fangd

run: build
	./$(BIN) serve

# The gate: formatting, then every test under the race detector
# (test-race) beside vet, staticcheck and the cluster-mode tests without
# the race detector (checks-then-cluster, one after the other): the race
# suite is the longest job, and the cluster scenarios spend their time
# waiting for leases, rounds and failovers, not on the CPU, so vet and
# staticcheck fit in front of them without lengthening the run (they ran
# before both jobs, about a minute and a half on the critical path;
# docs/contributing.md, "Test time"). Their lines interleave, each line
# whole; any failure fails the gate.
test: fmt-check test-deps
	$(MAKE) -j2 --output-sync=line test-race checks-then-cluster

checks-then-cluster:
	$(MAKE) -j1 vet staticcheck test-cluster

# Every test under the race detector. -vet=off: the vet target above
# already ran every analyzer go test would. -parallel 4: the parallel
# tests (daemons, etcd rounds) mostly wait, and the default (one per
# core) left the second core idle at the end of the suite. The dashboard's
# browser test must run here (FANGD_REQUIRE_BROWSER: a missing chromium
# fails it instead of skipping it); its screenshots go to artifacts/.
FANGD_ARTIFACTS ?= $(CURDIR)/artifacts
test-race:
	FANGD_REQUIRE_BROWSER=1 FANGD_ARTIFACTS="$(FANGD_ARTIFACTS)" $(GO) test -race -vet=off -parallel 4 -count=1 -timeout 15m ./...

# Cluster mode's black-box tests (embedded etcd, real fangd processes on
# loopback), behind the "cluster" build tag and WITHOUT -race: upstream
# protoactor-go's cluster package is racy (its own `go test -race
# ./cluster/` reports ~100 races), so a -race fangd in cluster mode would
# report upstream's races. fangd's own cluster code (config, HTTP) is
# tested under -race by the target above. In actors/cluster only the tests
# in files behind the tag run here: the others already ran under -race
# above (running them twice cost ~80 s). The scenarios run in parallel
# (-parallel 4: each has its own etcd and nodes, and waits on leases and
# failovers): about 1.5 minutes (93 s at load 11, 205 s one after the
# other before); the 8 min timeout leaves room for a loaded machine.
CLUSTER_TAGGED_TESTS := $(shell grep -l '^//go:build cluster' actors/cluster/*_test.go | xargs -r grep -ho '^func Test[A-Za-z0-9_]*' | sed 's/^func //' | paste -sd'|' -)
test-cluster:
	$(GO) vet -tags cluster ./cmd/fangd/clustertest/ ./actors/cluster/
	$(GO) test -tags cluster -count=1 -parallel 4 -timeout 8m ./cmd/fangd/clustertest/
	$(if $(CLUSTER_TAGGED_TESTS),$(GO) test -tags cluster -count=1 -timeout 2m -run '^($(CLUSTER_TAGGED_TESTS))$$' ./actors/cluster/)

# A local three-node cluster: an embedded etcd (cmd/fangd-devetcd, dev
# only) on 127.0.0.1:23790 and nodes on 127.0.0.1:4601-4603. Ctrl-C stops it.
cluster: build
	$(GO) build -o bin/fangd-devetcd ./cmd/fangd-devetcd
	./cmd/fangd-devetcd/cluster.sh

# The fast inner loop: no race detector, no vet or staticcheck, and tests
# that wait for long timeouts skip themselves (-short). Not the gate.
test-short:
	$(GO) test -short -count=1 ./...

# Real servers and peers some tests run on loopback, installed into a cache
# folder: ngircd (IRC), prosody (XMPP), node/npm and chromium (the
# dashboard's browser test, driven headless over DevTools) from Debian; from npm the
# telegram-test-api Bot API emulator and the official A2A JavaScript SDK
# (testdata/a2a-js/package.json). Idempotent: installs only what is missing.
TEST_DEPS ?= $(HOME)/.cache/fangd-test
export FANGD_TEST_DEPS := $(TEST_DEPS)
test-deps:
	@missing=""; \
	command -v ngircd >/dev/null 2>&1 || [ -x /usr/sbin/ngircd ] || missing="$$missing ngircd"; \
	command -v prosody >/dev/null 2>&1 || [ -x /usr/bin/prosody ] || missing="$$missing prosody"; \
	command -v npm >/dev/null 2>&1 || missing="$$missing nodejs npm"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
		echo "installing$$missing"; \
		SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	@[ -f "$(TEST_DEPS)/npm/node_modules/telegram-test-api/package.json" ] || \
		(mkdir -p "$(TEST_DEPS)/npm" && npm install --prefix "$(TEST_DEPS)/npm" --no-audit --no-fund --silent telegram-test-api@4.2.1)
	@grep -q '"version": "1.3.0"' "$(TEST_DEPS)/a2a-js/node_modules/@a2a-js/sdk/package.json" 2>/dev/null && \
		[ -f "$(TEST_DEPS)/a2a-js/node_modules/express/package.json" ] || \
		(mkdir -p "$(TEST_DEPS)/a2a-js" && cp testdata/a2a-js/package.json "$(TEST_DEPS)/a2a-js/" && \
		 npm install --prefix "$(TEST_DEPS)/a2a-js" --no-audit --no-fund --no-save --silent)

vet:
	$(GO) vet ./...

# staticcheck, pinned, built through the Go module proxy into the test-deps
# cache folder. Idempotent: rebuilt only when that version is missing.
STATICCHECK_VERSION ?= v0.8.2
STATICCHECK := $(TEST_DEPS)/bin/staticcheck-$(STATICCHECK_VERSION)
staticcheck: $(STATICCHECK)
	$(STATICCHECK) ./...
$(STATICCHECK):
	@mkdir -p "$(TEST_DEPS)/bin"
	GOBIN="$(TEST_DEPS)/bin" $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	mv "$(TEST_DEPS)/bin/staticcheck" "$@"

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
	$(GO) test ./actors/channel/irc -run '^$$' -fuzz FuzzParse -fuzztime 30s
	$(GO) test ./actors/approval -run '^$$' -fuzz FuzzParseCommand -fuzztime 30s
	$(GO) test ./actors/comms -run '^$$' -fuzz FuzzDecodeRecord -fuzztime 30s
	$(GO) test ./actors/usage -run '^$$' -fuzz FuzzDecodeEvent -fuzztime 30s
	$(GO) test ./transport/sse -run '^$$' -fuzz FuzzLastEventID -fuzztime 30s
	$(GO) test ./transport/sse -run '^$$' -fuzz FuzzReader -fuzztime 30s
	$(GO) test ./transport/http -run '^$$' -fuzz FuzzHookSignature -fuzztime 30s
	$(GO) test ./transport/http -run '^$$' -fuzz FuzzForwardedClient -fuzztime 30s
	$(GO) test ./transport/http -run '^$$' -fuzz FuzzHostName -fuzztime 30s
	$(GO) test ./actors/channel/webhook -run '^$$' -fuzz FuzzVerify -fuzztime 30s

clean:
	rm -rf bin
