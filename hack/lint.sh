#!/usr/bin/env bash
# Lints the module from the repo root: gofmt, go vet and staticcheck (the
# version pinned in hack/tools/go.mod). Exits non-zero on the first failing
# check, after printing what it found.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

bin="$(hack/tools.sh)"
# enforcer/bpf links libbpf through cgo (libbpfgo): point cgo at the cached libbpf.
eval "$(hack/libbpf.sh)"

echo "lint: gofmt" >&2
# testdata/ may hold Go files that are malformed on purpose; vendor/ is not ours.
unformatted="$(
	find . \( -name .git -o -name testdata -o -name vendor \) -prune -o \
		-name '*.go' -type f -print0 | xargs -0 -r gofmt -l
)"
if [[ -n "$unformatted" ]]; then
	echo "lint: these files need gofmt -w:" >&2
	echo "$unformatted" >&2
	exit 1
fi

# Tests that run inside the VM are built with the vmguest tag only: vet and
# staticcheck see them with it too.
echo "lint: go vet ./... (and -tags vmguest)" >&2
go vet ./...
go vet -tags vmguest ./...

echo "lint: staticcheck ./... (and -tags vmguest)" >&2
"$bin/staticcheck" ./...
"$bin/staticcheck" -tags vmguest ./...

echo "lint: ok" >&2
