#!/usr/bin/env bash
# `make demo`: podarmor on a real cluster on this machine. It brings up the local
# cluster (hack/local-cluster.sh: control plane on loopback, one kubelet+containerd node
# in a QEMU VM), installs podarmor with Helm, labels a namespace, applies a policy and a
# small privileged workload (deploy/examples/demo.yaml), shows what the webhook did to
# the pod, runs real attacks inside it with kubectl exec and shows each one denied while
# the workload keeps serving, and ends with the enforcer's denial counters from /metrics.
#
# Every attack is checked: the demo fails (exit 1) if one succeeds or the workload stops
# serving, so it doubles as an end-to-end check (e2e/cluster runs it in make test).
#
# The cluster stays up at the end for exploring; `hack/local-cluster.sh down` removes it.
# Environment: as hack/local-cluster.sh (PODARMOR_CLUSTER_DIR, PODARMOR_KUBE_VERSION).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
start=$SECONDS

# Each step says how long the demo has run, so a slow step shows where the time went.
step() { printf '\n\033[1m== [%4d s] %s\033[0m\n' "$((SECONDS - start))" "$*" >&2; }
say() { echo "$*" >&2; }
fail() {
	say "demo: FAILED: $*"
	exit 1
}

step "Install what the demo needs (hack/deps.sh; quick when already there)"
hack/deps.sh base bpf vm node >&2

step "Bring the cluster up (hack/local-cluster.sh up)"
say "The first run on a machine builds Kubernetes, the node's disk image and podarmor's"
say "images from source: about 25 minutes on 2 cores. Later runs take a few minutes."
KUBECONFIG="$(PODARMOR_INSTALL=false hack/local-cluster.sh up)"
export KUBECONFIG
version="$(<"$(dirname "$KUBECONFIG")/version")"
bin="$(hack/kube-binaries.sh --cluster "$version")"
kubectl() { "$bin/kubectl" "$@"; }
helm="$(hack/helm.sh)"
kubectl get nodes -o wide >&2

step "Install podarmor with Helm (deploy/helm/podarmor)"
say "+ helm upgrade --install podarmor deploy/helm/podarmor -n podarmor-system --create-namespace --wait"
"$helm" upgrade --install podarmor deploy/helm/podarmor --namespace podarmor-system \
	--create-namespace --wait --timeout 15m >&2
kubectl -n podarmor-system get pods -o wide >&2

step "Opt a namespace in: kubectl label namespace demo podarmor.io/enable=true"
kubectl create namespace demo --dry-run=client -o yaml | kubectl apply -f - >&2
kubectl label namespace demo podarmor.io/enable=true --overwrite >&2

step "A policy and a privileged workload (deploy/examples/demo.yaml)"
# The file's document of kind ArmorPolicy, comments and all.
policy="$(awk '/^---$/ { if (doc ~ /\nkind: ArmorPolicy\n/) print doc; doc = ""; next }
	{ doc = doc "\n" $0 }
	END { if (doc ~ /\nkind: ArmorPolicy\n/) print doc }' deploy/examples/demo.yaml)"
[[ "$policy" == *"apiVersion: podarmor.io/"* ]] || fail "no ArmorPolicy in deploy/examples/demo.yaml"
sed -n '/^kind: ArmorPolicy/,$p' <<<"$policy" >&2
# apply_retrying FILE: kubectl apply -f FILE. The webhook's pods are ready once helm
# returns, but kube-proxy on the node may not have programmed its Service yet, and the
# API server reaches webhooks through the Service: retry while the call to the webhook
# fails, for up to two minutes.
apply_retrying() {
	local out i
	for ((i = 0; ; i++)); do
		if out="$(kubectl apply -f "$1" 2>&1)"; then
			break
		fi
		if ((i >= 60)) || ! grep -q 'failed calling webhook' <<<"$out"; then
			say "$out"
			fail "kubectl apply -f $1"
		fi
		sleep 2
	done
	grep -v '^Warning: rule' <<<"$out" >&2 || true
}
# The policy first: a pod created before its policy is Ready on the node would be
# mutated for the namespace's default policy.
policy_file="$(mktemp --suffix=.yaml)"
trap 'rm -f "$policy_file"' EXIT
echo "$policy" >"$policy_file"
apply_retrying "$policy_file"
say "(the API server warned that some rules are not enforced by every enforcer of the policy:"
say " AppArmor and seccomp cannot express them, BPF enforces them; \`podarmor render\` says why)"
say "waiting for the policy to be Ready on the node, then for the workload"
kubectl -n demo wait --for=condition=Ready armorpolicy/demo-app --timeout=300s >&2
apply_retrying deploy/examples/demo.yaml
kubectl -n demo rollout status deployment/demo-app --timeout=600s >&2
# When the demo runs again on a cluster where it ran before, the rollout is done once
# the old pod is terminating; it still shows as Running until it is gone, and an exec
# into it fails. Wait for the one new pod.
pod=""
for ((i = 0; i < 120; i++)); do
	pods="$(kubectl -n demo get pods -l app=demo-app -o go-template='{{range .items}}{{if not .metadata.deletionTimestamp}}{{if eq .status.phase "Running"}}{{.metadata.name}}{{"\n"}}{{end}}{{end}}{{end}}')"
	all="$(kubectl -n demo get pods -l app=demo-app -o name | wc -l)"
	if [[ -n "$pods" && "$all" == 1 ]]; then
		pod="$pods"
		break
	fi
	sleep 2
