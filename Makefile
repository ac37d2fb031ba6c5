# Paver — the commands the README names. `make help` lists them.
CARGO ?= cargo
# make bench: where the JSON figures go, the quiet period after the
# 1,000-request burst (the issue asks for 600 s; QUIET_SECONDS=120 for a
# shorter run), and how long the 10,000-request burst may take.
BENCH_OUT ?= target/bench
QUIET_SECONDS ?= 600
BURST_TIMEOUT ?= 900

.PHONY: help build image test lint fmt crds pack manifests demo demo-down deps e2e e2e-bins cluster-up cluster-down bench
.DEFAULT_GOAL := help

help: ## Show this help
	@grep -hE '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

build: ## Build the paver binary (target/release/paver)
	$(CARGO) build --release -p paver

image: ## Build the operator image (Containerfile, FROM scratch) with buildah: target/image/paver-<version>.oci.tar (CONTAINER_TOOL=docker for docker)
	$(CARGO) build --release --locked -p paver
	scripts/image.sh build

test: ## Run every test, e2e and Argo CD included, the e2e's operator from the image (builds missing e2e binaries first, cached), and the hostile-input suite on the release binary
	@if ! e2e/bin.sh build-all; then \
	  case "$${CI:-}" in ""|false|0) ;; *) echo "make test: the e2e binaries could not be built (CI is set: failing)" >&2; exit 1 ;; esac; \
	  echo "make test: the e2e binaries could not be built (above); the tests that need them will SKIP, saying what is missing" >&2; \
	fi
# The image first: the e2e runs the operator from it (PAVER_E2E_IMAGE).
	$(CARGO) build --release --locked -p paver
	archive=$$(scripts/image.sh build) && PAVER_E2E_IMAGE=$(CURDIR)/$$archive $(CARGO) test --workspace --locked
# The hostile-input suite (operator/tests/hostile/) again, on the binary that ships.
	PAVER_HOSTILE_BIN=$(CURDIR)/target/release/paver $(CARGO) test -p paver --locked --test hostile

lint: ## rustfmt check, clippy with warnings as errors, and the core's purity (no kube client, git2, tokio)
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	scripts/core-is-pure.sh

fmt: ## Format the code
	$(CARGO) fmt --all

crds: ## Regenerate crds/*.yaml, the chart's charts/paver/crds/ and manifests/crds.yaml from the Rust types
	$(CARGO) run -q -p paver -- crds --out-dir crds
	$(CARGO) run -q -p paver -- crds --out-dir charts/paver/crds
	$(CARGO) run -q -p paver -- crds > manifests/crds.yaml

pack: ## Pack routes/ and policy-bundles/ into manifests/ (embedded in the binary) and the chart's charts/paver/files/
	$(CARGO) run -q -p paver -- pack

manifests: ## Render manifests/ (and manifests/argocd/) from the Helm chart charts/paver, their one source (needs helm: e2e/bin.sh build)
	scripts/manifests.sh

bench: ## Benchmarks (policy vs OPA, render, Git, route preview, 1,000/10,000 burst, trickle) -> BENCHMARKS.md; ~30 min, not in CI
	e2e/bin.sh build
	$(CARGO) build --release --locked -p paver -p paver-bench
	mkdir -p $(BENCH_OUT)
	target/release/paver-bench --json $(BENCH_OUT)/policy.json policy
	target/release/paver-bench --json $(BENCH_OUT)/render.json render
	target/release/paver-bench --json $(BENCH_OUT)/git.json git
	target/release/paver-bench --json $(BENCH_OUT)/preview.json preview --requests 10000
	target/release/paver-bench --json $(BENCH_OUT)/burst-1000.json burst --requests 1000 --quiet-seconds $(QUIET_SECONDS) --bump-route
	target/release/paver-bench --json $(BENCH_OUT)/trickle.json burst --trickle 50
	target/release/paver-bench --json $(BENCH_OUT)/trickle-activate.json burst --trickle 50 --activate-rules 2000
	target/release/paver-bench --json $(BENCH_OUT)/burst-10000.json burst --requests 10000 --quiet-seconds 0 --timeout-seconds $(BURST_TIMEOUT)
	target/release/paver-bench report --dir $(BENCH_OUT) --out BENCHMARKS.md

demo: ## Paver end to end on this machine: cluster + Git server, operator, examples (e2e/demo.sh)
	e2e/demo.sh up

demo-down: ## Stop the demo (operator and cluster) and remove its state
	e2e/demo.sh down

e2e-bins: ## Build and cache the e2e binaries: k8s, etcd, kwok, opa, Argo CD (~35 min once)
	e2e/bin.sh build-all

deps: ## Install the missing Debian packages the build, tests and demo need (apt-get/sudo)
	e2e/deps.sh install

e2e: ## Run only the end-to-end suite (starts its own cluster and Git server)
	$(CARGO) test -p paver --locked --test e2e --

cluster-up: ## Start the e2e control plane + Git server in .e2e (then: e2e/cluster.sh env)
	e2e/bin.sh build
	e2e/cluster.sh up

cluster-down: ## Stop the e2e control plane started by cluster-up
	e2e/cluster.sh down
