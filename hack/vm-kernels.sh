#!/usr/bin/env bash
# Fetches the Debian kernels that the VM tests boot (e2e/vm), and prints where they are:
# one line per series on stdout, "SERIES PATH-TO-VMLINUX", and nothing else, so callers
# write
#
#   hack/vm-kernels.sh            # 6.1 and 6.12
#   hack/vm-kernels.sh 6.12       # one series
#   hack/vm-kernels.sh --refresh  # look for a newer kernel even where one is cached
#
# and parse the lines (e2e/vm.Kernels does).
#
# The series are Debian's stable kernels: 6.1 from bookworm, 6.12 from trixie. Each is the
# package that Debian's `linux-image-amd64` depends on (linux-image-6.1.0-N-amd64, ...),
# fetched with `apt-get download` and unpacked without installing it. Three files and the
# few modules of the VM's network device are kept in
#   ${XDG_CACHE_HOME:-~/.cache}/podarmor/kernels/SERIES/DEBIAN-VERSION/
#     vmlinuz-RELEASE   the bzImage as Debian ships it
#     config-RELEASE    its configuration, which tells what is built in
#     vmlinux-RELEASE   the kernel ELF taken out of the bzImage: QEMU boots it directly
#                       (PVH), 3-5 s faster a boot under TCG; its .BTF section is this
#                       kernel's BTF (bpftool btf dump file vmlinux-RELEASE format c)
#     modules-RELEASE/  virtio_net and virtio_pci (where they are modules, not built in)
#                       with every module they depend on, uncompressed, and `order`: their
#                       file names, one a line, each after those it depends on. e2e/vm
#                       loads them (insmod, in that order) only in a VM that asks for a
#                       network forward (vm.Config.Forwards); no other boot carries them.
# The printed path is the vmlinux. The script checks that the config has BPF LSM,
# AppArmor and BTF built in, since the tests rely on all three.
#
# apt runs with a private configuration, list state and cache per suite under
# .../kernels/apt/SUITE, so the machine's own sources.list, package lists and pinning stay
# untouched, and bookworm's kernel comes out the same whether or not the host's lists are
# fresh. The mirror is the one the machine's own sources use (apt-get indextargets), so a
# machine behind a local mirror keeps using it.
#
# A second run finds the cached kernels and says so without touching the network. With
# --refresh it updates the private lists and fetches a newer kernel if the suite has one;
# the older one stays in the cache, unused. Concurrent runs (go test runs packages in
# parallel) wait for each other on a lock. A kernel cached before the modules were kept
# gets them added once: the package is fetched again and only modules-RELEASE/ is moved
# in beside the kernel, which stays as it is.
#
# Environment:
#   PODARMOR_KERNEL_CACHE   cache directory (default .../podarmor/kernels as above)
#   PODARMOR_DEBIAN_MIRROR, PODARMOR_DEBIAN_SECURITY_MIRROR
#                           override the mirrors taken from the machine's sources
set -eEuo pipefail
# fetch runs in $(...), and must stop at its first failure too, saying where.
shopt -s inherit_errexit
trap 'log "failed (line $LINENO): $BASH_COMMAND"' ERR

all_series=(6.1 6.12)

log() { echo "vm-kernels: $*" >&2; }

usage() {
	echo "usage: $0 [--refresh] [SERIES ...]   (SERIES: ${all_series[*]}; default: all)" >&2
	exit 2
}

# suite_of prints the Debian suite whose kernel is SERIES.
suite_of() {
	case "$1" in
	6.1) echo bookworm ;;
	6.12) echo trixie ;;
	*) return 1 ;;
	esac
}

refresh=0
series=()
for arg in "$@"; do
	case "$arg" in
	--refresh) refresh=1 ;;
	-h | --help) usage ;;
	*)
		suite_of "$arg" >/dev/null || {
			log "unknown series $arg"
			usage
		}
		series+=("$arg")
		;;
	esac
