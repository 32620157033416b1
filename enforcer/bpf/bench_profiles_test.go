package bpf

// The rule sets of the enforcer benchmark (BenchmarkEnforcerInVM): n rules of every kind
// BPF enforces, of realistic shapes, none of which matches anything the benchmark's
// workloads do, so that the benchmark measures the cost of checking, not of denying.
// The host (which compiles the AppArmor profiles) and the guest (which loads the BPF
// ones) generate the same sets from the same seed.

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"

	"github.com/podarmor/podarmor/policies/api/v1alpha1"
	"github.com/podarmor/podarmor/policies/compile/bpf"
	"github.com/podarmor/podarmor/policies/ruleset"
)

// Where the workloads work, in the guest. benchWorkDir is below /tmp (a tmpfs).
const (
	benchDataFile = "/srv/bench/app/conf/settings.json"
	benchExecFile = "/bin/true" // busybox: the resolved path is /bin/busybox
	benchWorkDir  = "/tmp/podarmor-bench"
	benchSource   = "/bench/src.tar"
	benchPort     = 7070
)

// benchRuleCounts are the sizes of the benchmarked profiles, in rules per kind.
var benchRuleCounts = []int{8, 1024}

// benchProfileID names the profile of n rules per kind.
func benchProfileID(n int) string { return fmt.Sprintf("bench-%d", n) }

// Words the generated paths are made of, after what container profiles guard (as in
// enforcer/tables/dfa's BenchmarkBuild1024).
var (
	benchTops  = []string{"etc", "usr", "var", "home", "root", "opt", "srv", "run", "boot", "mnt", "data"}
	benchDirs  = []string{"bin", "sbin", "lib", "share", "local", "log", "cache", "spool", "secrets", "ssl", "certs", "ssh", "kube", "docker", "containerd", "systemd", "cron.d", "sudoers.d", "pam.d", "security", "apt", "default", "init.d", "profile.d", "kubelet", "app", "conf"}
	benchFiles = []string{"passwd", "shadow", "gshadow", "sudoers", "crontab", "fstab", "environment", "id_rsa", "id_ed25519", "authorized_keys", "known_hosts", "token", "ca.crt", "kubeconfig", "credentials", "master.key", "vault-token"}
	benchGlobs = []string{"*.key", "*.pem", "*.p12", "*_rsa*", "*.kdbx", "core.*", "*.bak", "secret*"}
	benchTools = []string{"nc", "ncat", "socat", "nmap", "tcpdump", "xmrig", "minerd", "kubectl", "crictl", "ctr", "gdb", "strace", "insmod", "chisel", "frpc", "proxychains"}
)

// benchFilePatterns returns n distinct file path patterns: a fixed head that every
// profile has, then generated ones, mostly literals and subtrees, some globs and a few
// "**" in the middle. The head keeps the path walk of every profile going to the end of
// the workloads' paths ("/**/id_rsa" can match until the last byte; the others share the
// workloads' directories), so the 8-rule profile is no cheaper to walk than the 1,024-rule
// one by leaving the automaton early.
func benchFilePatterns(n int) []string {
	head := []string{
		"/**/id_rsa", "/srv/bench/app/conf/*.key", "/etc/shadow", "/root/.ssh/**",
		"/var/run/secrets/kubernetes.io/serviceaccount/**", "/tmp/podarmor-bench/**/*.pem",
		"/home/*/.ssh/**", "/etc/sudoers.d/**",
	}
	r := rand.New(rand.NewPCG(uint64(n), 1))
	return distinct(n, head, func() string {
		var b strings.Builder
		b.WriteString("/" + pick(r, benchTops) + "/" + pick(r, benchDirs))
		if r.IntN(2) == 0 {
			fmt.Fprintf(&b, "/app%d", r.IntN(200))
		}
		switch k := r.IntN(100); {
		case k < 55:
			b.WriteString("/" + pick(r, benchFiles))
		case k < 80:
			b.WriteString("/**")
		case k < 92:
			b.WriteString("/" + pick(r, benchGlobs))
		case k < 96:
			b.Reset()
			fmt.Fprintf(&b, "/%s/*/%s", pick(r, benchTops), pick(r, benchFiles))
		default:
			b.WriteString("/**/" + pick(r, benchFiles))
		}
		return b.String()
	})
}

