#!/usr/bin/env bash
# Regenerates what controller-gen derives from the API types in policies/api:
# the deepcopy methods (zz_generated.deepcopy.go next to the types) and the
# CRD manifests in deploy/crds.
#
#   hack/update-codegen.sh           # write changed files into the tree
#   hack/update-codegen.sh --verify  # change nothing; fail if the tree is stale
#
# Generation runs in a scratch copy of the work tree, so verify never touches
# the tree, update rewrites only files whose content changed, and generated
# files whose types were removed are deleted (controller-gen itself only
# writes, it never removes a stale CRD).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

api_dir=policies/api
crd_dir=deploy/crds

mode=update
case "${1:-}" in
'') ;;
--verify) mode=verify ;;
*)
	echo "usage: $0 [--verify]" >&2
	exit 2
	;;
esac

log() { echo "codegen: $*" >&2; }

bin="$(hack/tools.sh)"

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

# Copies the work tree as git sees it (tracked and untracked, not ignored),
# uncommitted edits included, without .git and build outputs.
copy_tree() {
	if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
		git ls-files -z --cached --others --exclude-standard |
			while IFS= read -r -d '' f; do
				# Tracked files deleted in the work tree are still listed.
				if [[ -e "$f" || -L "$f" ]]; then printf '%s\0' "$f"; fi
			done |
			tar --null -T - -cf -
	else
		tar --exclude=./.git -cf - .
	fi | tar -C "$scratch" -xf -
}

# Lists, relative to the directory it runs in, the files controller-gen
# owns: deepcopy files under the API tree and CRDs carrying its annotation.
generated_files() {
	if [[ -d "$api_dir" ]]; then
		find "$api_dir" -type f -name zz_generated.deepcopy.go
	fi
	if [[ -d "$crd_dir" ]]; then
		find "$crd_dir" -type f -name '*.yaml' \
			-exec grep -q 'controller-gen.kubebuilder.io/version' {} \; -print
	fi
}

copy_tree
(
	cd "$scratch"
	generated_files | xargs -r rm -f
	mkdir -p "$crd_dir"
	"$bin/controller-gen" \
		object:headerFile=hack/boilerplate.go.txt \
		crd:crdVersions=v1 \
		paths="./$api_dir/..." \
		output:crd:artifacts:config="$crd_dir"
)

changed=()
while IFS= read -r f; do
	if [[ ! -e "$scratch/$f" ]]; then
		changed+=("$f")
	elif ! cmp -s "$scratch/$f" "$f"; then
		changed+=("$f")
	fi
done < <({ generated_files; (cd "$scratch" && generated_files); } | sort -u)

if ((${#changed[@]} == 0)); then
	log "up to date, nothing to do"
	exit 0
fi

if [[ "$mode" == verify ]]; then
	for f in "${changed[@]}"; do
		if [[ ! -e "$f" ]]; then
			log "missing: $f"
		elif [[ ! -e "$scratch/$f" ]]; then
			log "stale, its types are gone: $f"
		else
			diff -u --label "a/$f" --label "b/$f" "$f" "$scratch/$f" || true
		fi
	done
	log "generated files are out of date: ${changed[*]}"
	log "run \`make update-codegen\` and commit the result"
	exit 1
fi

for f in "${changed[@]}"; do
	if [[ -e "$scratch/$f" ]]; then
		mkdir -p "$(dirname "$f")"
		cp "$scratch/$f" "$f"
		log "wrote $f"
	else
		rm -f "$f"
		log "removed $f (its types are gone)"
	fi
done