done
((${#series[@]})) || series=("${all_series[@]}")

cache="${PODARMOR_KERNEL_CACHE:-${XDG_CACHE_HOME:-${HOME:?}/.cache}/podarmor/kernels}"
mkdir -p "$cache"

# One run at a time: a second one waits and then finds the kernels cached.
exec 9>"$cache/.lock"
flock 9

# complete prints the vmlinux in the version directory DIR if DIR also has the modules
# directory of the same release. A version directory, and a modules directory added to an
# older one, exist only complete (they are renamed into place).
complete() {
	local vmlinux
	vmlinux="$(find "$1" -maxdepth 1 -name 'vmlinux-*' -type f | head -n 1)"
	[[ -n "$vmlinux" && -f "$1/modules-${vmlinux##*/vmlinux-}/order" ]] || return 1
	echo "$vmlinux"
}

# cached prints the vmlinux of the newest cached kernel of SERIES, if there is one and it
# is complete.
cached() {
	local dir
	dir="$(find "$cache/$1" -mindepth 1 -maxdepth 1 -type d 2>/dev/null | sort -V | tail -n 1)"
	[[ -n "$dir" ]] || return 1
	complete "$dir"
}

# mirrors prints the main and the security archive URIs the machine's own apt sources use
# (deb822 or one-line format alike), falling back to deb.debian.org.
mirrors() {
	local targets main security
	targets="$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 'Identifier: Packages' 2>/dev/null || true)"
	main="$(awk '$2 ~ /^[a-z]+$/ { print $1; exit }' <<<"$targets")"
	security="$(awk '$2 ~ /-security$/ { print $1; exit }' <<<"$targets")"
	echo "${PODARMOR_DEBIAN_MIRROR:-${main:-http://deb.debian.org/debian/}}"
	echo "${PODARMOR_DEBIAN_SECURITY_MIRROR:-${security:-http://deb.debian.org/debian-security/}}"
}

# apt_setup writes the private apt tree of SUITE and fills the array `apt_opts` with the
# options that point apt-get and apt-cache at it.
apt_setup() {
	local suite="$1" dir="$cache/apt/$1" main security
	{
		read -r main
		read -r security
	} < <(mirrors)
	mkdir -p "$dir/sources.list.d" "$dir/preferences.d" "$dir/state/lists/partial" \
		"$dir/cache/archives/partial"
	: >>"$dir/status"
	# Packages indices only: no translations, DEP-11 or Contents.
	cat >"$dir/sources.list.d/debian.sources" <<-EOF
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
	apt_opts=(
		-o "Dir::Etc::sourcelist=/dev/null"
		-o "Dir::Etc::sourceparts=$dir/sources.list.d"
		-o "Dir::Etc::preferences=$dir/preferences"
		-o "Dir::Etc::preferencesparts=$dir/preferences.d"
		-o "Dir::State=$dir/state"
		-o "Dir::State::status=$dir/status"
		-o "Dir::Cache=$dir/cache"
		-o "APT::Architecture=amd64"
		-o "APT::Architectures::=amd64"
		-o "Acquire::Languages=none"
		# The tree lives in the caller's home, which apt's _apt user cannot read.
		-o "APT::Sandbox::User=$(id -un)"
	)
	apt_lists="$dir/state/lists"
}

apt_update() {
	log "apt-get update ($1, private lists)"
	apt-get "${apt_opts[@]}" -qq update >&2
	# apt-get update only warns about a mirror it cannot reach.
	compgen -G "$apt_lists/*_Packages*" >/dev/null || {
		log "$1: apt-get update got no package lists; is the mirror in its warnings reachable?"
		return 1
	}
}

# extract_vmlinux writes the kernel ELF inside the bzImage VMLINUZ to OUT. QEMU boots
# the ELF through its PVH entry point, without the real-mode setup and without the
# kernel decompressing itself, which under TCG takes 3-5 s of every boot (xz on 6.1).
# The compressed payload is where the boot protocol's setup header says (payload_offset
# and payload_length at 0x248, after (setup_sects+1)*512 bytes of setup code); its last
# 4 bytes are the uncompressed size, not part of the stream.
extract_vmlinux() {
	local vmlinuz="$1" out="$2" setup_sects offset length start size magic
	setup_sects="$(od -An -tu1 -j $((0x1f1)) -N1 "$vmlinuz" | tr -d ' ')"
	read -r offset length < <(od -An -tu4 -j $((0x248)) -N8 "$vmlinuz")
	start=$(((setup_sects + 1) * 512 + offset))
	size="$(od -An -tu4 -j $((start + length - 4)) -N4 "$vmlinuz" | tr -d ' ')"
	magic="$(od -An -tx1 -j "$start" -N4 "$vmlinuz" | tr -d ' ')"
	local decompress
	case "$magic" in
	fd377a58) decompress=(xz -dc) ;;
	28b52ffd) decompress=(zstd -dcq) ;;
	1f8b*) decompress=(gzip -dc) ;;
	*)
		log "$vmlinuz: unknown compression of the kernel payload (magic $magic)"
		return 1
		;;
	esac
	dd if="$vmlinuz" iflag=skip_bytes,count_bytes skip="$start" count=$((length - 4)) bs=1M status=none |
		"${decompress[@]}" >"$out"
	[[ "$(stat -c %s "$out")" == "$size" && "$(od -An -tx1 -N4 "$out" | tr -d ' ')" == 7f454c46 ]] || {
		log "$vmlinuz: the extracted kernel is not the ELF of $size bytes the header announces"
		return 1
	}
}

