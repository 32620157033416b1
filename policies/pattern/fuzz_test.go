package pattern

import (
	"errors"
	"reflect"
	"testing"
)

// FuzzParse checks that Parse never panics, that what it accepts prints back as its input
// and parses to the same segments, and that its errors point inside the input.
func FuzzParse(f *testing.F) {
	for _, c := range Cases() {
		f.Add(c.Pattern)
	}
	for _, c := range InvalidCases() {
		f.Add(c.Pattern)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := Parse(s)
		if err != nil {
			var se *SyntaxError
			if !errors.As(err, &se) {
				t.Fatalf("Parse(%q) error %v is not a *SyntaxError", s, err)
			}
			if se.Offset < 0 || se.Offset > len(s) || (se.Offset == len(s) && s != "") {
				t.Fatalf("Parse(%q) error %v has an offset outside the pattern", s, err)
			}
			if p.Match("/") || p.Match(s) {
				t.Fatalf("Parse(%q) failed but returned a Pattern that matches", s)
			}
			return
		}
		if p.String() != s {
			t.Fatalf("Parse(%q).String() = %q", s, p.String())
		}
		if got := joinSegments(p.Segments()); got != s {
			t.Fatalf("the segments of %q print as %q", s, got)
		}
		q, err := Parse(p.String())
		if err != nil || !reflect.DeepEqual(q.Segments(), p.Segments()) {
			t.Fatalf("Parse(%q) does not re-parse to the same segments: %v", s, err)
		}
		w := witness(p)
		if !p.Match(w) {
			t.Fatalf("%q does not match its witness %q", s, w)
		}
		if p.IsLiteral() && p.LiteralPrefix() != w {
			t.Fatalf("literal %q has LiteralPrefix %q, want %q", s, p.LiteralPrefix(), w)
		}
		if !under(w, p.LiteralPrefix()) {
			t.Fatalf("the witness %q of %q is not under LiteralPrefix %q", w, s, p.LiteralPrefix())
		}
		// Whatever the path, Match must not panic.
		for _, path := range []string{s, "/", "", "//", "/a/", s + "/", "/" + s} {
			p.Match(path)
		}
	})
}

// FuzzMatch checks Match against the regexp reference on every pattern that parses and
// every canonical path.
func FuzzMatch(f *testing.F) {
	for _, c := range Cases() {
		// The cases near PATH_MAX are left to TestCases: the regexp reference takes a good
		// part of a second on them, which stalls the fuzzer as it minimises their offspring.
		if len(c.Pattern)+len(c.Path) <= 512 {
			f.Add(c.Pattern, c.Path)
		}
	}
	f.Fuzz(func(t *testing.T, pattern, path string) {
		// The kernel hands hooks no path longer than PATH_MAX, and both matchers take time
		// proportional to the pattern's length times the path's, so the fuzzer growing
		// paths to megabytes would test nothing but patience.
		if len(path) > MaxLen {
			return
		}
		p, err := Parse(pattern)
		got := p.Match(path)
		if err != nil || !isCanonical(path) {
			if err != nil && got {
				t.Fatalf("Parse(%q) failed but its Pattern matches %q", pattern, path)
			}
			return
		}
		if want := referenceMatch(pattern, path); got != want {
			t.Fatalf("Parse(%q).Match(%q) = %v, the reference says %v", pattern, path, got, want)
		}
	})
}
