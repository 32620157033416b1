#!/usr/bin/env bash
# `make plot-decisions`: regenerates the figure of docs/observability.md,
# docs/observability/decisions.png: the enforcer's decisions over time by rule, from
# its real /metrics in a VM.
#
#   hack/plot-decisions.sh           # run the workload in a VM (a minute of guest time,
#                                    # 3-6 minutes in all), then draw
#   hack/plot-decisions.sh --draw    # only draw, from docs/observability/decisions.csv
#
# The samples come from e2e's BenchmarkDecisionsInVM (PODARMOR_DECISIONS_SERIES picks
# the kernel, 6.12 by default; PODARMOR_DECISIONS_FOR the workload's length, 60s); the
# figure from hack/plot (gonum.org/v1/plot, a module of its own so that the plotting
# library stays out of podarmor's go.mod).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
csv="$root/docs/observability/decisions.csv"
png="$root/docs/observability/decisions.png"

case "${1:-}" in
--draw) ;;
"")
	eval "$(hack/libbpf.sh)"
	tmp="$(mktemp)"
	trap 'rm -f "$tmp"' EXIT
	# A failed run leaves the committed samples as they were.
	PODARMOR_DECISIONS_CSV="$tmp" go test -run '^$' -bench '^BenchmarkDecisionsInVM$' -benchtime 1x -timeout 40m ./e2e/
	mkdir -p "$(dirname "$csv")"
	cp "$tmp" "$csv"
	echo "plot-decisions: wrote ${csv#"$root/"}" >&2
	;;
*)
	echo "usage: hack/plot-decisions.sh [--draw]" >&2
	exit 2
	;;
esac

new="$(mktemp --suffix .png)"
trap 'rm -f "$new" "${tmp:-}"' EXIT
(cd hack/plot && go run . -in "$csv" -out "$new")
if cmp -s "$new" "$png"; then
	echo "plot-decisions: ${png#"$root/"} up to date, nothing to do" >&2
else
	cp "$new" "$png"
	echo "plot-decisions: wrote ${png#"$root/"}" >&2
fi
