# gpuwarden. `make run` plays the embedded demo trace; `make test` runs every test.
GO        ?= go
# go-nvml's cgo prologue warns about every deprecated NVML call; the noise hides real warnings.
export CGO_CFLAGS ?= -O2 -Wno-deprecated-declarations
BIN       := bin/gpuwarden
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
REVISION  ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null)
LDFLAGS   := -s -w -X github.com/gpuwarden/gpuwarden/agent.Version=$(VERSION) -X github.com/gpuwarden/gpuwarden/agent.Revision=$(REVISION)
SUDO      := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all build run test deps bench bench-go bench-idle bench-rss bench-compare fuzz lint clean distclean demo-trace generate vmlinux-h

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/gpuwarden

DEMO_TRACE := collectors/replay/demo/traces/dgx-h100-demo.trace.jsonl.gz

# Record the demo trace from its scenario through the real collector, where
# the binary embeds it and the tests read it (stored once). The simulator
# (go-nvml's mock) is only in a build with -tags simulator: the agent's
# binary leaves it out.
demo-trace:
	$(GO) build -trimpath -tags simulator -ldflags '$(LDFLAGS)' -o bin/gpuwarden-simulator ./cmd/gpuwarden
	./bin/gpuwarden-simulator record --backend mock --scenario testdata/scenarios/dgx-h100-demo.yaml --out $(DEMO_TRACE)
	$(MAKE) build

# The replay player's and recorder's NVML methods from their table
# (collectors/replay/internal/nvmlcalls/methods.go); the eBPF objects and
# their Go bindings from collectors/ebpf/bpf/ (clang, llvm, libbpf-dev; the
# outputs are committed, so `go build` needs none of them).
generate:
	$(GO) generate ./collectors/replay/
	$(GO) generate ./collectors/ebpf/

# collectors/ebpf/bpf/vmlinux.h from the running kernel's BTF (bpftool), for
# when the programs need a type this one lacks. Committed: `make generate`
# needs no kernel headers.
vmlinux-h:
	bpftool btf dump file /sys/kernel/btf/vmlinux format c > collectors/ebpf/bpf/vmlinux.h

# The agent on the embedded demo trace of an 8-GPU node: http://localhost:9400/metrics
run: build
	./$(BIN) run --backend replay --replay.loop --collector.gpu.interval 1s --config packaging/gpuwarden.yaml --state.dir .state

# Debian packages the build and the tests need (listed in .ci/apt-packages.txt),
# and the glibc 2.17 toolchain `make package` links with (packaging/package.mk).
deps:
	@pkgs=$$(grep -v '^#' .ci/apt-packages.txt | tr '\n' ' '); \
	missing=$$(for p in $$pkgs; do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	$(MAKE) toolchain

test: build
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 15m ./...

bench: bench-go bench-idle

bench-go:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 2s ./...

# Idle CPU of the built agent at the default interval, over a minute on each
# backend (bench/idle-cpu.sh; IDLE_SECONDS, IDLE_WARMUP, IDLE_BACKENDS).
IDLE_BACKENDS ?= replay nvml
bench-idle: build
	sh bench/idle-cpu.sh $(BIN) $(IDLE_BACKENDS)

# Resident memory of the built agent beside node_exporter's, each alone in a
# network namespace, scraped every 10 s for a minute (bench/rss-compare.sh;
# RSS_RUNS, RSS_SECONDS; needs root).
bench-rss: build
	sh bench/rss-compare.sh $(BIN)

# The key benchmarks here and at REV, with benchstat's ratios
# (bench/compare.sh; COUNT, BENCHTIME, BENCH_SET).
REV ?= main
bench-compare:
	sh bench/compare.sh $(REV)

# Every fuzz target for FUZZTIME each (their seed corpora also run in make test).
FUZZTIME ?= 30s
FUZZ_TARGETS := ./collectors/replay:FuzzTraceRead ./collectors/replay:FuzzReadTimeline ./collectors/kmsg:FuzzParseRecord ./collectors/kmsg:FuzzClassify \
	./collectors/kmsg:FuzzStripWrapper ./collectors/kmsg:FuzzStreamSplit ./agent:FuzzRestoreCheckpoint \
	./dkms:FuzzParseStatusLine ./dkms:FuzzParseDriverVersion ./remediation:FuzzMatch ./remediation:FuzzLedger \
	./remediation/fleet:FuzzDecodeQuery ./remediation/fleet:FuzzLeaseAnswer ./collectors/attribution:FuzzParseCgroup \
	./dkms:FuzzInspectModule ./dkms:FuzzBootLoaderFiles ./collectors/kmsg/explain:FuzzExplainReport ./agent:FuzzConfig \
	./remediation/audit:FuzzScanLines ./remediation/audit:FuzzRead ./collectors/ebpf:FuzzDecode \
	./collectors/kubelet:FuzzDecodeList ./agent:FuzzAcceptsGzip ./agent:FuzzAppendFloat ./agent:FuzzAgesMember
fuzz:
	@for t in $(FUZZ_TARGETS); do \
	  pkg=$${t%%:*}; fn=$${t##*:}; echo "== $$fn ($$pkg)"; \
	  $(GO) test -run '^$$' -fuzz "^$$fn$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	done

lint:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@latest ./...

clean:
	rm -rf bin dist

# The fetched toolchain too (make toolchain fetches it again).
distclean: clean
	rm -rf .toolchain
include packaging/package.mk

# What the binary is made of (docs/binary-size.md): an unstripped build, its
# symbols summed by module and package.
.PHONY: binary-size
binary-size:
	$(GO) build -trimpath -o bin/gpuwarden-syms ./cmd/gpuwarden
	$(GO) run ./internal/binsize bin/gpuwarden-syms
