package catalog

import (
	"bufio"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/podarmor/podarmor/policies/api/v1alpha1"
	"github.com/podarmor/podarmor/policies/pattern"
)

func load(t *testing.T) *Catalog {
	t.Helper()
	c, err := Load()
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return c
}

func TestLoadOrdersYAMLEntriesBeforeGeneratedOnes(t *testing.T) {
	entries := load(t).Entries()
	generated := capabilityEntries()
	if len(entries) <= len(generated) {
		t.Fatalf("Load returned %d entries, of which %d are generated: catalog.yaml added none", len(entries), len(generated))
	}
	yamlPart := entries[:len(entries)-len(generated)]
	for _, e := range yamlPart {
		if e.Category == CategoryCapability {
			t.Errorf("%s: category capability belongs to the generated entries, not catalog.yaml", e.Name)
		}
	}
	if yamlPart[0].Name != "runtime-default-proc-write" {
		t.Errorf("first entry is %s, want the first entry of catalog.yaml, runtime-default-proc-write", yamlPart[0].Name)
	}
	for i, g := range generated {
		if got := entries[len(yamlPart)+i].Name; got != g.Name {
			t.Errorf("entry %d is %s, want generated entry %s", len(yamlPart)+i, got, g.Name)
		}
	}
}

func TestEntriesAreWellFormed(t *testing.T) {
	seen := map[string]bool{}
	for _, e := range load(t).Entries() {
		if seen[e.Name] {
			t.Errorf("%s: name used twice", e.Name)
		}
		seen[e.Name] = true
		if len(e.Name) > 63 || !dnsLabel.MatchString(e.Name) {
			t.Errorf("%q: name is not a DNS label", e.Name)
		}
		if !slices.Contains(Categories(), e.Category) {
			t.Errorf("%s: category %q is not one of %v", e.Name, e.Category, Categories())
		}
		d := e.Description
		switch {
		case d == "" || strings.ContainsAny(d, "\r\n"):
			t.Errorf("%s: description %q is not one line", e.Name, d)
		case strings.HasSuffix(d, "."):
			t.Errorf("%s: description ends with a period", e.Name)
		case !strings.HasPrefix(d, "Blocks "):
			t.Errorf("%s: description %q does not start with \"Blocks \"", e.Name, d)
		case len(d) > 200:
			t.Errorf("%s: description is %d bytes long; keep it to one readable line (200)", e.Name, len(d))
		}
		if strings.Contains(e.Notes, "\n") {
			t.Errorf("%s: notes hold a line break; write them as one paragraph", e.Name)
		}
		for _, r := range e.References {
			if !cveID.MatchString(r) && !strings.HasPrefix(r, "https://") {
				t.Errorf("%s: reference %q is neither a CVE id nor an https link", e.Name, r)
			}
		}
	}
}

// pathsOf returns every path pattern of an entry, keyed by where it is.
func pathsOf(r v1alpha1.CustomRules) map[string][]string {
	out := map[string][]string{}
	for _, f := range r.Files {
		out["files"] = append(out["files"], f.Paths...)
	}
	for _, x := range r.Exec {
		out["exec"] = append(out["exec"], x.Paths...)
	}
	for _, m := range r.Mounts {
		out["mount sources"] = append(out["mount sources"], m.Sources...)
		out["mount targets"] = append(out["mount targets"], m.Targets...)
	}
	return out
}

func TestEveryPathPatternParses(t *testing.T) {
	n := 0
	for _, e := range load(t).Entries() {
		for where, ps := range pathsOf(e.Rules) {
			for _, p := range ps {
				n++
				if _, err := pattern.Parse(p); err != nil {
					t.Errorf("%s: %s pattern %q: %v", e.Name, where, p, err)
				}
			}
		}
	}
	if n == 0 {
		t.Fatal("the catalog holds no path patterns")
	}
}

func TestEveryEgressAddressIsAnAddressPrefixOrPlaceholder(t *testing.T) {
	for _, e := range load(t).Entries() {
		for _, nw := range e.Rules.Network {
			if nw.Egress == nil {
				continue
			}
			for _, a := range nw.Egress.Addresses {
				if err := checkAddress(a); err != nil {
					t.Errorf("%s: egress address %q: %v", e.Name, a, err)
				}
			}
			for _, p := range nw.Egress.Ports {
				if p.Port < 1 || p.Port > 65535 || (p.EndPort != nil && (*p.EndPort < p.Port || *p.EndPort > 65535)) {
					t.Errorf("%s: egress port %+v is out of range", e.Name, p)
				}
			}
		}
	}
	for _, bad := range []string{"$APISERVERS", "169.254.169.254/16", "fe80::1%eth0", "metadata.google.internal", ""} {
		if checkAddress(bad) == nil {
			t.Errorf("checkAddress(%q) = nil, want an error", bad)
		}
	}
}

// apiEnums reads the +kubebuilder:validation:Enum markers of the API, which are what the
// CRD accepts: type name to values.
func apiEnums(t *testing.T) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, file := range []string{"../api/v1alpha1/rules.go", "../api/v1alpha1/types.go"} {
		f, err := os.Open(file)
		if err != nil {
			t.Fatalf("read the API's enum markers: %v", err)
		}
		var values []string
		typeLine := regexp.MustCompile(`^type (\w+) string`)
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if v, ok := strings.CutPrefix(line, "// +kubebuilder:validation:Enum="); ok {
				values = strings.Split(v, ";")
				continue
			}
			if m := typeLine.FindStringSubmatch(line); m != nil && values != nil {
				out[m[1]] = values
			}
			if !strings.HasPrefix(line, "//") {
				values = nil
			}
		}
		f.Close()
		if err := sc.Err(); err != nil {
			t.Fatalf("read %s: %v", file, err)
		}
	}
	for _, typ := range []string{"Enforcer", "FilePermission", "SocketFamily", "SocketType", "Protocol",
		"Capability", "PtracePermission", "PtracePeers", "MountOperation", "MountFlag", "SyscallArgOp", "Operation"} {
		if len(out[typ]) == 0 {
			t.Fatalf("no enum marker found for v1alpha1.%s", typ)
		}
	}
	return out
}

