package catalog

import (
	"fmt"
	"slices"
	"strings"

	"github.com/podarmor/podarmor/policies/api/v1alpha1"
)

// capability is one Linux capability and what it lets a process do.
type capability struct {
	name v1alpha1.Capability
	// grants completes "Blocks using CAP_X, which ...".
	grants string
	// notes become the entry's notes.
	notes string
}

// capabilities lists the Linux capabilities by number, as linux/capability.h does:
// CAP_CHOWN is 0, CAP_CHECKPOINT_RESTORE is 40. The tests check it against the
// v1alpha1.Capability enum.
var capabilities = []capability{
	{name: "CHOWN", grants: "allows changing the owner and group of any file"},
	{name: "DAC_OVERRIDE", grants: "bypasses file read, write and execute permission checks"},
	{name: "DAC_READ_SEARCH", grants: "bypasses file read and directory search checks and allows open_by_handle_at, the shocker escape"},
	{name: "FOWNER", grants: "bypasses the checks that require owning a file, such as for chmod and extended attributes"},
	{name: "FSETID", grants: "keeps the set-user-ID and set-group-ID bits of a file when it is modified"},
	{name: "KILL", grants: "allows signalling the processes of any user"},
	{name: "SETGID", grants: "allows switching to any group ID",
		notes: "Entrypoints that start as root and switch to another user (gosu, su-exec, servers that drop privileges) need it."},
	{name: "SETUID", grants: "allows switching to any user ID",
		notes: "Entrypoints that start as root and switch to another user (gosu, su-exec, servers that drop privileges) need it."},
	{name: "SETPCAP", grants: "allows dropping capabilities from the bounding set and granting inheritable ones"},
	{name: "LINUX_IMMUTABLE", grants: "allows setting the immutable and append-only file attributes"},
	{name: "NET_BIND_SERVICE", grants: "allows binding ports below 1024",
		notes: "Servers that bind a port below 1024 as a non-root user need it, unless net.ipv4.ip_unprivileged_port_start is lowered."},
	{name: "NET_BROADCAST", grants: "allows broadcasting and listening to multicast"},
	{name: "NET_ADMIN", grants: "allows configuring interfaces, routes, firewall rules and other network settings"},
	{name: "NET_RAW", grants: "allows raw and packet sockets, which forge and sniff traffic",
		notes: "ping needs it where ICMP datagram sockets are not allowed by net.ipv4.ping_group_range."},
	{name: "IPC_LOCK", grants: "allows locking memory beyond the limit"},
	{name: "IPC_OWNER", grants: "bypasses permission checks on System V IPC objects"},
	{name: "SYS_MODULE", grants: "allows loading and unloading kernel modules"},
	{name: "SYS_RAWIO", grants: "allows raw I/O: I/O ports, /dev/mem and raw device commands"},
	{name: "SYS_CHROOT", grants: "allows chroot"},
	{name: "SYS_PTRACE", grants: "allows tracing and inspecting any process"},
	{name: "SYS_PACCT", grants: "allows switching process accounting on and off"},
	{name: "SYS_ADMIN", grants: "allows mounting, creating namespaces and a long list of administrative operations"},
	{name: "SYS_BOOT", grants: "allows rebooting and loading a new kernel with kexec"},
	{name: "SYS_NICE", grants: "allows raising priorities and changing the scheduling and memory policy of any process"},
	{name: "SYS_RESOURCE", grants: "allows overriding resource limits, quotas and reserved disk space"},
	{name: "SYS_TIME", grants: "allows setting the system clock, which every container on the node shares"},
	{name: "SYS_TTY_CONFIG", grants: "allows configuring terminals and vhangup"},
	{name: "MKNOD", grants: "allows creating device nodes",
		notes: "disallow-mknod denies the same and adds the Seccomp form."},
	{name: "LEASE", grants: "allows taking leases on files the process does not own"},
	{name: "AUDIT_WRITE", grants: "allows writing records to the kernel audit log"},
	{name: "AUDIT_CONTROL", grants: "allows configuring kernel auditing"},
	{name: "SETFCAP", grants: "allows setting file capabilities"},
	{name: "MAC_OVERRIDE", grants: "allows overriding mandatory access control"},
	{name: "MAC_ADMIN", grants: "allows configuring mandatory access control, such as loading LSM policy"},
	{name: "SYSLOG", grants: "allows reading and clearing the kernel log and seeing kernel addresses"},
	{name: "WAKE_ALARM", grants: "allows setting alarms that wake the system"},
	{name: "BLOCK_SUSPEND", grants: "allows blocking system suspend"},
	{name: "AUDIT_READ", grants: "allows reading the audit log through a multicast netlink socket"},
	{name: "PERFMON", grants: "allows performance monitoring and tracing with perf_event_open and BPF"},
	{name: "BPF", grants: "allows privileged BPF operations such as loading most program types"},
	{name: "CHECKPOINT_RESTORE", grants: "allows checkpoint and restore operations such as choosing the PID of a new process",
		notes: "Only BPF enforces it: AppArmor abi 3.0 profiles have no checkpoint_restore, and apparmor_parser would deny sys_admin in its place, which guards far more."},
}

