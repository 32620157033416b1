#!/usr/bin/env bash
# Installs the Debian packages that building and testing podarmor needs.
#
#   hack/deps.sh              # the base group
#   hack/deps.sh base bpf vm  # several groups
#
# Only missing packages are installed, and `apt-get update` runs only when
# something is missing, so a second run touches nothing and says so.
set -euo pipefail

# Each group is a function that prints its packages, one a line, so a later
# change adds a group by adding a function and nothing else. Name real
# packages, not virtual ones: dpkg-query never reports a virtual package as
# installed, so it would be installed again on every run.

# base: building, unit tests, and `apparmor_parser -Q -K` to check generated
# profiles without loading them.
group_base() {
	printf "%s\n" apparmor make gcc cpp linux-libc-dev git ca-certificates curl
}

# bpf: compiling bpfprog/ and generating vmlinux.h.
group_bpf() {
	printf '%s\n' clang llvm libelf-dev zlib1g-dev bpftool
}

# vm: booting Debian kernels under QEMU (TCG) with a busybox initramfs (e2e/vm).
# runc and apparmor_parser are copied into the guest with their libraries.
# hack/vm-kernels.sh unpacks the kernels with xz (6.1) and zstd (6.12), and needs
# apt-get, dpkg-deb and flock besides, which every Debian system has.
group_vm() {
	printf '%s\n' qemu-system-x86 busybox-static cpio runc apparmor xz-utils zstd
}

# node: building the Kubernetes node VM's disk image (hack/node-image.sh: debootstrap,
# mkfs.ext4 -d) and its per-cluster copy-on-write overlay (qemu-img).
group_node() {
	printf '%s\n' debootstrap e2fsprogs qemu-utils
}

# verify_GROUP, where defined, checks that the group's tools run, whether they
# were just installed or already there.
verify_base() { runs apparmor_parser --version; }
verify_bpf() { runs clang --version && runs bpftool version; }
verify_vm() { runs qemu-system-x86_64 --version && runs busybox true && runs runc --version; }
verify_node() { runs debootstrap --version && runs qemu-img --version && runs mkfs.ext4 -V; }

log() { echo "deps: $*" >&2; }

runs() {
	"$@" >/dev/null 2>&1 || { log "installed, but \`$*\` does not run"; return 1; }
}

installed() {
	[[ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" == installed ]]
}

main() {
	local groups=("$@")
	((${#groups[@]})) || groups=(base)

	local group pkg
	for group in "${groups[@]}"; do
		if [[ "$(type -t "group_${group}")" != function ]]; then
			log "unknown group ${group:-''}; known: $(declare -F | sed -n 's/^declare -f group_//p' | tr '\n' ' ')"
			return 2
		fi
	done

	# Another apt run on the machine (unattended-upgrades, a second checkout)
	# is waited for instead of failing this one at once.
	local apt=(apt-get -o DPkg::Lock::Timeout=300 -qq)
	local updated=0
	export DEBIAN_FRONTEND=noninteractive
	for group in "${groups[@]}"; do
		local missing=()
		while read -r pkg; do
			installed "$pkg" || missing+=("$pkg")
		done < <("group_${group}")

		if ((${#missing[@]})); then
			if ((!updated)); then
				"${apt[@]}" update >&2
				updated=1
			fi
			"${apt[@]}" install -y --no-install-recommends "${missing[@]}" >&2
			echo "${group}: installed ${missing[*]}"
		else
			echo "${group}: nothing to do"
		fi

		if [[ "$(type -t "verify_${group}")" == function ]]; then
			"verify_${group}"
		fi
	done
}

main "$@"