func TestEveryEnumValueIsOneTheAPIAccepts(t *testing.T) {
	enums := apiEnums(t)
	for _, e := range load(t).Entries() {
		bad := func(typ, v string) {
			if !slices.Contains(enums[typ], v) {
				t.Errorf("%s: %q is not a v1alpha1.%s (%v)", e.Name, v, typ, enums[typ])
			}
		}
		r := e.Rules
		for _, v := range e.Enforcers {
			bad("Enforcer", string(v))
		}
		for _, f := range r.Files {
			for _, v := range f.Permissions {
				bad("FilePermission", string(v))
			}
		}
		for _, nw := range r.Network {
			if s := nw.Sockets; s != nil {
				for _, v := range s.Families {
					bad("SocketFamily", string(v))
				}
				for _, v := range s.Types {
					bad("SocketType", string(v))
				}
				for _, v := range s.Protocols {
					bad("Protocol", string(v))
				}
			}
			if eg := nw.Egress; eg != nil {
				for _, v := range eg.Protocols {
					bad("Protocol", string(v))
				}
			}
		}
		for _, c := range r.Capabilities {
			for _, v := range c.Capabilities {
				bad("Capability", string(v))
			}
		}
		for _, p := range r.Ptrace {
			for _, v := range p.Permissions {
				bad("PtracePermission", string(v))
			}
			if p.Peers != "" {
				bad("PtracePeers", string(p.Peers))
			}
		}
		for _, m := range r.Mounts {
			for _, v := range m.Operations {
				bad("MountOperation", string(v))
			}
			for _, v := range m.Flags {
				bad("MountFlag", string(v))
			}
			for _, fs := range m.FSTypes {
				if !regexp.MustCompile(`^[a-z0-9][a-z0-9._-]*$`).MatchString(fs) {
					t.Errorf("%s: %q is not a filesystem type name", e.Name, fs)
				}
			}
		}
		for _, o := range r.Operations {
			for _, v := range o.Operations {
				bad("Operation", string(v))
			}
		}
		for _, s := range r.Syscalls {
			for i, a := range s.Args {
				if slices.ContainsFunc(s.Args[:i], func(b v1alpha1.SyscallArg) bool { return b.Index == a.Index }) {
					t.Errorf("%s: argument %d compared twice in one rule, which runc and crun OR instead of AND", e.Name, a.Index)
				}
				bad("SyscallArgOp", string(a.Op))
				if a.Index < 0 || a.Index > 5 || a.Value < 0 || a.ValueTwo < 0 || a.Value > 1<<32-1 || a.ValueTwo > 1<<32-1 {
					t.Errorf("%s: system call argument %+v is out of range (seccomp profiles also filter 32-bit ABIs)", e.Name, a)
				}
				if a.Op == "MaskedEqual" && a.ValueTwo&^a.Value != 0 {
					t.Errorf("%s: system call argument %+v: valueTwo has bits outside the mask", e.Name, a)
				}
				if a.Op != "MaskedEqual" && a.ValueTwo != 0 {
					t.Errorf("%s: system call argument %+v: valueTwo is for MaskedEqual only", e.Name, a)
				}
			}
		}
	}
}

// expressers says which enforcers express each rule of r exactly. It mirrors the
// compiler's backends (policies/compile/bpf, apparmor and seccomp) in their default
// configuration, which is what `podarmor rules` and the compiler's tests check the
// declarations against:
//
//   - BPF: every kind but syscalls;
//   - AppArmor: files whose permissions, leaving link aside, are none, append alone,
//     every change or every access; exec; capabilities but CHECKPOINT_RESTORE; ptrace
//     trace and read towards any peer; umount and pivotroot without fsTypes, flags or
//     sources; sockets naming families, none of them unix, and no protocols;
//   - Seccomp: syscalls; operations; mounts that name only operations; sockets when the
//     match is empty (its profiles filter the i386 ABI, where socket arguments cannot
//     be read).
func expressers(r v1alpha1.CustomRules) [][]v1alpha1.Enforcer {
	const bpf, aa, sc = v1alpha1.EnforcerBPF, v1alpha1.EnforcerAppArmor, v1alpha1.EnforcerSeccomp
	change := []v1alpha1.FilePermission{"write", "append", "create", "delete", "rename", "chmod", "chown"}
	access := append([]v1alpha1.FilePermission{"read"}, change...)
	sameSet := func(a, b []v1alpha1.FilePermission) bool {
		return len(a) == len(b) && !slices.ContainsFunc(a, func(p v1alpha1.FilePermission) bool { return !slices.Contains(b, p) })
	}

	var out [][]v1alpha1.Enforcer
	add := func(appArmor, seccomp bool) {
		set := []v1alpha1.Enforcer{bpf}
		if appArmor {
			set = append(set, aa)
		}
		if seccomp {
			set = append(set, sc)
		}
		out = append(out, set)
	}
	for _, f := range r.Files {
		perms := slices.DeleteFunc(slices.Clone(f.Permissions), func(p v1alpha1.FilePermission) bool { return p == "link" })
		add(len(perms) == 0 || sameSet(perms, []v1alpha1.FilePermission{"append"}) ||
			sameSet(perms, change) || sameSet(perms, access), false)
	}
	for range r.Exec {
		add(true, false)
	}
	for _, nw := range r.Network {
		if nw.Egress != nil {
			add(false, false)
			continue
		}
		s := nw.Sockets
		add(len(s.Protocols) == 0 && len(s.Families) > 0 && !slices.Contains(s.Families, "unix"),
			len(s.Families)+len(s.Types)+len(s.Protocols) == 0)
	}
	for _, c := range r.Capabilities {
		add(!slices.Contains(c.Capabilities, "CHECKPOINT_RESTORE"), false)
	}
	for _, p := range r.Ptrace {
		add(p.Peers == v1alpha1.PtraceAnyPeer && !slices.ContainsFunc(p.Permissions, func(x v1alpha1.PtracePermission) bool {
			return x == v1alpha1.PtraceTracedBy || x == v1alpha1.PtraceReadBy
		}), false)
	}
	for _, m := range r.Mounts {
		onlyOps := len(m.FSTypes)+len(m.Flags)+len(m.Sources)+len(m.Targets) == 0
		ops := m.Operations
		if len(ops) == 0 {
			ops = []v1alpha1.MountOperation{v1alpha1.MountMount}
		}
		appArmor := !slices.Contains(ops, v1alpha1.MountMount) && len(m.FSTypes)+len(m.Flags)+len(m.Sources) == 0 &&
			(len(m.Targets) == 0 || !slices.Contains(ops, v1alpha1.MountPivotRoot))
		add(appArmor, onlyOps)
	}
	for range r.Operations {
		add(false, true)
	}
	for range r.Syscalls {
		out = append(out, []v1alpha1.Enforcer{sc})
	}
	return out
}

