#!/usr/bin/env bash
# Regenerates the generated docs:
# - docs/rules.md from the built-in rule catalog;
# - the metric inventories deploy/monitoring/inventory/{webhook,enforcer}.json from the
#   binaries' real registries, and the metric and alert tables of docs/observability.md
#   from them and deploy/monitoring/alerts.yaml.
#
#   hack/update-docs.sh           # rewrite what changed
#   hack/update-docs.sh --verify  # change nothing; fail if any of them is stale
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

verify=false
[[ "${1:-}" == --verify ]] && verify=true
stale=0

out=docs/rules.md
new="$(mktemp)"
trap 'rm -f "$new"' EXIT
go run ./policies/cmd/podarmor rules -o markdown >"$new"
if cmp -s "$new" "$out"; then
	echo "docs: $out up to date, nothing to do" >&2
elif $verify; then
	diff -u "$out" "$new" || true
	echo "docs: $out is stale; run \`make update-docs\` and commit the result" >&2
	stale=1
else
	cp "$new" "$out"
	echo "docs: wrote $out" >&2
fi

# The inventories come from tests that build each binary's registry (enforcer/kube
# links libbpf through cgo); the tests fail on a stale file, and -update rewrites it.
# The page's tables are generated from the inventories, so they come second.
eval "$(hack/libbpf.sh)"
generated=(deploy/monitoring/inventory/webhook.json deploy/monitoring/inventory/enforcer.json docs/observability.md)
before="$(sha256sum "${generated[@]}")"
observability() {
	local pkg="$1" run="$2"
	if $verify; then
		go test -count=1 -run "$run" "$pkg" >/dev/null || {
			go test -count=1 -run "$run" "$pkg" || true
			stale=1
		}
	else
		go test -count=1 -run "$run" "$pkg" -update >/dev/null
	fi
}
observability ./webhook/metrics '^TestInventory$'
observability ./enforcer/kube '^TestInventory$'
observability ./deploy/monitoring '^TestObservabilityDoc$'
if [[ $stale == 1 ]]; then
	echo "docs: metric inventories or docs/observability.md stale; run \`make update-docs\` and commit the result" >&2
elif [[ "$(sha256sum "${generated[@]}")" == "$before" ]]; then
	echo "docs: metric inventories and docs/observability.md up to date, nothing to do" >&2
else
	echo "docs: rewrote the changed ones of ${generated[*]}" >&2
fi
exit "$stale"