# check_config fails unless CONFIG has what the VM tests need built in.
check_config() {
	local opt
	for opt in CONFIG_BPF_LSM CONFIG_SECURITY_APPARMOR CONFIG_DEBUG_INFO_BTF CONFIG_BPF_SYSCALL; do
		grep -qx "$opt=y" "$1" || {
			log "$1: $opt is not =y; this kernel cannot run the VM tests"
			return 1
		}
	done
}

# net_modules copies the modules of the VM's network device, with those they depend on,
# from the unpacked package ROOT into the directory OUT, uncompressed, and writes OUT/order.
# CONFIG tells which of the roots are built in. A module's dependencies are the
# depends= field of its .modinfo section (the package ships no modules.dep, and the host
# needs no kmod for this); its vermagic must name RELEASE.
net_modules() {
	local root="$1" config="$2" release="$3" out="$4" ko name
	local -A path=() state=()
	local order=()
	while IFS= read -r ko; do
		name="${ko##*/}"
		name="${name%%.ko*}"
		path["${name//-/_}"]="$ko"
	done < <(find "$root" -path '*/modules/*' -name '*.ko*' -type f)
	((${#path[@]})) || {
		log "$release: the package has no modules"
		return 1
	}
	mkdir -p "$out"

	# visit copies module $1 after the modules it depends on (depth first).
	visit() {
		local name="$1" src dst dep deps info
		case "${state[$name]:-}" in
		done) return ;;
		active)
			log "$release: the modules depend on each other in a cycle through $name"
			return 1
			;;
		esac
		src="${path[$name]:-}"
		[[ -n "$src" ]] || {
			log "$release: module $name is not in the package"
			return 1
		}
		state[$name]=active
		dst="$out/$name.ko"
		case "$src" in
		*.ko) cp "$src" "$dst" ;;
		*.ko.xz) xz -dc "$src" >"$dst" ;;
		*.ko.zst) zstd -dcq "$src" >"$dst" ;;
		*.ko.gz) gzip -dc "$src" >"$dst" ;;
		*)
			log "$release: $src: unknown module compression"
			return 1
			;;
		esac
		info="$(tr '\0' '\n' <"$dst" | grep -a -E '^(depends|vermagic)=')"
		[[ $'\n'"$info" == *$'\n'"vermagic=$release "* ]] || {
			log "$release: $src was not built for this kernel: $(grep -a '^vermagic=' <<<"$info")"
			return 1
		}
		deps="$(sed -n 's/^depends=//p' <<<"$info" | tr ',' ' ')"
		for dep in $deps; do
			visit "${dep//-/_}"
		done
		state[$name]="done"
		order+=("$name.ko")
	}

	# virtio_pci finds the NIC on the PCI bus; virtio_net drives it. A root that the
	# config builds in is left out (virtio_pci is =y on 6.12, =m on 6.1).
	local root_mod opt
	for root_mod in virtio_pci virtio_net; do
		opt="CONFIG_${root_mod^^}"
		if grep -qx "$opt=y" "$config"; then
			continue
		fi
		grep -qx "$opt=m" "$config" || {
			log "$release: $opt is neither =y nor =m; the VM's network device cannot work"
			return 1
		}
		visit "$root_mod"
	done
	printf '%s\n' "${order[@]}" >"$out/order"
	log "$release: network modules ${order[*]}"
}

