#!/usr/bin/env bash
# Starts, inspects and stops a local Kubernetes cluster with podarmor in it, on this one
# machine (docs/local-cluster.md):
#   - the control plane on the host's loopback: etcd, kube-apiserver,
#     kube-controller-manager and kube-scheduler, as background processes;
#   - one node: a QEMU VM (hack/node-vm.sh) booting a Debian trixie image
#     (hack/node-image.sh) with kernel 6.12 (AppArmor and BPF LSM on), containerd with
#     NRI, runc, the kubelet and kube-proxy of the same Kubernetes version, and
#     podarmor's images (hack/images.sh) imported into containerd;
#   - podarmor installed with Helm from deploy/helm/podarmor: the webhook Deployment and
#     the enforcer DaemonSet run on the node like any workload.
#
#   hack/local-cluster.sh up       # start; prints the admin kubeconfig's path on stdout
#   hack/local-cluster.sh status   # what runs; exit 0 up, 3 not running, 1 half up
#   hack/local-cluster.sh down     # stop what `up` started and remove its state
#   hack/local-cluster.sh reboot-node  # shut the node VM down cleanly, boot it again,
#                                      # wait until its kubelet is back and Ready
#
#   export KUBECONFIG="$(hack/local-cluster.sh up)"
#   "$(hack/kube-binaries.sh v1.37.2)/kubectl" get pods -A
#
# Both up and down are idempotent: a second `up` says "already up" and prints the same
# path, a second `down` says "not running".
#
# The first `up` on a machine builds everything it runs, which takes long on 2 cores
# (it says so as it goes): the Kubernetes binaries (15 to 30 minutes), the node image
# (2 to 10), helm and the images (a few); all are cached outside the repository, so
# later runs start in a few minutes, most of it the VM's boot under TCG emulation.
#
# The processes run the same command lines as the e2e tests (e2e/framework.NewSetup with
# a ClusterConfig, through e2e/cmd/controlplane-config). The node reaches the API server
# only through a forward of the VM (10.0.2.100:PORT, the address the API server
# advertises), and the API server reaches the node (kubectl exec and logs, the webhook's
# pods) only through its egress selector: HTTP CONNECT over $dir/egress.sock to a proxy
# in the VM.
#
# Environment:
#   PODARMOR_KUBE_VERSION  Kubernetes release (default below, the newest of
#                          e2e/framework.DefaultVersions)
#   PODARMOR_CLUSTER_DIR   state: pid files, logs, certificates, kubeconfigs, etcd data,
#                          the node's disk (default /tmp/podarmor-cluster)
#   PODARMOR_INSTALL       "false" leaves podarmor out (make demo installs it itself)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
version="${PODARMOR_KUBE_VERSION:-v1.37.2}"
dir="$(realpath -m "${PODARMOR_CLUSTER_DIR:-/tmp/podarmor-cluster}")"
install="${PODARMOR_INSTALL:-true}"
# Marks $dir as made by this script: down removes only such a directory.
marker="$dir/.podarmor-local-cluster"
kubeconfig="$dir/admin.kubeconfig"
# The node, and the address at which it reaches the API server (e2e/vm.ForwardIP).
node=podarmor-node
advertise=10.0.2.100
# Host processes in start order; stopped in reverse, after the node.
components=(etcd kube-apiserver kube-controller-manager kube-scheduler)
ready_timeout=90
stop_timeout=15
node_ready_timeout=600
install_timeout=15m

log() { echo "local-cluster: $*" >&2; }

usage() {
	echo "usage: $0 up|down|status|reboot-node" >&2
	exit 2
}

# Prints the pid of a component if it runs: its pid file names a live process whose
# command line points into $dir (so a recycled pid is not mistaken for ours).
pid_of() {
	local pidfile="$dir/$1.pid" pid cmdline
	[[ -f "$pidfile" ]] || return 1
	pid="$(<"$pidfile")"
	[[ "$pid" =~ ^[0-9]+$ ]] || return 1
	cmdline="$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline")" || return 1
	[[ "$cmdline" == *"=$dir/"* ]] || return 1
	echo "$pid"
}

node_running() { "$root/hack/node-vm.sh" status "$dir" >/dev/null 2>&1; }