// runtimeDefaultCapabilities are the capabilities container runtimes (containerd,
// CRI-O, Docker) grant a container that is neither privileged nor given more.
var runtimeDefaultCapabilities = []v1alpha1.Capability{
	"CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID",
	"SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE",
}

// notInAppArmor are the capabilities newer than the AppArmor abi (3.0) podarmor writes
// profiles for, so that only BPF enforces them. Entries that deny several capabilities
// put these in a rule of their own, so that AppArmor still enforces the rest.
var notInAppArmor = []v1alpha1.Capability{"CHECKPOINT_RESTORE"}

// enforcersFor returns the enforcers that express a rule denying any of caps.
func enforcersFor(caps []v1alpha1.Capability) []v1alpha1.Enforcer {
	for _, c := range caps {
		if !slices.Contains(notInAppArmor, c) {
			return []v1alpha1.Enforcer{v1alpha1.EnforcerBPF, v1alpha1.EnforcerAppArmor}
		}
	}
	return []v1alpha1.Enforcer{v1alpha1.EnforcerBPF}
}

// capabilityEntryName returns the name of the entry that denies one capability:
// disallow-cap-sys-admin for SYS_ADMIN.
func capabilityEntryName(c v1alpha1.Capability) string {
	return "disallow-cap-" + strings.ToLower(strings.ReplaceAll(string(c), "_", "-"))
}

// capabilityEntries generates one entry per capability, then the sets of capabilities.
func capabilityEntries() []Entry {
	entry := func(name, description, notes string, caps []v1alpha1.Capability) Entry {
		var known, unknown []v1alpha1.Capability
		for _, c := range caps {
			if slices.Contains(notInAppArmor, c) {
				unknown = append(unknown, c)
			} else {
				known = append(known, c)
			}
		}
		var rules []v1alpha1.CapabilityRule
		for _, cs := range [][]v1alpha1.Capability{known, unknown} {
			if len(cs) > 0 {
				rules = append(rules, v1alpha1.CapabilityRule{Capabilities: cs})
			}
		}
		if len(known) > 0 && len(unknown) > 0 {
			notes += " BPF enforces every capability of the entry; AppArmor all but " +
				joinCapabilities(unknown) + ", which its abi 3.0 profiles cannot name."
		}
		return Entry{
			Name:        name,
			Category:    CategoryCapability,
			Description: description,
			Enforcers:   enforcersFor(caps),
			Rules:       v1alpha1.CustomRules{Capabilities: rules},
			Notes:       strings.TrimSpace(notes),
		}
	}

	out := make([]Entry, 0, len(capabilities)+3)
	var all, allButBind, beyondDefault []v1alpha1.Capability
	for _, c := range capabilities {
		out = append(out, entry(capabilityEntryName(c.name),
			fmt.Sprintf("Blocks using CAP_%s, which %s", c.name, c.grants),
			c.notes, []v1alpha1.Capability{c.name}))
		all = append(all, c.name)
		if c.name != "NET_BIND_SERVICE" {
			allButBind = append(allButBind, c.name)
		}
		if !slices.Contains(runtimeDefaultCapabilities, c.name) {
			beyondDefault = append(beyondDefault, c.name)
		}
	}

	return append(out,
		entry("disallow-cap-all",
			"Blocks using every Linux capability, so that root in the container has no more privilege than any other user",
			"Entrypoints that change file owners, switch users or bind ports below 1024 as root fail, "+
				"and root no longer bypasses file permissions.",
			all),
		entry("disallow-cap-all-except-net-bind-service",
			"Blocks using every Linux capability except CAP_NET_BIND_SERVICE, for servers that bind a port below 1024 and need nothing else",
			"Entrypoints that change file owners or switch users as root fail, and root no longer bypasses file permissions.",
			allButBind),
		entry("disallow-cap-beyond-runtime-default",
			"Blocks using every capability outside the container runtime's default set, holding privileged containers and added capabilities to what an ordinary container gets",
			"The runtime's default set is "+joinCapabilities(runtimeDefaultCapabilities)+". A container that is neither "+
				"privileged nor given capabilities.add never holds the others, so the entry changes nothing for it.",
			beyondDefault),
	)
}

// joinCapabilities lists capabilities for a note: "CHOWN, KILL".
func joinCapabilities(caps []v1alpha1.Capability) string {
	s := make([]string, len(caps))
	for i, c := range caps {
		s[i] = string(c)
	}
	return strings.Join(s, ", ")
}
