package seccomp

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/podarmor/podarmor/policies/api/v1alpha1"
	"github.com/podarmor/podarmor/policies/internal/golden"
	"github.com/podarmor/podarmor/policies/ruleset"
)

func newBackend(t *testing.T, archs ...specs.Arch) *Backend {
	t.Helper()
	b, err := New(Config{Architectures: archs})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// noI386 is every default architecture but i386, where socket rules cannot be exact.
var noI386 = []specs.Arch{specs.ArchX86_64, specs.ArchX32, specs.ArchAARCH64, specs.ArchARM}

func op(id string, action v1alpha1.Action, ops ...v1alpha1.Operation) ruleset.Rule {
	return ruleset.Rule{ID: id, Action: action, Kind: ruleset.KindOperation, Operation: &ruleset.Operation{Operations: ops}}
}

func sys(id string, action v1alpha1.Action, names []string, args ...v1alpha1.SyscallArg) ruleset.Rule {
	return ruleset.Rule{ID: id, Action: action, Kind: ruleset.KindSyscall, Syscall: &ruleset.Syscall{Names: names, Args: args}}
}

func sock(id string, action v1alpha1.Action, m ruleset.Socket) ruleset.Rule {
	return ruleset.Rule{ID: id, Action: action, Kind: ruleset.KindSocket, Socket: &m}
}

func mnt(id string, action v1alpha1.Action, m ruleset.Mount) ruleset.Rule {
	return ruleset.Rule{ID: id, Action: action, Kind: ruleset.KindMount, Mount: &m}
}

const (
	enforce = v1alpha1.ActionEnforce
	audit   = v1alpha1.ActionAudit
)

var allOperations = []v1alpha1.Operation{
	v1alpha1.OperationBPF, v1alpha1.OperationKernelModule, v1alpha1.OperationUsernsCreate,
	v1alpha1.OperationUserfaultfd, v1alpha1.OperationIoUring, v1alpha1.OperationPerfEvent,
	v1alpha1.OperationChmodSetuid,
}

func TestNew(t *testing.T) {
	tests := map[string]struct {
		archs   []specs.Arch
		want    []specs.Arch
		wantErr string
	}{
		"no architectures means both x86-64 and arm64 with their 32-bit ABIs": {
			want: DefaultArchitectures,
		},
		"a subset is kept in the given order": {
			archs: []specs.Arch{specs.ArchAARCH64, specs.ArchX86_64},
			want:  []specs.Arch{specs.ArchAARCH64, specs.ArchX86_64},
		},
		"an architecture the constants were not checked for is refused": {
			archs:   []specs.Arch{specs.ArchS390X},
			wantErr: "SCMP_ARCH_S390X",
		},
		"an architecture listed twice is refused": {
			archs:   []specs.Arch{specs.ArchX86_64, specs.ArchX86_64},
			wantErr: "listed twice",
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			b, err := New(Config{Architectures: tt.archs})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("New() error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(b.archs, tt.want) {
				t.Errorf("architectures = %v, want %v", b.archs, tt.want)
			}
		})
	}
}

func TestConfigIsCopied(t *testing.T) {
	archs := []specs.Arch{specs.ArchX86_64}
	b := newBackend(t, archs...)
	archs[0] = specs.ArchARM
	if b.archs[0] != specs.ArchX86_64 {
		t.Errorf("the backend shares the caller's slice")
	}
	b = newBackend(t)
	b.archs[0] = specs.ArchARM
	if DefaultArchitectures[0] != specs.ArchX86_64 {
		t.Errorf("the backend shares DefaultArchitectures")
	}
}

func TestFileName(t *testing.T) {
	if got, want := FileName("shop-web-0a1b2c"), "podarmor/shop-web-0a1b2c.json"; got != want {
		t.Errorf("FileName() = %q, want %q", got, want)
	}
	if !strings.HasPrefix(FileName("x"), ProfileDir+"/") {
		t.Errorf("FileName() is not under ProfileDir")
	}
}

func TestEnforcer(t *testing.T) {
	if got := newBackend(t).Enforcer(); got != v1alpha1.EnforcerSeccomp {
		t.Errorf("Enforcer() = %q", got)
	}
}

func TestKnownSyscall(t *testing.T) {
	tests := map[string]bool{
		"openat":     true,  // everywhere
		"open":       true,  // x86-64 only
		"renameat":   true,  // arm64 has it, x86-64 too
		"fchmodat2":  true,  // newer than the headers, from syscalls_after_headers.tbl
		"socketcall": false, // i386 only
		"umount":     false, // i386 only
		"frobnicate": false,
		"":           false,
	}
	for name, want := range tests {
		if got := KnownSyscall(name); got != want {
			t.Errorf("KnownSyscall(%q) = %v, want %v", name, got, want)
		}
	}
}

