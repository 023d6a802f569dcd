# Meridian's build, test and benchmark entry points. `make help` lists them.
GO        ?= go
comma     := ,
FUZZTIME  ?= 10s
BIN       := bin

.PHONY: help build ollama tinymodel proto ui console-screenshots test test-leaves e2e run bench bench-gateway bench-adapters bench-gossip bench-local bench-links bench-peerdeath bench-control bench-usage bench-distribution bench-scale bench-router bench-security bench-keys bench-cache bench-spend bench-batch chaos-control fuzz lint clean ops-check ops-tools

help:
	@echo "make build          build meridian-edge, meridian-control, meridianctl and mockprovider into $(BIN)/"
	@echo "make ollama         build the pinned Ollama engine into $(BIN)/ollama (OLLAMA_MARCH=auto|x86-64-v3|x86-64|native)"
	@echo "make proto          regenerate Go code from proto/**/*.proto"
	@echo "make ui             copy htmx from ops/console/node_modules (npm ci) into the web console's embedded assets"
	@echo "make console-screenshots  run the web console's Chromium test and write its screenshots to ops/console/screenshots"
	@echo "make run            the whole mesh on this machine: a control plane (NODES=3 for three; LEAVES=1: a NATS leaf node per region), three edges in three regions behind a WAN relay, mock providers; everything from scripts/devmesh/fleet.yaml"
	@echo "make test           go vet and the race-enabled test suite"
	@echo "make test-leaves    regional NATS leaf nodes as processes: a control node, three leaves, four edges; one region cut off and healed"
	@echo "make e2e            end-to-end scenarios on the real binaries, started as make run starts them (three control nodes, NODES=1 for one; LONG=1: longer forms; RUN=1,2: some scenarios)"
	@echo "make bench          every benchmark (go test -bench and the gateway benchmark)"
	@echo "make bench-gateway  edge overhead against a direct call and a minimal proxy"
	@echo "make bench-adapters cost of translating requests and stream chunks between formats"
	@echo "make bench-gossip   gossip convergence, failure detection, dissemination and traffic"
	@echo "make bench-local    local inference through the edge against the same Ollama directly"
	@echo "make bench-links    forwarding to a peer edge: warm QUIC, 0-RTT QUIC, TCP+TLS and HTTP/2 under WAN delay"
	@echo "make bench-peerdeath a peer edge killed under load: failed and delayed requests, time out of routing"
	@echo "make bench-control  control plane write latency, throughput and leader failover on 3 nodes"
	@echo "make bench-usage    usage aggregation: batched against per-record apply, and Raft writes for 10,000 records"
	@echo "make chaos-control  crash test: 3 meridian-control processes under write load, SIGKILLed and restarted (QUICK=1: the bounded CI form; CYCLES=n)"
	@echo "make bench-distribution  time from a table change to 100 edges applying it, 10 and 1,000 routes, against bare NATS"
	@echo "make bench-scale    up to 1,000 edge stand-ins against a 3-node control plane: propagation, gossip cost, detection, router decisions; gossip pools (QUICK=1: 30 and 100)"
	@echo "make bench-router   one routing decision per strategy on a 100-node, 50-model fleet, against a map lookup"
	@echo "make bench-security a normal client's latency while attackers send nested bodies, made-up model names and unread streams"
	@echo "make bench-keys     what key and tenant limits and usage records add to a request, against the same path without"
	@echo "make bench-cache    the edge cache on a replayed FAQ trace: hit ratio, p50 of a hit against a miss, cost saved (REQUESTS=n)"
	@echo "make bench-spend    exact spend: 10,000 mixed requests over three edges, one SIGKILLed midway; the control plane's totals against the clients' (REQUESTS=n)"
	@echo "make bench-batch    batches on the local engine: lines/s, and interactive p99 during a batch against without one (LINES=n)"
	@echo "make tinymodel      write the tiny test models to $(BIN)/tiny.gguf and $(BIN)/tiny-repeat.gguf"
	@echo "make fuzz           a short run of every fuzz target (FUZZTIME=$(FUZZTIME) each)"
	@echo "make lint           gofmt check, go vet and staticcheck"
	@echo "make ops-check      check ops/: promtool on the alert rules, helm lint and template on the chart, and the units, Dockerfiles, compose file and dashboards against the code"