func TestEnforcersAreThoseThatExpressARule(t *testing.T) {
	for _, e := range load(t).Entries() {
		per := expressers(e.Rules)
		var want []v1alpha1.Enforcer
		for _, enf := range v1alpha1.Enforcers {
			some, all := false, true
			for _, set := range per {
				if slices.Contains(set, enf) {
					some = true
				} else {
					all = false
				}
			}
			if some {
				want = append(want, enf)
			}
			if some && !all && !strings.Contains(e.Notes, string(enf)) {
				t.Errorf("%s: %s expresses only some of the rules, and the notes do not say which", e.Name, enf)
			}
		}
		if !slices.Equal(e.Enforcers, want) {
			t.Errorf("%s: enforcers are %v, want %v (every enforcer that expresses at least one rule)", e.Name, e.Enforcers, want)
		}
	}
}

// syscallHeaders returns the system call names of x86-64 and of arm64 (the generic table
// without its 32-bit-only calls), read from the kernel headers installed for C.
func syscallHeaders(t *testing.T) map[string]bool {
	t.Helper()
	const x86, generic = "/usr/include/x86_64-linux-gnu/asm/unistd_64.h", "/usr/include/asm-generic/unistd.h"
	names := map[string]bool{}
	define := regexp.MustCompile(`^#define __NR(?:3264)?_(\w+)\s+\d+`)
	for _, file := range []string{x86, generic} {
		data, err := os.ReadFile(file)
		if err != nil {
			skipUnlessCI(t, "kernel headers to check system call names against are not installed (%v); the hack/deps.sh environment has them", err)
		}
		// Skip what the generic table defines only for 32-bit architectures.
		var only32 []bool
		for _, line := range strings.Split(string(data), "\n") {
			line = strings.TrimSpace(line)
			switch {
			case strings.HasPrefix(line, "#if"):
				only32 = append(only32, strings.Contains(line, "__BITS_PER_LONG == 32") && !strings.Contains(line, "!="))
			case strings.HasPrefix(line, "#else") && len(only32) > 0:
				only32[len(only32)-1] = false
			case strings.HasPrefix(line, "#endif") && len(only32) > 0:
				only32 = only32[:len(only32)-1]
			}
			if m := define.FindStringSubmatch(line); m != nil && !slices.Contains(only32, true) {
				names[m[1]] = true
			}
		}
	}
	return names
}

func TestSyscallNamesExistOnX8664OrArm64(t *testing.T) {
	c := load(t)
	known := syscallHeaders(t)
	for _, e := range c.Entries() {
		for _, s := range e.Rules.Syscalls {
			for _, n := range s.Names {
				if !known[n] {
					t.Errorf("%s: system call %q exists on neither x86-64 nor arm64", e.Name, n)
				}
			}
		}
	}
}

// deniesSyscall reports whether e denies the system call name unconditionally.
func deniesSyscall(e Entry, name string) bool {
	for _, s := range e.Rules.Syscalls {
		if len(s.Args) == 0 && slices.Contains(s.Names, name) {
			return true
		}
	}
	return false
}

