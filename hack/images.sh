#!/usr/bin/env bash
# Builds podarmor's container images (deploy/images/*/image.yaml: enforcer, webhook, pause,
# demo-app) as OCI image archives for `ctr -n k8s.io images import`, with no Docker
# engine and no registry, and prints the one directory that holds them:
#
#   hack/images.sh              # -> ${XDG_CACHE_HOME:-~/.cache}/podarmor/images/KEY
#   hack/images.sh --tag 0.2.0  # the tag, where deploy/helm/podarmor/Chart.yaml is missing
#   hack/images.sh --refresh    # update the private Debian package lists first
#   hack/images.sh --containerd # prints a directory holding trixie's containerd 1.7
#                               # unpacked (usr/bin/containerd, ctr), the node's version,
#                               # for the test that imports the archives
#
# KEY/ holds enforcer.tar webhook.tar pause.tar demo-app.tar (images named
# localhost/podarmor/NAME:TAG; pause is always :3.10), images.txt (each name and manifest
# digest) and inputs.txt (what went in). KEY is a hash of everything that goes into the
# images: the binaries, the Debian package versions, the image builder (which embeds the
# definitions) and the tag. A run whose KEY is cached builds the binaries (quick, from
# go's build cache) and stops there, saying so. Logs go to stderr; stdout is the
# directory only. Concurrent runs take turns on a lock.
#
# The tag is the chart's appVersion (deploy/helm/podarmor/Chart.yaml); without the chart,
# --tag or TAG, default 0.1.0.
#
# What goes in:
#   - podarmor-enforcer, static with libbpf (hack/build-enforcer.sh); podarmor-webhook,
#     pause and demo-app, static pure Go (CGO_ENABLED=0, -trimpath);
#   - from Debian trixie: apparmor at exactly $apparmor_version (apparmor_parser and its
#     abi files), libc6 at the suite's current version (apparmor_parser links it; bookworm's
#     is too old for trixie's parser), busybox-static at exactly $busybox_version.
#     apt runs with a private configuration, lists and cache under .../images/apt, as in
#     hack/vm-kernels.sh, so the machine's own sources stay untouched. A pinned version
#     that the archive no longer has is an error that says so: update the pin here and in
#     docs/images.md.
#
# Environment:
#   PODARMOR_IMAGE_CACHE   cache directory (default ${XDG_CACHE_HOME:-~/.cache}/podarmor/images)
#   PODARMOR_DEBIAN_MIRROR, PODARMOR_DEBIAN_SECURITY_MIRROR
#                          override the mirrors taken from the machine's sources
set -eEuo pipefail
shopt -s inherit_errexit
trap 'log "failed (line $LINENO): $BASH_COMMAND"' ERR

# The pinned Debian packages (trixie). docs/images.md states the same versions.
apparmor_version=4.1.0-1
busybox_version=1:1.37.0-6+b9
suite=trixie
# How many image directories to keep besides the current one (older ones are removed).
keep=4

log() { echo "images: $*" >&2; }

usage() {
	echo "usage: $0 [--tag TAG] [--refresh] [--containerd]" >&2
	exit 2
}

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tag_arg="${TAG:-}"
refresh=0
containerd=0
while (($#)); do
	case "$1" in
	--tag)
		(($# >= 2)) || usage
		tag_arg="$2"
		shift
		;;
	--tag=*) tag_arg="${1#--tag=}" ;;
	--refresh) refresh=1 ;;
	--containerd) containerd=1 ;;
	-h | --help) usage ;;
	*)
		log "unknown argument $1"
		usage
		;;
	esac
	shift
done

