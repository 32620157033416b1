// Package ruleset is the enforcer-neutral form of a compiled policy: the list of rules
// every backend (AppArmor, seccomp, BPF) translates into its own terms. It is data only;
// policies/compile produces it and the backends under policies/compile consume it.
package ruleset

import (
	"net/netip"

	"github.com/podarmor/podarmor/policies/api/v1alpha1"
)

// Verdict is what happens to an operation.
type Verdict string

const (
	// Allow lets the operation proceed.
	Allow Verdict = "Allow"
	// Deny refuses the operation.
	Deny Verdict = "Deny"
)

// RuleSet is one compiled policy. Every mode today is allow-by-default with deny rules;
// Default exists so that an allow-list mode can flip it without a new format.
type RuleSet struct {
	// ProfileID names the profile on nodes and in the pod label.
	ProfileID string `json:"profileID"`
	// Policy names the policy the rules came from, e.g. "ArmorPolicy shop/web".
	Policy    string              `json:"policy"`
	Mode      v1alpha1.Mode       `json:"mode"`
	Enforcers []v1alpha1.Enforcer `json:"enforcers"`
	Default   Verdict             `json:"default"`
	Rules     []Rule              `json:"rules"`
}

// Kind says which match of a Rule is set.
type Kind string

// The rule kinds.
const (
	KindFile       Kind = "file"
	KindExec       Kind = "exec"
	KindSocket     Kind = "socket"
	KindEgress     Kind = "egress"
	KindCapability Kind = "capability"
	KindPtrace     Kind = "ptrace"
	KindMount      Kind = "mount"
	KindOperation  Kind = "operation"
	KindSyscall    Kind = "syscall"
)

// Rule is one deny rule. Rules that come from one catalog entry or one custom rule share
// an ID, which is what events and metrics name.
type Rule struct {
	// ID is "builtin/<name>", "custom/<name>" or "runtime-default/<name>": a bounded set
	// per policy, usable as a metric label.
	ID     string          `json:"id"`
	Action v1alpha1.Action `json:"action"`
	Kind   Kind            `json:"kind"`

	File       *File       `json:"file,omitempty"`
	Exec       *Exec       `json:"exec,omitempty"`
	Socket     *Socket     `json:"socket,omitempty"`
	Egress     *Egress     `json:"egress,omitempty"`
	Capability *Capability `json:"capability,omitempty"`
	Ptrace     *Ptrace     `json:"ptrace,omitempty"`
	Mount      *Mount      `json:"mount,omitempty"`
	Operation  *Operation  `json:"operation,omitempty"`
	Syscall    *Syscall    `json:"syscall,omitempty"`
}

// File denies Permissions on files whose resolved path matches one of Paths (validated
// patterns, see policies/pattern).
type File struct {
	Paths       []string                  `json:"paths"`
	Permissions []v1alpha1.FilePermission `json:"permissions"`
}

// Exec denies executing files whose resolved path matches one of Paths.
type Exec struct {
	Paths []string `json:"paths"`
}

// Socket denies creating sockets whose family, type and protocol are each in the lists;
// an empty list matches any.
type Socket struct {
	Families  []v1alpha1.SocketFamily `json:"families,omitempty"`
	Types     []v1alpha1.SocketType   `json:"types,omitempty"`
	Protocols []v1alpha1.Protocol     `json:"protocols,omitempty"`
}

// Egress denies connecting to an address in Prefixes on a port in Ports with a protocol
// in Protocols; an empty list matches any. Single addresses are full-length prefixes.
type Egress struct {
	Prefixes  []netip.Prefix      `json:"prefixes,omitempty"`
	Ports     []PortRange         `json:"ports,omitempty"`
	Protocols []v1alpha1.Protocol `json:"protocols,omitempty"`
}

// PortRange is an inclusive range of ports; First == Last for a single port.
type PortRange struct {
	First uint16 `json:"first"`
	Last  uint16 `json:"last"`
}

// Capability denies using any of Capabilities.
type Capability struct {
	Capabilities []v1alpha1.Capability `json:"capabilities"`
}

// Ptrace denies ptrace Permissions towards Peers.
type Ptrace struct {
	Permissions []v1alpha1.PtracePermission `json:"permissions"`
	Peers       v1alpha1.PtracePeers        `json:"peers"`
}

// Mount denies mount-table changes that match every non-empty field (see
// v1alpha1.MountRule). Operations is never empty.
type Mount struct {
	Operations []v1alpha1.MountOperation `json:"operations"`
	FSTypes    []string                  `json:"fsTypes,omitempty"`
	Flags      []v1alpha1.MountFlag      `json:"flags,omitempty"`
	Sources    []string                  `json:"sources,omitempty"`
	Targets    []string                  `json:"targets,omitempty"`
}

// Operation denies kernel operations.
type Operation struct {
	Operations []v1alpha1.Operation `json:"operations"`
}

// Syscall denies system calls by name, when every argument comparison holds.
type Syscall struct {
	Names []string              `json:"names"`
	Args  []v1alpha1.SyscallArg `json:"args,omitempty"`
}