// benchExecPatterns returns n distinct exec path patterns, in the same manner.
func benchExecPatterns(n int) []string {
	head := []string{
		"/**/xmrig", "/usr/bin/nc", "/bin/nc", "/usr/bin/ncat", "/usr/bin/socat",
		"/dev/shm/**", "/usr/local/bin/*miner*", "/usr/bin/*cat",
	}
	r := rand.New(rand.NewPCG(uint64(n), 2))
	return distinct(n, head, func() string {
		tool := pick(r, benchTools)
		switch k := r.IntN(100); {
		case k < 50:
			return fmt.Sprintf("/%s/%s", pick(r, []string{"bin", "sbin", "usr/bin", "usr/sbin", "usr/local/bin"}), tool) + suffix(r)
		case k < 80:
			return fmt.Sprintf("/opt/app%d/bin/%s", r.IntN(300), tool)
		case k < 95:
			return fmt.Sprintf("/%s/%s/**", pick(r, benchTops), pick(r, benchDirs))
		default:
			return fmt.Sprintf("/opt/app%d/**/%s", r.IntN(300), tool)
		}
	})
}

func suffix(r *rand.Rand) string {
	if r.IntN(3) == 0 {
		return ""
	}
	return fmt.Sprintf("-%d", r.IntN(100))
}

func pick(r *rand.Rand, words []string) string { return words[r.IntN(len(words))] }

