package dfa

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/podarmor/podarmor/policies/pattern"
)

// FuzzDFA checks the automaton of up to four fuzzed patterns against Pattern.Match, on a
// fuzzed path and on a path each pattern matches. The patterns come in one string,
// separated by NUL bytes, which no pattern holds; those that do not parse are left out.
func FuzzDFA(f *testing.F) {
	var prev string
	for _, c := range pattern.Cases() {
		// The cases near PATH_MAX would make every build of their offspring slow.
		if len(c.Pattern)+len(c.Path) > 512 {
			continue
		}
		f.Add(c.Pattern, c.Path)
		if prev != "" && prev != c.Pattern {
			f.Add(prev+"\x00"+c.Pattern, c.Path)
		}
		prev = c.Pattern
	}
	f.Fuzz(func(t *testing.T, patterns, path string) {
		// Small inputs keep each build to a millisecond or so; size is the tests' job.
		if len(patterns) > 256 || len(path) > 512 {
			return
		}
		var es []Entry
		for i, s := range strings.SplitN(patterns, "\x00", 4) {
			if p, err := pattern.Parse(s); err == nil {
				es = append(es, Entry{Pattern: p, Tag: uint32(i)})
			}
		}
		d, err := Build(es, Limits{MaxStates: 4096})
		var le *LimitError
		if errors.As(err, &le) {
			return
		}
		if err != nil {
			t.Fatalf("Build(%q): %v", patternTexts(es), err)
		}
		checkInvariants(t, d)

		got := d.Match([]byte(path))
		if path == "" || path[0] != '/' {
			if got != nil {
				t.Fatalf("patterns %q match the relative path %q: %v", patternTexts(es), path, got)
			}
			return
		}
		paths := []string{path}
		for _, e := range es {
			paths = append(paths, witness(e.Pattern, path))
		}
		for _, p := range paths {
			if !isCanonical(p) {
				continue
			}
			want := bruteForce(es, p)
			if got := d.Match([]byte(p)); !reflect.DeepEqual(got, want) {
				t.Fatalf("patterns %q, path %q: DFA matches %v, Pattern.Match %v", patternTexts(es), p, got, want)
			}
		}
	})
}

// witness returns a path p matches, its stars filled with fill's last component and
// each "**" standing for fill itself, when fill is canonical.
func witness(p pattern.Pattern, fill string) string {
	name := fill[strings.LastIndexByte(fill, '/')+1:]
	var b strings.Builder
	for _, s := range p.Segments() {
		switch s.Kind {
		case pattern.Literal:
			b.WriteString("/" + s.Parts[0])
		case pattern.Glob:
			b.WriteString("/" + strings.Join(s.Parts, name))
		case pattern.AnyDepth:
			if fill != "/" {
				b.WriteString(fill)
			}
		}
	}
	if b.Len() == 0 {
		return "/"
	}
	return b.String()
}