// TestExpress says, kind by kind, what the profile holds exactly and why not the rest.
func TestExpress(t *testing.T) {
	uintMax32 := int64(0xffffffff)
	tests := map[string]struct {
		backend []specs.Arch // nil: the defaults
		rule    ruleset.Rule
		wantErr string // "" for exact
	}{
		"every operation is exact when enforced": {rule: op("r", enforce, allOperations...)},
		"bpf, modules, userfaultfd, io_uring, perf and chmod are exact when audited": {
			rule: op("r", audit, v1alpha1.OperationBPF, v1alpha1.OperationKernelModule, v1alpha1.OperationUserfaultfd,
				v1alpha1.OperationIoUring, v1alpha1.OperationPerfEvent, v1alpha1.OperationChmodSetuid),
		},
		"an audited usernsCreate is not, since only ENOSYS on clone3 makes it exact": {
			rule: op("r", audit, v1alpha1.OperationUsernsCreate), wantErr: "clone3",
		},
		"an unknown operation is refused":                 {rule: op("r", enforce, "reboot"), wantErr: `unknown operation "reboot"`},
		"an operation rule without operations is refused": {rule: op("r", enforce), wantErr: "no operation"},

		"a syscall rule by name is exact": {rule: sys("r", enforce, []string{"keyctl", "add_key", "request_key"})},
		"a name only x86-64 has is exact": {rule: sys("r", audit, []string{"open", "chmod"})},
		"a name only arm64 has is exact":  {rule: sys("r", enforce, []string{"renameat"})},
		"a name newer than the headers is exact": {
			rule: sys("r", enforce, []string{"mseal"}),
		},
		"an unknown system call is named": {
			rule: sys("r", enforce, []string{"ptrace", "frobnicate"}), wantErr: `unknown system call "frobnicate"`,
		},
		"an i386-only system call is unknown": {
			rule: sys("r", enforce, []string{"socketcall"}), wantErr: `"socketcall"`,
		},
		"a syscall rule without names is refused": {rule: sys("r", enforce, nil), wantErr: "no system call"},
		"every comparison is exact on distinct arguments": {
			rule: sys("r", enforce, []string{"personality"},
				v1alpha1.SyscallArg{Index: 0, Op: "Equal", Value: 1},
				v1alpha1.SyscallArg{Index: 1, Op: "NotEqual", Value: 2},
				v1alpha1.SyscallArg{Index: 2, Op: "LessThan", Value: 3},
				v1alpha1.SyscallArg{Index: 3, Op: "LessOrEqual", Value: 4},
				v1alpha1.SyscallArg{Index: 4, Op: "GreaterThan", Value: 5},
				v1alpha1.SyscallArg{Index: 5, Op: "MaskedEqual", Value: 0xff, ValueTwo: 0x0f}),
		},
		"two comparisons of one argument are refused, since runtimes OR them": {
			rule: sys("r", enforce, []string{"personality"},
				v1alpha1.SyscallArg{Index: 0, Op: "GreaterOrEqual", Value: 1},
				v1alpha1.SyscallArg{Index: 0, Op: "LessOrEqual", Value: 9}),
			wantErr: "compared twice",
		},
		"an argument index past 5 is refused": {
			rule:    sys("r", enforce, []string{"personality"}, v1alpha1.SyscallArg{Index: 6, Op: "Equal"}),
			wantErr: "0 to 5",
		},
		"an unknown comparison is refused": {
			rule:    sys("r", enforce, []string{"personality"}, v1alpha1.SyscallArg{Index: 0, Op: "Like"}),
			wantErr: `unknown comparison "Like"`,
		},
		"a masked value with bits outside its mask is refused, as libseccomp would mask it": {
			rule:    sys("r", enforce, []string{"personality"}, v1alpha1.SyscallArg{Index: 0, Op: "MaskedEqual", Value: 0x1, ValueTwo: 0x3}),
			wantErr: "outside the mask",
		},
		"valueTwo on a comparison other than MaskedEqual is refused": {
			rule:    sys("r", enforce, []string{"personality"}, v1alpha1.SyscallArg{Index: 0, Op: "Equal", Value: 1, ValueTwo: 1}),
			wantErr: "only by MaskedEqual",
		},
		"a 33-bit value is refused while a 32-bit ABI is filtered": {
			rule:    sys("r", enforce, []string{"personality"}, v1alpha1.SyscallArg{Index: 0, Op: "Equal", Value: uintMax32 + 1}),
			wantErr: "wider than 32 bits",
		},
		"a 32-bit value is exact everywhere": {
			rule: sys("r", enforce, []string{"personality"}, v1alpha1.SyscallArg{Index: 0, Op: "Equal", Value: uintMax32}),
		},
		"a wide mask is exact when the compared value fits 32 bits": {
			rule: sys("r", enforce, []string{"personality"}, v1alpha1.SyscallArg{Index: 0, Op: "MaskedEqual", Value: 1<<40 | 1, ValueTwo: 1}),
		},
		"a 33-bit value is exact on 64-bit ABIs alone": {
			backend: []specs.Arch{specs.ArchX86_64, specs.ArchAARCH64},
			rule:    sys("r", enforce, []string{"personality"}, v1alpha1.SyscallArg{Index: 0, Op: "Equal", Value: uintMax32 + 1}),
		},

		"every socket is exact, with socketcall too": {rule: sock("r", enforce, ruleset.Socket{})},
		"socket families are not while i386 is filtered": {
			rule: sock("r", enforce, ruleset.Socket{Families: []v1alpha1.SocketFamily{"alg"}}), wantErr: "socketcall",
		},
		"socket types are not while i386 is filtered": {
			rule: sock("r", enforce, ruleset.Socket{Types: []v1alpha1.SocketType{"raw"}}), wantErr: "socketcall",
		},
		"socket families, types and protocols are exact without i386": {
			backend: noI386,
			rule: sock("r", audit, ruleset.Socket{
				Families:  []v1alpha1.SocketFamily{"inet", "inet6", "packet"},
				Types:     []v1alpha1.SocketType{"raw", "dgram"},
				Protocols: []v1alpha1.Protocol{"icmp", "icmpv6", "udp"},
			}),
		},
		"an unknown socket family is refused": {
			backend: noI386,
			rule:    sock("r", enforce, ruleset.Socket{Families: []v1alpha1.SocketFamily{"appletalk"}}),
			wantErr: `unknown socket family "appletalk"`,
		},

		"a mount rule of operations alone is exact": {
			rule: mnt("r", enforce, ruleset.Mount{Operations: []v1alpha1.MountOperation{"mount", "umount", "pivotroot"}}),
		},
		"a mount rule with filesystem types is not": {
			rule:    mnt("r", enforce, ruleset.Mount{Operations: []v1alpha1.MountOperation{"mount"}, FSTypes: []string{"proc"}}),
			wantErr: "filesystem types",
		},
		"a mount rule with targets is not": {
			rule:    mnt("r", enforce, ruleset.Mount{Operations: []v1alpha1.MountOperation{"mount"}, Targets: []string{"/proc/**"}}),
			wantErr: "strings",
		},
		"a mount rule with flags is not": {
			rule:    mnt("r", enforce, ruleset.Mount{Operations: []v1alpha1.MountOperation{"mount"}, Flags: []v1alpha1.MountFlag{"bind"}}),
			wantErr: "new mount API",
		},
		"a mount rule without operations is refused": {
			rule: mnt("r", enforce, ruleset.Mount{}), wantErr: "no operation",
		},

		"file rules are not": {
			rule:    ruleset.Rule{ID: "r", Action: enforce, Kind: ruleset.KindFile, File: &ruleset.File{Paths: []string{"/etc/shadow"}, Permissions: []v1alpha1.FilePermission{"read"}}},
			wantErr: "cannot see paths",
		},
		"exec rules are not": {
			rule:    ruleset.Rule{ID: "r", Action: enforce, Kind: ruleset.KindExec, Exec: &ruleset.Exec{Paths: []string{"/bin/sh"}}},
			wantErr: "which file is executed",
		},
		"egress rules are not": {
			rule:    ruleset.Rule{ID: "r", Action: enforce, Kind: ruleset.KindEgress, Egress: &ruleset.Egress{}},
			wantErr: "addresses",
		},
		"capability rules are not": {
			rule:    ruleset.Rule{ID: "r", Action: enforce, Kind: ruleset.KindCapability, Capability: &ruleset.Capability{Capabilities: []v1alpha1.Capability{"SYS_ADMIN"}}},
			wantErr: "capability checks",
		},
		"ptrace rules are not": {
			rule:    ruleset.Rule{ID: "r", Action: enforce, Kind: ruleset.KindPtrace, Ptrace: &ruleset.Ptrace{Permissions: []v1alpha1.PtracePermission{"trace"}, Peers: "Any"}},
			wantErr: "ptrace",
		},
		"a kind without its match is refused": {
			rule: ruleset.Rule{ID: "r", Action: enforce, Kind: ruleset.KindSyscall}, wantErr: "without a syscall match",
		},
		"an unknown kind is refused": {
			rule: ruleset.Rule{ID: "r", Action: enforce, Kind: "dns"}, wantErr: `unknown rule kind "dns"`,
		},
		"an action that is neither Enforce nor Audit is refused": {
			rule: op("r", "Kill", v1alpha1.OperationBPF), wantErr: `action "Kill"`,
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			err := newBackend(t, tt.backend...).Express(tt.rule)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("Express() = %v, want nil", err)
			case tt.wantErr != "" && err == nil:
				t.Errorf("Express() = nil, want an error containing %q", tt.wantErr)
			case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
				t.Errorf("Express() = %v, want an error containing %q", err, tt.wantErr)
			case err != nil && !strings.Contains(err.Error(), `rule "r"`):
				t.Errorf("Express() = %v, want it to name the rule", err)
			}
		})
	}
}

