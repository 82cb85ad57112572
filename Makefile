# The SuperInstance cloud mesh. `make demo` and `make test` do all the set-up a
# fresh Debian machine needs (Go and root for apt-get assumed).

SHELL      := bash
BIN        := $(CURDIR)/bin
SI         := $(BIN)/si
GO         ?= go
BENCH_OUT  ?= $(CURDIR)/bench-report.json
FUZZTIME   ?= 15s
DEMO_DIR   ?= $(HOME)/.si/dev
VERSION    ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)

export PATH := $(BIN):$(PATH)
# go-nvml's header marks functions deprecated; the warnings say nothing about this code.
export CGO_CFLAGS := -O2 -g -Wno-deprecated-declarations

.PHONY: all build deps tools test lint unit fuzz bench demo demo-stop dev history proto clean

all: build

build:
	$(GO) build -ldflags "-X github.com/superinstance/mesh/internal/cli.Version=$(VERSION)" -o $(SI) ./cmd/si

## deps: the machine's packages the mesh runs on (PostgreSQL server binaries).
deps:
	@scripts/install-deps.sh

## tools: Go tools the tests use, each pinned in its own module under tools/.
tools: $(BIN)/temporal $(BIN)/staticcheck $(BIN)/stripe-mock $(BIN)/minio $(BIN)/mailpit

$(BIN)/temporal: tools/temporal/go.mod tools/temporal/go.sum
	cd tools/temporal && $(GO) build -o $@ github.com/temporalio/cli/cmd/temporal

$(BIN)/stripe-mock: tools/stripe-mock/go.mod tools/stripe-mock/go.sum
	cd tools/stripe-mock && $(GO) build -o $@ github.com/stripe/stripe-mock

$(BIN)/minio: tools/minio/go.mod tools/minio/go.sum
	cd tools/minio && $(GO) build -o $@ github.com/minio/minio

$(BIN)/mailpit: tools/mailpit/go.mod tools/mailpit/go.sum
	cd tools/mailpit && $(GO) build -o $@ github.com/axllent/mailpit

$(BIN)/staticcheck: tools/staticcheck/go.mod tools/staticcheck/go.sum
	cd tools/staticcheck && $(GO) build -o $@ honnef.co/go/tools/cmd/staticcheck

$(BIN)/protoc-gen-go: tools/protoc-gen-go/go.mod tools/protoc-gen-go/go.sum
	cd tools/protoc-gen-go && $(GO) build -o $@ google.golang.org/protobuf/cmd/protoc-gen-go

## proto: regenerate proto/meshv1 (protoc from Debian's protobuf-compiler).
proto: $(BIN)/protoc-gen-go
	@command -v protoc >/dev/null || { echo "protoc missing: apt-get install protobuf-compiler"; exit 1; }
	protoc --plugin=protoc-gen-go=$(BIN)/protoc-gen-go --go_out=. --go_opt=module=github.com/superinstance/mesh proto/mesh.proto

## lint: gofmt, go vet and staticcheck must be clean.
lint: $(BIN)/staticcheck
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(BIN)/staticcheck ./...

## test: everything CI runs: lint, then every test with the race detector.
test: deps tools lint
	$(GO) test -race -count=1 -timeout 30m ./...

## unit: the tests that need no services, fast.
unit:
	$(GO) test -count=1 ./internal/... ./workflows/... ./activities/...

## fuzz: run each fuzz target for FUZZTIME.
fuzz:
	@scripts/fuzz.sh $(FUZZTIME)

## bench: benchmarks side by side with their baselines; writes $(BENCH_OUT).
## The LoRA benchmarks store adapters in MinIO; everything else runs in-process.
## The held-hubs benchmark runs first, in a process of its own: after the
## others had run in its process, that process spent 0.04 cores with no hub
## connected, alone 0.002 to 0.014 (see the README).
## The report starts empty, so a figure a failed run did not measure is
## absent rather than an earlier run's; the others run even if the held-hubs
## benchmark fails, and make bench then fails.
bench: deps $(BIN)/minio
	rm -f $(abspath $(BENCH_OUT))
	BENCH_OUT=$(abspath $(BENCH_OUT)) BENCH_MERGE= $(GO) test -run '^$$' -bench '^BenchmarkBridgeHubsHeld$$' -benchtime=1x -timeout 30m ./test/bench/; held=$$?; \
	BENCH_OUT=$(abspath $(BENCH_OUT)) BENCH_MERGE=1 $(GO) test -run '^$$' -bench . -skip '^BenchmarkBridgeHubsHeld$$' -benchtime=1x -timeout 30m ./test/bench/ && exit $$held

## demo: start `si dev` in the background and run the scenario against it.
demo: deps build $(BIN)/stripe-mock $(BIN)/minio $(BIN)/mailpit
	@SI=$(SI) DEMO_DIR=$(DEMO_DIR) scripts/demo.sh

demo-stop:
	@SI=$(SI) DEMO_DIR=$(DEMO_DIR) scripts/demo.sh stop

## dev: run `si dev` in the foreground.
dev: deps build
	$(SI) dev

## history: re-record the consensus history the replay test reads.
history:
	SI_WRITE_HISTORY=1 $(GO) test -count=1 -run TestLiveHistoryReplays ./test/integration/

clean:
	rm -rf $(BIN) $(BENCH_OUT)
