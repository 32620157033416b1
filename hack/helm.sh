#!/usr/bin/env bash
# Builds the helm binary once, into a cache outside the repo keyed by its version, and
# prints its path on stdout and nothing else, so callers write
#
#   helm="$(hack/helm.sh)"
#   "$helm" template podarmor deploy/helm/podarmor
#
# Release downloads are not reachable here; helm is built from the Go module proxy
# (helm.sh/helm/v3 at PODARMOR_HELM_VERSION) in a scratch module of its own, so its
# dependencies never enter podarmor's go.mod. The version is stamped with -ldflags, as
# helm's own Makefile does, or `helm version` would say v3.22+unreleased and
# `.Capabilities.HelmVersion` would be wrong.
#
#   ${XDG_CACHE_HOME:-~/.cache}/podarmor/helm/VERSION/helm
#
# A second run finds it and says "up to date". The first build takes 2-4 minutes on
# 2 cores with an empty module cache.
#
# Environment:
#   PODARMOR_HELM_CACHE    cache directory (default .../podarmor/helm as above)
#   PODARMOR_HELM_VERSION  helm release (default below; a v3 release)
set -euo pipefail

helm_default=v3.22.0
version="${PODARMOR_HELM_VERSION:-$helm_default}"

log() { echo "helm: $*" >&2; }

[[ "$version" =~ ^v3\.[0-9]+\.[0-9]+$ ]] || {
	log "PODARMOR_HELM_VERSION=$version is not a helm v3 release such as $helm_default"
	exit 2
}

cache="${PODARMOR_HELM_CACHE:-${XDG_CACHE_HOME:-${HOME:?}/.cache}/podarmor/helm}"
dir="$cache/$version"
bin="$dir/helm"

if [[ -x "$bin" ]]; then
	log "up to date: $bin"
	echo "$bin"
	exit 0
fi

# The build must not see the caller's module: no go.work, the installed Go only, no
# cgo so the binary runs anywhere, no VCS stamping of the scratch module.
export GOWORK=off GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-mod=mod -buildvcs=false"

mkdir -p "$dir"
# Two callers started together (parallel test packages, make -j) would otherwise build
# twice and race on the rename; the second waits and then finds the binary ready.
exec {lock}>"$dir/lock"
flock "$lock"
if [[ -x "$bin" ]]; then
	log "up to date: $bin"
	echo "$bin"
	exit 0
fi

log "building helm $version into $dir"
start=$SECONDS
src="$dir/src"
rm -rf "$src"
mkdir -p "$src"
printf 'module podarmor.local/build/helm\n\ngo %s\n' "$(go env GOVERSION | sed 's/^go//')" >"$src/go.mod"
(
	cd "$src"
	go get "helm.sh/helm/v3/cmd/helm@$version"
	# The Kubernetes version `helm template` assumes without a cluster
	# (.Capabilities.KubeVersion) is that of the client-go helm is built with, as in
	# helm's own Makefile; without it helm would assume 1.20.
	kube_minor="$(go list -m -f '{{.Version}}' k8s.io/client-go | sed -nE 's/^v0\.([0-9]+)\..*/\1/p')"
	[[ -n "$kube_minor" ]] || {
		log "cannot tell the version of k8s.io/client-go that helm $version uses"
		exit 1
	}
	v=helm.sh/helm/v3/internal/version c=helm.sh/helm/v3/pkg/chartutil l=helm.sh/helm/v3/pkg/lint/rules
	ldflags="-s -w -X $v.version=$version -X $v.gitTreeState=clean"
	ldflags+=" -X $c.k8sVersionMajor=1 -X $c.k8sVersionMinor=$kube_minor"
	ldflags+=" -X $l.k8sVersionMajor=1 -X $l.k8sVersionMinor=$kube_minor"
	go build -trimpath -ldflags "$ldflags" -o "$bin.tmp" helm.sh/helm/v3/cmd/helm
) >&2
got="$("$bin.tmp" version --template '{{.Version}}')"
[[ "$got" == "$version" ]] || {
	log "the built helm says version \"$got\", want \"$version\""
	exit 1
}
mv -f "$bin.tmp" "$bin"
rm -rf "$src"
log "built helm $version in $((SECONDS - start))s"
echo "$bin"