// goldenCases are the rule sets whose profiles testdata/<name>.golden holds.
var goldenCases = map[string]struct {
	backend []specs.Arch
	rs      ruleset.RuleSet
}{
	"always-allow": {rs: ruleset.RuleSet{
		ProfileID: "always-allow", Policy: "ArmorPolicy shop/rollout", Mode: v1alpha1.ModeAlwaysAllow,
		Enforcers: []v1alpha1.Enforcer{v1alpha1.EnforcerSeccomp}, Default: ruleset.Allow,
	}},
	"operations": {rs: ruleset.RuleSet{
		ProfileID: "operations", Mode: v1alpha1.ModeEnhanceProtect, Default: ruleset.Allow,
		Rules: []ruleset.Rule{op("builtin/operations", enforce, allOperations...)},
	}},
	"operations-audit": {rs: ruleset.RuleSet{
		ProfileID: "operations-audit", Mode: v1alpha1.ModeEnhanceProtect, Default: ruleset.Allow,
		Rules: []ruleset.Rule{
			op("builtin/operations", audit, allOperations...), // usernsCreate makes it inexact: left out
			op("builtin/no-bpf", audit, v1alpha1.OperationBPF, v1alpha1.OperationKernelModule, v1alpha1.OperationUserfaultfd,
				v1alpha1.OperationIoUring, v1alpha1.OperationPerfEvent, v1alpha1.OperationChmodSetuid),
		},
	}},
	"mounts": {rs: ruleset.RuleSet{
		ProfileID: "mounts", Mode: v1alpha1.ModeRuntimeDefault, Default: ruleset.Allow,
		Rules: []ruleset.Rule{
			mnt("runtime-default/mount", enforce, ruleset.Mount{Operations: []v1alpha1.MountOperation{"mount", "umount"}}),
			mnt("runtime-default/pivot-root", audit, ruleset.Mount{Operations: []v1alpha1.MountOperation{"pivotroot"}}),
			mnt("custom/no-proc", enforce, ruleset.Mount{Operations: []v1alpha1.MountOperation{"mount"}, FSTypes: []string{"proc"}}),
		},
	}},
	"syscalls": {rs: ruleset.RuleSet{
		ProfileID: "syscalls", Mode: v1alpha1.ModeEnhanceProtect, Default: ruleset.Allow,
		Rules: []ruleset.Rule{
			sys("custom/keys", enforce, []string{"request_key", "keyctl", "add_key", "keyctl"}),
			sys("custom/personality", enforce, []string{"personality"},
				v1alpha1.SyscallArg{Index: 0, Op: "NotEqual", Value: 0},
				v1alpha1.SyscallArg{Index: 1, Op: "LessThan", Value: 0xffffffff}),
			sys("custom/tiocsti", audit, []string{"ioctl"}, v1alpha1.SyscallArg{Index: 1, Op: "Equal", Value: 0x5412}),
			sys("custom/x86-only", enforce, []string{"iopl", "ioperm"}),
		},
	}},
	"sockets-all-abis": {rs: ruleset.RuleSet{
		ProfileID: "sockets-all-abis", Mode: v1alpha1.ModeEnhanceProtect, Default: ruleset.Allow,
		Rules: []ruleset.Rule{
			sock("custom/alg", enforce, ruleset.Socket{Families: []v1alpha1.SocketFamily{"alg"}}), // inexact: left out
			sock("custom/no-sockets", audit, ruleset.Socket{}),
		},
	}},
	"sockets": {backend: noI386, rs: ruleset.RuleSet{
		ProfileID: "sockets", Mode: v1alpha1.ModeEnhanceProtect, Default: ruleset.Allow,
		Rules: []ruleset.Rule{
			sock("custom/alg-vsock", enforce, ruleset.Socket{Families: []v1alpha1.SocketFamily{"alg", "vsock"}}),
			sock("custom/raw-packet", enforce, ruleset.Socket{Families: []v1alpha1.SocketFamily{"packet"}}),
			sock("custom/tcp", enforce, ruleset.Socket{Families: []v1alpha1.SocketFamily{"inet"}, Protocols: []v1alpha1.Protocol{"tcp"}}),
			sock("custom/raw", enforce, ruleset.Socket{Types: []v1alpha1.SocketType{"raw"}}),
			// Disjoint from custom/raw by type: kept beside it.
			sock("custom/netlink-dgram", audit, ruleset.Socket{Families: []v1alpha1.SocketFamily{"netlink"}, Types: []v1alpha1.SocketType{"dgram"}}),
		},
	}},
	"mixed": {rs: ruleset.RuleSet{
		ProfileID: "mixed", Policy: "ClusterArmorPolicy default", Mode: v1alpha1.ModeEnhanceProtect,
		Enforcers: []v1alpha1.Enforcer{v1alpha1.EnforcerBPF, v1alpha1.EnforcerSeccomp}, Default: ruleset.Allow,
		Rules: []ruleset.Rule{
			{ID: "builtin/shadow", Action: enforce, Kind: ruleset.KindFile, File: &ruleset.File{Paths: []string{"/etc/shadow"}, Permissions: []v1alpha1.FilePermission{"read"}}},
			op("runtime-default/operations", enforce, v1alpha1.OperationUsernsCreate, v1alpha1.OperationBPF),
			// Covered by the Enforce rule above: dropped.
			sys("custom/audit-bpf", audit, []string{"bpf", "ptrace"}),
			// Disjoint from usernsCreate's clone entry: kept beside it.
			sys("custom/audit-clone-newns", audit, []string{"clone"}, v1alpha1.SyscallArg{Index: 0, Op: "MaskedEqual", Value: cloneNewUser | 0x20000, ValueTwo: 0x20000}),
			{ID: "builtin/sys-admin", Action: enforce, Kind: ruleset.KindCapability, Capability: &ruleset.Capability{Capabilities: []v1alpha1.Capability{"SYS_ADMIN"}}},
			op("builtin/chmod-suid", audit, v1alpha1.OperationChmodSetuid),
		},
	}},
}

