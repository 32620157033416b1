package dfa

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/podarmor/podarmor/policies/pattern"
)

// tablePatterns returns the distinct patterns of the shared table, in order, parsed.
func tablePatterns(t testing.TB) []pattern.Pattern {
	t.Helper()
	var pats []pattern.Pattern
	seen := map[string]bool{}
	for _, c := range pattern.Cases() {
		if seen[c.Pattern] {
			continue
		}
		seen[c.Pattern] = true
		p, err := pattern.Parse(c.Pattern)
		if err != nil {
			t.Fatalf("the shared table holds %q: %v", c.Pattern, err)
		}
		pats = append(pats, p)
	}
	return pats
}

// entries tags each pattern with its index.
func entries(pats []pattern.Pattern) []Entry {
	out := make([]Entry, len(pats))
	for i, p := range pats {
		out[i] = Entry{Pattern: p, Tag: uint32(i)}
	}
	return out
}

// bruteForce returns the sorted tags of the entries whose pattern matches path.
func bruteForce(es []Entry, path string) []uint32 {
	var out []uint32
	for _, e := range es {
		if e.Pattern.Match(path) {
			out = append(out, e.Tag)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// isCanonical reports whether path is one the kernel could hand to a hook: absolute, no
// empty, "." or ".." components, no trailing slash unless it is "/", and no NUL.
func isCanonical(path string) bool {
	if path == "" || path[0] != '/' || strings.IndexByte(path, 0) >= 0 {
		return false
	}
	if path == "/" {
		return true
	}
	for _, comp := range strings.Split(path[1:], "/") {
		if comp == "" || comp == "." || comp == ".." {
			return false
		}
	}
	return true
}

// checkInvariants checks the shape the BPF program and the table loader rely on.
func checkInvariants(t *testing.T, d *DFA) {
	t.Helper()
	if d.NumStates < 2 || d.NumClasses < 1 || d.NumClasses > 256 {
		t.Fatalf("DFA has %d states and %d classes", d.NumStates, d.NumClasses)
	}
	if len(d.Trans) != d.NumStates*d.NumClasses || len(d.Accept) != d.NumStates {
		t.Fatalf("DFA of %d states and %d classes has %d transitions and %d accept lists",
			d.NumStates, d.NumClasses, len(d.Trans), len(d.Accept))
	}
	for b, c := range d.Classes {
		if int(c) >= d.NumClasses {
			t.Fatalf("byte %#x is in class %d of %d", b, c, d.NumClasses)
		}
	}
	for c := range d.NumClasses {
		if d.Trans[c] != 0 {
			t.Fatalf("the dead state leaves to %d on class %d", d.Trans[c], c)
		}
	}
	if d.Accept[0] != nil || d.Accept[1] != nil {
		t.Fatalf("the dead or start state accepts: %v, %v", d.Accept[0], d.Accept[1])
	}
	for s, next := range d.Trans {
		if int(next) >= d.NumStates {
			t.Fatalf("transition %d leads to state %d of %d", s, next, d.NumStates)
		}
	}
	for s, tags := range d.Accept {
		if tags != nil && (len(tags) == 0 || !slices.IsSorted(tags) || len(slices.Compact(slices.Clone(tags))) != len(tags)) {
			t.Fatalf("state %d accepts %v, not a sorted set", s, tags)
		}
	}
}

func TestCasesOnePatternEach(t *testing.T) {
	built := map[string]*DFA{}
	for _, c := range pattern.Cases() {
		name := fmt.Sprintf("%.60q on %.60q", c.Pattern, c.Path)
		d, ok := built[c.Pattern]
		if !ok {
			p, err := pattern.Parse(c.Pattern)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			d, err = Build([]Entry{{Pattern: p, Tag: 7}}, Limits{})
			if err != nil {
				t.Fatalf("%s: Build: %v", name, err)
			}
			checkInvariants(t, d)
			built[c.Pattern] = d
		}
		got := d.Match([]byte(c.Path))
		if want := c.Match; (got != nil) != want || (want && !reflect.DeepEqual(got, []uint32{7})) {
			t.Errorf("%s: Match = %v, want a match %v (%s)", name, got, want, c.Note)
		}
		if p, _ := pattern.Parse(c.Pattern); p.Match(c.Path) != (got != nil) {
			t.Errorf("%s: the DFA says %v, Pattern.Match %v", name, got != nil, p.Match(c.Path))
		}
	}
}

func TestCasesAllPatternsAtOnce(t *testing.T) {
	es := entries(tablePatterns(t))
	d, err := Build(es, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, d)
	paths := map[string]bool{}
	for _, c := range pattern.Cases() {
		paths[c.Path] = true
	}
	matched := 0
	for path := range paths {
		want := bruteForce(es, path)
		if got := d.Match([]byte(path)); !reflect.DeepEqual(got, want) {
			t.Errorf("%.60q: DFA matches %v, Pattern.Match %v", path, got, want)
		}
		matched += len(want)
	}
	t.Logf("%d patterns, %d paths, %d matches: %d states, %d classes", len(es), len(paths), matched, d.NumStates, d.NumClasses)
	for _, path := range []string{"", "a", "etc/passwd", "*", "\xff", "x/"} {
		if got := d.Match([]byte(path)); got != nil {
			t.Errorf("relative path %q matches %v", path, got)
		}
	}
}

func TestEdgeCases(t *testing.T) {
	tests := map[string]struct {
		patterns []string
		paths    map[string][]uint32
	}{
		"no patterns match nothing, not even the root": {
			patterns: nil,
			paths:    map[string][]uint32{"/": nil, "/a": nil, "": nil},
		},
		"the root pattern matches the root alone": {
			patterns: []string{"/"},
			paths:    map[string][]uint32{"/": {0}, "/a": nil, "": nil},
		},
		"'/**' matches the root and every path, but not the empty one": {
			patterns: []string{"/**"},
			paths:    map[string][]uint32{"/": {0}, "/a": {0}, "/a/b": {0}, "": nil, "a": nil},
		},
		"patterns sharing a tag report it once": {
			patterns: []string{"/a/**", "/a/b"},
			paths:    map[string][]uint32{"/a/b": {0, 1}, "/a": {0}},
		},
		"a set that matches every path still has a dead state": {
			patterns: []string{"/**", "/"},
			paths:    map[string][]uint32{"/": {0, 1}, "/x": {0}, "x": nil},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var es []Entry
			for i, s := range tc.patterns {
				es = append(es, Entry{Pattern: mustParse(t, s), Tag: uint32(i)})
			}
			d, err := Build(es, Limits{})
			if err != nil {
				t.Fatal(err)
			}
			checkInvariants(t, d)
			for path, want := range tc.paths {
				if got := d.Match([]byte(path)); !reflect.DeepEqual(got, want) {
					t.Errorf("%q: Match = %v, want %v", path, got, want)
				}
			}
		})
	}
}

func TestSharedTags(t *testing.T) {
	es := []Entry{
		{Pattern: mustParse(t, "/etc/shadow"), Tag: 3},
		{Pattern: mustParse(t, "/etc/*"), Tag: 3},
		{Pattern: mustParse(t, "/etc/**"), Tag: 1},
	}
	d, err := Build(es, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string][]uint32{"/etc/shadow": {1, 3}, "/etc": {1}, "/etc/a/b": {1}, "/x": nil} {
		if got := d.Match([]byte(path)); !reflect.DeepEqual(got, want) {
			t.Errorf("%q: Match = %v, want %v", path, got, want)
		}
	}
}

func mustParse(t testing.TB, s string) pattern.Pattern {
	t.Helper()
	p, err := pattern.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// The random patterns and paths share a small alphabet, so that they often meet: a few
// letters, '.', a literal '*' (escaped in patterns) and two bytes that are not UTF-8.
var alphabet = []byte{'a', 'b', '.', '*', 0x80, 0xff}

func randomBytes(r *rand.Rand, minLen, maxLen int) string {
	b := make([]byte, minLen+r.IntN(maxLen-minLen+1))
	for i := range b {
		b[i] = alphabet[r.IntN(len(alphabet))]
	}
	return string(b)
}

func escape(s string) string {
	return strings.ReplaceAll(s, "*", `\*`)
}

// randomPattern returns the text of a random valid pattern.
func randomPattern(r *rand.Rand) string {
	n := r.IntN(5)
	if n == 0 {
		return "/"
	}
	var b strings.Builder
	for range n {
		b.WriteByte('/')
		switch k := r.IntN(10); {
		case k < 3:
			b.WriteString("**")
		case k < 6:
			b.WriteString(escape(randomComponent(r)))
		default:
			stars := 1 + r.IntN(2)
			for i := 0; i <= stars; i++ {
				if i > 0 {
					b.WriteByte('*')
				}
				// Middle parts must be non-empty: "**" is only a whole component.
				lo := 0
				if i > 0 && i < stars {
					lo = 1
				}
				b.WriteString(escape(randomBytes(r, lo, 2)))
			}
		}
	}
	return b.String()
}

// randomComponent returns a non-empty component other than "." and "..".
func randomComponent(r *rand.Rand) string {
	for {
		if c := randomBytes(r, 1, 3); c != "." && c != ".." {
			return c
		}
	}
}

func randomPath(r *rand.Rand) string {
	n := r.IntN(6)
	if n == 0 {
		return "/"
	}
	var b strings.Builder
	for range n {
		b.WriteByte('/')
		b.WriteString(randomComponent(r))
	}
	return b.String()
}

func TestRandomSetsAgainstMatch(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	rounds, pathsPerRound := 400, 300
	if testing.Short() {
		rounds = 50
	}
	for range rounds {
		var es []Entry
		for i := range 1 + r.IntN(6) {
			text := randomPattern(r)
			p, err := pattern.Parse(text)
			if err != nil {
				t.Fatalf("random pattern %q: %v", text, err)
			}
			es = append(es, Entry{Pattern: p, Tag: uint32(i)})
		}
		d, err := Build(es, Limits{})
		if err != nil {
			t.Fatalf("%v: %v", es, err)
		}
		checkInvariants(t, d)
		for range pathsPerRound {
			path := randomPath(r)
			want := bruteForce(es, path)
			if got := d.Match([]byte(path)); !reflect.DeepEqual(got, want) {
				t.Fatalf("patterns %q, path %q: DFA matches %v, Pattern.Match %v", patternTexts(es), path, got, want)
			}
		}
	}
}

func patternTexts(es []Entry) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.Pattern.String())
	}
	return out
}