# fetch downloads the kernel of SERIES into the cache and prints its vmlinux.
fetch() {
	local series="$1" suite pkg version dest tmp deb vmlinuz config release
	suite="$(suite_of "$series")"
	apt_setup "$suite"
	if ((refresh)) || ! compgen -G "$apt_lists/*_Packages*" >/dev/null; then
		apt_update "$suite"
	fi

	# linux-image-amd64 depends on exactly one versioned image package.
	# awk reads to the end (no exit): an early exit could kill apt-cache with SIGPIPE,
	# which pipefail would turn into a failure.
	pkg="$(apt-cache "${apt_opts[@]}" depends linux-image-amd64 |
		awk '$1 == "Depends:" && $2 ~ /^linux-image-/ && !found { print $2; found = 1 }')"
	[[ -n "$pkg" ]] || {
		log "$suite: linux-image-amd64 depends on no linux-image-* package"
		return 1
	}
	version="$(apt-cache "${apt_opts[@]}" show --no-all-versions "$pkg" | awk '$1 == "Version:" && !found { print $2; found = 1 }')"
	dest="$cache/$series/$version"
	if [[ -d "$dest" ]] && complete "$dest" >/dev/null; then
		log "$series: $pkg $version is the newest in $suite and cached"
		complete "$dest"
		return
	fi

	tmp="$(mktemp -d "$cache/.fetch-$series.XXXXXX")"
	# shellcheck disable=SC2064 # expand $tmp now: it is local
	trap "rm -rf '$tmp'" RETURN
	if [[ -d "$dest" ]]; then
		log "$series: $pkg $version is cached without its network modules; fetching it again for them"
	fi
	log "$series: downloading $pkg $version from $suite"
	# A list older than the archive names a .deb that is gone: update once and retry.
	if ! (cd "$tmp" && apt-get "${apt_opts[@]}" -qq download "$pkg=$version" >&2); then
		apt_update "$suite"
		version="$(apt-cache "${apt_opts[@]}" show --no-all-versions "$pkg" | awk '$1 == "Version:" && !found { print $2; found = 1 }')"
		dest="$cache/$series/$version"
		(cd "$tmp" && apt-get "${apt_opts[@]}" -qq download "$pkg=$version" >&2)
	fi
	deb="$(find "$tmp" -maxdepth 1 -name '*.deb' | head -n 1)"
	[[ -n "$deb" ]] || {
		log "$series: apt-get download $pkg=$version left no .deb"
		return 1
	}

	# boot/ and the modules (lib/modules on 6.1, usr/lib/modules on 6.12), of which
	# net_modules keeps a few: unpacking them all costs 0-4 s more than boot/ alone,
	# since the whole stream is decompressed either way.
	mkdir "$tmp/root" "$tmp/out"
	dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tmp/root" --wildcards './boot/*' '*/modules/*'
	cp "$tmp"/root/boot/vmlinuz-* "$tmp"/root/boot/config-* "$tmp/out/" || {
		log "$series: $pkg $version has no boot/vmlinuz-* and boot/config-*"
		return 1
	}
	config="$(find "$tmp/out" -name 'config-*' | head -n 1)"
	check_config "$config"
	vmlinuz="$(find "$tmp/out" -name 'vmlinuz-*' | head -n 1)"
	release="${vmlinuz##*/vmlinuz-}"
	net_modules "$tmp/root" "$config" "$release" "$tmp/out/modules-$release"
	mkdir -p "$cache/$series"
	if [[ -d "$dest" ]]; then
		# A kernel cached before the modules were: add them, leave the rest alone
		# (a test may be booting that vmlinux right now).
		[[ -f "$dest/vmlinux-$release" ]] || {
			log "$series: $dest holds no vmlinux-$release; remove it and run again"
			return 1
		}
		rm -rf "$dest/modules-$release"
		mv "$tmp/out/modules-$release" "$dest/"
	else
		extract_vmlinux "$vmlinuz" "$tmp/out/vmlinux-$release"
		mv "$tmp/out" "$dest"
	fi
	log "$series: cached $dest"
	complete "$dest"
}

for s in "${series[@]}"; do
	vmlinux=""
	if ((!refresh)) && vmlinux="$(cached "$s")"; then
		log "$s: cached $vmlinux"
	else
		vmlinux="$(fetch "$s")"
	fi
	echo "$s $vmlinux"
done