func TestRenderGolden(t *testing.T) {
	for name, tc := range goldenCases {
		t.Run(name, func(t *testing.T) {
			b := newBackend(t, tc.backend...)
			got, err := b.Render(&tc.rs)
			if err != nil {
				t.Fatal(err)
			}
			again, err := b.Render(&tc.rs)
			if err != nil || !bytes.Equal(got, again) {
				t.Fatalf("a second Render gave other bytes or %v", err)
			}
			golden.Check(t, filepath.Join("testdata", name+".golden"), got)
		})
	}
}

// TestGoldenSchema decodes every profile in testdata strictly as the OCI type containerd
// decodes it into, and checks what every podarmor profile must be.
func TestGoldenSchema(t *testing.T) {
	paths, err := filepath.Glob(filepath.Join("testdata", "*.golden"))
	if err != nil || len(paths) != len(goldenCases) {
		t.Fatalf("found %d golden files (%v), want %d", len(paths), err, len(goldenCases))
	}
	for _, path := range paths {
		t.Run(filepath.Base(path), func(t *testing.T) {
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			dec := json.NewDecoder(bytes.NewReader(data))
			dec.DisallowUnknownFields()
			var p specs.LinuxSeccomp
			if err := dec.Decode(&p); err != nil {
				t.Fatalf("decode as specs.LinuxSeccomp: %v", err)
			}
			if dec.More() {
				t.Fatal("data after the profile")
			}
			if p.DefaultAction != specs.ActAllow || p.DefaultErrnoRet != nil {
				t.Errorf("default action %q (errno %v), want SCMP_ACT_ALLOW", p.DefaultAction, p.DefaultErrnoRet)
			}
			if len(p.Architectures) == 0 || len(p.Flags) != 0 || p.ListenerPath != "" || p.ListenerMetadata != "" {
				t.Errorf("architectures %v, flags %v, listener %q %q", p.Architectures, p.Flags, p.ListenerPath, p.ListenerMetadata)
			}
			for _, a := range p.Architectures {
				if !slices.Contains(DefaultArchitectures, a) {
					t.Errorf("architecture %q", a)
				}
			}
			for i, s := range p.Syscalls {
				switch {
				case s.Action == specs.ActErrno && s.ErrnoRet != nil && (*s.ErrnoRet == errnoEPERM || *s.ErrnoRet == errnoENOSYS):
				case s.Action == specs.ActLog && s.ErrnoRet == nil:
				default:
					t.Errorf("syscalls[%d]: action %q errno %v", i, s.Action, s.ErrnoRet)
				}
				if len(s.Names) == 0 || !slices.IsSorted(s.Names) || len(slices.Compact(slices.Clone(s.Names))) != len(s.Names) {
					t.Errorf("syscalls[%d]: names %v are not sorted and unique", i, s.Names)
				}
				for _, n := range s.Names {
					if syscallTable[n] == 0 {
						t.Errorf("syscalls[%d]: %q is no system call of x86-64, i386 or arm64", i, n)
					}
				}
				var seen []uint
				for _, a := range s.Args {
					if a.Index > 5 || slices.Contains(seen, a.Index) {
						t.Errorf("syscalls[%d]: argument index %d out of range or repeated", i, a.Index)
					}
					seen = append(seen, a.Index)
					if _, ok := opNames[a.Op]; !ok {
						t.Errorf("syscalls[%d]: comparison %q", i, a.Op)
					}
					if a.Op != specs.OpMaskedEqual && a.ValueTwo != 0 {
						t.Errorf("syscalls[%d]: valueTwo on %s", i, a.Op)
					}
				}
			}
			// Re-encoding the decoded profile gives the file back: nothing in it is
			// outside the OCI type.
			again, err := json.MarshalIndent(p, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(append(again, '\n'), data) {
				t.Errorf("re-encoded profile differs from the file")
			}
		})
	}
}

var opNames = map[specs.LinuxSeccompOperator]bool{
	specs.OpEqualTo: true, specs.OpNotEqual: true, specs.OpLessThan: true, specs.OpLessEqual: true,
	specs.OpGreaterThan: true, specs.OpGreaterEqual: true, specs.OpMaskedEqual: true,
}

// TestArgumentNumbers checks the numbers argument filters compare with against the
// kernel's, as the JSON spells them.
func TestArgumentNumbers(t *testing.T) {
	b := newBackend(t, noI386...)
	rs := &ruleset.RuleSet{ProfileID: "numbers", Default: ruleset.Allow, Rules: []ruleset.Rule{
		op("userns", enforce, v1alpha1.OperationUsernsCreate),
		op("suid", enforce, v1alpha1.OperationChmodSetuid),
		op("uffd", enforce, v1alpha1.OperationUserfaultfd),
		sock("alg", enforce, ruleset.Socket{Families: []v1alpha1.SocketFamily{"alg"}}),
		mnt("mount", enforce, ruleset.Mount{Operations: []v1alpha1.MountOperation{"mount"}}),
	}}
	out, err := b.Render(rs)
	if err != nil {
		t.Fatal(err)
	}
	var p specs.LinuxSeccomp
	if err := json.Unmarshal(out, &p); err != nil {
		t.Fatal(err)
	}
	masked := func(index uint, mask, value uint64) specs.LinuxSeccompArg {
		return specs.LinuxSeccompArg{Index: index, Op: specs.OpMaskedEqual, Value: mask, ValueTwo: value}
	}
	want := []struct {
		name string
		args []specs.LinuxSeccompArg
		what string
	}{
		{"clone", []specs.LinuxSeccompArg{masked(0, 0x10000000, 0x10000000)}, "CLONE_NEWUSER in clone's first argument"},
		{"unshare", []specs.LinuxSeccompArg{masked(0, 0x10000000, 0x10000000)}, "CLONE_NEWUSER in unshare's flags"},
		{"chmod", []specs.LinuxSeccompArg{masked(1, 0o4000, 0o4000)}, "S_ISUID in chmod's mode"},
		{"fchmod", []specs.LinuxSeccompArg{masked(1, 0o2000, 0o2000)}, "S_ISGID in fchmod's mode"},
		{"fchmodat", []specs.LinuxSeccompArg{masked(2, 0o4000, 0o4000)}, "S_ISUID in fchmodat's mode"},
		{"fchmodat2", []specs.LinuxSeccompArg{masked(2, 0o2000, 0o2000)}, "S_ISGID in fchmodat2's mode"},
		{"ioctl", []specs.LinuxSeccompArg{masked(1, 0xffffffff, 0xAA00)}, "USERFAULTFD_IOC_NEW as ioctl's request"},
		{"socket", []specs.LinuxSeccompArg{masked(0, 0xffffffff, 38)}, "AF_ALG as socket's family"},
		{"socketpair", []specs.LinuxSeccompArg{masked(0, 0xffffffff, 38)}, "AF_ALG as socketpair's family"},
		{"open_tree", []specs.LinuxSeccompArg{masked(2, 1, 1)}, "OPEN_TREE_CLONE in open_tree's flags"},
	}
	for _, w := range want {
		found := false
		for _, s := range p.Syscalls {
			if slices.Contains(s.Names, w.name) && slices.Equal(s.Args, w.args) && s.Action == specs.ActErrno && *s.ErrnoRet == 1 {
				found = true
			}
		}
		if !found {
			t.Errorf("no EPERM entry for %s with %v (%s)", w.name, w.args, w.what)
		}
	}
	for _, s := range p.Syscalls {
		if slices.Contains(s.Names, "clone3") && (len(s.Args) != 0 || *s.ErrnoRet != 38) {
			t.Errorf("clone3 entry %+v, want every call failing with ENOSYS (38)", s)
		}
	}
}

func TestRenderResolvesRulesOfOneSystemCall(t *testing.T) {
	userns := op("userns", enforce, v1alpha1.OperationUsernsCreate)
	tests := map[string]struct {
		rules   []ruleset.Rule
		want    map[string][]string // action/errno -> names, for the entries with no arguments
		wantErr string
	}{
		"an unconditional deny drops a log of the same call": {
			rules: []ruleset.Rule{op("bpf", enforce, v1alpha1.OperationBPF), sys("log", audit, []string{"bpf", "ptrace"})},
			want:  map[string][]string{"SCMP_ACT_ERRNO/1": {"bpf"}, "SCMP_ACT_LOG": {"ptrace"}},
		},
		"an unconditional deny drops conditional denies of the same call": {
			rules: []ruleset.Rule{userns, sys("no-clone", enforce, []string{"clone"})},
			want:  map[string][]string{"SCMP_ACT_ERRNO/1": {"clone"}, "SCMP_ACT_ERRNO/38": {"clone3"}},
		},
		"a rule's EPERM wins over clone3's ENOSYS": {
			rules: []ruleset.Rule{userns, sys("no-clone3", enforce, []string{"clone3"})},
			want:  map[string][]string{"SCMP_ACT_ERRNO/1": {"clone3"}},
		},
		"the same rule twice gives one entry": {
			rules: []ruleset.Rule{userns, userns},
			want:  map[string][]string{"SCMP_ACT_ERRNO/38": {"clone3"}},
		},
		"logging every clone while denying some is refused": {
			rules:   []ruleset.Rule{userns, sys("log-clone", audit, []string{"clone"})},
			wantErr: `rules "userns" and "log-clone" both match some clone calls`,
		},
		"logging calls a deny also matches, and others, is refused": {
			rules: []ruleset.Rule{userns, sys("log-threads", audit, []string{"clone"},
				v1alpha1.SyscallArg{Index: 0, Op: "MaskedEqual", Value: 0x100, ValueTwo: 0x100})},
			wantErr: "both match some clone calls",
		},
		"a log that can never match the same call as a deny is kept": {
			rules: []ruleset.Rule{userns, sys("log-not-userns", audit, []string{"clone", "unshare"},
				v1alpha1.SyscallArg{Index: 0, Op: "MaskedEqual", Value: cloneNewUser, ValueTwo: 0})},
			want: map[string][]string{"SCMP_ACT_ERRNO/38": {"clone3"}},
		},
		"a log of a narrower case of a deny is dropped": {
			rules: []ruleset.Rule{userns, sys("log-userns-ns", audit, []string{"unshare"},
				v1alpha1.SyscallArg{Index: 0, Op: "MaskedEqual", Value: cloneNewUser, ValueTwo: cloneNewUser},
				v1alpha1.SyscallArg{Index: 1, Op: "Equal", Value: 0})},
			want: map[string][]string{"SCMP_ACT_ERRNO/38": {"clone3"}},
		},
		"a deny with a range beside a log with a disjoint range is kept": {
			rules: []ruleset.Rule{
				sys("deny-low", enforce, []string{"personality"}, v1alpha1.SyscallArg{Index: 0, Op: "LessThan", Value: 8}),
				sys("log-high", audit, []string{"personality"}, v1alpha1.SyscallArg{Index: 0, Op: "GreaterOrEqual", Value: 8}),
			},
			want: map[string][]string{},
		},
		"a deny with a range beside a log with an overlapping range is refused": {
			rules: []ruleset.Rule{
				sys("deny-low", enforce, []string{"personality"}, v1alpha1.SyscallArg{Index: 0, Op: "LessThan", Value: 8}),
				sys("log-high", audit, []string{"personality"}, v1alpha1.SyscallArg{Index: 0, Op: "GreaterOrEqual", Value: 7}),
			},
			wantErr: "personality",
		},
		"a log is not dropped by a deny it does not imply": {
			rules: []ruleset.Rule{
				sys("deny", enforce, []string{"personality"}, v1alpha1.SyscallArg{Index: 0, Op: "Equal", Value: 8}),
				sys("log", audit, []string{"personality"}, v1alpha1.SyscallArg{Index: 0, Op: "NotEqual", Value: 8}),
			},
			want: map[string][]string{},
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			out, err := newBackend(t).Render(&ruleset.RuleSet{ProfileID: "p", Default: ruleset.Allow, Rules: tt.rules})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Render() error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var p specs.LinuxSeccomp
			if err := json.Unmarshal(out, &p); err != nil {
				t.Fatal(err)
			}
			got := map[string][]string{}
			for _, s := range p.Syscalls {
				if len(s.Args) > 0 {
					continue
				}
				key := string(s.Action)
				if s.ErrnoRet != nil {
					key += "/" + map[uint]string{1: "1", 38: "38"}[*s.ErrnoRet]
				}
				got[key] = append(got[key], s.Names...)
			}
			for k, names := range tt.want {
				if !slices.Equal(got[k], names) {
					t.Errorf("unconditional %s entries name %v, want %v\n%s", k, got[k], names, out)
				}
			}
			for k := range got {
				if _, ok := tt.want[k]; !ok {
					t.Errorf("unexpected unconditional %s entry for %v\n%s", k, got[k], out)
				}
			}
			// No system call may have entries of two actions that could both match.
			checkNoConflicts(t, p)
		})
	}
}

