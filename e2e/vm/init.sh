#!/bin/sh
# /init of podarmor's test VMs (e2e/vm builds it into every initramfs).
#
# The kernel runs it as PID 1 from the initramfs. It mounts what a node has
# (proc, sysfs, securityfs, tracefs, devtmpfs, bpffs, cgroup2, tmpfs on /tmp
# and /run), brings up loopback (and eth0 in a VM with forwards), runs the one
# command of this boot from /podarmor/cmd (written by vm.Run) and powers off.
#
# The command's stdout and stderr go to the second serial port (ttyS1), which
# the host reads apart from the console (ttyS0): kernel messages never mix
# into the output, and the output comes through byte for byte. The markers:
#
#   PODARMOR-VM-START <nonce> <uptime>    console, before the command starts
#   PODARMOR-VM-EXIT <nonce> <code>       ttyS1, after all of the output
#   PODARMOR-VM-INIT-FAILED <nonce> <what>  console, when the setup failed
#
# The nonce (from /podarmor/run) is new for every boot, so nothing a command
# prints can pass for a marker.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# The initramfs has no /dev/console node, so the kernel started us with no
# stdio: mount devtmpfs first and take the console from it.
mount -t devtmpfs devtmpfs /dev
exec </dev/null >/dev/console 2>&1

. /podarmor/run

# drain waits until a serial port has sent everything it was given: stty
# sets the line (to settings $2...) with TCSETSW, which waits until the
# output queue is empty. Powering off before that loses the last lines.
drain() {
	stty -F "$@" 2>/dev/null
}

off() {
	drain /dev/ttyS1 raw -echo
	drain /dev/console onlcr
	sync
	poweroff -f
}

fail() {
	echo "PODARMOR-VM-INIT-FAILED $PODARMOR_NONCE $*"
	off
}

must() {
	"$@" || fail "$*"
}

# tmpfs mounts a tmpfs with mode $2 on $1, keeping what the initramfs holds
# there (a test's files under /tmp, say).
tmpfs() {
	if [ -n "$(ls -A "$1")" ]; then
		mv "$1" "$1.initramfs" && mkdir "$1" || return
	fi
	mount -t tmpfs -o "mode=$2" tmpfs "$1" || return
	if [ -d "$1.initramfs" ]; then
		cp -a "$1.initramfs/." "$1/" && rm -rf "$1.initramfs" && chmod "$2" "$1"
	fi
}

must mount -t proc proc /proc
must mount -t sysfs sysfs /sys
must mount -t securityfs securityfs /sys/kernel/security
must mount -t tracefs tracefs /sys/kernel/tracing
must mount -t bpf bpf /sys/fs/bpf
must mount -t cgroup2 cgroup2 /sys/fs/cgroup
must mkdir -p /dev/pts /dev/shm
must mount -t devpts devpts /dev/pts
must mount -t tmpfs -o mode=1777 tmpfs /dev/shm
must tmpfs /tmp 1777
must tmpfs /run 0755
must ip link set lo up
must hostname podarmor-vm

# A VM with forwards (vm.Config.Forwards) has a virtio NIC, whose drivers are
# modules in Debian's kernels: /podarmor/net lists them in the order to load
# them, and the guest's address. eth0 exists once virtio_net is loaded (the
# probe runs as the driver registers). The address's prefix is the route to
# the forwards, which are on-link; there is no default route.
if [ -f /podarmor/net ]; then
	. /podarmor/net
	for module in $PODARMOR_NET_MODULES; do
		must insmod "$module"
	done
	must ip addr add "$PODARMOR_NET_ADDR" dev eth0
	must ip link set eth0 up
fi

# The output port stays raw: no \n -> \r\n, no echo. The command opens it
# in a subshell, which is no session leader, so it does not become a
# controlling terminal.
must drain /dev/ttyS1 raw -echo
read -r uptime _ </proc/uptime
echo "PODARMOR-VM-START $PODARMOR_NONCE $uptime"
(exec sh /podarmor/cmd >/dev/ttyS1 2>&1)
code=$?
(echo "PODARMOR-VM-EXIT $PODARMOR_NONCE $code" >/dev/ttyS1)
off