build:
	$(GO) build -o $(BIN)/ ./edge/cmd/meridian-edge ./scripts/mockprovider ./control/cmd/...

ollama:
	GO=$(GO) BIN=$(BIN) scripts/ollama/build.sh

# Generated code is committed, so builds and CI need neither protoc nor
# this target; run it after editing a .proto file.
proto:
	@command -v protoc >/dev/null || { echo "make proto: protoc missing; run: sudo apt-get install -y protobuf-compiler"; exit 1; }
	$(GO) build -o $(BIN)/protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go
	protoc --plugin=protoc-gen-go=$(BIN)/protoc-gen-go --go_out=. --go_opt=module=github.com/meridian-mesh/meridian $$(find proto -name '*.proto' | sort)

# The web console (control/console) embeds htmx from npm, pinned by
# ops/console/package-lock.json. The copy is committed, so a build needs
# no npm; this target refreshes it after the pin moves, and
# control/console's tests fail while the two differ.
CONSOLE_NPM := ops/console

ui:
	@if [ ! -f $(CONSOLE_NPM)/node_modules/htmx.org/package.json ] || [ $(CONSOLE_NPM)/package-lock.json -nt $(CONSOLE_NPM)/node_modules/.package-lock.json ]; then \
		echo "cd $(CONSOLE_NPM) && npm ci --no-audit --no-fund"; (cd $(CONSOLE_NPM) && npm ci --no-audit --no-fund); \
	fi
	cp $(CONSOLE_NPM)/node_modules/htmx.org/dist/htmx.min.js control/console/static/htmx.min.js

# The console's end-to-end test in headless Chromium (make test runs it
# too, into a temporary folder), writing the screenshots README shows.
console-screenshots:
	MERIDIAN_CONSOLE_SCREENSHOTS=$(CONSOLE_NPM)/screenshots $(GO) test -count=1 -v -run '^TestConsoleInChromium$$' ./scripts/consoletest

# The mesh's state (models, certificates, Raft data) stays in
# .meridian/devmesh between runs; delete it to start afresh.
run: ollama build
	$(GO) run ./scripts/devmesh $(if $(NODES),-nodes $(NODES)) $(if $(LEAVES),-leaves)

# Process-level scenarios against bin/: the same launcher as make run
# (scripts/devmesh/mesh), on other ports, from an empty .meridian/e2e.
# The Node SDK scenarios need scripts/sdktest/node/node_modules (npm ci).
e2e: ollama build
	@if [ ! -f $(SDKTEST_NODE)/node_modules/openai/package.json ] && command -v npm >/dev/null; then \
		echo "cd $(SDKTEST_NODE) && npm ci --no-audit --no-fund"; (cd $(SDKTEST_NODE) && npm ci --no-audit --no-fund); \
	fi
	$(GO) run ./scripts/e2e $(if $(LONG),-long) $(if $(RUN),-run $(RUN)) $(if $(NODES),-nodes $(NODES))

# The local-inference tests run the real Ollama that `make ollama` builds
# (a no-op once built); MERIDIAN_REQUIRE_OLLAMA turns their skip into a
# failure, so they can never silently not run here.
#
# The Node SDK tests need scripts/sdktest/node/node_modules: where node and
# npm exist, `npm ci` installs it (pinned by package-lock.json) when it is
# missing or older than the lock. Outside CI those tests skip without it,
# so the run then ends by saying so, loudly; in CI they fail instead.
SDKTEST_NODE := scripts/sdktest/node

# ALONE are packages whose tests run real clusters against wall-clock
# bounds (30 gossip nodes in one process; three edges, Ollama and a
# control plane in one; a control plane, two edges and Chromium): they
# run after the rest, one package at a time, so the tests of other packages cannot starve them of the two
# cores. Everything still runs, under -race.
ALONE := ./edge/gossip ./scripts/meshtest ./scripts/consoletest

