package apparmor

// Tests that run apparmor_parser (AppArmor 3.0 userspace; Debian: apt-get install
// apparmor) on what this package emits. They compile for a kernel with exactly the
// features of abi 3.0 (--kernel-features), so they need no AppArmor in the running
// kernel and load nothing (-Q -K), and they fail on any warning (--warn=all).

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/podarmor/podarmor/policies/api/v1alpha1"
	"github.com/podarmor/podarmor/policies/pattern"
)

// abiFile is the feature ABI that "abi <abi/3.0>," names; the apparmor package installs it
// in apparmor_parser's base directory.
const abiFile = "/etc/apparmor.d/abi/3.0"

// apparmorParser returns apparmor_parser's path. Outside CI, a machine without it skips
// the test; in CI (the CI environment variable set) that is a failure, never a skip.
func apparmorParser(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("apparmor_parser")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("apparmor_parser is not in PATH and CI is set: install it (apt-get install -y apparmor): %v", err)
		}
		t.Skip("apparmor_parser is not in PATH (apt-get install -y apparmor); CI fails here instead of skipping")
	}
	if _, err := os.Stat(abiFile); err != nil {
		t.Fatalf("apparmor_parser is installed but its abi file is not: %v", err)
	}
	return path
}

// runParser compiles a profile and returns what apparmor_parser wrote to stderr, less
// the notice that no AppArmor is in the running kernel. It fails the test when the
// parser fails.
func runParser(t *testing.T, parser string, profile []byte, extra ...string) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "profile")
	if err := os.WriteFile(file, profile, 0o644); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"-Q", "-K", "--warn=all", "--kernel-features", abiFile}, extra...)
	cmd := exec.Command(parser, append(args, file)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Stdout = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("apparmor_parser %s: %v\n%s\nprofile:\n%s", strings.Join(args, " "), err, stderr.String(), profile)
	}
	var kept []string
	for _, line := range strings.SplitAfter(stderr.String(), "\n") {
		if !strings.HasPrefix(line, "Cache read/write disabled: interface file missing.") {
			kept = append(kept, line)
		}
	}
	return strings.Join(kept, "")
}

// TestGoldenProfilesCompile compiles every golden profile.
func TestGoldenProfilesCompile(t *testing.T) {
	parser := apparmorParser(t)
	files, err := filepath.Glob(filepath.Join("testdata", "*.golden"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden files: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			profile, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if out := runParser(t, parser, profile); out != "" {
				t.Errorf("apparmor_parser warned:\n%s", out)
			}
		})
	}
}

// TestPathExprCompiledByParser compiles a one-rule profile for every pattern of the
// shared table (and every literal byte), dumps the DFA apparmor_parser builds for it and
// runs the table's paths through that DFA: the paths the pattern matches, and only
// those, must reach an accepting state, as they are and in their directory form. This
// checks the translation against AppArmor's own compiler rather than against a model.
func TestPathExprCompiledByParser(t *testing.T) {
	parser := apparmorParser(t)
	cases := append(pattern.Cases(), everyByteCases()...)
	byPattern := map[string][]pattern.Case{}
	var order []string
	for _, c := range cases {
		if _, ok := byPattern[c.Pattern]; !ok {
			order = append(order, c.Pattern)
		}
		byPattern[c.Pattern] = append(byPattern[c.Pattern], c)
	}
	for _, pat := range order {
		p, err := pattern.Parse(pat)
		if err != nil {
			t.Fatalf("Parse(%q): %v", pat, err)
		}
		expr := pathExpr(p)
		profile := fmt.Sprintf("abi <abi/3.0>,\nprofile t {\n  %s w,\n}\n", expr)
		out := runParser(t, parser, []byte(profile), "-D", "dfa-states")
		d, err := parseDFADump(out)
		if err != nil {
			t.Fatalf("pattern %q as %s: %v\n%s", pat, expr, err, out)
		}
		for _, c := range byPattern[pat] {
			for _, path := range []string{c.Path, dirForm(c.Path)} {
				if got := d.accepts(path); got != c.Match {
					t.Errorf("pattern %q as %s: apparmor_parser's DFA accepts %q: %v, want %v (%s)", pat, expr, path, got, c.Match, c.Note)
				}
			}
		}
	}
}

// dfa is the file DFA from apparmor_parser's "-D dfa-states" dump.
type dfa struct {
	start  int
	accept map[int]bool
	next   map[int]map[byte]int
	// other is a state's default transition, for bytes without a transition of their
	// own that are in the class.
	other map[int]defaultMove
}

type defaultMove struct {
	to    int
	class [256]bool
}

var (
	dumpStart = regexp.MustCompile(`^\{(\d+)\} <== `)
	dumpState = regexp.MustCompile(`^\{(\d+)\} perms: *(.*)$`)
	// dumpAccept is a line of the list of accepting states after the start line; a state
	// without transitions appears only there.
	dumpAccept = regexp.MustCompile(`^\{(\d+)\} \(0x`)
	dumpMove   = regexp.MustCompile(`^    (.*?) ?-> \{(\d+)\}`)
	dumpByte   = regexp.MustCompile(`(?:^|\s)0x([0-9a-f]{1,2})\s*$`)
)

