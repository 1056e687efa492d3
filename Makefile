# modelfleet — run `make help` for the targets.

SHELL        := /bin/bash
DEPS         := $(CURDIR)/.deps
GO           ?= go
VERSION      ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS      := -s -w -X github.com/modelfleet/modelfleet/internal/buildinfo.Version=$(VERSION)
TEST_TIMEOUT ?= 25m
FUZZ_TIME    ?= 5s
BENCH_TIME   ?= 1s
DEMO_FLAGS   ?=

# Tests and tools find the components installed by `make deps` through these.
export CGO_ENABLED       := 1
# go-nvml's headers mark many NVML calls deprecated; we use none of those.
export CGO_CFLAGS        ?= -O2 -g -Wno-deprecated-declarations
export MODELFLEET_ORT_LIB := $(DEPS)/lib/libonnxruntime.so.1
export MODELFLEET_MINIO   := $(DEPS)/bin/minio
export PATH               := $(DEPS)/bin:$(PATH)

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: deps
deps: ## Install mosquitto, ONNX Runtime, MinIO and staticcheck (idempotent, cached in .deps/)
	@scripts/deps.sh

.PHONY: build
build: ## Build bin/fleethub and bin/fleetagent
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/ ./cmd/fleethub ./cmd/fleetagent

.PHONY: generate
generate: ## Regenerate the example ONNX models
	$(GO) generate ./examples/...

.PHONY: test
test: deps ## Install dependencies, lint, and run every test (race detector, real servers, short fuzzing)
	$(MAKE) --no-print-directory lint
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./...
	$(MAKE) --no-print-directory fuzz FUZZ_TIME=$(FUZZ_TIME)

.PHONY: lint
lint: ## go vet and staticcheck
	$(GO) vet ./...
	$(DEPS)/bin/staticcheck ./...
	@scripts/check-imports.sh

.PHONY: docs
docs: ## Regenerate the CLI reference in docs/cli/ from the cobra commands
	$(GO) test -count=1 -run TestCLIReference ./cmd/fleethub ./cmd/fleetagent -args -update-docs

.PHONY: fuzz
fuzz: ## Run every fuzz target for FUZZ_TIME each (make fuzz FUZZ_TIME=5m)
	@scripts/fuzz.sh $(FUZZ_TIME)

.PHONY: chaos
chaos: deps ## Kill the agent 200 times during installs (longer than the run in make test)
	MODELFLEET_CHAOS_ITERATIONS=200 $(GO) test -count=1 -timeout 60m -run TestKillDuringInstall -v ./cmd/fleetagent

# make bench BENCH_ROUNDS=3 BENCH_AGENTS=100,1000 BENCH_BUDGET=10m for a shorter run.
BENCH_ROUNDS ?= 7
BENCH_AGENTS ?= 100,1000,5000
BENCH_BUDGET ?= 18m
.PHONY: bench
bench: deps build ## Run the benchmarks in alternating rounds; write BENCHMARKS.md and docs/bench/convergence.png
	$(GO) run ./scripts/benchreport -rounds $(BENCH_ROUNDS) -benchtime $(BENCH_TIME) \
		-agents $(BENCH_AGENTS) -budget $(BENCH_BUDGET) -invocation 'make bench'

.PHONY: demo
demo: deps build ## Run the end-to-end demo on the embedded defaults (data and logs in .demo/; DEMO_FLAGS=--short)
	$(GO) run ./examples/demo $(DEMO_FLAGS)

.PHONY: package
package: deps ## Build .deb and .rpm packages of fleetagent and fleethub into dist/ (packaging/README.md)
	VERSION='$(VERSION)' packaging/build.sh

.PHONY: package-test
package-test: deps ## Build the packages, install them in a clean Debian 12 chroot and check them (root; chroot cached in .deps/)
	v='$(VERSION)'; VERSION="$$v" packaging/build.sh && VERSION="$$v" packaging/test.sh

.PHONY: clean
clean: ## Remove build output (keeps the .deps/ cache; use clean-deps for that)
	rm -rf bin/ dist/ .demo/

.PHONY: clean-deps
clean-deps: ## Remove the .deps/ cache
	rm -rf $(DEPS)
