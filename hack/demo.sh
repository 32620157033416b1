#!/usr/bin/env bash
# `make demo`: what podarmor can show today, the policy path. It builds the CLI, lists
# the built-in rules, validates the example policies (one valid, one full of mistakes),
# renders the valid one into its AppArmor, seccomp and BPF profiles, and has
# apparmor_parser parse the AppArmor profile. No cluster is started yet: the webhook and
# the node enforcer come in later issues.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Build the podarmor CLI"
go build -o bin/ ./policies/cmd/podarmor
podarmor=bin/podarmor
echo "built $podarmor"

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

step "The built-in rule catalog (podarmor rules; -o json for data)"
"$podarmor" rules >"$out/rules.txt"
head -n 25 "$out/rules.txt"
echo "... $(($(wc -l <"$out/rules.txt") - 1)) rules in all; docs/rules.md lists them with what each enforcer makes of them"

policy=deploy/examples/enhance-protect.yaml
step "An example policy: $policy"
cat "$policy"

step "Validate it (podarmor validate -f $policy)"
"$podarmor" validate -f "$policy"

step "A policy with mistakes is rejected, each error naming its field (deploy/examples/invalid.yaml)"
if "$podarmor" validate -f deploy/examples/invalid.yaml; then
	echo "demo: the invalid example validated; that is a bug" >&2
	exit 1
fi

step "Render its profiles (podarmor render -f $policy -d DIR)"
"$podarmor" render -f "$policy" -d "$out/profiles"

step "The AppArmor profile"
cat "$out"/profiles/apparmor/*

step "The seccomp profile (first 40 lines)"
head -n 40 "$out"/profiles/seccomp/podarmor/*.json
echo "..."

step "The BPF rule set (first 40 lines)"
head -n 40 "$out"/profiles/bpf/*.json
echo "..."

step "apparmor_parser -Q -K parses the AppArmor profile without loading it"
apparmor_parser -Q -K -M /usr/share/apparmor-features/features "$out"/profiles/apparmor/*
echo "apparmor_parser: ok"

step "Done"
cat <<'MSG'
That is the policy path. Explore further:
  bin/podarmor rules -o json | less          # every rule, as data
  bin/podarmor render -f YOUR-POLICY.yaml    # what a policy of yours compiles to
  docs/policies.md, docs/rules.md            # the API and the catalog
Nothing was started, so there is nothing to tear down. A demo on a real cluster
(webhook, node enforcer, attacks denied in a running pod) comes with the next issues.
MSG
