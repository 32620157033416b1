#!/usr/bin/env bash
# Regenerates docs/rules.md from the built-in rule catalog.
#
#   hack/update-docs.sh           # rewrite docs/rules.md if it changed
#   hack/update-docs.sh --verify  # change nothing; fail if docs/rules.md is stale
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

out=docs/rules.md
new="$(mktemp)"
trap 'rm -f "$new"' EXIT
go run ./policies/cmd/podarmor rules -o markdown >"$new"

if cmp -s "$new" "$out"; then
	echo "docs: $out up to date, nothing to do" >&2
	exit 0
fi
if [[ "${1:-}" == --verify ]]; then
	diff -u "$out" "$new" || true
	echo "docs: $out is stale; run \`make update-docs\` and commit the result" >&2
	exit 1
fi
cp "$new" "$out"
echo "docs: wrote $out" >&2
