#!/usr/bin/env bash
# Builds the Kubernetes control-plane binaries that the e2e tests and
# hack/local-cluster.sh run: kube-apiserver and kubectl of one Kubernetes version, and
# etcd. Prints the directory holding them on stdout and nothing else, so callers write
#
#   bin="$(hack/kube-binaries.sh v1.37.2)"
#   "$bin/kube-apiserver" --version
#
# With --cluster it also builds what a cluster with a node needs, into the same
# directory: kube-scheduler, kube-controller-manager, kubelet and kube-proxy (the local
# cluster's VM node runs the last two). Without it they are neither built nor required,
# so the e2e tests, which need only an API server, do not wait for them.
#
#   bin="$(hack/kube-binaries.sh --cluster v1.37.2)"
#
# Release binaries cannot be downloaded here; only the Go module proxy is reachable. So
# the binaries are built from source modules:
#   - kube-apiserver and kubectl from k8s.io/kubernetes at exactly VERSION, in a scratch
#     module that requires it and replaces every staging repo (k8s.io/api,
#     k8s.io/apiserver, ...; the list is read from that version's own go.mod, because it
#     changes between releases) with the published v0.MINOR.PATCH of the same release.
#     The version is stamped with -ldflags, or the server would call itself
#     v0.0.0-master and clients could not tell which API behaviour to expect.
#   - etcd from go.etcd.io/etcd/server/v3 at ETCD_VERSION (`go install` of it is refused
#     because of its replace directives), built once and shared by every VERSION.
#
# Everything is cached outside the repo, keyed by version:
#   ${XDG_CACHE_HOME:-~/.cache}/podarmor/kube/VERSION/bin   kube-apiserver kubectl etcd
#   ${XDG_CACHE_HOME:-~/.cache}/podarmor/kube/etcd-ETCD_VERSION/etcd
# A second run finds them and says "up to date". With empty Go caches a version takes
# 10-18 minutes on 2 cores, most of it compiling kube-apiserver (e2e/README.md has the
# measured times); a second version reuses much of the compiled dependencies.
#
# Environment:
#   PODARMOR_KUBE_CACHE    cache directory (default .../podarmor/kube as above)
#   PODARMOR_ETCD_VERSION  etcd version (default below; a v3.6 release)
set -euo pipefail

etcd_default=v3.6.16

log() { echo "kube-binaries: $*" >&2; }

usage() {
	echo "usage: $0 [--cluster] VERSION   (a Kubernetes release such as v1.37.2)" >&2
	exit 2
}

cluster=false
if [[ "${1:-}" == --cluster ]]; then
	cluster=true
	shift
