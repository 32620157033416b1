//go:build vmguest

package bpf

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/podarmor/podarmor/policies/api/v1alpha1"
	"github.com/podarmor/podarmor/policies/ruleset"
)

// TestCapacity loads a profile with 1,024 rules of every kind and fills the registrations
// to 4,096 containers (the minimum; vArmor allows 64 rules and 256 containers),
// then checks that the last rule of each kind still decides.
func TestCapacity(t *testing.T) {
	e := load(t)
	const n = 1024
	enforce := v1alpha1.ActionEnforce
	var rules []ruleset.Rule
	add := func(kind ruleset.Kind, i int, r ruleset.Rule) {
		r.ID = fmt.Sprintf("custom/%s-%d", kind, i)
		r.Action = enforce
		r.Kind = kind
		rules = append(rules, r)
	}
	families := []v1alpha1.SocketFamily{"netlink", "packet", "alg", "vsock", "xdp", "bluetooth", "can", "tipc", "rds", "llc", "key"}
	types := []v1alpha1.SocketType{"stream", "dgram", "raw", "seqpacket", "rdm", "packet"}
	for i := range n {
		add(ruleset.KindFile, i, ruleset.Rule{File: &ruleset.File{Paths: []string{fmt.Sprintf("/capacity/f%d", i)}, Permissions: []v1alpha1.FilePermission{v1alpha1.FileRead}}})
		add(ruleset.KindExec, i, ruleset.Rule{Exec: &ruleset.Exec{Paths: []string{fmt.Sprintf("/capacity/x%d", i)}}})
		add(ruleset.KindSocket, i, ruleset.Rule{Socket: &ruleset.Socket{Families: []v1alpha1.SocketFamily{families[i%len(families)]}, Types: []v1alpha1.SocketType{types[(i/len(families))%len(types)]}}})
		add(ruleset.KindEgress, i, ruleset.Rule{Egress: &ruleset.Egress{Prefixes: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 1}), 32)}}})
		add(ruleset.KindCapability, i, ruleset.Rule{Capability: &ruleset.Capability{Capabilities: []v1alpha1.Capability{v1alpha1.AllCapabilities[25+i%3]}}}) // SYS_TIME, SYS_TTY_CONFIG, MKNOD
		add(ruleset.KindMount, i, ruleset.Rule{Mount: &ruleset.Mount{Operations: []v1alpha1.MountOperation{v1alpha1.MountMount}, FSTypes: []string{fmt.Sprintf("fs%d", i)}}})
		add(ruleset.KindOperation, i, ruleset.Rule{Operation: &ruleset.Operation{Operations: []v1alpha1.Operation{v1alpha1.OperationBPF}}})
		add(ruleset.KindPtrace, i, ruleset.Rule{Ptrace: &ruleset.Ptrace{Permissions: []v1alpha1.PtracePermission{v1alpha1.PtraceRead}, Peers: v1alpha1.PtraceOutsideContainer}})
	}
	// the last mount rule names a real fs type, to be tried
	rules[len(rules)-3].Mount.FSTypes = []string{"ramfs"}
	if err := e.SetProfile(profileOf("capacity", rules...)); err != nil {
		t.Fatalf("a profile of %d rules of each kind: %v", n, err)
	}
	write(t, fmt.Sprintf("/capacity/f%d", n-1), "x")
	write(t, "/capacity/open", "x")
	mkdirs(t, "/mnt/t")
	denied(t, "read the last file rule's path", inSandbox(t, e, "capacity", "read", fmt.Sprintf("/capacity/f%d", n-1)))
	allowed(t, "read another path", inSandbox(t, e, "capacity", "read", "/capacity/open"))
	denied(t, "connect to the last egress rule's address", inSandbox(t, e, "capacity", "connect", "tcp", fmt.Sprintf("10.%d.%d.1:80", (n-1)>>8, (n-1)&0xff)))
	denied(t, "mount the last mount rule's fs type", inSandbox(t, e, "capacity", "mount", "ramfs", "/mnt/t", "ramfs"))
	denied(t, "a socket of the last socket rule", inSandbox(t, e, "capacity", "socket", "16", "3", "0")) // netlink raw

	// Registrations up to the capacity: 4,095 made up, the container's own the 4,096th
	// (registered by its OCI hook, unregistered by its poststop hook).
	const containers = 4096
	for ns := uint32(1); ns < containers; ns++ {
		if err := e.Register(ns, "capacity", false); err != nil {
			t.Fatalf("registration %d of %d: %v", ns, containers, err)
		}
	}
	denied(t, "read with 4,096 containers registered", inSandbox(t, e, "capacity", "read", fmt.Sprintf("/capacity/f%d", n-1)))
	closeSandboxes()
	regs, err := e.Registered()
	if err != nil {
		t.Fatal(err)
	}
	if len(regs) != containers-1 {
		t.Errorf("%d registrations after the container left, want %d", len(regs), containers-1)
	}
	if err := e.Register(containers, "capacity", false); err != nil {
		t.Fatalf("the 4,096th registration: %v", err)
	}
	err = e.Register(containers+1, "capacity", false)
	if err == nil || !strings.Contains(err.Error(), "at most 4096") {
		t.Errorf("registration past the capacity: err = %v, want one naming the limit", err)
	}
}