// distinct returns n distinct strings: head, then what gen makes.
func distinct(n int, head []string, gen func() string) []string {
	seen := map[string]bool{}
	var out []string
	for i := 0; len(out) < n; i++ {
		s := ""
		if i < len(head) {
			s = head[i]
		} else {
			s = gen()
		}
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// benchRuleSet returns the rule set of n rules of each kind BPF enforces. File rules
// take permissions AppArmor can express exactly (read only together with every change,
// see policies/compile/apparmor), so that the AppArmor profile holds the same rules.
// Capabilities, operations, ptrace and mount rules name what the workloads never do;
// kinds with fewer distinct values than n (there are 41 capabilities) repeat them under
// rules of their own, as a long policy would.
func benchRuleSet(n int) *ruleset.RuleSet {
	rs := &ruleset.RuleSet{
		ProfileID: benchProfileID(n),
		Policy:    "ArmorPolicy bench/" + benchProfileID(n),
		Mode:      v1alpha1.ModeEnhanceProtect,
		Enforcers: []v1alpha1.Enforcer{v1alpha1.EnforcerBPF, v1alpha1.EnforcerAppArmor},
		Default:   ruleset.Allow,
	}
	add := func(kind ruleset.Kind, i int, r ruleset.Rule) {
		r.ID = fmt.Sprintf("custom/%s-%d", kind, i)
		r.Action = v1alpha1.ActionEnforce
		r.Kind = kind
		rs.Rules = append(rs.Rules, r)
	}
	change := []v1alpha1.FilePermission{v1alpha1.FileWrite, v1alpha1.FileAppend, v1alpha1.FileCreate,
		v1alpha1.FileDelete, v1alpha1.FileRename, v1alpha1.FileChmod, v1alpha1.FileChown}
	for i, p := range benchFilePatterns(n) {
		perms := change
		if i%2 == 0 {
			perms = append(slices.Clone(change), v1alpha1.FileRead)
		}
		add(ruleset.KindFile, i, ruleset.Rule{File: &ruleset.File{Paths: []string{p}, Permissions: perms}})
	}
	for i, p := range benchExecPatterns(n) {
		add(ruleset.KindExec, i, ruleset.Rule{Exec: &ruleset.Exec{Paths: []string{p}}})
	}

	families := []v1alpha1.SocketFamily{"packet", "bluetooth", "can", "tipc", "rds", "llc", "key", "alg", "vsock", "xdp"}
	types := []v1alpha1.SocketType{"stream", "dgram", "raw", "seqpacket", "rdm", "packet"}
	for i := range n {
		var s ruleset.Socket
		switch i % 4 {
		case 0:
			s = ruleset.Socket{Families: []v1alpha1.SocketFamily{"inet", "inet6"}, Types: []v1alpha1.SocketType{"raw"}}
		case 1:
			s = ruleset.Socket{Families: []v1alpha1.SocketFamily{families[(i/4)%len(families)]}}
		default:
			s = ruleset.Socket{Families: []v1alpha1.SocketFamily{families[(i/4)%len(families)]}, Types: []v1alpha1.SocketType{types[i%len(types)]}}
		}
		add(ruleset.KindSocket, i, ruleset.Rule{Socket: &s})
	}

	// Egress: prefixes of the documentation and private ranges, each with its ports; and,
	// so that the listener's own prefix is looked up and its port ranges searched, rules
	// on 127.0.0.0/8 for other ports (at most 16 ranges a prefix, the table's bound).
	loopback := min(n/2, 12)
	for i := range n {
		var e ruleset.Egress
		switch {
		case i < loopback:
			port := uint16(9000 + 100*i)
			e = ruleset.Egress{Prefixes: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
				Ports: []ruleset.PortRange{{First: port, Last: port + 49}}, Protocols: []v1alpha1.Protocol{"tcp"}}
		case i%3 == 0:
			a := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, byte(i >> 8), byte(i), 15: 1})
			e = ruleset.Egress{Prefixes: []netip.Prefix{netip.PrefixFrom(a, 128)}}
		case i%3 == 1:
			a := netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0})
			e = ruleset.Egress{Prefixes: []netip.Prefix{netip.PrefixFrom(a, 24)},
				Ports: []ruleset.PortRange{{First: 22, Last: 22}, {First: 6443, Last: 6443}}}
		default:
			a := netip.AddrFrom4([4]byte{192, 0, 2, byte(i)})
			if i >= 256 {
				a = netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)})
			}
			e = ruleset.Egress{Prefixes: []netip.Prefix{netip.PrefixFrom(a, 32)}, Protocols: []v1alpha1.Protocol{"tcp", "udp"}}
		}
		add(ruleset.KindEgress, i, ruleset.Rule{Egress: &e})
	}

	// Capabilities a root workload that only reads, writes, execs and connects never uses.
	caps := []v1alpha1.Capability{"SYS_MODULE", "SYS_RAWIO", "SYS_BOOT", "SYS_TIME", "SYS_PACCT", "SYS_TTY_CONFIG", "MAC_ADMIN", "WAKE_ALARM"}
	ops := []v1alpha1.Operation{"bpf", "kernelModule", "usernsCreate", "userfaultfd", "ioUring", "perfEvent"}
	fstypes := []string{"proc", "sysfs", "debugfs", "tracefs", "securityfs", "cgroup", "cgroup2", "bpf", "configfs", "hugetlbfs"}
	for i := range n {
		add(ruleset.KindCapability, i, ruleset.Rule{Capability: &ruleset.Capability{Capabilities: []v1alpha1.Capability{caps[i%len(caps)]}}})
		add(ruleset.KindOperation, i, ruleset.Rule{Operation: &ruleset.Operation{Operations: []v1alpha1.Operation{ops[i%len(ops)]}}})
		// The workloads trace and read no other process; rules on being traced (readby)
		// would refuse the benchmark's own look at /proc/PID/ns/mnt.
		perm := []v1alpha1.PtracePermission{v1alpha1.PtraceTrace, v1alpha1.PtraceRead}[i%2]
		peers := []v1alpha1.PtracePeers{v1alpha1.PtraceAnyPeer, v1alpha1.PtraceOutsideContainer}[(i/2)%2]
		add(ruleset.KindPtrace, i, ruleset.Rule{Ptrace: &ruleset.Ptrace{Permissions: []v1alpha1.PtracePermission{perm}, Peers: peers}})
		m := ruleset.Mount{Operations: []v1alpha1.MountOperation{v1alpha1.MountMount}, FSTypes: []string{fstypes[i%len(fstypes)]}}
		if i%4 == 3 {
			m = ruleset.Mount{Operations: []v1alpha1.MountOperation{v1alpha1.MountMount, v1alpha1.MountUmount},
				Targets: []string{fmt.Sprintf("/%s/%s/**", benchTops[i%len(benchTops)], benchDirs[(i/4)%len(benchDirs)])}}
		}
		add(ruleset.KindMount, i, ruleset.Rule{Mount: &m})
	}
	return rs
}

// benchBPFProfile is the BPF profile of a rule set, as policies/compile/bpf renders it.
func benchBPFProfile(rs *ruleset.RuleSet) *bpf.Profile {
	return &bpf.Profile{FormatVersion: bpf.FormatVersion, ProfileID: rs.ProfileID, Policy: rs.Policy,
		Mode: rs.Mode, Default: rs.Default, Rules: rs.Rules}
}
