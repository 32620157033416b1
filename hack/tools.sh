#!/usr/bin/env bash
# Builds the dev tools pinned in hack/tools/go.mod (controller-gen,
# staticcheck) once, into a cache outside the repo, and prints the directory
# holding the binaries. It prints nothing else to stdout, so callers can write
#
#   bin="$(hack/tools.sh)"
#   "$bin/controller-gen" ...
#
# The cache is keyed by the tools module (go.mod and go.sum) and the Go
# version: staticcheck must be built by a Go at least as new as the code it
# checks, so a new Go gets new binaries. Set PODARMOR_TOOLS_CACHE to move it.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools_mod="$root/hack/tools"

log() { echo "tools: $*" >&2; }

key="$(
	{
		cat "$tools_mod/go.mod" "$tools_mod/go.sum"
		go env GOVERSION
	} | sha256sum | cut -d' ' -f1
)"
cache="${PODARMOR_TOOLS_CACHE:-${XDG_CACHE_HOME:-${HOME:?}/.cache}/podarmor/tools}"
dir="$cache/$key"
bin="$dir/bin"

# Lists the tool directives' package paths, e.g.
# sigs.k8s.io/controller-tools/cmd/controller-gen.
tool_packages() {
	(cd "$tools_mod" && GOWORK=off go list tool)
}

# The binaries are complete only once bin/ exists: the build writes to a
# scratch directory and renames it, so an interrupted build is redone.
if [[ -d "$bin" ]]; then
	echo "tools up to date: $bin" >&2
	echo "$bin"
	exit 0
fi

mkdir -p "$dir"
# Two scripts started together (make -j) would otherwise build twice and
# race on the rename; the second waits and then finds bin/ ready.
exec {lock}>"$dir/lock"
flock "$lock"
if [[ ! -d "$bin" ]]; then
	log "building $(tool_packages | sed 's|.*/||' | tr '\n' ' ')into $bin"
	start=$SECONDS
	rm -rf "$dir/bin.tmp"
	mkdir "$dir/bin.tmp"
	# GOWORK=off: a go.work at the repo root must not pull the tools module
	# into the project's build list, or the tools' pins into the project's.
	(cd "$tools_mod" && GOWORK=off go build -o "$dir/bin.tmp/" tool) >&2
	"$dir/bin.tmp/controller-gen" --version >/dev/null
	"$dir/bin.tmp/staticcheck" -version >/dev/null
	mv -T "$dir/bin.tmp" "$bin"
	log "built in $((SECONDS - start))s"
else
	echo "tools up to date: $bin" >&2
fi
echo "$bin"
