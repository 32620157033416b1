// Package nri is podarmor's NRI plugin (github.com/containerd/nri), run inside the
// enforcer: it connects to the container runtime's NRI socket (containerd 1.7+ and 2.x,
// CRI-O) and, for every container the runtime creates in a sandboxed pod, asks the
// runtime to add the OCI hook `podarmor-enforcer oci-hook` at createRuntime and poststop,
// and the container annotation podarmor.io/profile that names the pod's profile. The hook
// then registers the container with the enforcer before its program runs (package
// enforcer/hook). Containers of other pods are left exactly as they are.
//
// A pod is sandboxed when the selection (Config.Select; by default the pod label
// podarmor.io/profile that the webhook sets) gives it a profile. Ephemeral containers
// (`kubectl debug`) reach the runtime as ordinary containers of their pod and get the
// same hook.
//
// The plugin also reports the runtime's containers to an Observer: the full list at
// every connection (NRI's Synchronize), and each container's start, stop and removal,
// for the enforcer's reconciliation.
//
// # Gaps
//
// The runtime asks the plugin only while it is connected. A container created while the
// enforcer (and so the plugin) is down, or while a restarted runtime has not been
// rejoined yet, gets no hook: it runs without its BPF registration until the enforcer
// registers it late from the list Synchronize gives on the next connection. AppArmor and
// seccomp confine it all along, since the runtime applies them itself. See
// docs/oci-hook.md, "Runtime integration".
package nri
