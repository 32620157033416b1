#!/usr/bin/env bash
# Runs every fuzz target of the module (func FuzzXxx in a _test.go file) for the
# given time each: `hack/fuzz.sh 10s` in make test, longer in `make fuzz`.
# A crasher is written under the package's testdata/fuzz and fails the run;
# commit it, and it becomes a regression test of `go test`.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

fuzztime="${1:-10s}"

targets="$(grep -rE --include='*_test.go' -l '^func Fuzz[A-Za-z0-9_]*\(' . | sort)"
if [[ -z "$targets" ]]; then
	echo "fuzz: no fuzz targets" >&2
	exit 1
fi
log="$(mktemp)"
trap 'rm -f "$log"' EXIT

# fuzz_once fuzzes one target, its output to the terminal and to $log.
fuzz_once() {
	go test -run='^$' -fuzz="^${2}\$" -fuzztime="$fuzztime" -fuzzminimizetime=1s "$1" 2>&1 | tee "$log"
	return "${PIPESTATUS[0]}"
}

n=0
for file in $targets; do
	pkg="./$(dirname "${file#./}")"
	for fn in $(sed -nE 's/^func (Fuzz[A-Za-z0-9_]*)\(.*/\1/p' "$file"); do
		echo "fuzz: $pkg $fn for $fuzztime" >&2
		# Minimizing a new input may take longer than a short run lasts; bounded here, so
		# that the run ends on time instead of failing with "context deadline exceeded".
		if ! fuzz_once "$pkg" "$fn"; then
			# Go 1.26's coordinator can fail a run at the -fuzztime deadline with a
			# bare "context deadline exceeded" when a worker is slow to stop (a loaded
			# machine; golang/go#75804, fixed in Go 1.27): no input failed, none was
			# written. That alone is retried once; anything else fails now.
			if grep -q 'context deadline exceeded' "$log" && ! grep -qE 'Failing input written|panic:|_test\.go:[0-9]+:' "$log"; then
				echo "fuzz: $pkg $fn stopped at its deadline with no failing input (golang/go#75804); running it again" >&2
				fuzz_once "$pkg" "$fn" || exit 1
			else
				exit 1
			fi
		fi
		n=$((n + 1))
	done
done
echo "fuzz: $n targets, no crashers" >&2
