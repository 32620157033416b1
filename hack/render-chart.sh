#!/usr/bin/env bash
# Regenerates what is derived for the Helm chart deploy/helm/podarmor:
# - its copies of the CRDs (deploy/crds), the default policy (deploy/policies/default.yaml)
#   and the alerts (deploy/monitoring/alerts.yaml);
# - templates/webhook-configurations.yaml, from webhook/registration;
# - the single-file manifest deploy/podarmor.yaml, `helm template` with the default values
#   (helm from hack/helm.sh).
# The work is TestGenerated in deploy/helm (package helm says how).
#
#   hack/render-chart.sh           # rewrite what changed
#   hack/render-chart.sh --verify  # change nothing; fail if any of them is stale
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

args=()
case "${1:-}" in
'') args=(-update) ;;
--verify) ;;
*)
	echo "usage: $0 [--verify]" >&2
	exit 2
	;;
esac

# Build helm first, so its progress shows and go test's timeout does not include it.
hack/helm.sh >/dev/null

if ! out="$(go test -count=1 -run '^TestGenerated$' ./deploy/helm -v "${args[@]}" 2>&1)"; then
	echo "$out" >&2
	echo "chart: generated files are stale; run \`make update\` and commit the result" >&2
	exit 1
fi
if grep -q 'wrote\|removed' <<<"$out"; then
	grep -o '\(wrote\|removed\) .*' <<<"$out" | sed 's/^/chart: /' >&2
else
	echo "chart: deploy/helm/podarmor and deploy/podarmor.yaml up to date, nothing to do" >&2
fi