func TestRuntimeDefaultDeniesWhatTheDefaultSeccompProfileDenies(t *testing.T) {
	c := load(t)
	// The system calls the default seccomp profile of Docker and containerd refuses an
	// unprivileged container, as the catalog's brief listed them.
	listed := []string{
		"acct", "add_key", "bpf", "clock_adjtime", "clock_settime", "create_module", "delete_module",
		"finit_module", "get_kernel_syms", "init_module", "ioperm", "iopl", "kcmp", "kexec_file_load",
		"kexec_load", "keyctl", "lookup_dcookie", "mount", "move_pages", "name_to_handle_at",
		"nfsservctl", "open_by_handle_at", "perf_event_open", "pivot_root", "process_vm_readv",
		"process_vm_writev", "ptrace", "query_module", "quotactl", "reboot", "request_key", "setns",
		"settimeofday", "stime", "swapon", "swapoff", "sysfs", "_sysctl", "umount", "umount2",
		"unshare", "uselib", "userfaultfd", "ustat", "vm86", "vm86old", "fsopen", "fsconfig",
		"fsmount", "move_mount", "open_tree", "fspick", "mount_setattr", "clock_settime64",
		"io_uring_setup", "io_uring_enter", "io_uring_register",
	}
	// The ones runtime-default leaves out, why, and the entry that denies them instead
	// ("" when the call has no number on x86-64 or arm64).
	elsewhere := map[string]struct{ why, entry string }{
		"clock_adjtime":     {"the current profile allows it; the kernel checks CAP_SYS_TIME", "disallow-clock-syscalls"},
		"name_to_handle_at": {"the current profile allows it", "disallow-file-handles"},
		"ptrace":            {"the profile allows it on Linux 4.8 and later", "disallow-ptrace-syscalls"},
		"process_vm_readv":  {"the profile allows it on Linux 4.8 and later", "disallow-ptrace-syscalls"},
		"process_vm_writev": {"the profile allows it on Linux 4.8 and later", "disallow-ptrace-syscalls"},
		"stime":             {"32-bit x86 only", ""},
		"umount":            {"32-bit only", ""},
		"vm86":              {"32-bit x86 only", ""},
		"vm86old":           {"32-bit x86 only", ""},
		"clock_settime64":   {"32-bit only", ""},
	}
	rd := c.RuntimeDefault()
	for _, name := range listed {
		if alt, ok := elsewhere[name]; ok {
			for _, e := range rd {
				if deniesSyscall(e, name) {
					t.Errorf("%s: denies %s, which runtime-default leaves out: %s", e.Name, name, alt.why)
				}
			}
			if alt.entry != "" {
				if e, ok := c.Lookup(alt.entry); !ok || !deniesSyscall(e, name) {
					t.Errorf("%s does not deny %s", alt.entry, name)
				}
			}
			continue
		}
		if !slices.ContainsFunc(rd, func(e Entry) bool { return deniesSyscall(e, name) }) {
			t.Errorf("no runtime-default entry denies %s", name)
		}
	}
}

func TestCapabilityTableMatchesTheAPI(t *testing.T) {
	want := apiEnums(t)["Capability"]
	var got []string
	for _, c := range capabilities {
		got = append(got, string(c.name))
	}
	if !slices.Equal(got, want) {
		t.Errorf("capability table:\n got %v\nwant %v (the v1alpha1.Capability enum, in kernel order)", got, want)
	}
	if len(capabilities) != 41 {
		t.Errorf("%d capabilities, want 41", len(capabilities))
	}
	for _, d := range runtimeDefaultCapabilities {
		if !slices.Contains(want, string(d)) {
			t.Errorf("runtime default capability %s is not a capability", d)
		}
	}
}

func TestEveryCapabilityHasAnEntry(t *testing.T) {
	c := load(t)
	for _, cp := range capabilities {
		name := capabilityEntryName(cp.name)
		e, ok := c.Lookup(name)
		if !ok {
			t.Errorf("no entry %s for CAP_%s", name, cp.name)
			continue
		}
		if len(e.Rules.Capabilities) != 1 || !slices.Equal(e.Rules.Capabilities[0].Capabilities, []v1alpha1.Capability{cp.name}) {
			t.Errorf("%s: rules %+v, want one rule denying %s", name, e.Rules, cp.name)
		}
	}
	if e, _ := c.Lookup("disallow-cap-sys-admin"); e.Rules.Capabilities[0].Capabilities[0] != "SYS_ADMIN" {
		t.Errorf("disallow-cap-sys-admin denies %v", e.Rules.Capabilities)
	}

	denied := func(name string) []v1alpha1.Capability {
		e, ok := c.Lookup(name)
		if !ok || len(e.Rules.Capabilities) == 0 {
			t.Fatalf("%s: missing or without capability rules", name)
		}
		var out []v1alpha1.Capability
		for _, r := range e.Rules.Capabilities {
			out = append(out, r.Capabilities...)
		}
		return out
	}
	all := denied("disallow-cap-all")
	if len(all) != 41 {
		t.Errorf("disallow-cap-all denies %d capabilities, want 41", len(all))
	}
	if got := denied("disallow-cap-all-except-net-bind-service"); len(got) != 40 || slices.Contains(got, "NET_BIND_SERVICE") {
		t.Errorf("disallow-cap-all-except-net-bind-service denies %v", got)
	}
	beyond := denied("disallow-cap-beyond-runtime-default")
	if len(beyond) != 41-14 {
		t.Errorf("disallow-cap-beyond-runtime-default denies %d capabilities, want 27", len(beyond))
	}
	for _, d := range []v1alpha1.Capability{"CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW",
		"SETGID", "SETUID", "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE"} {
		if slices.Contains(beyond, d) {
			t.Errorf("disallow-cap-beyond-runtime-default denies %s, which runtimes grant by default", d)
		}
	}
	for _, x := range []v1alpha1.Capability{"SYS_ADMIN", "SYS_MODULE", "SYS_PTRACE", "NET_ADMIN", "BPF", "DAC_READ_SEARCH"} {
		if !slices.Contains(beyond, x) {
			t.Errorf("disallow-cap-beyond-runtime-default allows %s", x)
		}
	}
}

