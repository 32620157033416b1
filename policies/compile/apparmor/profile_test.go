package apparmor

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"github.com/podarmor/podarmor/policies/api/v1alpha1"
	"github.com/podarmor/podarmor/policies/internal/golden"
	"github.com/podarmor/podarmor/policies/ruleset"
)

// Rule builders keep the rule sets below readable.

func fileRule(id string, a v1alpha1.Action, perms []v1alpha1.FilePermission, paths ...string) ruleset.Rule {
	return ruleset.Rule{ID: id, Action: a, Kind: ruleset.KindFile, File: &ruleset.File{Paths: paths, Permissions: perms}}
}

func execRule(id string, a v1alpha1.Action, paths ...string) ruleset.Rule {
	return ruleset.Rule{ID: id, Action: a, Kind: ruleset.KindExec, Exec: &ruleset.Exec{Paths: paths}}
}

func capRule(id string, a v1alpha1.Action, caps ...v1alpha1.Capability) ruleset.Rule {
	return ruleset.Rule{ID: id, Action: a, Kind: ruleset.KindCapability, Capability: &ruleset.Capability{Capabilities: caps}}
}

func socketRule(id string, a v1alpha1.Action, s ruleset.Socket) ruleset.Rule {
	return ruleset.Rule{ID: id, Action: a, Kind: ruleset.KindSocket, Socket: &s}
}

func ptraceRule(id string, a v1alpha1.Action, peers v1alpha1.PtracePeers, perms ...v1alpha1.PtracePermission) ruleset.Rule {
	return ruleset.Rule{ID: id, Action: a, Kind: ruleset.KindPtrace, Ptrace: &ruleset.Ptrace{Permissions: perms, Peers: peers}}
}

func mountRule(id string, a v1alpha1.Action, m ruleset.Mount) ruleset.Rule {
	return ruleset.Rule{ID: id, Action: a, Kind: ruleset.KindMount, Mount: &m}
}

func operationRule(id string, a v1alpha1.Action, ops ...v1alpha1.Operation) ruleset.Rule {
	return ruleset.Rule{ID: id, Action: a, Kind: ruleset.KindOperation, Operation: &ruleset.Operation{Operations: ops}}
}

const (
	enforce = v1alpha1.ActionEnforce
	audit   = v1alpha1.ActionAudit
)

var (
	// everyChange is what AppArmor's w takes away, and so the file permissions a rule
	// must name together, with or without link.
	everyChange = []v1alpha1.FilePermission{"write", "append", "create", "delete", "rename", "chmod", "chown"}
	// everyChangeAndLink is the catalog's "every change".
	everyChangeAndLink = append(append([]v1alpha1.FilePermission{}, everyChange...), "link")
	// everyAccess adds read.
	everyAccess = append([]v1alpha1.FilePermission{"read"}, everyChangeAndLink...)
)

func ruleSet(mode v1alpha1.Mode, rules ...ruleset.Rule) *ruleset.RuleSet {
	return &ruleset.RuleSet{
		ProfileID: "p-0123abcd",
		Policy:    "ArmorPolicy shop/web",
		Mode:      mode,
		Enforcers: []v1alpha1.Enforcer{v1alpha1.EnforcerBPF, v1alpha1.EnforcerAppArmor},
		Default:   ruleset.Allow,
		Rules:     rules,
	}
}