# ZERO_RTT are edge/link's tests of requests sent in 0-RTT. Under -race
# a link waits for its handshake before sending (edge/link/race.go:
# quic-go races on the peer's transport parameters when a stream opens
# in 0-RTT, quic-go issue 4303), so the race run never sends in 0-RTT;
# test runs them once more without -race, where links send as in
# production, and fails unless every one of them ran and passed.
ZERO_RTT_NAMES := TestZeroRTTOnReconnect|TestReplayRunsOnce|TestPeerRestartRejects0RTT
ZERO_RTT := ^($(ZERO_RTT_NAMES))$$

test: ollama
	@skip=; \
	if ! command -v node >/dev/null || ! command -v npm >/dev/null; then \
		skip="node or npm is not installed (sudo apt-get install -y nodejs npm)"; \
	elif [ ! -f $(SDKTEST_NODE)/node_modules/openai/package.json ] || [ $(SDKTEST_NODE)/package-lock.json -nt $(SDKTEST_NODE)/node_modules/.package-lock.json ]; then \
		echo "cd $(SDKTEST_NODE) && npm ci --no-audit --no-fund"; \
		(cd $(SDKTEST_NODE) && npm ci --no-audit --no-fund) || skip="npm ci in $(SDKTEST_NODE) failed (see above)"; \
	fi; \
	noconsole=; \
	if ! command -v chromium >/dev/null && [ -z "$$MERIDIAN_CHROMIUM" ]; then \
		noconsole="chromium is not installed (sudo apt-get install -y chromium)"; \
	elif ! command -v npm >/dev/null; then \
		noconsole="npm is not installed"; \
	elif [ ! -f $(CONSOLE_NPM)/node_modules/playwright-core/package.json ] || [ $(CONSOLE_NPM)/package-lock.json -nt $(CONSOLE_NPM)/node_modules/.package-lock.json ]; then \
		echo "cd $(CONSOLE_NPM) && npm ci --no-audit --no-fund"; \
		(cd $(CONSOLE_NPM) && npm ci --no-audit --no-fund) || noconsole="npm ci in $(CONSOLE_NPM) failed (see above)"; \
	fi; \
	echo "$(GO) mod tidy -diff"; $(GO) mod tidy -diff || { echo "make test: go.mod or go.sum is not tidy (the diff above); run: go mod tidy"; exit 1; }; \
	echo "$(GO) vet ./..."; $(GO) vet ./... || exit 1; \
	pkgs=$$($(GO) list ./... | grep -v -x -F $(foreach a,$(ALONE),-e $(shell $(GO) list $(a)))); \
	echo "$(GO) test -race -count=1 ./... (then $(ALONE) alone)"; \
	export MERIDIAN_REQUIRE_OLLAMA=1 MERIDIAN_OLLAMA=$(abspath $(BIN))/ollama; \
	status=0; $(GO) test -race -count=1 $$pkgs || status=$$?; \
	$(GO) test -race -count=1 -p 1 $(ALONE) || status=$$?; \
	echo "$(GO) test -count=1 -run '$(ZERO_RTT)' ./edge/link (0-RTT, without -race)"; \
	out=$$($(GO) test -count=1 -v -run '$(ZERO_RTT)' ./edge/link 2>&1) || { echo "$$out" | tail -50; status=1; }; \
	n=$$(echo "$$out" | grep -c -E '^--- PASS: ($(ZERO_RTT_NAMES))'); \
	if [ "$$n" -ne $(words $(subst |, ,$(ZERO_RTT_NAMES))) ]; then echo "make test: $$n of the 0-RTT tests ($(ZERO_RTT_NAMES)) passed"; status=1; fi; \
	if [ -n "$$skip" ]; then \
		echo; echo "######################################################################"; \
		echo "## make test: the Node SDK tests (edge/node TestNodeSDKs) were SKIPPED:"; \
		echo "##   $$skip"; \
		echo "######################################################################"; \
	fi; \
	if [ -n "$$noconsole" ]; then \
		echo; echo "######################################################################"; \
		echo "## make test: the web console's Chromium test (scripts/consoletest) was SKIPPED:"; \
		echo "##   $$noconsole"; \
		echo "######################################################################"; \
	fi; \
	exit $$status