done
[[ -n "$pod" ]] || fail "no single running demo-app pod after the rollout"

step "What the webhook did to pod $pod"
kubectl -n demo get pod "$pod" -o go-template='label podarmor.io/profile: {{index .metadata.labels "podarmor.io/profile"}}
{{range .spec.containers}}container {{.name}}:
  appArmorProfile: {{with .securityContext.appArmorProfile}}{{.type}} {{.localhostProfile}}{{else}}-{{end}}
  seccompProfile:  {{with .securityContext.seccompProfile}}{{.type}} {{.localhostProfile}}{{else}}-{{end}}
  privileged:      {{.securityContext.privileged}}
{{end}}' >&2

# attack NAME COMMAND...: runs COMMAND in the pod; it must fail with a permission error.
attacks=0
attack() {
	local name="$1" out rc=0
	shift
	attacks=$((attacks + 1))
	say ""
	say "attack $attacks: $name"
	say "  \$ kubectl exec $pod -- $*"
	out="$(kubectl -n demo exec "$pod" -c app -- "$@" 2>&1)" || rc=$?
	sed 's/^/  | /' <<<"$out" >&2
	if ((rc == 0)); then
		fail "attack \"$name\" succeeded"
	fi
	if ! grep -qiE 'permission denied|operation not permitted' <<<"$out"; then
		fail "attack \"$name\" failed, but not with a permission error (exit $rc)"
	fi
	say "  -> denied"
}

step "Attacks from inside the pod (root, privileged)"
attack "read the service-account token" \
	cat /var/run/secrets/kubernetes.io/serviceaccount/token
attack "make the kernel run a program of ours on the next crash" \
	sh -c 'echo "|/tmp/pwn" > /proc/sys/kernel/core_pattern'
attack "mount the node's disk" \
	sh -c 'mkdir -p /mnt/host && mount -t ext4 /dev/vda /mnt/host'
attack "reach the cloud metadata service" \
	wget -T 5 -O- http://169.254.169.254/latest/meta-data/
attack "escape into a new user namespace" \
	unshare -Ur id

step "The workload still serves"
body="$(kubectl -n demo exec "$pod" -c app -- wget -q -T 10 -O- http://127.0.0.1:8080/healthz)" ||
	fail "the workload does not answer on :8080/healthz"
say "inside the pod:        GET :8080/healthz -> $body"
body="$(kubectl get --raw /api/v1/namespaces/demo/services/demo-app:http/proxy/healthz)" ||
	fail "the workload's Service does not answer"
say "through its Service:   GET /healthz -> $body"

step "The denials, counted by the enforcer (its /metrics, through the API server's proxy)"
node="$(kubectl -n demo get pod "$pod" -o jsonpath='{.spec.nodeName}')"
enforcer="$(kubectl -n podarmor-system get pods -l app.kubernetes.io/component=enforcer \
	--field-selector "spec.nodeName=$node" -o jsonpath='{.items[0].metadata.name}')"
[[ -n "$enforcer" ]] || fail "no enforcer pod on node $node"
metrics="$(kubectl get --raw "/api/v1/namespaces/podarmor-system/pods/$enforcer:9810/proxy/metrics")"
profile="$(kubectl -n demo get pod "$pod" -o jsonpath='{.metadata.labels.podarmor\.io/profile}')"
grep -E "^podarmor_enforcer_decisions_total\\{.*profile=\"$profile\"" <<<"$metrics" >&2 ||
	fail "the enforcer's /metrics has no decisions for profile $profile"

step "The enforcer's log: a JSON line for each BPF decision (those of the attacks)"
# runtime-default-ptrace lines are left out: they are the enforcer's own reads of the
# container's /proc/<pid>/ns links, which that rule refuses (docs/local-cluster.md).
kubectl -n podarmor-system logs "$enforcer" -c enforcer |
	grep '"action"' | grep -v '"rule":"builtin/runtime-default-ptrace"' | tail -n 5 >&2 || true
say "(the token read and the core_pattern write were refused by AppArmor, which the kernel"
say " asks first; they are in the node's kernel log as apparmor=\"DENIED\")"

step "Done in $((SECONDS - start)) s"
cat >&2 <<MSG
Every attack was denied and the workload kept serving. Explore further:
  export KUBECONFIG=$KUBECONFIG
  alias kubectl=$bin/kubectl
  kubectl -n demo exec -it $pod -- sh                  # try your own attacks
  kubectl -n demo describe pod $pod                    # PodarmorDenied events
  kubectl get armorpolicies -A; kubectl get armornodestatuses -o yaml
  kubectl get --raw /api/v1/namespaces/podarmor-system/pods/$enforcer:9810/proxy/metrics
  docs/local-cluster.md, docs/policies.md, docs/observability.md
Tear the cluster down with:
  hack/local-cluster.sh down
MSG