# Prints how many parts run: the host components and the node.
running_count() {
	local c n=0
	for c in "${components[@]}"; do
		if pid_of "$c" >/dev/null; then n=$((n + 1)); fi
	done
	if [[ -d "$dir" ]] && node_running; then n=$((n + 1)); fi
	echo "$n"
}
parts=$((${#components[@]} + 1))

kubectl() { "$bin/kubectl" --kubeconfig "$kubeconfig" "$@"; }

# Starts a component from its args file (written by controlplane-config) in its own
# session, so that a Ctrl-C in the calling terminal does not reach it.
start_component() {
	local c="$1" args=()
	mapfile -t args <"$dir/$c.args"
	setsid "${args[@]}" >"$dir/$c.log" 2>&1 </dev/null &
	echo $! >"$dir/$c.pid"
	log "started $c (pid $!, log $dir/$c.log)"
}

# Waits until the API answers /readyz with ok; fails early if a component died.
wait_ready() {
	local deadline=$((SECONDS + ready_timeout)) c
	until [[ "$(kubectl get --raw /readyz 2>/dev/null)" == ok ]]; do
		for c in etcd kube-apiserver; do
			if ! pid_of "$c" >/dev/null; then
				log "$c exited; the end of $dir/$c.log:"
				tail -n 20 "$dir/$c.log" >&2
				return 1
			fi
		done
		if ((SECONDS >= deadline)); then
			log "kube-apiserver not ready after ${ready_timeout}s; see $dir/kube-apiserver.log"
			return 1
		fi
		sleep 0.5
	done
}

stop_component() {
	local c="$1" pid i
	if pid="$(pid_of "$c")"; then
		kill -TERM "$pid"
		for ((i = 0; i < stop_timeout * 10; i++)); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "$pid" 2>/dev/null; then
			log "$c (pid $pid) ignored SIGTERM for ${stop_timeout}s; killing it"
			kill -KILL "$pid" 2>/dev/null || true
		fi
		log "stopped $c (pid $pid)"
	fi
	rm -f "$dir/$c.pid"
}

# Stops whatever of ours runs and removes the state directory.
teardown() {
	local i
	[[ -e "$dir" ]] || return 0
	if [[ ! -e "$marker" ]]; then
		log "$dir was not made by $0; not touching it (set PODARMOR_CLUSTER_DIR elsewhere)"
		return 1
	fi
	"$root/hack/node-vm.sh" stop "$dir" || true
	for ((i = ${#components[@]} - 1; i >= 0; i--)); do
		stop_component "${components[i]}"
	done
	rm -rf "$dir"
}

# Waits until the kubelet has registered the node and reports it Ready (kubectl wait
# fails at once on a node that does not exist yet).
# Boots the node VM, which reaches the API server through a forward to its port.
start_node() {
	local server
	server="$(kubectl config view -o jsonpath='{.clusters[0].cluster.server}')"
	log "booting the node VM (a few minutes under TCG emulation; console in $dir/console.log)"
	# The boot takes 3-5 minutes on a quiet 2-core machine and several times that on a
	# busy one, most of it TCG emulation; give it time rather than fail.
	PODARMOR_APISERVER="${server#https://}" PODARMOR_NODE_PROXY_SOCKET="$dir/egress.sock" \
		PODARMOR_NODE_BOOT_TIMEOUT="${PODARMOR_NODE_BOOT_TIMEOUT:-1800}" \
		"$root/hack/node-vm.sh" start "$dir" >/dev/null
}

wait_node_ready() {
	local deadline=$((SECONDS + node_ready_timeout))
	log "waiting for node $node to register and be Ready"
	until kubectl get node "$node" >/dev/null 2>&1; do
		if ((SECONDS >= deadline)); then
			log "node $node did not register in ${node_ready_timeout}s; see $dir/logs/journal.log (unit podarmor-kubelet)"
			return 1
		fi
		sleep 2
	done
	kubectl wait --for=condition=Ready "node/$node" --timeout="$((deadline - SECONDS))s" >&2
}

# Fills $dir/node, the directory the VM gets read-only, with what the kubelet needs
# besides the kubeconfigs controlplane-config wrote: the node binaries and the images.
fill_node_dir() {
	local images="$1" b
	mkdir -p "$dir/node/bin" "$dir/node/images"
	for b in kubelet kube-proxy; do
		ln -f "$bin/$b" "$dir/node/bin/$b" 2>/dev/null || cp -f "$bin/$b" "$dir/node/bin/$b"
	done
	for b in "$images"/*.tar; do
		ln -f "$b" "$dir/node/images/" 2>/dev/null || cp -f "$b" "$dir/node/images/"
	done
}

# Installs (or upgrades) podarmor from the chart and waits for its pods.
install_podarmor() {
	local helm="$1"
	log "installing podarmor with Helm (deploy/helm/podarmor) into podarmor-system; the pods start slowly in the emulated VM"
	"$helm" --kubeconfig "$kubeconfig" upgrade --install podarmor "$root/deploy/helm/podarmor" \
		--namespace podarmor-system --create-namespace --wait --timeout "$install_timeout" >&2
	kubectl -n podarmor-system get pods -o wide >&2
}

cmd_up() {
	case "$(running_count)" in
	"$parts")
		local running
		running="$(<"$dir/version")"
		log "already up (Kubernetes $running); kubeconfig:"
		if [[ "$running" != "$version" ]]; then
			log "note: it runs $running, not $version; \`$0 down\` first to switch"
		fi
		echo "$kubeconfig"
		return 0
		;;
	0) ;;
	*)
		log "half up (a component died?); tearing the rest down and starting again"
		;;
	esac
	teardown

	local start=$SECONDS images helm
	log "building or finding in the cache: Kubernetes $version (the first time 15 to 30 minutes on 2 cores), helm, podarmor's images, the node image (the first time 2 to 10 minutes)"
	bin="$("$root/hack/kube-binaries.sh" --cluster "$version")"
	helm="$("$root/hack/helm.sh")"
	images="$("$root/hack/images.sh")"
	"$root/hack/node-image.sh" >/dev/null
	log "binaries and images ready after $((SECONDS - start)) s"

	mkdir -p "$dir"
	touch "$marker"
	# From here on, a failure leaves nothing running and no state behind.
	trap 'if (($? != 0)); then log "up failed; tearing down"; teardown; fi' EXIT
	echo "$version" >"$dir/version"
	log "Kubernetes $version, state in $dir"
	(cd "$root" && go run ./e2e/cmd/controlplane-config -dir "$dir" -bin "$bin" -version "$version" \
		-node "$node" -advertise-address "$advertise") >/dev/null
	fill_node_dir "$images"

	start_component etcd
	start_component kube-apiserver
	wait_ready
	local server
	server="$(kubectl config view -o jsonpath='{.clusters[0].cluster.server}')"
	log "kube-apiserver ready at $server"
	start_component kube-controller-manager
	start_component kube-scheduler

	start_node
	wait_node_ready
	if [[ "$install" == true ]]; then
		install_podarmor "$helm"
	fi
	trap - EXIT

	log "up after $((SECONDS - start)) s; kubeconfig:"
	echo "$kubeconfig"
}

cmd_down() {
	if [[ ! -e "$dir" ]]; then
		log "not running"
		return 0
	fi
	teardown
	log "down; removed $dir"
}

cmd_status() {
	local n c pid
	n="$(running_count)"
	if [[ ! -e "$dir" ]]; then
		echo "not running"
		return 3
	fi
	for c in "${components[@]}"; do
		if pid="$(pid_of "$c")"; then
			echo "$c: running (pid $pid, log $dir/$c.log)"
		else
			echo "$c: not running"
		fi
	done
	echo "node: $("$root/hack/node-vm.sh" status "$dir" 2>&1 | tail -n 1)"
	if ((n == parts)); then
		bin="$("$root/hack/kube-binaries.sh" --cluster "$(<"$dir/version")" 2>/dev/null)"
		echo "Kubernetes $(<"$dir/version") at $(kubectl config view -o jsonpath='{.clusters[0].cluster.server}')"
		echo "kubeconfig: $kubeconfig"
		return 0
	fi
	((n == 0)) && return 3
	return 1
}

# A reboot of the node: a clean shutdown of the guest (its containers stopped, then
# systemd's shutdown), then a boot from the same disk. The kernel's state goes with it:
# podarmor's BPF programs and maps, the AppArmor profiles, everything in /run. The node
# object stays, Ready until the node controller notices; the kubelet's new boot ID
# tells the node that came back.
cmd_reboot_node() {
	if (($(running_count) != parts)); then
		log "the cluster is not up (hack/local-cluster.sh status)"
		return 1
	fi
	bin="$("$root/hack/kube-binaries.sh" --cluster "$(<"$dir/version")")"
	local boot deadline
	boot="$(kubectl get node "$node" -o jsonpath='{.status.nodeInfo.bootID}')"
	log "rebooting node $node (boot ID $boot)"
	"$root/hack/node-vm.sh" stop "$dir"
	start_node
	deadline=$((SECONDS + node_ready_timeout))
	until [[ "$(kubectl get node "$node" -o jsonpath='{.status.nodeInfo.bootID}' 2>/dev/null)" != "$boot" ]]; do
		if ((SECONDS >= deadline)); then
			log "the kubelet of node $node did not report a new boot in ${node_ready_timeout}s; see $dir/logs/journal.log (unit podarmor-kubelet)"
			return 1
		fi
		sleep 2
	done
	kubectl wait --for=condition=Ready "node/$node" --timeout="$((deadline - SECONDS))s" >&2
	log "node $node is back (boot ID $(kubectl get node "$node" -o jsonpath='{.status.nodeInfo.bootID}'))"
}

(($# == 1)) || usage
case "$1" in
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
reboot-node) cmd_reboot_node ;;
*) usage ;;
esac
