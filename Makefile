# Paver — the commands the README names. `make help` lists them.
CARGO ?= cargo

.PHONY: help build test lint fmt crds pack
.DEFAULT_GOAL := help

help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

build: ## Build the paver binary (target/release/paver)
	$(CARGO) build --release -p paver

test: ## Run every test in the workspace
	$(CARGO) test --workspace --locked

lint: ## rustfmt check and clippy with warnings as errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

fmt: ## Format the code
	$(CARGO) fmt --all

crds: ## Regenerate crds/*.yaml and manifests/crds.yaml from the Rust types
	$(CARGO) run -q -p paver -- crds --out-dir crds
	$(CARGO) run -q -p paver -- crds > manifests/crds.yaml

pack: ## Pack routes/ and policy-bundles/ into manifests/ (embedded in the binary)
	$(CARGO) run -q -p paver -- pack