func TestEveryBehaviourHasItsEntries(t *testing.T) {
	behaviours := map[string][]string{
		// runtime-default
		"runtime default: writes to /proc files and /proc/sys are denied":                   {"runtime-default-proc-write"},
		"runtime default: /proc/kcore and /proc/sysrq-trigger are neither read nor written": {"runtime-default-hidden-paths"},
		"runtime default: writes under /sys outside /sys/fs/cgroup are denied":              {"runtime-default-sys-write"},
		"runtime default: /sys/kernel/security and /sys/firmware are neither read nor written": {
			"runtime-default-hidden-paths"},
		"runtime default: mount, umount and pivot_root are denied":             {"runtime-default-mount"},
		"runtime default: ptrace of processes outside the container is denied": {"runtime-default-ptrace"},
		"runtime default: the default seccomp profile's blocked system calls are denied": {
			"runtime-default-syscalls-kernel-code", "runtime-default-syscalls-system",
			"runtime-default-syscalls-namespaces", "runtime-default-syscalls-keyring",
			"runtime-default-syscalls-process-memory", "runtime-default-syscalls-kernel-interfaces",
			"runtime-default-syscalls-io-uring"},
		"runtime default: creating user namespaces is denied": {"runtime-default-userns"},
		"runtime default: AF_VSOCK sockets are denied":        {"runtime-default-vsock"},

		// escape and hardening
		"writes to core_pattern are denied":                                  {"disallow-write-core-pattern"},
		"writes to kernel helper paths (modprobe, uevent_helper) are denied": {"disallow-write-kernel-helpers"},
		"writes to sysrq-trigger are denied":                                 {"disallow-write-sysrq-trigger"},
		"writes to a cgroup release_agent anywhere are denied":               {"disallow-write-release-agent"},
		"writes to devices.allow are denied":                                 {"disallow-write-devices-allow"},
		"writes to cgroup.procs are denied":                                  {"disallow-write-cgroup-procs"},
		"mounting procfs is denied":                                          {"disallow-mount-procfs"},
		"mounting sysfs is denied":                                           {"disallow-mount-sysfs"},
		"mounting securityfs is denied":                                      {"disallow-mount-securityfs"},
		"mounting cgroup and cgroup2 is denied":                              {"disallow-mount-cgroupfs"},
		"mounting host disk devices is denied":                               {"disallow-mount-host-disk"},
		"mounting debugfs, devtmpfs and other kernel interfaces is denied":   {"disallow-mount-kernel-interfaces"},
		"any mount is denied":                                                {"disallow-mount"},
		"umount is denied":                                                   {"disallow-umount"},
		"pivot_root is denied":                                               {"disallow-pivot-root"},
		"raw reads and writes of host disk device nodes are denied":          {"disallow-access-host-disk"},
		"loading kernel modules is denied":                                   {"disallow-load-kernel-module"},
		"loading BPF programs is denied":                                     {"disallow-load-bpf"},
		"creating user namespaces is denied":                                 {"disallow-create-userns"},
		"userfaultfd, the system call and the device, is denied":             {"disallow-userfaultfd"},
		"io_uring is denied":                                                 {"disallow-io-uring"},
		"perf_event_open is denied":                                          {"disallow-perf-event"},
		"ptrace system calls are denied":                                     {"disallow-ptrace-syscalls"},
		"changing the clock is denied":                                       {"disallow-clock-syscalls"},
		"opening files by handle is denied":                                  {"disallow-file-handles"},
		"reading /proc/kallsyms is denied":                                   {"disallow-read-kallsyms"},
		"other processes' /proc/<pid>/root and mem are out of reach":         {"disallow-proc-root-mem-outside-container"},
		"creating device nodes is denied":                                    {"disallow-mknod"},

		// information leaks
		"reading service-account tokens is denied": {"disallow-read-serviceaccount-token"},
		"reading /proc/partitions is denied":       {"disallow-read-proc-partitions"},
		"reading mountinfo and mounts is denied":   {"disallow-read-mountinfo"},
		"reading the ARP table is denied":          {"disallow-read-arp-table"},
		"each cloud's metadata service is blocked": {
			"disallow-cloud-metadata-aws", "disallow-cloud-metadata-gcp", "disallow-cloud-metadata-azure",
			"disallow-cloud-metadata-alibaba", "disallow-cloud-metadata-oracle",
			"disallow-cloud-metadata-volcengine"},
		"every cloud's metadata service is blocked by one entry": {"disallow-cloud-metadata-all"},
		"the API server's service address is blocked":            {"disallow-egress-apiserver"},

		// sensitive operations
		"writes under /etc are denied":                            {"disallow-write-etc"},
		"writes to passwd, shadow, group and gshadow are denied":  {"disallow-write-account-files"},
		"reading /etc/shadow is denied":                           {"disallow-read-shadow"},
		"SSH keys and configuration are neither read nor written": {"disallow-access-ssh"},
		"container runtime sockets are out of reach":              {"disallow-access-runtime-sockets"},
		"running shells is denied":                                {"disallow-exec-shell"},
		"running busybox, wget, curl, su, sudo and chmod is denied": {
			"disallow-exec-busybox", "disallow-exec-wget", "disallow-exec-curl", "disallow-exec-su",
			"disallow-exec-sudo", "disallow-exec-chmod"},
		"setting setuid and setgid bits is denied":  {"disallow-chmod-setuid"},
		"every socket family except unix is denied": {"disallow-network"},
		"every socket family is denied":             {"disallow-network-all-families"},
		"sockets are denied by family": {
			"disallow-network-inet", "disallow-network-inet6", "disallow-network-unix",
			"disallow-network-netlink", "disallow-network-packet", "disallow-network-alg"},
		"sockets are denied by protocol": {"disallow-network-tcp", "disallow-network-udp", "disallow-network-icmp"},
		"raw sockets are denied":         {"disallow-network-raw"},

		// vulnerabilities
		"runc binary overwrite (CVE-2019-5736) is mitigated":          {"mitigate-cve-2019-5736-runc-overwrite"},
		"dirty pipe (CVE-2022-0847) is mitigated":                     {"mitigate-cve-2022-0847-dirty-pipe"},
		"the release_agent escape (CVE-2022-0492) is mitigated":       {"mitigate-cve-2022-0492-release-agent"},
		"AF_ALG sockets are denied to reduce kernel attack surface":   {"mitigate-af-alg-kernel-bugs"},
		"ingress-nightmare (CVE-2025-1974) is mitigated":              {"mitigate-cve-2025-1974-ingress-nightmare"},
		"every capability can be denied at once":                      {"disallow-cap-all"},
		"every capability but NET_BIND_SERVICE can be denied":         {"disallow-cap-all-except-net-bind-service"},
		"capabilities beyond the runtime's default set can be denied": {"disallow-cap-beyond-runtime-default"},
	}
	c := load(t)
	for behaviour, names := range behaviours {
		for _, name := range names {
			if _, ok := c.Lookup(name); !ok {
				t.Errorf("%s: entry %s is missing", behaviour, name)
			}
		}
	}
}

