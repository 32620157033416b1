# podarmor's make targets: a short index; the work lives in hack/*.sh.
# `make` (or `make help`) lists the targets.

SHELL := /usr/bin/env bash
GO ?= go
FUZZTIME ?= 10s

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: deps
deps: ## install the Debian packages and Go tools the build and tests need
	hack/deps.sh base bpf vm node
	hack/tools.sh >/dev/null

.PHONY: build
build: ## build the binaries into bin/ (podarmor-enforcer static, with libbpf)
	$(GO) build -o bin/ ./policies/cmd/podarmor
	hack/build-enforcer.sh bin/

.PHONY: demo
demo: deps ## a local cluster (VM node), podarmor installed with Helm, attacks denied in a running pod
	hack/demo.sh

.PHONY: test
test: deps lint verify ## run every check and test: lint, generated files, unit, golden, parser and fuzz tests
	hack/test.sh

.PHONY: bench
bench: deps ## run the benchmarks; raw results go to docs/benchmarks/, summary in docs/benchmarks.md
	hack/bench.sh

.PHONY: plot-decisions
plot-decisions: deps ## run a minute of denied and audited operations in a VM; redraw docs/observability/decisions.png from its /metrics
	hack/plot-decisions.sh

.PHONY: lint
lint: ## gofmt, go vet and staticcheck
	hack/lint.sh

.PHONY: verify
verify: verify-codegen verify-docs verify-bpf verify-chart ## check that generated files are up to date

.PHONY: update
update: update-codegen update-docs update-bpf update-chart ## regenerate every generated file

.PHONY: update-codegen
update-codegen: ## regenerate deepcopy code and CRDs from policies/api
	hack/update-codegen.sh

.PHONY: verify-codegen
verify-codegen: ## fail if deepcopy code or CRDs are stale
	hack/update-codegen.sh --verify

.PHONY: update-bpf
update-bpf: ## rebuild the BPF object bpfprog/object/podarmor.bpf.o from bpfprog/*.c
	hack/build-bpf.sh

.PHONY: verify-bpf
verify-bpf: ## fail if the committed BPF object differs from a build of its sources
	hack/build-bpf.sh --verify

.PHONY: update-docs
update-docs: ## regenerate docs/rules.md, the metric inventories and docs/observability.md
	hack/update-docs.sh

.PHONY: verify-docs
verify-docs: ## fail if docs/rules.md, the metric inventories or docs/observability.md are stale
	hack/update-docs.sh --verify

.PHONY: update-chart
update-chart: ## regenerate the Helm chart's copies and webhook template, and deploy/podarmor.yaml
	hack/render-chart.sh

.PHONY: verify-chart
verify-chart: ## fail if the chart's generated files or deploy/podarmor.yaml are stale
	hack/render-chart.sh --verify

.PHONY: update-golden
update-golden: ## rewrite the golden files of the compiler tests
	$(GO) test ./policies/... -update

.PHONY: fuzz
fuzz: ## run every fuzz target for FUZZTIME each (default 10s; try FUZZTIME=10m)
	hack/fuzz.sh $(FUZZTIME)