// goldenRuleSets are the rule sets whose profiles are checked against testdata, one per
// golden file.
func goldenRuleSets() map[string]*ruleset.RuleSet {
	return map[string]*ruleset.RuleSet{
		"always-allow": ruleSet(v1alpha1.ModeAlwaysAllow),

		"runtime-default": ruleSet(v1alpha1.ModeRuntimeDefault,
			fileRule("builtin/runtime-default-proc-write", enforce, everyChangeAndLink, "/proc/*", "/proc/sys/**", "/proc/sysrq-trigger"),
			fileRule("builtin/runtime-default-hidden-paths", enforce, everyAccess, "/proc/kcore", "/sys/firmware/**", "/sys/devices/system/cpu/cpu*/thermal_throttle/**"),
			mountRule("builtin/runtime-default-mount", enforce, ruleset.Mount{Operations: []v1alpha1.MountOperation{"mount", "umount", "pivotroot"}}),
			ptraceRule("builtin/runtime-default-ptrace", enforce, v1alpha1.PtraceOutsideContainer, "trace", "read", "tracedby", "readby"),
			operationRule("builtin/runtime-default-userns", enforce, "usernsCreate"),
			socketRule("builtin/runtime-default-vsock", enforce, ruleset.Socket{Families: []v1alpha1.SocketFamily{"vsock"}}),
			ruleset.Rule{ID: "builtin/runtime-default-syscalls-kernel-code", Action: enforce, Kind: ruleset.KindSyscall,
				Syscall: &ruleset.Syscall{Names: []string{"init_module", "kexec_load"}}},
		),

		"enhance-protect": ruleSet(v1alpha1.ModeEnhanceProtect,
			fileRule("builtin/runtime-default-proc-write", enforce, everyChangeAndLink, "/proc/sys/**"),
			fileRule("builtin/disallow-write-etc", enforce, everyChangeAndLink, "/etc/**"),
			fileRule("builtin/disallow-access-ssh", enforce, everyAccess, "/root/.ssh/**", "/home/*/.ssh/**"),
			execRule("builtin/disallow-exec-shell", enforce, "/bin/sh", "/bin/bash", "/usr/bin/*sh"),
			capRule("builtin/disallow-cap-sys-admin", enforce, "SYS_ADMIN"),
			capRule("custom/caps", enforce, "NET_RAW", "SYS_PTRACE", "BPF", "PERFMON"),
			socketRule("custom/raw-sockets", enforce, ruleset.Socket{
				Families: []v1alpha1.SocketFamily{"inet", "inet6", "packet"},
				Types:    []v1alpha1.SocketType{"raw", "packet"},
			}),
			socketRule("custom/netlink", enforce, ruleset.Socket{Families: []v1alpha1.SocketFamily{"netlink"}}),
			ptraceRule("custom/no-ptrace", enforce, v1alpha1.PtraceAnyPeer, "trace", "read"),
			mountRule("builtin/disallow-umount", enforce, ruleset.Mount{Operations: []v1alpha1.MountOperation{"umount"}}),
			mountRule("custom/keep-masks", enforce, ruleset.Mount{Operations: []v1alpha1.MountOperation{"umount"}, Targets: []string{"/proc/kcore", "/sys/firmware"}}),
			mountRule("builtin/disallow-pivot-root", enforce, ruleset.Mount{Operations: []v1alpha1.MountOperation{"pivotroot"}}),
			fileRule("custom/append-only-log", enforce, []v1alpha1.FilePermission{"append"}, "/var/log/app.log"),
			fileRule("custom/no-hardlinks-to-secrets", enforce, []v1alpha1.FilePermission{"link"}, "/run/secrets/**"),
			fileRule("builtin/disallow-read-kallsyms", enforce, []v1alpha1.FilePermission{"read"}, "/proc/kallsyms"),
		),

		"audit": ruleSet(v1alpha1.ModeEnhanceProtect,
			fileRule("custom/audit-etc", audit, everyChangeAndLink, "/etc/**"),
			fileRule("custom/audit-append", audit, []v1alpha1.FilePermission{"append"}, "/var/log/*.log"),
			execRule("custom/audit-shells", audit, "/bin/sh", "/bin/bash"),
			capRule("custom/audit-caps", audit, "SYS_ADMIN", "NET_ADMIN"),
			ptraceRule("custom/audit-ptrace", audit, v1alpha1.PtraceAnyPeer, "trace"),
			mountRule("custom/audit-umount", audit, ruleset.Mount{Operations: []v1alpha1.MountOperation{"umount", "pivotroot"}, Targets: nil}),
			fileRule("custom/audit-enforced-too", enforce, everyChange, "/etc/passwd"),
			fileRule("custom/audit-read", audit, everyAccess, "/etc/shadow"),
			socketRule("custom/audit-sockets", audit, ruleset.Socket{Families: []v1alpha1.SocketFamily{"packet"}}),
			ptraceRule("custom/audit-ptrace-outside", audit, v1alpha1.PtraceOutsideContainer, "read"),
		),

		"file-permissions": ruleSet(v1alpha1.ModeEnhanceProtect,
			fileRule("custom/every-change", enforce, everyChange, "/data/a"),
			fileRule("custom/every-change-and-link", enforce, everyChangeAndLink, "/data/b"),
			fileRule("custom/every-access-but-link", enforce, append([]v1alpha1.FilePermission{"read"}, everyChange...), "/data/c"),
			fileRule("custom/every-access", enforce, everyAccess, "/data/d"),
			fileRule("custom/append", enforce, []v1alpha1.FilePermission{"append"}, "/data/e"),
			fileRule("custom/append-and-link", enforce, []v1alpha1.FilePermission{"append", "link"}, "/data/f"),
			fileRule("custom/link", enforce, []v1alpha1.FilePermission{"link"}, "/data/g"),
			fileRule("custom/read", enforce, []v1alpha1.FilePermission{"read"}, "/data/h"),
			fileRule("custom/write", enforce, []v1alpha1.FilePermission{"write"}, "/data/i"),
			fileRule("custom/write-append", enforce, []v1alpha1.FilePermission{"write", "append"}, "/data/j"),
			fileRule("custom/delete", enforce, []v1alpha1.FilePermission{"delete", "link"}, "/data/k"),
			fileRule("custom/read-write", enforce, []v1alpha1.FilePermission{"read", "write"}, "/data/l"),
		),

		"escapes": ruleSet(v1alpha1.ModeEnhanceProtect,
			fileRule("custom/globs", enforce, everyChange,
				"/", "/*", "/**", "/a/**", "/**/b", "/a/**/b", "/**/**/c", "/proc/*/root", "/etc/*.conf",
				"/a*b*c", "/var/**/log*/*.log", "/usr/lib*/libc.so*"),
			fileRule("custom/operators", enforce, everyChange,
				`/a\*b`, `/\*\*`, `/x\**`, `/*\*`, `/a\\b`, `/\\*`, `/\?\[\]\{\}`, `/dir/*\[1\]*`, `/a,b^c"d`),
			fileRule("custom/lexer-bytes", enforce, everyChange,
				"/tmp/my file", "/tmp/* *", "/#not-a-comment", "/@\\{HOME\\}/x", "/mail@host", "/bang!", "/$x(y)|z+.w"),
			fileRule("custom/bytes", enforce, everyChange,
				"/tmp/café", "/tmp/*/日本語", "/tmp/\xff", "/tmp/a\nb", "/tmp/tab\there", "/tmp/\x01\x7f"),
			fileRule("custom/arrows-in-links", enforce, []v1alpha1.FilePermission{"link"}, "/a->b=c", "/x y->z"),
			execRule("custom/exec-escapes", enforce, "/opt/my tools/run", "/opt/x,y/*"),
			mountRule("custom/umount-escapes", enforce, ruleset.Mount{Operations: []v1alpha1.MountOperation{"umount"}, Targets: []string{"/mnt/a b", "/mnt/**", "/mnt/x->y=z"}}),
		),

		"unexpressible": ruleSet(v1alpha1.ModeEnhanceProtect,
			ruleset.Rule{ID: "custom/egress", Action: enforce, Kind: ruleset.KindEgress, Egress: &ruleset.Egress{
				Ports: []ruleset.PortRange{{First: 22, Last: 22}}}},
			ruleset.Rule{ID: "custom/syscalls", Action: enforce, Kind: ruleset.KindSyscall, Syscall: &ruleset.Syscall{Names: []string{"ptrace"}}},
			operationRule("builtin/disallow-load-kernel-module", enforce, "kernelModule"),
			operationRule("builtin/disallow-load-bpf", enforce, "bpf"),
			operationRule("custom/operations", enforce, "usernsCreate", "userfaultfd", "ioUring", "perfEvent", "chmodSetuid"),
			socketRule("custom/protocols", enforce, ruleset.Socket{Families: []v1alpha1.SocketFamily{"inet"}, Protocols: []v1alpha1.Protocol{"tcp"}}),
			socketRule("custom/unix", enforce, ruleset.Socket{Families: []v1alpha1.SocketFamily{"unix"}}),
			socketRule("custom/all-sockets", enforce, ruleset.Socket{Types: []v1alpha1.SocketType{"raw"}}),
			capRule("custom/checkpoint-restore", enforce, "CHECKPOINT_RESTORE"),
			ptraceRule("custom/tracedby", enforce, v1alpha1.PtraceAnyPeer, "tracedby"),
			mountRule("builtin/disallow-mount-procfs", enforce, ruleset.Mount{Operations: []v1alpha1.MountOperation{"mount"}, FSTypes: []string{"proc"}}),
			mountRule("custom/umount-fstype", enforce, ruleset.Mount{Operations: []v1alpha1.MountOperation{"umount"}, FSTypes: []string{"tmpfs"}}),
			mountRule("custom/pivot-target", enforce, ruleset.Mount{Operations: []v1alpha1.MountOperation{"pivotroot"}, Targets: []string{"/new"}}),
			fileRule("custom/bad-pattern", enforce, everyChange, "/etc/../x"),
			fileRule("custom/weird\nid", enforce, []v1alpha1.FilePermission{"chmod"}, "/x"),
		),
	}
}

