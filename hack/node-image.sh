#!/usr/bin/env bash
# Builds the disk image of the local cluster's Kubernetes node VM (docs/local-cluster.md)
# and prints the directory holding it on stdout, and nothing else:
#
#   dir="$(hack/node-image.sh)"
#   ls "$dir"   # disk.img vmlinuz vmlinux initrd.img packages.txt
#
#   disk.img     raw ext4 file system (sparse, $disk_size), the VM's root on /dev/vda; the
#                node VM runner boots it through a qcow2 overlay per cluster, so the
#                cached image is never written to
#   vmlinuz      the image's own kernel (Debian trixie's linux-image-amd64, 6.12),
#   vmlinux      the kernel's ELF taken out of it (QEMU boots it directly, PVH), and
#   initrd.img   its initramfs, taken out for QEMU's -kernel and -initrd
#   packages.txt the image's packages and versions (dpkg-query)
#
# The image is Debian trixie, built with debootstrap from the mirror the machine's own apt
# sources use, with systemd, containerd (NRI on, sandbox image localhost/podarmor/pause:3.10,
# systemd cgroups), runc, AppArmor's userspace, iptables, conntrack, the CNI plugins,
# iproute2 and kmod, plus podarmor's guest files: hack/node/rootfs/ copied over the root,
# and the CONNECT proxy (e2e/cmd/node-proxy) as /usr/local/bin/podarmor-node-proxy.
#
# Two stages, each cached outside the repo under
# ${XDG_CACHE_HOME:-~/.cache}/podarmor/node and keyed by its inputs:
#   base-KEY/rootfs  the debootstrapped tree with the packages and the initramfs; KEY
#                    hashes the suite, the mirror, the package list and base_revision
#                    below. About 6 minutes the first time (docs/local-cluster.md).
#   KEY/             the image: base + guest files; KEY hashes the base's key, this
#                    script, hack/node/rootfs/ (names, modes, contents) and the proxy
#                    binary. Rebuilt in well under a minute when only guest files change.
# A run that finds its image prints it without touching the network. Concurrent runs wait
# for each other on a lock. The three images used last besides the current one stay in
# the cache; older ones are removed (a cluster's disk is an overlay on its image).
#
# apt inside the image's chroot has the image's own sources (the same mirror); the
# machine's own apt configuration and lists are never touched. Services do not start in
# the chroot (policy-rc.d).
#
# Needs root (debootstrap, chroot) and `hack/deps.sh node` (debootstrap, mkfs.ext4).
#
# Environment:
#   PODARMOR_NODE_CACHE     cache directory (default .../podarmor/node as above)
#   PODARMOR_DEBIAN_MIRROR, PODARMOR_DEBIAN_SECURITY_MIRROR
#                           override the mirrors taken from the machine's sources
set -eEuo pipefail
shopt -s inherit_errexit
trap 'log "failed (line $LINENO): $BASH_COMMAND"' ERR

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
suite=trixie
# Bump when the base stage changes in a way its other inputs do not show.
base_revision=1
disk_size=10G
packages=(
	systemd systemd-sysv udev dbus-broker
	linux-image-amd64 initramfs-tools zstd
	containerd runc apparmor
	iptables conntrack containernetworking-plugins
	iproute2 kmod ca-certificates procps acpid
)

# podarmor's units, from hack/node/rootfs/etc/systemd/system, enabled in the image.
units=(podarmor-network.service podarmor-node.service podarmor-images.service
	podarmor-node-proxy.service podarmor-kubelet.service podarmor-kube-proxy.service
	podarmor-journal.service podarmor-selftest.service podarmor-node-up.service
	acpid.service)

# How many images to keep besides the current one (older ones are removed).
keep=3

log() { echo "node-image: $*" >&2; }