// denies reports whether entry e denies perm on path through one of its file rules.
func deniesFile(e Entry, path string, perm v1alpha1.FilePermission) bool {
	for _, f := range e.Rules.Files {
		if !slices.Contains(f.Permissions, perm) {
			continue
		}
		for _, p := range f.Paths {
			if pat, err := pattern.Parse(p); err == nil && pat.Match(path) {
				return true
			}
		}
	}
	return false
}

func deniesExec(e Entry, path string) bool {
	for _, x := range e.Rules.Exec {
		for _, p := range x.Paths {
			if pat, err := pattern.Parse(p); err == nil && pat.Match(path) {
				return true
			}
		}
	}
	return false
}

func TestPathRulesMatchWhatTheyAreAbout(t *testing.T) {
	tests := map[string]struct {
		entry string
		path  string
		perm  v1alpha1.FilePermission // "" for exec
		deny  bool
	}{
		"runtime default denies writing a kernel sysctl":              {"runtime-default-proc-write", "/proc/sys/kernel/core_pattern", "write", true},
		"runtime default denies writing a network sysctl":             {"runtime-default-proc-write", "/proc/sys/net/ipv4/ip_forward", "write", true},
		"runtime default denies writing IRQ affinity":                 {"runtime-default-proc-write", "/proc/irq/1/smp_affinity", "write", true},
		"runtime default denies writing a file directly in /proc":     {"runtime-default-proc-write", "/proc/sysrq-trigger", "write", true},
		"runtime default lets a process write its own oom_score_adj":  {"runtime-default-proc-write", "/proc/1234/oom_score_adj", "write", false},
		"runtime default lets a process read /proc/sys":               {"runtime-default-proc-write", "/proc/sys/kernel/hostname", "read", false},
		"runtime default denies writing uevent_helper":                {"runtime-default-sys-write", "/sys/kernel/uevent_helper", "write", true},
		"runtime default denies pinning into bpffs":                   {"runtime-default-sys-write", "/sys/fs/bpf/x", "create", true},
		"runtime default denies changing a network device's settings": {"runtime-default-sys-write", "/sys/class/net/eth0/mtu", "write", true},
		"runtime default leaves cgroupfs writable":                    {"runtime-default-sys-write", "/sys/fs/cgroup/memory.max", "write", false},
		"runtime default leaves /sys readable":                        {"runtime-default-sys-write", "/sys/class/net/eth0/mtu", "read", false},
		"runtime default hides /proc/kcore":                           {"runtime-default-hidden-paths", "/proc/kcore", "read", true},
		"runtime default hides the RAPL energy counters":              {"runtime-default-hidden-paths", "/sys/devices/virtual/powercap/intel-rapl/intel-rapl:0/energy_uj", "read", true},
		"runtime default hides the thermal throttle counters":         {"runtime-default-hidden-paths", "/sys/devices/system/cpu/cpu3/thermal_throttle/core_throttle_count", "read", true},
		"runtime default hides securityfs":                            {"runtime-default-hidden-paths", "/sys/kernel/security/apparmor/policy/profiles", "read", true},
		"runtime default hides EFI variables":                         {"runtime-default-hidden-paths", "/sys/firmware/efi/efivars/x", "write", true},
		"runtime default leaves /proc/cpuinfo readable":               {"runtime-default-hidden-paths", "/proc/cpuinfo", "read", false},
		"release_agent is matched in the usual cgroup v1 mount":       {"disallow-write-release-agent", "/sys/fs/cgroup/rdma/release_agent", "write", true},
		"release_agent is matched in a cgroupfs mounted anywhere":     {"disallow-write-release-agent", "/tmp/cgrp/release_agent", "write", true},
		"cgroup.procs is matched in a nested cgroup":                  {"disallow-write-cgroup-procs", "/sys/fs/cgroup/kubepods/pod1/cgroup.procs", "write", true},
		"a cgroup v1 tasks file is matched under /sys/fs/cgroup":      {"disallow-write-cgroup-procs", "/sys/fs/cgroup/cpu/tasks", "append", true},
		"a file named tasks elsewhere is left alone":                  {"disallow-write-cgroup-procs", "/app/tasks", "write", false},
		"a SCSI disk partition is a host disk":                        {"disallow-access-host-disk", "/dev/sda1", "read", true},
		"an NVMe namespace is a host disk":                            {"disallow-access-host-disk", "/dev/nvme0n1p1", "write", true},
		"an LVM volume is a host disk":                                {"disallow-access-host-disk", "/dev/mapper/vg-root", "read", true},
		"/dev/shm is not a host disk":                                 {"disallow-access-host-disk", "/dev/shm/x", "write", false},
		"/dev/null is not a host disk":                                {"disallow-access-host-disk", "/dev/null", "write", false},
		"the projected service-account token is matched":              {"disallow-read-serviceaccount-token", "/run/secrets/kubernetes.io/serviceaccount/..2024_01_01/token", "read", true},
		"a thread's mountinfo is matched":                             {"disallow-read-mountinfo", "/proc/42/task/43/mountinfo", "read", true},
		"a process's mounts is matched":                               {"disallow-read-mountinfo", "/proc/42/mounts", "read", true},
		"a process's status is left alone":                            {"disallow-read-mountinfo", "/proc/42/status", "read", false},
		"a process's ARP table is matched":                            {"disallow-read-arp-table", "/proc/42/net/arp", "read", true},
		"a user's authorized_keys is matched":                         {"disallow-access-ssh", "/home/alice/.ssh/authorized_keys", "write", true},
		"root's private key is matched":                               {"disallow-access-ssh", "/root/.ssh/id_ed25519", "read", true},
		"the docker socket is matched":                                {"disallow-access-runtime-sockets", "/run/docker.sock", "write", true},
		"replacing /etc/passwd by rename is matched":                  {"disallow-write-account-files", "/etc/passwd", "rename", true},
		"runc in /usr/local/sbin is matched":                          {"mitigate-cve-2019-5736-runc-overwrite", "/usr/local/sbin/runc", "write", true},
		"the runc shim is matched":                                    {"mitigate-cve-2019-5736-runc-overwrite", "/usr/bin/containerd-shim-runc-v2", "write", true},
		"a file whose name only starts with runc is left alone":       {"mitigate-cve-2019-5736-runc-overwrite", "/usr/bin/runcat", "write", false},
		"bash is a shell":                                             {"disallow-exec-shell", "/usr/bin/bash", "", true},
		"sh in /bin is a shell":                                       {"disallow-exec-shell", "/bin/sh", "", true},
		"bashbug is not a shell":                                      {"disallow-exec-shell", "/usr/bin/bashbug", "", false},
		"python is not a shell":                                       {"disallow-exec-shell", "/usr/bin/python3", "", false},
		"busybox in /bin is matched":                                  {"disallow-exec-busybox", "/bin/busybox", "", true},
		"the sysrq switch is matched as well as the trigger":          {"disallow-write-sysrq-trigger", "/proc/sys/kernel/sysrq", "write", true},
		"binfmt_misc registration is matched":                         {"disallow-write-kernel-helpers", "/proc/sys/fs/binfmt_misc/register", "write", true},
	}
	c := load(t)
	for name, tc := range tests {
		e, ok := c.Lookup(tc.entry)
		if !ok {
			t.Errorf("%s: no entry %s", name, tc.entry)
			continue
		}
		var got bool
		if tc.perm == "" {
			got = deniesExec(e, tc.path)
		} else {
			got = deniesFile(e, tc.path, tc.perm)
		}
		if got != tc.deny {
			t.Errorf("%s: %s denies %s %s = %v, want %v", name, tc.entry, tc.perm, tc.path, got, tc.deny)
		}
	}
}

