package dfa

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/podarmor/podarmor/policies/pattern"
)

// Words the generated profiles are made of, after what container profiles guard.
var (
	benchTops  = []string{"etc", "usr", "var", "proc", "sys", "home", "root", "opt", "srv", "run", "dev", "lib", "boot"}
	benchDirs  = []string{"bin", "sbin", "lib", "lib64", "share", "local", "log", "cache", "spool", "secrets", "ssl", "certs", "ssh", "kube", "docker", "containerd", "systemd", "cron.d", "sudoers.d", "pam.d", "security", "apt", "default", "init.d", "profile.d", "kubelet", "fs", "kernel", "net", "cgroup"}
	benchFiles = []string{"passwd", "shadow", "group", "gshadow", "hosts", "hostname", "resolv.conf", "sudoers", "crontab", "fstab", "environment", "ca-certificates.crt", "id_rsa", "id_ed25519", "authorized_keys", "known_hosts", "config", "token", "ca.crt", "namespace", "kubeconfig", "core_pattern", "modprobe", "sysrq", "mem", "kmem", "environ", "maps", "cmdline", "release-agent"}
	benchGlobs = []string{"*.conf", "*.log", "*.key", "*.pem", "lib*.so*", "*sh", "*.d", "core.*", "app*", "*_rsa*"}
)

// benchPatterns returns n distinct patterns of realistic shapes: a fixed set from real
// profiles, then generated ones, mostly literals and prefixes followed by "/**", some
// globs, a few "**" in the middle. The same n always gives the same patterns.
func benchPatterns(n int) []pattern.Pattern {
	texts := []string{
		"/etc/shadow", "/etc/gshadow", "/etc/sudoers", "/etc/sudoers.d/**", "/proc/sys/**",
		"/var/run/secrets/kubernetes.io/serviceaccount/**", "/proc/*/mem", "/proc/*/environ",
		"/proc/sysrq-trigger", "/proc/kcore", "/home/*/.ssh/**", "/root/.ssh/**", "/usr/bin/*sh",
		"/sys/fs/cgroup/**", "/sys/kernel/security/**", "/dev/mem", "/dev/kmem", "/boot/**",
		"/etc/ssl/private/**", "/var/lib/kubelet/**", "/etc/kubernetes/**", "/usr/lib*/libc.so*",
		"/var/log/**/*.log", "/**/id_rsa", "/**/.git-credentials",
	}
	r := rand.New(rand.NewPCG(1024, 42))
	app := func() string { return fmt.Sprintf("app%d", r.IntN(200)) }
	for len(texts) < 2*n {
		var b strings.Builder
		b.WriteString("/" + pick(r, benchTops) + "/" + pick(r, benchDirs))
		if r.IntN(2) == 0 {
			b.WriteString("/" + app())
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
			if r.IntN(2) == 0 {
				b.WriteString("/**")
			}
		default:
			b.WriteString("/**/" + pick(r, slices.Concat(benchGlobs, benchFiles)))
		}
		texts = append(texts, b.String())
	}
	var out []pattern.Pattern
	seen := map[string]bool{}
	for _, t := range texts {
		if seen[t] || len(out) == n {
			continue
		}
		seen[t] = true
		p, err := pattern.Parse(t)
		if err != nil {
			panic(fmt.Sprintf("generated pattern %q: %v", t, err))
		}
		out = append(out, p)
	}
	return out
}

// benchPaths returns paths near the patterns: each pattern's wildcards filled in a few
// ways, and a few bytes changed.
func benchPaths(pats []pattern.Pattern, r *rand.Rand) []string {
	fills := []string{"x", "app7", "lib.so.6", "a.conf", "id_rsa"}
	var out []string
	for _, p := range pats {
		for range 3 {
			var b strings.Builder
			for _, s := range p.Segments() {
				switch s.Kind {
				case pattern.Literal:
					b.WriteString("/" + s.Parts[0])
				case pattern.Glob:
					b.WriteString("/" + strings.Join(s.Parts, fills[r.IntN(len(fills))]))
				case pattern.AnyDepth:
					for range r.IntN(3) {
						b.WriteString("/" + pick(r, slices.Concat(benchDirs, benchFiles)))
					}
				}
			}
			path := b.String()
			if path == "" {
				path = "/"
			}
			out = append(out, path)
			if len(path) > 1 {
				mut := []byte(path)
				i := 1 + r.IntN(len(mut)-1)
				if mut[i] != '/' && mut[i-1] != '/' {
					mut[i] = "xs."[r.IntN(3)]
					out = append(out, string(mut))
				}
				out = append(out, path[:i], path+"/"+pick(r, benchFiles))
			}
		}
	}
	return out
}

func pick(r *rand.Rand, words []string) string { return words[r.IntN(len(words))] }

func TestRealisticSetAgainstMatch(t *testing.T) {
	es := entries(benchPatterns(1024))
	d, err := Build(es, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, d)
	matched := 0
	paths := benchPaths(tablePatternsOf(es), rand.New(rand.NewPCG(5, 6)))
	for _, path := range paths {
		if !isCanonical(path) {
			continue
		}
		want := bruteForce(es, path)
		if got := d.Match([]byte(path)); !reflect.DeepEqual(got, want) {
			t.Fatalf("%q: DFA matches %v, Pattern.Match %v", path, got, want)
		}
		matched += len(want)
	}
	t.Logf("%d patterns, %d paths, %d matches: %d states, %d classes, %d bytes of transitions",
		len(es), len(paths), matched, d.NumStates, d.NumClasses, 4*len(d.Trans))
}

func tablePatternsOf(es []Entry) []pattern.Pattern {
	out := make([]pattern.Pattern, len(es))
	for i, e := range es {
		out[i] = e.Pattern
	}
	return out
}

// BenchmarkBuild1024 builds the automaton of 1,024 realistic patterns and reports its
// size: states, classes, and the bytes of the transition table and class map the BPF maps
// hold.
func BenchmarkBuild1024(b *testing.B) {
	es := entries(benchPatterns(1024))
	var d *DFA
	for b.Loop() {
		var err error
		if d, err = Build(es, Limits{}); err != nil {
			b.Fatal(err)
		}
	}
	tags := 0
	for _, a := range d.Accept {
		tags += len(a)
	}
	b.ReportMetric(float64(d.NumStates), "states")
	b.ReportMetric(float64(d.NumClasses), "classes")
	b.ReportMetric(float64(4*len(d.Trans)+len(d.Classes)), "table-bytes")
	b.ReportMetric(float64(tags), "accept-tags")
}

// BenchmarkMatch walks realistic paths through the automaton of 1,024 patterns.
func BenchmarkMatch(b *testing.B) {
	es := entries(benchPatterns(1024))
	d, err := Build(es, Limits{})
	if err != nil {
		b.Fatal(err)
	}
	paths := benchPaths(tablePatternsOf(es), rand.New(rand.NewPCG(7, 8)))
	bytes := make([][]byte, len(paths))
	for i, p := range paths {
		bytes[i] = []byte(p)
	}
	i := 0
	for b.Loop() {
		d.Match(bytes[i%len(bytes)])
		i++
	}
}