[[ $# == 0 ]] || {
	echo "usage: $0   (prints the image directory; see the comment at the top)" >&2
	exit 2
}
[[ "$(id -u)" == 0 ]] || {
	log "needs root (debootstrap and chroot)"
	exit 1
}
for tool in debootstrap mkfs.ext4 go zstd; do
	command -v "$tool" >/dev/null || {
		log "$tool is missing; run hack/deps.sh node"
		exit 1
	}
done

cache="${PODARMOR_NODE_CACHE:-${XDG_CACHE_HOME:-${HOME:?}/.cache}/podarmor/node}"
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9

# mirrors prints the main and the security archive URIs the machine's own apt sources use,
# falling back to deb.debian.org (as hack/vm-kernels.sh does).
mirrors() {
	local targets main security
	targets="$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 'Identifier: Packages' 2>/dev/null || true)"
	main="$(awk '$2 ~ /^[a-z]+$/ { print $1; exit }' <<<"$targets")"
	security="$(awk '$2 ~ /-security$/ { print $1; exit }' <<<"$targets")"
	echo "${PODARMOR_DEBIAN_MIRROR:-${main:-http://deb.debian.org/debian/}}"
	echo "${PODARMOR_DEBIAN_SECURITY_MIRROR:-${security:-http://deb.debian.org/debian-security/}}"
}
{
	read -r mirror
	read -r security_mirror
} < <(mirrors)

sha() { sha256sum | cut -c1-16; }

base_key="$(printf '%s\n' "$suite" "$mirror" "$security_mirror" "$base_revision" "${packages[@]}" | sha)"
base="$cache/base-$base_key"

# Mounts the chroot needs for package scripts; unmounted again by unmount_chroot.
mount_chroot() {
	mount -t proc proc "$1/proc"
	mount -t sysfs sysfs "$1/sys"
	mount --bind /dev "$1/dev"
	mount -t devpts devpts "$1/dev/pts" -o newinstance,ptmxmode=0666
}
unmount_chroot() {
	local m
	for m in dev/pts dev sys proc; do
		if mountpoint -q "$1/$m"; then umount -l "$1/$m"; fi
	done
}

build_base() {
	local tmp="$cache/.base-$base_key.tmp" start=$SECONDS
	rm -rf "$tmp"
	mkdir -p "$tmp" "$cache/debs"
	log "building the base root file system ($suite from $mirror) into $base; about 6 minutes"
	# shellcheck disable=SC2064 # expand $tmp now
	trap "unmount_chroot '$tmp/rootfs'" RETURN
	debootstrap --variant=minbase --components=main --cache-dir="$cache/debs" \
		--keyring=/usr/share/keyrings/debian-archive-keyring.gpg \
		"$suite" "$tmp/rootfs" "$mirror" >&2
	log "debootstrap done in $((SECONDS - start)) s"
	local r="$tmp/rootfs"
	cat >"$r/etc/apt/sources.list.d/debian.sources" <<-EOF
		Types: deb
		URIs: $mirror
		Suites: $suite $suite-updates
		Components: main
		Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

		Types: deb
		URIs: $security_mirror
		Suites: $suite-security
		Components: main
		Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
	EOF
	rm -f "$r/etc/apt/sources.list"
	printf 'APT::Install-Recommends "false";\nAcquire::Languages "none";\n' >"$r/etc/apt/apt.conf.d/90podarmor"
	# No service starts in the chroot.
	printf '#!/bin/sh\nexit 101\n' >"$r/usr/sbin/policy-rc.d"
	chmod 0755 "$r/usr/sbin/policy-rc.d"
	# The initramfs holds what mounts a root on a virtio disk, not every driver
	# (MODULES=most would make it several times larger, and slower to unpack under TCG).
	mkdir -p "$r/etc/initramfs-tools/conf.d"
	printf 'MODULES=list\nCOMPRESS=zstd\n' >"$r/etc/initramfs-tools/conf.d/podarmor.conf"
	printf '%s\n' virtio_pci virtio_blk ext4 >>"$r/etc/initramfs-tools/modules"
	printf 'do_symlinks = no\n' >"$r/etc/kernel-img.conf"

	mount_chroot "$r"
	chroot "$r" env DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 apt-get -qq update >&2
	chroot "$r" env DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 \
		apt-get -qq -o DPkg::Options::=--force-confold install -y "${packages[@]}" >&2
	chroot "$r" apt-get clean
	rm -rf "$r"/var/lib/apt/lists/*_Packages* "$r"/var/cache/apt/*.bin
	unmount_chroot "$r"
	if ! compgen -G "$r/boot/vmlinuz-*" >/dev/null || ! compgen -G "$r/boot/initrd.img-*" >/dev/null; then
		log "the base has no /boot/vmlinuz-* and /boot/initrd.img-*"
		return 1
	fi
	rm -rf "$base"
	mv "$tmp" "$base"
	log "built the base in $((SECONDS - start)) s"
}

# The guest files: names, modes and contents of hack/node/rootfs, sorted.
guest_files_digest() {
	(cd "$root/hack/node/rootfs" && find . -type f -o -type l | LC_ALL=C sort | while read -r f; do
		if [[ -L "$f" ]]; then
			printf '%s link %s\n' "$f" "$(readlink "$f")"
		else
			printf '%s %s %s\n' "$f" "$(stat -c %a "$f")" "$(sha256sum <"$f" | cut -d' ' -f1)"
		fi
	done)
}

# extract_vmlinux writes the kernel ELF inside the bzImage VMLINUZ to OUT, as
# hack/vm-kernels.sh does (see there): QEMU boots the ELF directly through its PVH entry,
# without the kernel decompressing itself, which takes seconds of every boot under TCG
# (much more on a busy host).
extract_vmlinux() {
	local vmlinuz="$1" out="$2" setup_sects offset length start size magic decompress
	setup_sects="$(od -An -tu1 -j $((0x1f1)) -N1 "$vmlinuz" | tr -d ' ')"
	read -r offset length < <(od -An -tu4 -j $((0x248)) -N8 "$vmlinuz")
	start=$(((setup_sects + 1) * 512 + offset))
	size="$(od -An -tu4 -j $((start + length - 4)) -N4 "$vmlinuz" | tr -d ' ')"
	magic="$(od -An -tx1 -j "$start" -N4 "$vmlinuz" | tr -d ' ')"
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

start=$SECONDS
if [[ ! -d "$base/rootfs" ]]; then
	build_base
fi

# The proxy is built every run (go's build cache makes that instant) and is part of the
# image's key: -trimpath and no VCS stamp make the binary depend on the source only.
proxy="$cache/.node-proxy.$$"
trap 'rm -f "$proxy"' EXIT
(cd "$root" && CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -trimpath -ldflags=-s -o "$proxy" ./e2e/cmd/node-proxy)

key="$({
	echo "$base_key"
	sha256sum <"${BASH_SOURCE[0]}"
	guest_files_digest
	sha256sum <"$proxy"
} | sha)"
out="$cache/$key"

# prune removes all but the newest few images besides $out (each is about 650 MB; every
# change to the guest files makes a new one). An image is as new as its last use: a
# cluster's disk is an overlay on it.
prune() {
	touch "$out"
	find "$cache" -mindepth 1 -maxdepth 1 -type d -regextype egrep -regex '.*/[0-9a-f]{16}' -printf '%T@ %p\n' |
		sort -rn | tail -n +$((keep + 2)) | cut -d' ' -f2- | while read -r old; do
		log "removing the old image $old"
		rm -rf "$old"
	done
}

if [[ -f "$out/disk.img" ]]; then
	log "up to date: $out"
	prune
	echo "$out"
	exit 0
fi

log "building the image $out from $base"
tmp="$cache/.$key.tmp"
rm -rf "$tmp"
mkdir -p "$tmp"
stage="$tmp/rootfs"
cp -a --reflink=auto "$base/rootfs" "$stage"
cp -a --no-preserve=ownership "$root/hack/node/rootfs/." "$stage/"
install -m 0755 "$proxy" "$stage/usr/local/bin/podarmor-node-proxy"
rm -f "$stage/usr/sbin/policy-rc.d"
# Units that would slow every boot under TCG and do nothing for a node: timers of apt,
# man-db, dpkg and e2scrub, the consoles' logins (nobody logs in; the console is a log),
# logind. apparmor.service compiles the 100-odd profiles of /etc/apparmor.d at every
# boot, which took three minutes under TCG on a busy host (and a soft lockup); the
# node's AppArmor profiles are loaded by those that use them: containerd (its default
# profile) and podarmor's enforcer.
for unit in apt-daily.timer apt-daily-upgrade.timer man-db.timer dpkg-db-backup.timer \
	e2scrub_all.timer e2scrub_reap.service fstrim.timer getty@tty1.service \
	serial-getty@ttyS0.service systemd-firstboot.service systemd-logind.service \
	apparmor.service; do
	ln -sf /dev/null "$stage/etc/systemd/system/$unit"
done
chroot "$stage" systemctl enable "${units[@]}" 2>&1 | sed 's/^/node-image: /' >&2
chroot "$stage" systemctl set-default multi-user.target 2>&1 | sed 's/^/node-image: /' >&2
chroot "$stage" dpkg-query -W -f '${Package} ${Version}\n' >"$tmp/packages.txt"
cp "$stage"/boot/vmlinuz-* "$tmp/vmlinuz"
extract_vmlinux "$tmp/vmlinuz" "$tmp/vmlinux"
cp "$stage"/boot/initrd.img-* "$tmp/initrd.img"
# The machine id is made at the first boot of each overlay.
: >"$stage/etc/machine-id"
truncate -s "$disk_size" "$tmp/disk.img"
mkfs.ext4 -q -F -L podarmor-node -d "$stage" "$tmp/disk.img"
rm -rf "$stage"
rm -rf "$out"
mv "$tmp" "$out"
log "built $out in $((SECONDS - start)) s"
prune
echo "$out"