// parseDFADump reads the first DFA of a dump, which is the file DFA.
func parseDFADump(dump string) (*dfa, error) {
	d := &dfa{start: -1, accept: map[int]bool{}, next: map[int]map[byte]int{}, other: map[int]defaultMove{}}
	cur := -1
	for _, line := range strings.Split(dump, "\n") {
		if m := dumpStart.FindStringSubmatch(line); m != nil {
			if d.start >= 0 {
				break // the next DFA (policydb)
			}
			d.start, _ = strconv.Atoi(m[1])
			continue
		}
		if d.start < 0 {
			continue
		}
		if m := dumpAccept.FindStringSubmatch(line); m != nil {
			s, _ := strconv.Atoi(m[1])
			d.accept[s] = true
			continue
		}
		if m := dumpState.FindStringSubmatch(line); m != nil {
			cur, _ = strconv.Atoi(m[1])
			if strings.TrimSpace(m[2]) != "none" {
				d.accept[cur] = true
			}
			continue
		}
		m := dumpMove.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		if cur < 0 {
			return nil, fmt.Errorf("transition before any state: %q", line)
		}
		to, _ := strconv.Atoi(m[2])
		label := m[1]
		if strings.HasPrefix(label, "[") && strings.HasSuffix(label, "]") {
			class, err := parseDumpClass(label[1 : len(label)-1])
			if err != nil {
				return nil, fmt.Errorf("%q: %w", line, err)
			}
			d.other[cur] = defaultMove{to: to, class: class}
			continue
		}
		b := dumpByte.FindStringSubmatch(label)
		if b == nil {
			return nil, fmt.Errorf("cannot read transition %q", line)
		}
		v, _ := strconv.ParseUint(b[1], 16, 8)
		if d.next[cur] == nil {
			d.next[cur] = map[byte]int{}
		}
		d.next[cur][byte(v)] = to
	}
	if d.start < 0 {
		return nil, fmt.Errorf("no DFA in the dump")
	}
	return d, nil
}

// parseDumpClass reads the class of a default transition: "" is every byte, "^..." every
// byte but those listed.
func parseDumpClass(s string) ([256]bool, error) {
	var set [256]bool
	negate := strings.HasPrefix(s, "^")
	if negate {
		s = s[1:]
	}
	var listed []byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '\\' && i+1 < len(s) {
			i++
			switch s[i] {
			case 'x':
				j := i + 1
				for j < len(s) && j < i+3 && strings.IndexByte("0123456789abcdefABCDEF", s[j]) >= 0 {
					j++
				}
				v, err := strconv.ParseUint(s[i+1:j], 16, 8)
				if err != nil {
					return set, fmt.Errorf("bad hex escape in class %q", s)
				}
				c, i = byte(v), j-1
			case 'n':
				c = '\n'
			case 't':
				c = '\t'
			case 'r':
				c = '\r'
			case 'a':
				c = '\a'
			case 'f':
				c = '\f'
			case 'v':
				c = '\v'
			default:
				c = s[i]
			}
		} else if c == '-' && len(listed) > 0 && i+1 < len(s) {
			return set, fmt.Errorf("ranges in class %q are not supported", s)
		}
		listed = append(listed, c)
	}
	for i := range set {
		set[i] = negate
	}
	if !negate && len(listed) == 0 {
		for i := range set {
			set[i] = true
		}
	}
	for _, c := range listed {
		set[c] = !negate
	}
	return set, nil
}

// accepts runs path through the DFA.
func (d *dfa) accepts(path string) bool {
	s := d.start
	for i := 0; i < len(path); i++ {
		c := path[i]
		if to, ok := d.next[s][c]; ok {
			s = to
			continue
		}
		if m, ok := d.other[s]; ok && m.class[c] {
			s = m.to
			continue
		}
		return false
	}
	return d.accept[s]
}

// TestCapabilitiesCompileToTheirOwnBit checks that each capability Express accepts
// compiles, for abi 3.0, to a profile that differs from the allow-everything one in
// exactly one bit, a different one for each, and that CHECKPOINT_RESTORE, which Express
// refuses, compiles to the same policy as sys_admin (what the refusal is about).
func TestCapabilitiesCompileToTheirOwnBit(t *testing.T) {
	parser := apparmorParser(t)
	compile := func(rule string) []byte {
		t.Helper()
		file := filepath.Join(t.TempDir(), "profile")
		profile := fmt.Sprintf("abi <abi/3.0>,\nprofile t {\n  capability,\n  %s\n}\n", rule)
		if err := os.WriteFile(file, []byte(profile), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(parser, "-Q", "-K", "--kernel-features", abiFile, "-S", file).Output()
		if err != nil {
			t.Fatalf("apparmor_parser -S on %q: %v", rule, err)
		}
		return out
	}
	base := compile("")
	seen := map[string]string{}
	var all []v1alpha1.Capability
	for _, c := range v1alpha1.AllCapabilities {
		if c != "CHECKPOINT_RESTORE" { // abi 3.0 compiles it as sys_admin; Express refuses it
			all = append(all, c)
		}
	}
	for _, c := range all {
		name, ok := capabilityName(c)
		if !ok {
			t.Errorf("capabilityName(%s): not known", c)
			continue
		}
		out := compile("audit deny capability " + name + ",")
		if len(out) != len(base) {
			t.Errorf("%s: compiled profile has %d bytes, the base %d", name, len(out), len(base))
			continue
		}
		bits := 0
		for i := range out {
			for x := out[i] ^ base[i]; x != 0; x &= x - 1 {
				bits++
			}
		}
		if bits != 1 {
			t.Errorf("deny capability %s changes %d bits of the compiled profile, want 1", name, bits)
		}
		if other, ok := seen[string(out)]; ok {
			t.Errorf("deny capability %s compiles to the same policy as %s", name, other)
		}
		seen[string(out)] = name
	}
	if !bytes.Equal(compile("audit deny capability checkpoint_restore,"), compile("audit deny capability sys_admin,")) {
		t.Errorf("abi 3.0 no longer compiles checkpoint_restore as sys_admin; Express may accept it now")
	}
}
