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
#
# The two longest packages come first, so that go test starts them at once: the local
# cluster (e2e/cluster, one VM, 45-50 minutes on 2 cores) and the BPF suite
# (enforcer/bpf, two niced VMs that take the CPU the others leave). With -p 3 the other
# packages run alongside them, one at a time, instead of waiting for one of the two to
# end.
long=(./enforcer/bpf ./e2e/cluster)
mapfile -t rest < <(go list ./... | grep -v -x -e "$(go list -m)/enforcer/bpf" -e "$(go list -m)/e2e/cluster")
echo "test: go test ${long[*]} and the ${#rest[@]} other packages of ./..." >&2
go test -count=1 -p 3 -timeout 70m "${long[@]}" "${rest[@]}"
# hack/plot (the figure of docs/observability.md) is a module of its own.
echo "test: go test ./... in hack/plot" >&2
(cd hack/plot && go vet ./... && go test -count=1 ./...)

hack/fuzz.sh "${FUZZTIME:-10s}"
