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
n=0
for file in $targets; do
	pkg="./$(dirname "${file#./}")"
	for fn in $(sed -nE 's/^func (Fuzz[A-Za-z0-9_]*)\(.*/\1/p' "$file"); do
		echo "fuzz: $pkg $fn for $fuzztime" >&2
		# Minimizing a new input may take longer than a short run lasts; bounded here, so
		# that the run ends on time instead of failing with "context deadline exceeded".
		go test -run='^$' -fuzz="^${fn}\$" -fuzztime="$fuzztime" -fuzzminimizetime=1s "$pkg"
		n=$((n + 1))
	done
done
echo "fuzz: $n targets, no crashers" >&2
