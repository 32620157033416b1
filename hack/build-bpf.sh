#!/usr/bin/env bash
# Builds the BPF object, bpfprog/object/podarmor.bpf.o, from the C sources in bpfprog/.
# The object is committed (Go embeds it, so building podarmor needs no clang) and
# this script keeps it true to its sources:
#
#   hack/build-bpf.sh           # rebuild the object
#   hack/build-bpf.sh --verify  # fail if the committed object differs from a fresh build
#
# One object for every kernel: CO-RE relocations against the BTF in
# bpfprog/include/vmlinux.h adapt it at load time. DWARF is stripped; BTF (which
# the loader and CO-RE need) stays. The build runs in bpfprog/ with relative
# paths, and -fdebug-prefix-map, so that the object does not depend on where the
# checkout lives.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

mode=update
case "${1:-}" in
'') ;;
--verify) mode=verify ;;
*)
	echo "usage: $0 [--verify]" >&2
	exit 2
	;;
esac

log() { echo "build-bpf: $*" >&2; }

hack/deps.sh bpf >/dev/null
eval "$(hack/libbpf.sh)"

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

(
	cd bpfprog
	# BTF line info names the source files: map the checkout's path away so that
	# every clone builds the same bytes.
	clang -g -O2 -target bpf -mcpu=v2 -D__TARGET_ARCH_x86 \
		-fdebug-prefix-map="$PWD"=bpfprog \
		-I include -I "$PODARMOR_LIBBPF/usr/include" \
		-Wall -Werror -Wno-unused-function \
		-c podarmor.bpf.c -o "$out/podarmor.bpf.o"
)
llvm-strip -g "$out/podarmor.bpf.o"

if [[ "$mode" == verify ]]; then
	if ! cmp -s "$out/podarmor.bpf.o" bpfprog/object/podarmor.bpf.o; then
		log "bpfprog/object/podarmor.bpf.o is stale or was built by another clang ($(clang --version | head -1)); run hack/build-bpf.sh"
		exit 1
	fi
	log "bpfprog/object/podarmor.bpf.o is up to date"
	exit 0
fi
cp "$out/podarmor.bpf.o" bpfprog/object/podarmor.bpf.o
log "wrote bpfprog/object/podarmor.bpf.o ($(stat -c %s bpfprog/object/podarmor.bpf.o) bytes)"
