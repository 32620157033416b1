#!/usr/bin/env bash
# Boots a test VM (e2e/vm) on one of Debian's kernels and runs a command in it, for
# trying things by hand. Everything after the options is the command:
#
#   hack/vm-run.sh cat /sys/kernel/security/lsm
#   hack/vm-run.sh -series 6.1 -file ./profile:/tmp/profile -- apparmor_parser -r /tmp/profile
#   hack/vm-run.sh -console -- dmesg
#   hack/vm-run.sh -forward 10.0.2.100:80=127.0.0.1:8080 -- wget -q -O - http://10.0.2.100/
#
# -forward GUESTADDR=HOSTADDR lets the guest reach one port of the host's loopback
# (vm.Config.Forwards), and nothing else; without it the guest has no network.
#
# The guest has busybox, runc, apparmor_parser, aa-exec and aa-status; the command's
# output comes to stdout, and the script exits with its exit code (125 when the VM died
# without one). The first run fetches the kernels (hack/vm-kernels.sh). The options are
# those of e2e/cmd/vm-run (-h lists them); -file paths are relative to the caller's
# directory.
#
# The command is built into ${XDG_CACHE_HOME:-~/.cache}/podarmor/bin (go's build cache
# makes that instant after the first time) and run from there, so that its exit code
# is the guest command's (go run would turn it into 1).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${XDG_CACHE_HOME:-${HOME:?}/.cache}/podarmor/bin/vm-run"
go build -C "$root" -o "$bin" ./e2e/cmd/vm-run
exec "$bin" "$@"
