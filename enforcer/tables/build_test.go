package tables

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/podarmor/podarmor/policies/api/v1alpha1"
	"github.com/podarmor/podarmor/policies/compile/bpf"
	"github.com/podarmor/podarmor/policies/ruleset"
)

// The tests here look tables up the way the BPF programs do (bpfprog/*.h), in Go, and
// compare with what the rules say.

func profile(rules ...ruleset.Rule) *bpf.Profile {
	return &bpf.Profile{FormatVersion: bpf.FormatVersion, ProfileID: "p", Default: ruleset.Allow, Rules: rules}
}

func build(t *testing.T, rules ...ruleset.Rule) *Image {
	t.Helper()
	img, err := Build(profile(rules...), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

const (
	enforce = v1alpha1.ActionEnforce
	audit   = v1alpha1.ActionAudit
)

// socketLookup is net.h's socket_verdict, which looks up only the shapes HasSocket lists.
func socketLookup(img *Image, f, ty, p uint16) (Verdict, bool) {
	for _, k := range []SocketKey{
		{Family: f, Type: ty, Protocol: p}, {Family: f, Type: ty, Protocol: Any},
		{Family: f, Type: Any, Protocol: p}, {Family: f, Type: Any, Protocol: Any},
		{Family: Any, Type: ty, Protocol: p}, {Family: Any, Type: ty, Protocol: Any},
		{Family: Any, Type: Any, Protocol: p}, {Family: Any, Type: Any, Protocol: Any},
	} {
		if img.Body.HasSocket&(1<<(1+SocketShape(k))) == 0 {
			continue
		}
		if v, ok := img.Sockets[k]; ok {
			return v, true
		}
	}
	return Verdict{}, false
}

func TestSocketsMostSpecificKeyHoldsEveryRule(t *testing.T) {
	img := build(t,
		ruleset.Rule{ID: "custom/tcp-audit", Action: audit, Kind: ruleset.KindSocket, Socket: &ruleset.Socket{Families: []v1alpha1.SocketFamily{"inet"}, Types: []v1alpha1.SocketType{"stream"}, Protocols: []v1alpha1.Protocol{"tcp"}}},
		ruleset.Rule{ID: "custom/inet", Action: enforce, Kind: ruleset.KindSocket, Socket: &ruleset.Socket{Families: []v1alpha1.SocketFamily{"inet"}}},
		ruleset.Rule{ID: "custom/raw", Action: enforce, Kind: ruleset.KindSocket, Socket: &ruleset.Socket{Types: []v1alpha1.SocketType{"raw"}}},
		ruleset.Rule{ID: "custom/udp-audit", Action: audit, Kind: ruleset.KindSocket, Socket: &ruleset.Socket{Protocols: []v1alpha1.Protocol{"udp"}}},
	)
	rule := func(id string) uint16 {
		for i, r := range img.Rules {
			if r == id {
				return uint16(i)
			}
		}
		t.Fatalf("no rule %s", id)
		return 0
	}
	for _, tc := range []struct {
		what       string
		f, ty, p   uint16
		wantAction Action
		wantRule   string
	}{
		{"inet tcp: the enforced family rule beats the audited exact one", 2, 1, 6, ActionEnforce, "custom/inet"},
		{"inet6 raw icmpv6", 10, 3, 58, ActionEnforce, "custom/raw"},
		{"inet6 udp", 10, 2, 17, ActionAudit, "custom/udp-audit"},
		{"inet udp: family enforce beats protocol audit", 2, 2, 17, ActionEnforce, "custom/inet"},
		{"unix stream", 1, 1, 0, ActionNone, ""},
	} {
		v, ok := socketLookup(img, tc.f, tc.ty, tc.p)
		if tc.wantAction == ActionNone {
			if ok && v.Action != ActionNone {
				t.Errorf("%s: got %v, want no verdict", tc.what, v)
			}
			continue
		}
		if !ok || v.Action != tc.wantAction || v.Rule != rule(tc.wantRule) {
			t.Errorf("%s: got %v (found %v), want %v by %s", tc.what, v, ok, tc.wantAction, tc.wantRule)
		}
	}
}

// egressLookup is net.h's egress: the longest prefix, then the port range.
func egressLookup(img *Image, addr netip.Addr, port uint16, proto int) (Action, string) {
	entries := img.Egress6
	if addr.Is4() {
		entries = img.Egress4
	}
	best := -1
	for i, e := range entries {
		if e.Prefix.Contains(addr) && (best < 0 || e.Prefix.Bits() > entries[best].Prefix.Bits()) {
			best = i
		}
	}
	if best < 0 {
		return ActionNone, ""
	}
	p := entries[best].Ports
	for _, r := range p.Range[:p.N] {
		if port >= r.First && port <= r.Last {
			if r.Action[proto] == ActionNone {
				return ActionNone, ""
			}
			return r.Action[proto], img.Rules[r.Rule[proto]]
		}
	}
	return ActionNone, ""
}

func TestEgressLongestPrefixCarriesTheWiderRules(t *testing.T) {
	img := build(t,
		ruleset.Rule{ID: "custom/wide-80", Action: enforce, Kind: ruleset.KindEgress, Egress: &ruleset.Egress{
			Prefixes: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, Ports: []ruleset.PortRange{{First: 80, Last: 80}}, Protocols: []v1alpha1.Protocol{"tcp"}}},
		ruleset.Rule{ID: "custom/narrow-audit", Action: audit, Kind: ruleset.KindEgress, Egress: &ruleset.Egress{
			Prefixes: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}}},
		ruleset.Rule{ID: "custom/v6", Action: enforce, Kind: ruleset.KindEgress, Egress: &ruleset.Egress{
			Prefixes: []netip.Prefix{netip.MustParsePrefix("fd00::/8"), netip.MustParsePrefix("::ffff:192.0.2.0/120")}, Ports: []ruleset.PortRange{{First: 1000, Last: 2000}}}},
	)
	for _, tc := range []struct {
		addr   string
		port   uint16
		proto  int
		action Action
		rule   string
	}{
		{"10.1.2.3", 80, 0, ActionEnforce, "custom/wide-80"},
		{"10.1.2.3", 443, 0, ActionAudit, "custom/narrow-audit"},
		{"10.1.2.3", 80, 1, ActionAudit, "custom/narrow-audit"},
		{"10.2.0.1", 80, 0, ActionEnforce, "custom/wide-80"},
		{"10.2.0.1", 443, 0, ActionNone, ""},
		{"11.0.0.1", 80, 0, ActionNone, ""},
		{"fd12::1", 1500, 1, ActionEnforce, "custom/v6"},
		{"fd12::1", 999, 1, ActionNone, ""},
		{"192.0.2.7", 2000, 0, ActionEnforce, "custom/v6"},
	} {
		a, r := egressLookup(img, netip.MustParseAddr(tc.addr), tc.port, tc.proto)
		if a != tc.action || r != tc.rule {
			t.Errorf("%s:%d proto %d: got %v %q, want %v %q", tc.addr, tc.port, tc.proto, a, r, tc.action, tc.rule)
		}
	}
}

func TestFileVerdictsPreferEnforceThenFirstRule(t *testing.T) {
	img := build(t,
		ruleset.Rule{ID: "custom/audit-read", Action: audit, Kind: ruleset.KindFile, File: &ruleset.File{Paths: []string{"/a/**"}, Permissions: []v1alpha1.FilePermission{"read", "write"}}},
		ruleset.Rule{ID: "custom/enforce-read", Action: enforce, Kind: ruleset.KindFile, File: &ruleset.File{Paths: []string{"/a/b"}, Permissions: []v1alpha1.FilePermission{"read"}}},
		ruleset.Rule{ID: "custom/later-read", Action: enforce, Kind: ruleset.KindFile, File: &ruleset.File{Paths: []string{"/a/*"}, Permissions: []v1alpha1.FilePermission{"read"}}},
	)
	tags := img.DFA.Match([]byte("/a/b"))
	if len(tags) == 0 {
		t.Fatal("/a/b matches nothing")
	}
	// find the state: walk as the programs do
	state := uint32(1)
	for _, c := range []byte("/a/b") {
		state = img.DFA.Trans[int(state)*img.DFA.NumClasses+int(img.DFA.Classes[c])]
	}
	v := img.Accept[state]
	if v.Enforce&(1<<PermRead) == 0 || img.Rules[v.Rule[PermRead]] != "custom/enforce-read" {
		t.Errorf("read of /a/b: enforce %b rule %q, want enforced by custom/enforce-read", v.Enforce, img.Rules[v.Rule[PermRead]])
	}
	if v.Audit&(1<<PermWrite) == 0 || img.Rules[v.Rule[PermWrite]] != "custom/audit-read" {
		t.Errorf("write of /a/b: audit %b rule %q, want audited by custom/audit-read", v.Audit, img.Rules[v.Rule[PermWrite]])
	}
	// the directory /a guards what is beneath it: its subtree verdict is the strongest
	state = 1
	for _, c := range []byte("/a/") {
		state = img.DFA.Trans[int(state)*img.DFA.NumClasses+int(img.DFA.Classes[c])]
	}
	if sv := img.Subtree[state]; sv.Action != ActionEnforce {
		t.Errorf("subtree of /a: %v, want enforce", sv)
	}
}

func TestBuildErrorsNameTheProblem(t *testing.T) {
	var ports []ruleset.PortRange
	for i := range 17 {
		ports = append(ports, ruleset.PortRange{First: uint16(100 + 10*i), Last: uint16(100 + 10*i)})
	}
	for _, tc := range []struct {
		rule ruleset.Rule
		want string
	}{
		{ruleset.Rule{ID: "custom/ports", Action: enforce, Kind: ruleset.KindEgress, Egress: &ruleset.Egress{Ports: ports}}, "distinct port ranges"},
		{ruleset.Rule{ID: "custom/udplite", Action: enforce, Kind: ruleset.KindEgress, Egress: &ruleset.Egress{Protocols: []v1alpha1.Protocol{"udplite"}}}, `protocol "udplite"`},
		{ruleset.Rule{ID: "custom/cap", Action: enforce, Kind: ruleset.KindCapability, Capability: &ruleset.Capability{Capabilities: []v1alpha1.Capability{"NOPE"}}}, `unknown capability "NOPE"`},
		{ruleset.Rule{ID: "custom/sys", Action: enforce, Kind: ruleset.KindSyscall, Syscall: &ruleset.Syscall{Names: []string{"mount"}}}, "seccomp"},
	} {
		_, err := Build(profile(tc.rule), Limits{})
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.rule.ID) {
			t.Errorf("%s: err = %v, want one naming the rule and %q", tc.rule.ID, err, tc.want)
		}
	}
}