# Regional leaf nodes with real processes (scripts/leaftest): one control
# node, three `meridian-control leaf` processes behind relays the test
# cuts, four joined edges. About 35 s once built, so it runs here and in
# .ci/run rather than in make test, which runs the in-process leaf tests
# (control/leaf, control/natsd).
test-leaves:
	MERIDIAN_TEST_LEAVES=1 $(GO) test -count=1 -timeout 10m -run '^TestRegionalLeaves$$' ./scripts/leaftest

bench: bench-gateway bench-adapters bench-gossip bench-local bench-links bench-peerdeath bench-control bench-distribution bench-router
	$(GO) test -run '^$$' -bench . -benchmem ./shared/... ./edge/...

bench-adapters:
	$(GO) run ./scripts/bench/adapters -readme README.md

bench-local: ollama
	$(GO) run ./scripts/bench/local -ollama $(BIN)/ollama -readme README.md

tinymodel:
	$(GO) run ./scripts/tinymodel -o $(BIN)/tiny.gguf
	$(GO) run ./scripts/tinymodel -variant repeat -o $(BIN)/tiny-repeat.gguf

bench-gossip:
	$(GO) run ./scripts/bench/gossip $(if $(QUICK),-quick)

bench-gateway:
	$(GO) run ./scripts/bench/gateway -readme README.md

bench-links:
	$(GO) run ./scripts/bench/links -readme README.md

bench-peerdeath:
	$(GO) run ./scripts/bench/peerdeath

bench-control:
	$(GO) run ./scripts/bench/control $(if $(QUICK),-quick) -readme README.md

# Usage aggregation: the state machine's cost per record in batches of
# 1,000 against batches of one, then 10,000 records through JetStream
# and Raft, ending with a "usage: records=... raft_writes=..." line.
bench-usage:
	$(GO) test -run '^$$' -bench BenchmarkUsageApply -benchtime 20000x ./control/fsm
	@$(GO) test -count=1 -run '^TestTenThousandRecordsFewRaftWrites$$' -v ./control/usage | grep -E '^(---|ok|FAIL)|usage:' | sed 's/^ *cluster_test.go:[0-9]*: //'

# The control plane's process-level crash test; QUICK=1 is the bounded
# form .ci/run runs, CYCLES=n a longer one.
chaos-control:
	$(GO) run ./scripts/chaos/control $(if $(QUICK),-quick) $(if $(CYCLES),-cycles $(CYCLES))

bench-distribution:
	$(GO) run ./scripts/bench/distribution -readme README.md

bench-router:
	$(GO) run ./scripts/bench/router -readme README.md

# A test, so it can start the control cluster of control/controltest;
# skipped unless MERIDIAN_BENCH_SCALE=1. Bounded: 40 minutes at most
# (QUICK=1: 12); SIZES and POOLS override the fleet sizes.
SCALE_SIZES = $(or $(SIZES),$(if $(QUICK),30$(comma)100,30$(comma)100$(comma)300$(comma)1000))
SCALE_POOLS = $(or $(POOLS),$(if $(QUICK),30,30$(comma)300$(comma)1000))
SCALE_BOUND = $(if $(QUICK),12m,40m)
bench-scale:
	@out=$$(mktemp); MERIDIAN_BENCH_SCALE=1 $(GO) test -v -count=1 -timeout 45m -run '^TestScale$$' ./scripts/bench/scale \
		-args -sizes $(SCALE_SIZES) -pools $(SCALE_POOLS) -bound $(SCALE_BOUND) \
		-readme $(CURDIR)/README.md >$$out 2>&1; \
	rc=$$?; grep -v -E '^(=== RUN|--- PASS|PASS$$|ok )' $$out; rm -f $$out; exit $$rc

# What keys' limits and usage records add to a request's path; ends with
# "keys: per_request_ns=<n> baseline_ns=<n>".
bench-keys:
	$(GO) run ./scripts/bench/keys