func TestParseIsStrict(t *testing.T) {
	const good = `
entries:
  - name: disallow-thing
    category: hardening
    description: Blocks a thing
    enforcers: [BPF]
    rules:
      files:
        - paths: [/a]
          permissions: [read]
`
	if _, err := parse([]byte(good)); err != nil {
		t.Fatalf("parse of a good snippet: %v", err)
	}
	tests := map[string]struct {
		yaml string
		want []string // substrings of the error
	}{
		"an unknown field of an entry is named with the entry": {
			strings.Replace(good, "description:", "descripton:", 1), []string{`"disallow-thing"`, "descripton"}},
		"an unknown field of a rule is named with the entry": {
			strings.Replace(good, "permissions: [read]", "permissions: [read]\n          mode: strict", 1), []string{`"disallow-thing"`, "mode"}},
		"a field spelt with the wrong case is unknown": {
			strings.Replace(good, "paths:", "Paths:", 1), []string{`"disallow-thing"`, "Paths"}},
		"a field of the wrong type is an error": {
			strings.Replace(good, "enforcers: [BPF]", "enforcers: BPF", 1), []string{`"disallow-thing"`, "enforcers"}},
		"a repeated field is an error": {
			strings.Replace(good, "category: hardening", "category: hardening\n    category: escape", 1), []string{"category"}},
		"an unknown top-level field is an error": {
			good + "version: 2\n", []string{"version"}},
		"a catalog without entries is an error": {
			"entries: []\n", []string{"no entries"}},
	}
	for name, tc := range tests {
		_, err := parse([]byte(tc.yaml))
		if err == nil {
			t.Errorf("%s: parse succeeded", name)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not mention %s", name, err, w)
			}
		}
	}
}