# The tag: the chart's appVersion where the chart exists; a different --tag is an error
# rather than images the chart does not name.
chart="$root/deploy/helm/podarmor/Chart.yaml"
if [[ -f "$chart" ]]; then
	tag="$(sed -n 's/^appVersion:[[:space:]]*["'\'']\{0,1\}\([^"'\'' ]*\)["'\'']\{0,1\}[[:space:]]*$/\1/p' "$chart")"
	[[ -n "$tag" ]] || {
		log "$chart has no appVersion"
		exit 1
	}
	if [[ -n "$tag_arg" && "$tag_arg" != "$tag" ]]; then
		log "tag $tag_arg given, but the chart's appVersion is $tag; the images take the chart's"
		exit 2
	fi
else
	tag="${tag_arg:-0.1.0}"
fi

# Building the enforcer needs cgo and libelf/zlib (static link); the rest needs go, apt,
# dpkg-deb and sha256sum, which every Debian system has.
"$root/hack/deps.sh" base bpf >&2

cache="${PODARMOR_IMAGE_CACHE:-${XDG_CACHE_HOME:-${HOME:?}/.cache}/podarmor/images}"
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9

# mirrors prints the main and the security archive URIs the machine's own apt sources
# use, falling back to deb.debian.org.
mirrors() {
	local targets main security
	# shellcheck disable=SC2016 # apt expands $(REPO_URI), not the shell
	targets="$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 'Identifier: Packages' 2>/dev/null || true)"
	main="$(awk '$2 ~ /^[a-z]+$/ { print $1; exit }' <<<"$targets")"
	security="$(awk '$2 ~ /-security$/ { print $1; exit }' <<<"$targets")"
	echo "${PODARMOR_DEBIAN_MIRROR:-${main:-http://deb.debian.org/debian/}}"
	echo "${PODARMOR_DEBIAN_SECURITY_MIRROR:-${security:-http://deb.debian.org/debian-security/}}"
}

apt_dir="$cache/apt/$suite"
apt_opts=(
	-o "Dir::Etc::sourcelist=/dev/null"
	-o "Dir::Etc::sourceparts=$apt_dir/sources.list.d"
	-o "Dir::Etc::preferences=$apt_dir/preferences"
	-o "Dir::Etc::preferencesparts=$apt_dir/preferences.d"
	-o "Dir::State=$apt_dir/state"
	-o "Dir::State::status=$apt_dir/status"
	-o "Dir::Cache=$apt_dir/cache"
	-o "APT::Architecture=amd64"
	-o "APT::Architectures::=amd64"
	-o "Acquire::Languages=none"
	# The tree lives in the caller's home, which apt's _apt user cannot read.
	-o "APT::Sandbox::User=$(id -un)"
)

apt_setup() {
	local main security
	{
		read -r main
		read -r security
	} < <(mirrors)
	mkdir -p "$apt_dir/sources.list.d" "$apt_dir/preferences.d" "$apt_dir/state/lists/partial" \
		"$apt_dir/cache/archives/partial"
	: >>"$apt_dir/status"
	cat >"$apt_dir/sources.list.d/debian.sources" <<-EOF
		Types: deb
		URIs: $main
		Suites: $suite $suite-updates
		Components: main
		Targets: Packages
		Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

		Types: deb
		URIs: $security
		Suites: $suite-security
		Components: main
		Targets: Packages
		Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
	EOF
}

updated=0
apt_update() {
	log "apt-get update ($suite, private lists)"
	apt-get "${apt_opts[@]}" -qq update >&2
	updated=1
	compgen -G "$apt_dir/state/lists/*_Packages*" >/dev/null || {
		log "$suite: apt-get update got no package lists; is the mirror in its warnings reachable?"
		return 1
	}
}

# candidate prints the version of PKG that the private lists offer. awk reads to the end:
# exiting early would kill apt-cache with SIGPIPE, which pipefail reports as a failure.
candidate() {
	apt-cache "${apt_opts[@]}" show --no-all-versions "$1" 2>/dev/null |
		awk '$1 == "Version:" && v == "" { v = $2 } END { print v }'
}

# has_version succeeds if the private lists have PKG at VERSION.
has_version() {
	apt-cache "${apt_opts[@]}" show "$1=$2" >/dev/null 2>&1
}

# deb prints the cached .deb of PKG at VERSION, downloading it first if needed.
deb() {
	local pkg="$1" version="$2" file tmp
	file="$cache/debs/${pkg}_${version//:/%3a}_amd64.deb"
	if [[ ! -f "$file" ]]; then
		if ! has_version "$pkg" "$version" && ((!updated)); then
			apt_update
		fi
		has_version "$pkg" "$version" || {
			log "$suite has no $pkg $version (it offers $(candidate "$pkg")): update the pin in hack/images.sh and docs/images.md"
			return 1
		}
		log "downloading $pkg $version from $suite"
		mkdir -p "$cache/debs"
		tmp="$(mktemp -d "$cache/debs/.download.XXXXXX")"
		# A list older than the archive names a .deb that is gone: update once and retry.
		if ! (cd "$tmp" && apt-get "${apt_opts[@]}" -qq download "$pkg=$version" >&2); then
			((updated)) || apt_update
			(cd "$tmp" && apt-get "${apt_opts[@]}" -qq download "$pkg=$version" >&2)
		fi
		mv "$tmp"/*.deb "$file"
		rmdir "$tmp"
	fi
	echo "$file"
}

# unpack prints a directory holding the given .debs unpacked together (dpkg-deb -x), made
# once per set of packages, named NAME.
unpack() {
	local name="$1" dir tmp f
	shift
	dir="$cache/roots/$name"
	if [[ ! -d "$dir" ]]; then
		mkdir -p "$cache/roots"
		tmp="$(mktemp -d "$cache/roots/.unpack.XXXXXX")"
		for f in "$@"; do
			dpkg-deb -x "$f" "$tmp"
		done
		mv "$tmp" "$dir"
	fi
	echo "$dir"
}

apt_setup
if ((refresh)) || ! compgen -G "$apt_dir/state/lists/*_Packages*" >/dev/null; then
	apt_update
fi
if ((containerd)); then
	version="$(candidate containerd)"
	[[ -n "$version" ]] || {
		log "$suite: the package lists have no containerd"
		exit 1
	}
	containerd_deb="$(deb containerd "$version")"
	unpack "containerd_${version//:/%3a}" "$containerd_deb"
	exit 0
fi
libc_version="$(candidate libc6)"
[[ -n "$libc_version" ]] || {
	log "$suite: the package lists have no libc6"
	exit 1
}
apparmor_deb="$(deb apparmor "$apparmor_version")"
libc_deb="$(deb libc6 "$libc_version")"
busybox_deb="$(deb busybox-static "$busybox_version")"
apparmor_root="$(unpack "apparmor_${apparmor_version//:/%3a}+libc6_${libc_version//:/%3a}" "$apparmor_deb" "$libc_deb")"
busybox_root="$(unpack "busybox-static_${busybox_version//:/%3a}" "$busybox_deb")"

# The binaries, built in place under this script's lock (go's build cache makes that
# quick: it only links again).
bin="$cache/bin"
mkdir -p "$bin"
sha() { sha256sum <"$1" | cut -d' ' -f1; }
gobuild() {
	local out="$1" pkg="$2" before
	before="$(sha "$bin/$out" 2>/dev/null || true)"
	CGO_ENABLED=0 go build -C "$root" -trimpath -ldflags '-s -w' -o "$bin/$out" "$pkg"
	[[ "$(sha "$bin/$out")" == "$before" ]] || log "built $bin/$out"
}
log "building the binaries"
enforcer="$("$root/hack/build-enforcer.sh")"
# A copy, under this script's lock: another checkout may rebuild the original meanwhile.
cmp -s "$enforcer" "$bin/podarmor-enforcer" || cp "$enforcer" "$bin/podarmor-enforcer"
gobuild podarmor-webhook ./webhook/cmd/podarmor-webhook
gobuild pause ./deploy/images/pause
gobuild demo-app ./deploy/images/demo-app
gobuild image-build ./e2e/cmd/image-build

# What goes into the images, one input a line: its name (as deploy/images/*/image.yaml
# say), its path, and the sha256 of a file or "-" for a directory of unpacked packages,
# whose name fixes its content (package versions).
inputs="podarmor-enforcer $bin/podarmor-enforcer $(sha "$bin/podarmor-enforcer")
podarmor-webhook $bin/podarmor-webhook $(sha "$bin/podarmor-webhook")
pause $bin/pause $(sha "$bin/pause")
demo-app $bin/demo-app $(sha "$bin/demo-app")
apparmor $apparmor_root -
busybox $busybox_root -"

# The key: the inputs, the builder (which embeds the definitions) and the tag.
# Paths are left out: the key names content only.
key="$(printf 'tag %s\nimage-build %s\n%s\n' "$tag" "$(sha "$bin/image-build")" \
	"$(awk '{ print $1, ($3 == "-" ? $2 : $3) }' <<<"$inputs" | sed 's| /[^ ]*/| |')" |
	sha256sum | cut -c1-20)"
out="$cache/$key"
if [[ -d "$out" ]]; then
	log "$out is up to date"
	touch "$out"
	echo "$out"
	exit 0
fi

args=()
while read -r name path _; do
	args+=(--input "$name=$path")
done <<<"$inputs"
tmp="$(mktemp -d "$cache/.images.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
log "building the images (tag $tag)"
"$bin/image-build" --tag "$tag" --out "$tmp" "${args[@]}" >"$tmp/images.txt"
sed 's/^/images:   /' "$tmp/images.txt" >&2
{
	echo "# What went into these images (hack/images.sh): each input's name, path, and the"
	echo "# sha256 of a file or - for a directory of unpacked Debian packages; then the tag."
	echo "$inputs"
	echo "tag $tag"
} >"$tmp/inputs.txt"
chmod 755 "$tmp"
mv "$tmp" "$out"
trap - EXIT
log "built $out"

# Keep the newest few image directories: each is tens of MB.
find "$cache" -mindepth 1 -maxdepth 1 -type d -regextype egrep -regex '.*/[0-9a-f]{20}' -printf '%T@ %p\n' |
	sort -rn | tail -n +$((keep + 2)) | cut -d' ' -f2- | while read -r old; do
	log "removing the old $old"
	rm -rf "$old"
done
echo "$out"
