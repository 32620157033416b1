#!/usr/bin/env bash
# Builds podarmor-enforcer as a static binary (libbpf linked in through cgo, see
# hack/libbpf.sh), the one that runs on nodes and inside the VMs of `podarmor try`
# and the e2e tests, and prints its path:
#
#   hack/build-enforcer.sh            # -> ~/.cache/podarmor/bin/podarmor-enforcer
#   hack/build-enforcer.sh bin/       # -> bin/podarmor-enforcer
#
# go's build cache makes a second run quick (it relinks only what changed). Runs
# of this script at the same time (parallel tests) take turns.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-${XDG_CACHE_HOME:-${HOME:?}/.cache}/podarmor/bin}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
bin="$out/podarmor-enforcer"

eval "$("$root/hack/libbpf.sh")"
exec 9>"$out/.podarmor-enforcer.lock"
flock 9
tmp="$(mktemp "$out/.podarmor-enforcer.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
CGO_ENABLED=1 go build -C "$root" -tags netgo,osusergo -ldflags '-s -w -extldflags -static' \
	-o "$tmp" ./enforcer/cmd/podarmor-enforcer
# Replace only when the binary changed, so that its time stamp says when it did.
if cmp -s "$tmp" "$bin"; then
	echo "build-enforcer: $bin is up to date" >&2
else
	mv "$tmp" "$bin"
	echo "build-enforcer: built $bin" >&2
fi
echo "$bin"