func TestBuildRejectsBadEntries(t *testing.T) {
	good := func() Entry {
		return Entry{
			Name: "disallow-thing", Category: CategoryHardening, Description: "Blocks a thing",
			Enforcers: []v1alpha1.Enforcer{v1alpha1.EnforcerBPF, v1alpha1.EnforcerAppArmor},
			Rules: v1alpha1.CustomRules{
				Files: []v1alpha1.FileRule{{Paths: []string{"/a/**"}, Permissions: []v1alpha1.FilePermission{"read"}}},
				Network: []v1alpha1.NetworkRule{{Egress: &v1alpha1.EgressMatch{
					Addresses: []string{"10.0.0.0/8", "$APISERVER"}}}},
			},
			References: []string{"CVE-2022-0492", "https://docs.kernel.org/"},
		}
	}
	if _, err := build([]Entry{good()}); err != nil {
		t.Fatalf("build of a good entry: %v", err)
	}
	tests := map[string]struct {
		change func(*Entry)
		field  string
	}{
		"a name that is not a DNS label":          {func(e *Entry) { e.Name = "Disallow_Thing" }, "name"},
		"an unknown category":                     {func(e *Entry) { e.Category = "misc" }, "category"},
		"a description with a final period":       {func(e *Entry) { e.Description = "Blocks a thing." }, "description"},
		"a description of two lines":              {func(e *Entry) { e.Description = "Blocks a thing\nand another" }, "description"},
		"no enforcers":                            {func(e *Entry) { e.Enforcers = nil }, "enforcers"},
		"enforcers out of order":                  {func(e *Entry) { slices.Reverse(e.Enforcers) }, "enforcers[1]"},
		"an unknown enforcer":                     {func(e *Entry) { e.Enforcers = []v1alpha1.Enforcer{"SELinux"} }, "enforcers[0]"},
		"a reference that is neither CVE nor URL": {func(e *Entry) { e.References = []string{"see the wiki"} }, "references[0]"},
		"no rules":                              {func(e *Entry) { e.Rules = v1alpha1.CustomRules{} }, "rules"},
		"a relative path pattern":               {func(e *Entry) { e.Rules.Files[0].Paths[0] = "etc/passwd" }, "rules.files[0].paths[0]"},
		"a pattern with a reserved character":   {func(e *Entry) { e.Rules.Files[0].Paths[0] = "/etc/pass?d" }, "rules.files[0].paths[0]"},
		"a file rule without permissions":       {func(e *Entry) { e.Rules.Files[0].Permissions = nil }, "rules.files[0].permissions"},
		"an egress address that is a host name": {func(e *Entry) { e.Rules.Network[0].Egress.Addresses[0] = "metadata.google.internal" }, "rules.network[0].egress.addresses[0]"},
		"an unknown placeholder":                {func(e *Entry) { e.Rules.Network[0].Egress.Addresses[1] = "$NODE" }, "rules.network[0].egress.addresses[1]"},
		"a network rule with sockets and egress": {func(e *Entry) {
			e.Rules.Network[0].Sockets = &v1alpha1.SocketMatch{}
		}, "rules.network[0]"},
	}
	for name, tc := range tests {
		e := good()
		tc.change(&e)
		_, err := build([]Entry{e})
		if err == nil {
			t.Errorf("%s: build succeeded", name)
			continue
		}
		if !strings.Contains(err.Error(), `"`+e.Name+`"`) || !strings.Contains(err.Error(), tc.field+":") {
			t.Errorf("%s: error %q does not name the entry and the field %s", name, err, tc.field)
		}
	}

	if _, err := build([]Entry{good(), good()}); err == nil || !strings.Contains(err.Error(), "name") {
		t.Errorf("build of two entries with one name: error %v, want one about the name", err)
	}
}

func TestLookupAndRuntimeDefault(t *testing.T) {
	c := load(t)
	e, ok := c.Lookup("disallow-write-core-pattern")
	if !ok || e.Name != "disallow-write-core-pattern" || e.Category != CategoryEscape {
		t.Fatalf("Lookup(disallow-write-core-pattern) = %+v, %v", e, ok)
	}
	if _, ok := c.Lookup("no-such-rule"); ok {
		t.Error("Lookup of an unknown name succeeded")
	}

	rd := c.RuntimeDefault()
	if len(rd) == 0 {
		t.Fatal("no runtime-default entries")
	}
	var want []string
	for _, e := range c.Entries() {
		if e.Category == CategoryRuntimeDefault {
			want = append(want, e.Name)
		}
	}
	var got []string
	for _, e := range rd {
		got = append(got, e.Name)
	}
	if !slices.Equal(got, want) {
		t.Errorf("RuntimeDefault() = %v, want the runtime-default entries in catalog order %v", got, want)
	}
}

func TestReturnedEntriesAreCopies(t *testing.T) {
	c := load(t)
	e, _ := c.Lookup("disallow-write-core-pattern")
	e.Rules.Files[0].Paths[0] = "/changed"
	e.Enforcers[0] = "changed"
	all := c.Entries()
	all[0].Rules.Files[0].Paths[0] = "/changed"
	rd := c.RuntimeDefault()
	rd[0].Rules.Files[0].Permissions[0] = "changed"

	again, _ := c.Lookup("disallow-write-core-pattern")
	if again.Rules.Files[0].Paths[0] != "/proc/sys/kernel/core_pattern" || again.Enforcers[0] != v1alpha1.EnforcerBPF {
		t.Errorf("changing a looked-up entry changed the catalog: %+v", again)
	}
	first := c.Entries()[0]
	if first.Rules.Files[0].Paths[0] == "/changed" || first.Rules.Files[0].Permissions[0] == "changed" {
		t.Errorf("changing a returned entry changed the catalog: %+v", first.Rules.Files[0])
	}
}

// skipUnlessCI skips a test that needs a tool the machine lacks; under CI (make test sets
// CI=true after hack/deps.sh installed the tools) a missing tool is a failure instead.
func skipUnlessCI(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}
