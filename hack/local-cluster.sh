#!/usr/bin/env bash
# Starts, inspects and stops a local Kubernetes control plane for trying podarmor by
# hand: etcd, kube-apiserver and podarmor-webhook as background processes on loopback,
# with podarmor's CRDs, webhook configurations (by URL, TLS from the webhook's own CA)
# and default ClusterArmorPolicy (deploy/policies/default.yaml) installed.
#
#   hack/local-cluster.sh up       # start; prints the admin kubeconfig's path on stdout
#   hack/local-cluster.sh status   # what runs; exit 0 up, 3 not running, 1 half up
#   hack/local-cluster.sh down     # stop what `up` started and remove its state
#
#   export KUBECONFIG="$(hack/local-cluster.sh up)"
#   "$(hack/kube-binaries.sh v1.37.2)/kubectl" get armorpolicies -A
#
# Both up and down are idempotent: a second `up` says "already up" and prints the same
# path, a second `down` says "not running".
#
# The processes run the same command lines as the e2e tests (e2e/framework.NewSetup,
# through e2e/cmd/controlplane-config): the binaries come from hack/kube-binaries.sh
# (kubectl too), and there is no controller-manager, scheduler or kubelet, so pods are
# stored and admitted but stay Pending. With no node enforcer yet, no policy becomes
# Ready, so pods of opted-in namespaces are refused until a policy says
# `spec.admission.whenNotReady: AdmitBPFOnly` (or a test sets its status); a VM node
# with the enforcer comes with a later issue.
#
# Environment:
#   PODARMOR_KUBE_VERSION  Kubernetes release (default below, the newest of
#                          e2e/framework.DefaultVersions)
#   PODARMOR_CLUSTER_DIR   state: pid files, logs, certificates, kubeconfig, etcd data
#                          (default /tmp/podarmor-cluster)
#   PODARMOR_WEBHOOK_PORT  the webhook's HTTPS port on 127.0.0.1 (default 9443); its
#                          metrics, healthz and readyz are on the next port
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
version="${PODARMOR_KUBE_VERSION:-v1.37.2}"
dir="$(realpath -m "${PODARMOR_CLUSTER_DIR:-/tmp/podarmor-cluster}")"
# Marks $dir as made by this script: down removes only such a directory.
marker="$dir/.podarmor-local-cluster"
kubeconfig="$dir/admin.kubeconfig"
# In start order; stopped in reverse.
components=(etcd kube-apiserver podarmor-webhook)
webhook_port="${PODARMOR_WEBHOOK_PORT:-9443}"
metrics_port=$((webhook_port + 1))
ready_timeout=90
stop_timeout=15

log() { echo "local-cluster: $*" >&2; }

usage() {
	echo "usage: $0 up|down|status" >&2
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

# Prints how many components run.
running_count() {
	local c n=0
	for c in "${components[@]}"; do
		if pid_of "$c" >/dev/null; then n=$((n + 1)); fi
	done
	echo "$n"
}

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
	for ((i = ${#components[@]} - 1; i >= 0; i--)); do
		stop_component "${components[i]}"
	done
	rm -rf "$dir"
}

# Builds podarmor-webhook and starts it with the webhook configurations registered by
# URL; waits until it is ready and the API server trusts its certificate.
start_webhook() {
	log "building podarmor-webhook"
	(cd "$root" && go build -o "$dir/podarmor-webhook" ./webhook/cmd/podarmor-webhook)
	kubectl create namespace podarmor-system >/dev/null
	printf '%s\n' "$dir/podarmor-webhook" "--kubeconfig=$dir/admin.kubeconfig" \
		"--listen-address=127.0.0.1:$webhook_port" "--metrics-address=127.0.0.1:$metrics_port" \
		"--register-url=https://127.0.0.1:$webhook_port" "--tls-ip-addresses=127.0.0.1" \
		"--namespace=podarmor-system" "--log-format=text" >"$dir/podarmor-webhook.args"
	start_component podarmor-webhook
	local deadline=$((SECONDS + ready_timeout))
	until [[ "$(curl -fsS "http://127.0.0.1:$metrics_port/readyz" 2>/dev/null)" == ok ]] &&
		[[ -n "$(kubectl get mutatingwebhookconfiguration podarmor -o jsonpath='{.webhooks[0].clientConfig.caBundle}' 2>/dev/null)" ]]; do
		if ! pid_of podarmor-webhook >/dev/null; then
			log "podarmor-webhook exited; the end of $dir/podarmor-webhook.log:"
			tail -n 20 "$dir/podarmor-webhook.log" >&2
			return 1
		fi
		if ((SECONDS >= deadline)); then
			log "podarmor-webhook not ready after ${ready_timeout}s; see $dir/podarmor-webhook.log"
			return 1
		fi
		sleep 0.5
	done
	log "podarmor-webhook ready at https://127.0.0.1:$webhook_port (metrics http://127.0.0.1:$metrics_port/metrics)"
}

cmd_up() {
	case "$(running_count)" in
	"${#components[@]}")
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

	bin="$("$root/hack/kube-binaries.sh" "$version")"
	mkdir -p "$dir"
	touch "$marker"
	# From here on, a failure leaves nothing running and no state behind.
	trap 'if (($? != 0)); then log "up failed; tearing down"; teardown; fi' EXIT
	echo "$version" >"$dir/version"
	log "Kubernetes $version, state in $dir"
	(cd "$root" && go run ./e2e/cmd/controlplane-config -dir "$dir" -bin "$bin" -version "$version") >/dev/null

	start_component etcd
	start_component kube-apiserver
	wait_ready
	log "kube-apiserver ready at $(kubectl config view -o jsonpath='{.clusters[0].cluster.server}')"

	kubectl apply --server-side -f "$root/deploy/crds" >&2
	kubectl wait --for=condition=Established --timeout=60s -f "$root/deploy/crds" >&2
	# The controller-manager would make every namespace's default ServiceAccount; without
	# it the ServiceAccount admission plugin rejects pods in "default".
	kubectl create serviceaccount default --namespace default >/dev/null
	start_webhook
	kubectl apply -f "$root/deploy/policies/default.yaml" >&2
	trap - EXIT

	log "up; kubeconfig:"
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
	if ((n == ${#components[@]})); then
		bin="$("$root/hack/kube-binaries.sh" "$(<"$dir/version")" 2>/dev/null)"
		echo "Kubernetes $(<"$dir/version") at $(kubectl config view -o jsonpath='{.clusters[0].cluster.server}')"
		echo "kubeconfig: $kubeconfig"
		return 0
	fi
	((n == 0)) && return 3
	return 1
}

(($# == 1)) || usage
case "$1" in
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
*) usage ;;
esac
