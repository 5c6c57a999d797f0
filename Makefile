# ferry — make help lists the targets.
SHELL := /bin/bash
GO ?= go
BIN := $(CURDIR)/bin
VERSITYGW_VERSION := v1.8.0
STATICCHECK_VERSION := v0.8.2
# Packages under test; the fault suite is its own target.
PKGS ?= ./...
TESTFLAGS ?=
# Parallel tests per package at once. The default (GOMAXPROCS, 2 here) let
# the crash tests, which sleep about a minute each waiting for asynq's
# lease recovery, hold both slots: the worker package took 471 s at 2 and
# 293 s at 6 (2026-12-01).
TESTPARALLEL ?= 6
# make soak: how long the kill loop keeps killing, and the go test timeout
# (raise it with SOAK).
SOAK ?= 30m
SOAK_TIMEOUT ?= 2h

.PHONY: help tools build dev test test-short lint tidy clean bench test-faults test-cluster soak

help: ## show this help
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*?## "}{printf "  %-16s %s\n", $$1, $$2}'

tools: $(BIN)/versitygw $(BIN)/staticcheck debian-packages ## install the pinned test servers, linters and browser

$(BIN)/versitygw:
	GOBIN=$(BIN) $(GO) install github.com/versity/versitygw/cmd/versitygw@$(VERSITYGW_VERSION)

$(BIN)/staticcheck:
	GOBIN=$(BIN) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

.PHONY: debian-packages
debian-packages: ## make sure redis-server and chromium (browser tests) are installed
	@command -v redis-server >/dev/null && command -v chromium >/dev/null || scripts/install-debian-packages redis-server chromium

build: ## build ./bin/ferry
	$(GO) build -o $(BIN)/ferry ./cmd/ferry

dev: build ## run ferry dev: embedded Redis + S3 + worker + dashboard, nothing to install
	$(BIN)/ferry dev

test: tools ## run every test against real redis-server and versitygw (race detector on)
	FERRY_TEST_REAL=1 scripts/gotest -race -count=1 -parallel $(TESTPARALLEL) -timeout 25m $(TESTFLAGS) $(PKGS)

bench: tools ## benchmarks vs the direct SDK (FERRY_BENCH_SIZE, default 1 GiB; FERRY_BENCH_OBJECTS, default 10000); see docs/performance.md
	FERRY_TEST_REAL=1 $(GO) test -run '^$$' -bench . -benchtime 3x -timeout 60m ./bench

test-faults: tools ## fault suite: 56-kill loop, S3 faults, Redis restart, bad input, secrets (~6 min); see docs/reliability.md
	FERRY_FAULTS=1 FERRY_TEST_REAL=1 $(GO) test -count=1 -v -timeout 20m ./internal/faulttest

soak: tools ## the kill loop for 30 min (make soak SOAK=4h SOAK_TIMEOUT=5h); not in CI; see docs/reliability.md
	FERRY_FAULTS=1 FERRY_FAULTS_SOAK=$(SOAK) FERRY_TEST_REAL=1 $(GO) test -count=1 -v -run '^TestKillLoop$$' -timeout $(SOAK_TIMEOUT) ./internal/faulttest

test-cluster: tools ## ferry against a real Redis Cluster (3 masters + 3 replicas) and Sentinel set, started from redis-server
	FERRY_CLUSTER=1 FERRY_TEST_REAL=1 scripts/gotest -race -count=1 -timeout 15m ./internal/clustertest

test-short: ## fast unit run; falls back to in-process fakes when servers are missing
	$(GO) test -short -count=1 $(PKGS)

lint: $(BIN)/staticcheck ## gofmt, go vet, staticcheck
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(BIN)/staticcheck ./...

tidy: ## go mod tidy
	$(GO) mod tidy

clean: ## remove build output
	rm -rf $(BIN)/ferry .ferry-dev
