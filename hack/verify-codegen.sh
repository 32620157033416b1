#!/usr/bin/env bash
# Fails, showing the diff, when the deepcopy files or the CRDs in deploy/crds
# differ from what the API types in policies/api generate. Changes nothing.
set -euo pipefail

exec "$(dirname "${BASH_SOURCE[0]}")/update-codegen.sh" --verify