// checkNoConflicts fails when two entries of different actions could match one call.
func checkNoConflicts(t *testing.T, p specs.LinuxSeccomp) {
	t.Helper()
	for i, a := range p.Syscalls {
		for _, b := range p.Syscalls[i+1:] {
			if a.Action == b.Action && (a.ErrnoRet == nil || *a.ErrnoRet == *b.ErrnoRet) {
				continue
			}
			for _, n := range a.Names {
				if slices.Contains(b.Names, n) && !disjoint(a.Args, b.Args) {
					t.Errorf("%s has overlapping entries %+v and %+v", n, a, b)
				}
			}
		}
	}
}

func TestRenderRefuses(t *testing.T) {
	b := newBackend(t)
	if _, err := b.Render(nil); err == nil {
		t.Error("Render(nil) = nil error")
	}
	_, err := b.Render(&ruleset.RuleSet{ProfileID: "allow-list", Default: ruleset.Deny})
	if err == nil || !strings.Contains(err.Error(), "only Allow") {
		t.Errorf("Render(default Deny) error = %v", err)
	}
	out, err := b.Render(&ruleset.RuleSet{ProfileID: "zero"})
	if err != nil || !bytes.Contains(out, []byte(`"SCMP_ACT_ALLOW"`)) {
		t.Errorf("Render(zero Default) = %s, %v; want an allow-everything profile", out, err)
	}
}

// TestTableNames checks that every system call the translations name is in the
// generated table, so a typo cannot hide behind the runtimes' skipping of unknown names.
func TestTableNames(t *testing.T) {
	b := newBackend(t, noI386...)
	rules := []ruleset.Rule{
		op("ops", enforce, allOperations...),
		mnt("mounts", enforce, ruleset.Mount{Operations: []v1alpha1.MountOperation{"mount", "umount", "pivotroot"}}),
		sock("sockets", enforce, ruleset.Socket{}),
	}
	for _, r := range rules {
		es, err := b.translate(r)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			for _, n := range e.names {
				if syscallTable[n] == 0 {
					t.Errorf("rule %s names %q, which is in no table", r.ID, n)
				}
			}
		}
	}
}
