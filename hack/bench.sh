#!/usr/bin/env bash
# `make bench`: runs podarmor's benchmarks and writes their raw output, with the machine
# and the command, to docs/benchmarks/<name>.txt. docs/benchmarks.md quotes them.
#
#   hack/bench.sh            # every benchmark
#   hack/bench.sh webhook    # one group: webhook, enforcer or node
#
# Absolute times depend on the machine; on a shared one quote the ratios measured side by
# side in one run (the pod-create benchmark alternates its namespaces create by create for
# that reason).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
out=docs/benchmarks
mkdir -p "$out"
# Before any output file is rewritten, which would make the tree dirty.
commit="$(git describe --always --dirty --abbrev=12)"

machine() {
	echo "# date: $(date -u +%FT%TZ)"
	echo "# machine: $(nproc) CPUs, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), $(free -g | awk '/Mem:/ {print $2}') GiB, kernel $(uname -r)"
	echo "# go: $(go version)"
	echo "# load before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
}

bench_webhook() {
	local file="$out/webhook.txt" cmd
	{
		machine
		cmd="go test -run '^\$' -bench 'MutatePod' -benchtime 5s -count 3 ./webhook/server/"
		echo "# command: $cmd"
		eval "$cmd"
		cmd="go test -run '^\$' -bench 'PodCreate' -benchtime 1x -count 3 ./e2e/"
		echo "# command: $cmd (first Kubernetes version of PODARMOR_KUBE_VERSIONS: ${PODARMOR_KUBE_VERSIONS:-default})"
		eval "$cmd"
	} 2>&1 | tee "$file"
	echo "bench: wrote $file" >&2
}

bench_enforcer() {
	local file="$out/enforcer.txt" cmd series path
	# enforcer/bpf links libbpf through cgo (libbpfgo); the guest binary is static.
	eval "$(hack/libbpf.sh)"
	{
		machine
		echo "# commit: $commit"
		hack/vm-kernels.sh 2>/dev/null | while read -r series path; do
			echo "# kernel $series: Debian $(basename "$(dirname "$path")"), $(basename "$path")"
		done
		echo "# qemu: $(qemu-system-x86_64 --version | head -1); apparmor_parser: $(apparmor_parser --version | head -1)"
		cmd="go test -run '^\$' -bench '^BenchmarkEnforcerInVM\$' -benchtime 1x -timeout 60m ./enforcer/bpf/"
		echo "# command: $cmd${PODARMOR_BENCH_ROUNDS:+ (PODARMOR_BENCH_ROUNDS=$PODARMOR_BENCH_ROUNDS)}"
		eval "$cmd"
	} 2>&1 | tee "$file"
	echo "bench: wrote $file" >&2
}

bench_node() {
	local file="$out/node.txt" cmd
	eval "$(hack/libbpf.sh)"
	{
		machine
		echo "# commit: $commit"
		cmd="go test -run '^\$' -bench '^BenchmarkNodeAgentInVM\$' -benchtime 1x -timeout 60m ./e2e/"
		echo "# command: $cmd (first Kubernetes version of PODARMOR_KUBE_VERSIONS: ${PODARMOR_KUBE_VERSIONS:-default})${PODARMOR_BENCH_ROUNDS:+ (PODARMOR_BENCH_ROUNDS=$PODARMOR_BENCH_ROUNDS)}"
		eval "$cmd"
	} 2>&1 | tee "$file"
	echo "bench: wrote $file" >&2
}

groups=("$@")
((${#groups[@]})) || groups=(webhook enforcer node)
for g in "${groups[@]}"; do
	if [[ "$(type -t "bench_$g")" != function ]]; then
		echo "bench: unknown group $g; known: $(declare -F | sed -n 's/^declare -f bench_//p' | tr '\n' ' ')" >&2
		exit 2
	fi
	"bench_$g"
done
