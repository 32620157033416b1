#!/usr/bin/env bash
# Runs every Go test of the module, then every fuzz target briefly. `make test`
# calls it after deps, lint and verify.
#
# CI=true (set here unless the caller set it) turns tests that would skip for a
# missing tool, such as apparmor_parser, into failures: hack/deps.sh installed
# them, so a skip here would hide a broken install.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

export CI="${CI:-true}"

# enforcer/bpf links libbpf through cgo (libbpfgo).
eval "$(hack/libbpf.sh)"

# ./e2e starts real control planes (etcd, kube-apiserver) of every version in
# PODARMOR_KUBE_VERSIONS, built once by hack/kube-binaries.sh and cached. The
# timeout is a safety net for a loaded machine, where the VM suites run slowest.
echo "test: go test ./..." >&2
go test -count=1 -timeout 70m ./...
# hack/plot (the figure of docs/observability.md) is a module of its own.
echo "test: go test ./... in hack/plot" >&2
(cd hack/plot && go vet ./... && go test -count=1 ./...)

hack/fuzz.sh "${FUZZTIME:-10s}"