func TestGolden(t *testing.T) {
	b, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	for name, rs := range goldenRuleSets() {
		t.Run(name, func(t *testing.T) {
			got, err := b.Render(rs)
			if err != nil {
				t.Fatalf("Render: %v", err)
			}
			golden.Check(t, filepath.Join("testdata", name+".golden"), got)
		})
	}
}

// TestGoldenFilesHaveRuleSets keeps testdata free of golden files nothing produces.
func TestGoldenFilesHaveRuleSets(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.golden"))
	if err != nil {
		t.Fatal(err)
	}
	sets := goldenRuleSets()
	for _, f := range files {
		if _, ok := sets[strings.TrimSuffix(filepath.Base(f), ".golden")]; !ok {
			t.Errorf("%s has no rule set in goldenRuleSets", f)
		}
	}
}

func TestRenderIsDeterministic(t *testing.T) {
	b, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	for name, rs := range goldenRuleSets() {
		first, err := b.Render(rs)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for i := 0; i < 20; i++ {
			again, err := b.Render(goldenRuleSets()[name])
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if !bytes.Equal(first, again) {
				t.Fatalf("%s: two renders of the same rule set differ", name)
			}
		}
	}
}

// TestRenderAgreesWithExpress renders each rule of the golden sets on its own: a rule
// Express accepts adds rules to the profile and no comment saying it is not expressible;
// a rule it rejects adds that comment, with the same reason, and nothing else.
func TestRenderAgreesWithExpress(t *testing.T) {
	b, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	empty, err := b.Render(ruleSet(v1alpha1.ModeEnhanceProtect))
	if err != nil {
		t.Fatal(err)
	}
	for name, rs := range goldenRuleSets() {
		for _, r := range rs.Rules {
			out, err := b.Render(ruleSet(v1alpha1.ModeEnhanceProtect, r))
			if err != nil {
				t.Fatalf("%s %s: Render: %v", name, r.ID, err)
			}
			added := strings.TrimSuffix(strings.TrimPrefix(string(out), strings.TrimSuffix(string(empty), "}\n")), "}\n")
			comment := "  # not expressible in AppArmor: " + commentText(r.ID) + ": "
			if xerr := b.Express(r); xerr != nil {
				want := "\n" + comment + commentText(xerr.Error()) + "\n"
				if added != want {
					t.Errorf("%s %s: Express says %q, but Render added:\n%s", name, r.ID, xerr, added)
				}
				continue
			}
			lines := strings.Split(strings.TrimSpace(added), "\n")
			if len(lines) < 2 || strings.Contains(added, "not expressible") {
				t.Errorf("%s %s: Express accepts it, but Render added:\n%s", name, r.ID, added)
			}
		}
	}
}