bench-security:
	$(GO) run ./scripts/bench/security -readme README.md

# The full exactness run of usage and spend on the real binaries; make
# e2e runs its bounded form (scenario 13).
# The edge cache on a generated FAQ trace (Zipf questions, paraphrases)
# against a mock provider with a 300 ms answer; ends with
# "cache: hit_ratio=<x> hit_p50_us=<n> miss_p50_us=<n> saved_pct=<x>".
bench-cache:
	$(GO) run ./scripts/bench/cache $(if $(REQUESTS),-requests $(REQUESTS))

bench-spend: ollama build
	$(GO) run ./scripts/bench/spend $(if $(REQUESTS),-requests $(REQUESTS))

bench-batch: ollama
	$(GO) run ./scripts/bench/batch -ollama $(BIN)/ollama -readme README.md $(if $(LINES),-lines $(LINES))

# Every fuzz target in the module, each run for FUZZTIME. A run that ends
# with go's own "context deadline exceeded" and no failing input (the
# deadline met the fuzzer mid-minimisation) is not a finding.
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
		dir=$$($(GO) list -f '{{.Dir}}' $$pkg); \
		for f in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$dir/*_test.go 2>/dev/null | sed 's/^func //'); do \
			echo "fuzz $$pkg $$f"; \
			if ! out=$$($(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 5s $$pkg 2>&1); then \
				echo "$$out" | grep -v '^fuzz: elapsed'; \
				if echo "$$out" | grep -q 'Failing input written' || ! echo "$$out" | grep -q 'context deadline exceeded'; then exit 1; fi; \
				echo "(deadline reached while minimising; no failing input)"; \
			fi; \
		done; \
	done

lint:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) tool staticcheck ./...

# The deployment artefacts under ops/. promtool and helm are pinned in the
# nested module ops/tools, so the main module never downloads them; they
# are built into $(BIN)/ once per pinned version (a stamp records it).
# promtool only checks rules here: remove_all_sd leaves out its service
# discovery plugins (cloud SDKs), most of its build time.
# CGO_ENABLED=0 builds what the images build.
OPS_TOOLS := ops/tools

ops-tools:
	@want="$$(cd $(OPS_TOOLS) && $(GO) env GOVERSION) $$(cd $(OPS_TOOLS) && $(GO) list -m -f '{{.Path}}@{{.Version}}' github.com/prometheus/prometheus helm.sh/helm/v3 | tr '\n' ' ')remove_all_sd"; \
	if [ -x $(BIN)/promtool ] && [ -x $(BIN)/helm ] && [ "$$(cat $(BIN)/.ops-tools.stamp 2>/dev/null)" = "$$want" ]; then exit 0; fi; \
	echo "make ops-tools: building promtool and helm ($$want)"; \
	mkdir -p $(BIN) && cd $(OPS_TOOLS) && \
	$(GO) build -trimpath -tags remove_all_sd -o $(abspath $(BIN))/promtool github.com/prometheus/prometheus/cmd/promtool && \
	$(GO) build -trimpath -o $(abspath $(BIN))/helm helm.sh/helm/v3/cmd/helm && \
	echo "$$want" >$(abspath $(BIN))/.ops-tools.stamp

ops-check: ops-tools
	$(BIN)/promtool check rules ops/prometheus/*.yaml
	$(BIN)/helm lint --strict ops/helm/meridian
	$(BIN)/helm lint --strict ops/helm/meridian --set control.replicas=1
	$(BIN)/helm lint --strict ops/helm/meridian --set control.replicas=5
	CGO_ENABLED=0 $(GO) build -o $(BIN)/ ./edge/cmd/meridian-edge
	CGO_ENABLED=0 $(GO) build ./control/cmd/meridian-control ./control/cmd/meridianctl ./scripts/mockprovider
	cd $(OPS_TOOLS) && MERIDIAN_HELM=$(abspath $(BIN))/helm MERIDIAN_EDGE_BIN=$(abspath $(BIN))/meridian-edge $(GO) test -count=1 ./...

clean:
	rm -rf $(BIN)