fi
(($# == 1)) || usage
version="$1"
[[ "$version" =~ ^v1\.([0-9]+)\.([0-9]+)$ ]] || usage
minor="${BASH_REMATCH[1]}"
staging_version="v0.${minor}.${BASH_REMATCH[2]}"
etcd_version="${PODARMOR_ETCD_VERSION:-$etcd_default}"
[[ "$etcd_version" =~ ^v3\.[0-9]+\.[0-9]+$ ]] || {
	log "PODARMOR_ETCD_VERSION=$etcd_version is not a release version such as $etcd_default"
	exit 2
}

cache="${PODARMOR_KUBE_CACHE:-${XDG_CACHE_HOME:-${HOME:?}/.cache}/podarmor/kube}"
dir="$cache/$version"
bin="$dir/bin"
etcd_dir="$cache/etcd-$etcd_version"
etcd_bin="$etcd_dir/etcd"

# The builds must not see the caller's module: no go.work, the installed Go only (a
# version needing a newer Go should fail here, not fetch a toolchain), no cgo so the
# binaries run anywhere, and no VCS stamping of the scratch module.
export GOWORK=off GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-mod=mod -buildvcs=false"

# The binaries --cluster adds; each is renamed into bin/ once built.
cluster_binaries=(kube-scheduler kube-controller-manager kubelet kube-proxy)

# kube-apiserver, kubectl and etcd of this version are complete once bin/ exists (it is
# renamed into place) and its etcd is the pinned one; with --cluster, once the cluster
# binaries are there too.
complete() {
	[[ -x "$bin/kube-apiserver" && -x "$bin/kubectl" && "$bin/etcd" -ef "$etcd_bin" ]] || return 1
	if $cluster; then
		local b
		for b in "${cluster_binaries[@]}"; do
			[[ -x "$bin/$b" ]] || return 1
		done
	fi
}

if complete; then
	log "up to date: $bin"
	echo "$bin"
	exit 0
fi

# Writes a scratch module into $1 whose go.mod has module path $2; the rest comes from
# `go mod edit` and `go get` by the caller.
scratch_module() {
	rm -rf "$1"
	mkdir -p "$1"
	printf 'module %s\n\ngo %s\n' "$2" "$(go env GOVERSION | sed 's/^go//')" >"$1/go.mod"
}

# Prints how long a build took since $1 (a $SECONDS value), as "3m12s".
took() {
	local s=$((SECONDS - $1))
	printf '%dm%02ds' $((s / 60)) $((s % 60))
}

build_etcd() {
	[[ -x "$etcd_bin" ]] && return 0
	mkdir -p "$etcd_dir"
	exec {etcd_lock}>"$etcd_dir/lock"
	flock "$etcd_lock"
	if [[ ! -x "$etcd_bin" ]]; then
		log "building etcd $etcd_version into $etcd_dir"
		local start=$SECONDS src="$etcd_dir/src"
		scratch_module "$src" podarmor.local/build/etcd
		(
			cd "$src"
			go get "go.etcd.io/etcd/server/v3@$etcd_version"
			go build -trimpath -o "$etcd_bin.tmp" go.etcd.io/etcd/server/v3
		) >&2
		"$etcd_bin.tmp" --version >/dev/null
		mv -f "$etcd_bin.tmp" "$etcd_bin"
		log "built etcd $etcd_version in $(took "$start")"
	fi
	exec {etcd_lock}>&-
}

# Prints the staging repos of k8s.io/kubernetes@$version: the modules its go.mod
# replaces with ./staging/src/... directories.
staging_repos() {
	local gomod
	gomod="$(go mod download -json "k8s.io/kubernetes@$version" | sed -n 's/^\t"GoMod": "\(.*\)",$/\1/p')"
	[[ -f "$gomod" ]] || {
		log "cannot read the go.mod of k8s.io/kubernetes@$version"
		return 1
	}
	sed -nE 's#^[[:space:]]*(replace[[:space:]]+)?(k8s\.io/[^[:space:]]+)[[:space:]]+=>[[:space:]]+\./staging/.*#\2#p' "$gomod" | sort -u
}

pkg=k8s.io/kubernetes/cmd
ldflags=""
# Both packages carry the version: component-base for the servers and newer kubectl,
# client-go for older kubectl. -X of a package that is not linked is ignored.
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	ldflags+=" -X $p.gitVersion=$version -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
done

build_kube() {
	local src="$dir/src" tmp="$dir/bin.tmp" start repos=() args=()
	log "building kube-apiserver and kubectl $version into $bin"
	scratch_module "$src" "podarmor.local/build/kubernetes-$version"
	mapfile -t repos < <(cd "$src" && staging_repos)
	((${#repos[@]})) || {
		log "found no staging repos in the go.mod of k8s.io/kubernetes@$version"
		return 1
	}
	log "replacing ${#repos[@]} staging repos with $staging_version"
	for r in "${repos[@]}"; do
		args+=("-replace=$r=$r@$staging_version")
	done

	(
		cd "$src"
		go mod edit "-require=k8s.io/kubernetes@$version" "${args[@]}"
		start=$SECONDS
		go get "$pkg/kube-apiserver@$version" "$pkg/kubectl@$version"
		log "resolved and downloaded the modules in $(took "$start")"
		rm -rf "$tmp"
		mkdir -p "$tmp"
		start=$SECONDS
		go build -trimpath -ldflags "$ldflags" -o "$tmp/" "$pkg/kube-apiserver"
		log "built kube-apiserver $version in $(took "$start")"
		start=$SECONDS
		go build -trimpath -ldflags "$ldflags" -o "$tmp/" "$pkg/kubectl"
		log "built kubectl $version in $(took "$start")"
	) >&2

	local got
	got="$("$tmp/kube-apiserver" --version)"
	[[ "$got" == "Kubernetes $version" ]] || {
		log "kube-apiserver --version says \"$got\", want \"Kubernetes $version\""
		return 1
	}
	ln -f "$etcd_bin" "$tmp/etcd" 2>/dev/null || cp -f "$etcd_bin" "$tmp/etcd"
	rm -rf "$bin"
	mv -T "$tmp" "$bin"
}

# Builds the cluster binaries that bin/ lacks, in the scratch module build_kube left
# (its go.mod already requires this version with the staging replaces), each to a
# temporary name renamed into bin/ once it reports the right version.
build_cluster() {
	local src="$dir/src" b start got
	for b in "${cluster_binaries[@]}"; do
		[[ -x "$bin/$b" ]] && continue
		log "building $b $version into $bin"
		start=$SECONDS
		(
			cd "$src"
			go get "$pkg/$b@$version"
			go build -trimpath -ldflags "$ldflags" -o "$bin/$b.tmp" "$pkg/$b"
		) >&2
		got="$("$bin/$b.tmp" --version)"
		[[ "$got" == "Kubernetes $version" ]] || {
			log "$b --version says \"$got\", want \"Kubernetes $version\""
			return 1
		}
		mv -f "$bin/$b.tmp" "$bin/$b"
		log "built $b $version in $(took "$start")"
	done
}

# Points $bin/etcd at the pinned etcd (after PODARMOR_ETCD_VERSION changed) without
# rebuilding the rest: link beside it, then rename over it.
relink_etcd() {
	ln -f "$etcd_bin" "$bin/etcd.tmp" 2>/dev/null || cp -f "$etcd_bin" "$bin/etcd.tmp"
	mv -f "$bin/etcd.tmp" "$bin/etcd"
	log "linked etcd $etcd_version into $bin"
}

start=$SECONDS
build_etcd

mkdir -p "$dir"
# Two callers started together (parallel test packages, make -j) would otherwise build
# twice and race on the rename; the second waits and then finds bin/ ready.
exec {lock}>"$dir/lock"
flock "$lock"
if ! complete; then
	if [[ -x "$bin/kube-apiserver" && -x "$bin/kubectl" ]]; then
		[[ "$bin/etcd" -ef "$etcd_bin" ]] || relink_etcd
	else
		build_kube
	fi
	if $cluster; then
		build_cluster
	fi
	log "done in $(took "$start")"
else
	log "up to date: $bin"
fi
echo "$bin"