func TestDeterministic(t *testing.T) {
	// The table's patterns with many "/**/" at the front multiply each other's states
	// and would multiply those of a realistic set, so the two go in separately.
	t.Run("table", func(t *testing.T) { checkDeterministic(t, entries(tablePatterns(t))) })
	t.Run("realistic", func(t *testing.T) { checkDeterministic(t, entries(benchPatterns(1024))) })
}

func checkDeterministic(t *testing.T, es []Entry) {
	first, err := Build(es, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	again, err := Build(es, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(first, again) {
		t.Fatal("two builds of the same entries differ")
	}
	// The minimal automaton is unique, so the order of the entries does not matter either.
	shuffled := slices.Clone(es)
	rand.New(rand.NewPCG(3, 4)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	other, err := Build(shuffled, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(first, other) {
		t.Fatal("building the same entries in another order gives another table")
	}
}

func TestLimits(t *testing.T) {
	tests := map[string]struct {
		patterns []string
		lim      Limits
		limit    string // the LimitError's Limit, "" for no error
		memory   bool   // whether the LimitError is about memory
	}{
		"a component eight levels below any 'x' needs 2^8 states to remember the x's": {
			patterns: []string{"/**/x/*/*/*/*/*/*/*/*"},
			lim:      Limits{MaxStates: 100},
			limit:    "MaxStates",
		},
		"twenty levels would need a million states and hit the default limit": {
			patterns: []string{"/**/x" + strings.Repeat("/*", 20)},
			limit:    "MaxStates",
		},
		"many globs anywhere in the tree hit the default limit": {
			patterns: globsAnywhere(64),
			limit:    "MaxStates",
		},
		"a thousand names anywhere in the tree outgrow the memory of a hundred states": {
			patterns: namesAnywhere(1000),
			lim:      Limits{MaxStates: 100},
			limit:    "MaxStates",
			memory:   true,
		},
		"the same pattern with room enough builds": {
			patterns: []string{"/**/x/*/*/*/*/*/*/*/*"},
			lim:      Limits{MaxStates: 4096},
		},
		"too many distinct bytes for MaxClasses": {
			patterns: []string{"/abc", "/xyz"},
			lim:      Limits{MaxClasses: 4},
			limit:    "MaxClasses",
		},
		"bytes that lead to the same states share a class": {
			patterns: []string{"/a*", "/b*"},
			lim:      Limits{MaxClasses: 3}, // '/', a and b, and the rest
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var es []Entry
			for _, s := range tc.patterns {
				// One tag for all, so that the limits are all there is to tell apart.
				es = append(es, Entry{Pattern: mustParse(t, s), Tag: 0})
			}
			d, err := Build(es, tc.lim)
			if tc.limit == "" {
				if err != nil {
					t.Fatal(err)
				}
				checkInvariants(t, d)
				return
			}
			var le *LimitError
			if !errors.As(err, &le) {
				t.Fatalf("Build error = %v, want a *LimitError", err)
			}
			if le.Limit != tc.limit || !strings.Contains(err.Error(), "Limits."+tc.limit) {
				t.Fatalf("Build error %q is not about %s", err, tc.limit)
			}
			if le.Memory != tc.memory {
				t.Errorf("Build error %q has Memory %v, want %v", err, le.Memory, tc.memory)
			}
			if le.Needed <= le.Max && !le.Memory {
				t.Errorf("Build error %q says it needed %d, within the limit %d", err, le.Needed, le.Max)
			}
			t.Log(err)
		})
	}
}

// globsAnywhere returns n patterns of the shape "/**/k3*x/*.y", each a name anywhere in
// the tree with wildcards after it: the automaton must track every mix of them at once.
func globsAnywhere(n int) []string {
	var out []string
	for i := range n {
		out = append(out, fmt.Sprintf("/**/k%d*x/*/*.y", i))
	}
	return out
}

// namesAnywhere returns n patterns of the shape "/**/k3", each a name anywhere in the
// tree: every state of their automaton holds a node for each of them.
func namesAnywhere(n int) []string {
	var out []string
	for i := range n {
		out = append(out, fmt.Sprintf("/**/k%d", i))
	}
	return out
}

func TestBuildErrors(t *testing.T) {
	tests := map[string]struct {
		entries []Entry
		lim     Limits
		want    string
	}{
		"the zero pattern is refused": {
			entries: []Entry{{Tag: 4}},
			want:    "entry 0 (tag 4): zero pattern.Pattern",
		},
		"a negative MaxStates is refused": {
			lim:  Limits{MaxStates: -1},
			want: "MaxStates -1",
		},
		"one class is too few": {
			lim:  Limits{MaxClasses: 1},
			want: "MaxClasses 1",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := Build(tc.entries, tc.lim)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Build error = %v, want one saying %q", err, tc.want)
			}
		})
	}
}

// TestMinimal refines the states of built automata by Moore's algorithm, independent of
// the Hopcroft code under test, and checks that no two of them turn out equivalent.
func TestMinimal(t *testing.T) {
	sets := map[string][]Entry{}
	var short []pattern.Pattern
	for _, p := range tablePatterns(t) {
		// The patterns near PATH_MAX would take Moore thousands of rounds.
		if len(p.String()) < 100 {
			short = append(short, p)
		}
	}
	sets["the shared table"] = entries(short)
	r := rand.New(rand.NewPCG(9, 10))
	for i := range 50 {
		var ps []pattern.Pattern
		for range 1 + r.IntN(6) {
			ps = append(ps, mustParse(t, randomPattern(r)))
		}
		sets[fmt.Sprintf("random set %d", i)] = entries(ps)
	}
	for name, es := range sets {
		d, err := Build(es, Limits{})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if n := mooreClasses(d); n != d.NumStates {
			t.Errorf("%s %q: %d states, of which only %d are distinguishable", name, patternTexts(es), d.NumStates, n)
		}
		for a := range d.NumClasses {
			for b := range a {
				if sameColumn32(d, a, b) {
					t.Errorf("%s %q: classes %d and %d lead everywhere to the same states", name, patternTexts(es), a, b)
				}
			}
		}
	}
}

func sameColumn32(d *DFA, a, b int) bool {
	for s := range d.NumStates {
		if d.Trans[s*d.NumClasses+a] != d.Trans[s*d.NumClasses+b] {
			return false
		}
	}
	return true
}

// mooreClasses returns the number of classes of equivalent states of d.
func mooreClasses(d *DFA) int {
	id := make([]int, d.NumStates)
	tags := map[string]int{}
	for s, a := range d.Accept {
		k := fmt.Sprint(a)
		if _, ok := tags[k]; !ok {
			tags[k] = len(tags)
		}
		id[s] = tags[k]
	}
	n := len(tags)
	for {
		sig := map[string]int{}
		next := make([]int, d.NumStates)
		for s := range d.NumStates {
			k := []int{id[s]}
			for c := range d.NumClasses {
				k = append(k, id[d.Trans[s*d.NumClasses+c]])
			}
			ks := fmt.Sprint(k)
			if _, ok := sig[ks]; !ok {
				sig[ks] = len(sig)
			}
			next[s] = sig[ks]
		}
		id = next
		if len(sig) == n {
			return n
		}
		n = len(sig)
	}
}