func TestRenderRejects(t *testing.T) {
	b, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	tests := map[string]*ruleset.RuleSet{
		"no rule set":                {},
		"an empty profile id":        {ProfileID: "", Default: ruleset.Allow},
		"a profile id with a space":  {ProfileID: "a b", Default: ruleset.Allow},
		"a profile id with a slash":  {ProfileID: "a/b", Default: ruleset.Allow},
		"a profile id ending in '-'": {ProfileID: "a-", Default: ruleset.Allow},
		"a deny-by-default rule set": {ProfileID: "x", Default: ruleset.Deny},
	}
	for name, rs := range tests {
		t.Run(name, func(t *testing.T) {
			if name == "no rule set" {
				rs = nil
			}
			if _, err := b.Render(rs); err == nil {
				t.Errorf("Render: no error, want one")
			}
		})
	}
}

func TestNew(t *testing.T) {
	if b, err := New(Config{}); err != nil || b.cfg.ABI != ABI30 {
		t.Errorf("New(Config{}) = %+v, %v; want abi %s", b, err, ABI30)
	}
	if _, err := New(Config{ABI: "4.0"}); err == nil {
		t.Errorf("New with abi 4.0: no error, want one")
	}
	b, _ := New(Config{})
	if b.Enforcer() != v1alpha1.EnforcerAppArmor {
		t.Errorf("Enforcer() = %s", b.Enforcer())
	}
	if got := ProfileName("p-1"); got != "podarmor-p-1" {
		t.Errorf("ProfileName = %q", got)
	}
}
