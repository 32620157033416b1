#!/usr/bin/env bash
# Fetches the libbpf that libbpfgo v0.7.0-libbpf-1.4 needs (1.4.x; bookworm
# itself has 1.1) from Debian's bookworm-backports, unpacked into a cache, and
# prints the cgo settings that link against it statically:
#
#   eval "$(hack/libbpf.sh)"   # sets CGO_CFLAGS, CGO_LDFLAGS, PODARMOR_LIBBPF
#
# Nothing is installed on the system: the packages are fetched with a private
# apt configuration and state, so the system's own sources stay as they are.
# A second run finds the cache and touches no network.
set -euo pipefail

version="${PODARMOR_LIBBPF_VERSION:-1:1.4.6-1~bpo12+1}"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/podarmor/libbpf/${version//[:~]/_}"

log() { echo "libbpf: $*" >&2; }

fetch() {
	local tmp
	tmp="$(mktemp -d)"
	trap 'rm -rf "$tmp"' RETURN
	mkdir -p "$tmp"/{state/lists/partial,cache/archives/partial,debs}
	echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-backports main" >"$tmp/sources.list"
	local apt=(-qq
		-o "Dir::Etc::sourcelist=$tmp/sources.list" -o Dir::Etc::sourceparts=-
		-o "Dir::State=$tmp/state" -o "Dir::Cache=$tmp/cache"
		-o APT::Sandbox::User=root)
	log "fetching libbpf $version from bookworm-backports"
	apt-get "${apt[@]}" update >&2
	(cd "$tmp/debs" && apt-get "${apt[@]}" download "libbpf-dev=$version" "libbpf1=$version" >&2)
	mkdir -p "$cache.partial"
	local deb
	for deb in "$tmp"/debs/*.deb; do
		dpkg-deb -x "$deb" "$cache.partial"
	done
	[[ -f "$cache.partial/usr/lib/x86_64-linux-gnu/libbpf.a" ]] || {
		log "libbpf.a missing from the unpacked packages in $cache.partial"
		return 1
	}
	rm -rf "$cache"
	mv "$cache.partial" "$cache"
}

[[ -f "$cache/usr/lib/x86_64-linux-gnu/libbpf.a" ]] || fetch

# libbpf.a needs libelf and zlib; hack/deps.sh bpf installs their static
# archives (libelf-dev, zlib1g-dev).
cat <<EOF
export PODARMOR_LIBBPF='$cache'
export CGO_CFLAGS='-I$cache/usr/include'
export CGO_LDFLAGS='$cache/usr/lib/x86_64-linux-gnu/libbpf.a -lelf -lz'
EOF
