#!/usr/bin/env bash
# Starts, inspects and stops the local cluster's Kubernetes node VM (e2e/cmd/node-vm,
# docs/local-cluster.md), whose state lives in DIR:
#
#   hack/node-vm.sh start DIR    # boot it in the background; waits for the boot, prints
#                                # the host address of the guest's CONNECT proxy
#   hack/node-vm.sh status DIR   # exit 0 running (and says whether it is up), 3 not running
#   hack/node-vm.sh stop DIR     # shut the guest down cleanly; killed after a timeout
#
# DIR/node must hold the files the guest gets (read-only): kubelet.kubeconfig,
# kube-proxy.kubeconfig, bin/kubelet, bin/kube-proxy, images/*.tar, node.env (e2e/node's
# package comment lists them). start builds the image first (hack/node-image.sh; cached,
# about 6 minutes the first time) and boots it through a copy-on-write overlay in DIR,
# so the node keeps its state across stop and start and the cached image stays pristine.
# Both start and stop are idempotent. What happens in the guest is in DIR/console.log
# (the console), DIR/logs/journal.log (its journal) and DIR/node-vm.log (the runner).
#
# Environment:
#   PODARMOR_APISERVER          the host's kube-apiserver, 127.0.0.1:PORT (default: none)
#   PODARMOR_APISERVER_GUEST    the address the guest reaches it at (default: APISERVER of
#                               DIR/node/node.env, else 10.0.2.100:6443)
#   PODARMOR_NODE_PROXY_PORT    port of 127.0.0.1 leading to the guest's proxy (default: free)
#   PODARMOR_NODE_PROXY_SOCKET  unix socket leading to the guest's proxy too (default: none)
#   PODARMOR_NODE_MEMORY        guest memory in MiB (default 3072)
#   PODARMOR_NODE_CPUS          vCPUs (default 2, on one TCG thread)
#   PODARMOR_NODE_BOOT_TIMEOUT  seconds start waits for the boot (default 600)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
stop_timeout=90

log() { echo "node-vm: $*" >&2; }

usage() {
	echo "usage: $0 start|stop|status DIR" >&2
	exit 2
}

(($# == 2)) || usage
cmd="$1"
dir="$(realpath -m "$2")"
pidfile="$dir/node-vm.pid"

# Prints the runner's pid if it runs: the pid file names a live node-vm whose command
# line has this DIR (a recycled pid is not taken for ours).
pid_of() {
	local pid cmdline
	[[ -f "$pidfile" ]] || return 1
	pid="$(<"$pidfile")"
	[[ "$pid" =~ ^[0-9]+$ ]] || return 1
	cmdline="$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline")" || return 1
	[[ "$cmdline" == *node-vm*" -dir=$dir "* ]] || return 1
	echo "$pid"
}

# up says whether the current boot is through (node-vm logs it).
up() { grep -q '^node-vm: up after' "$dir/node-vm.log" 2>/dev/null; }

start() {
	local pid
	if pid="$(pid_of)"; then
		log "already running (pid $pid)"
		cat "$dir/proxy.addr"
		return
	fi
	[[ -d "$dir/node" ]] || {
		log "$dir/node is missing: it holds the kubeconfigs, binaries and images the guest gets"
		return 1
	}
	local image bin="${XDG_CACHE_HOME:-${HOME:?}/.cache}/podarmor/bin/node-vm"
	image="$("$root/hack/node-image.sh")"
	go build -C "$root" -o "$bin" ./e2e/cmd/node-vm
	local args=(-dir="$dir" -image="$image" -stop-timeout="${stop_timeout}s")
	[[ -z "${PODARMOR_APISERVER:-}" ]] || args+=(-apiserver="$PODARMOR_APISERVER")
	[[ -z "${PODARMOR_APISERVER_GUEST:-}" ]] || args+=(-apiserver-guest="$PODARMOR_APISERVER_GUEST")
	[[ -z "${PODARMOR_NODE_PROXY_PORT:-}" ]] || args+=(-proxy-port="$PODARMOR_NODE_PROXY_PORT")
	[[ -z "${PODARMOR_NODE_PROXY_SOCKET:-}" ]] || args+=(-proxy-socket="$PODARMOR_NODE_PROXY_SOCKET")
	[[ -z "${PODARMOR_NODE_MEMORY:-}" ]] || args+=(-memory="$PODARMOR_NODE_MEMORY")
	[[ -z "${PODARMOR_NODE_CPUS:-}" ]] || args+=(-cpus="$PODARMOR_NODE_CPUS")
	rm -f "$dir/proxy.addr"
	printf '\n===== node-vm start %s =====\n' "$(date -u +%FT%TZ)" >>"$dir/console.log"
	# Its own session: a Ctrl-C in the caller's terminal does not reach it.
	setsid "$bin" "${args[@]}" >"$dir/node-vm.log" 2>&1 </dev/null &
	pid=$!
	echo "$pid" >"$pidfile"
	log "booting (pid $pid); console in $dir/console.log"
	local timeout="${PODARMOR_NODE_BOOT_TIMEOUT:-600}" start=$SECONDS
	until up; do
		if ! kill -0 "$pid" 2>/dev/null; then
			log "the runner exited during the boot:"
			tail -n 20 "$dir/node-vm.log" >&2
			log "end of the console:"
			tail -n 30 "$dir/console.log" >&2
			rm -f "$pidfile"
			return 1
		fi
		if ((SECONDS - start > timeout)); then
			log "the boot is not through after $timeout s; stopping. End of the console:"
			tail -n 30 "$dir/console.log" >&2
			stop
			return 1
		fi
		sleep 1
	done
	log "$(grep '^node-vm: up after' "$dir/node-vm.log" | tail -n 1 | sed 's/^node-vm: //')"
	cat "$dir/proxy.addr"
}

stop() {
	local pid
	if ! pid="$(pid_of)"; then
		log "not running"
		rm -f "$pidfile"
		return
	fi
	log "shutting the guest down (pid $pid)"
	kill -TERM "$pid"
	local start=$SECONDS
	while kill -0 "$pid" 2>/dev/null; do
		if ((SECONDS - start > stop_timeout + 15)); then
			log "the runner did not end; killing it"
			kill -KILL "$pid" 2>/dev/null || true
			break
		fi
		sleep 0.5
	done
	rm -f "$pidfile"
	log "stopped after $((SECONDS - start)) s: $(tail -n 1 "$dir/node-vm.log")"
}

status() {
	local pid
	if pid="$(pid_of)"; then
		if up; then
			log "running (pid $pid), up; proxy at $(cat "$dir/proxy.addr")"
		else
			log "running (pid $pid), booting; console in $dir/console.log"
		fi
		return 0
	fi
	log "not running"
	return 3
}

case "$cmd" in
start) start ;;
stop) stop ;;
status) status ;;
*) usage ;;
esac
