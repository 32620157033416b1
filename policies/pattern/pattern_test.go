package pattern

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/podarmor/podarmor/policies/internal/golden"
)

func TestCases(t *testing.T) {
	seen := map[[2]string]bool{}
	for _, c := range Cases() {
		name := fmt.Sprintf("%.60q on %.60q", c.Pattern, c.Path)
		if !isCanonical(c.Path) {
			t.Errorf("%s: the table holds a non-canonical path", name)
		}
		key := [2]string{c.Pattern, c.Path}
		if seen[key] {
			t.Errorf("%s: the table holds this case twice", name)
		}
		seen[key] = true

		p, err := Parse(c.Pattern)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if got := p.Match(c.Path); got != c.Match {
			t.Errorf("%s: Match = %v, want %v (%s)", name, got, c.Match, c.Note)
		}
		if got := referenceMatch(c.Pattern, c.Path); got != c.Match {
			t.Errorf("%s: the reference matcher says %v, the table %v (%s)", name, got, c.Match, c.Note)
		}
		if prefix := p.LiteralPrefix(); c.Match && !under(c.Path, prefix) {
			t.Errorf("%s: matched path is not under LiteralPrefix %q", name, prefix)
		}
	}
}

// under reports whether path is dir or lies beneath it.
func under(path, dir string) bool {
	return path == dir || dir == "/" || strings.HasPrefix(path, dir+"/")
}

func TestTableSize(t *testing.T) {
	// The backends' end-to-end tests lean on this table; keep it from quietly shrinking.
	if n := len(Cases()); n < 80 {
		t.Errorf("Cases() has %d cases, want at least 80", n)
	}
	if n := len(InvalidCases()); n < 25 {
		t.Errorf("InvalidCases() has %d cases, want at least 25", n)
	}
}

func TestInvalidCases(t *testing.T) {
	for _, c := range InvalidCases() {
		name := fmt.Sprintf("%.60q", c.Pattern)
		p, err := Parse(c.Pattern)
		var se *SyntaxError
		if !errors.As(err, &se) {
			t.Errorf("%s: Parse error = %v, want a *SyntaxError", name, err)
			continue
		}
		if !strings.Contains(err.Error(), c.Reason) {
			t.Errorf("%s: error %q does not say %q", name, err, c.Reason)
		}
		if se.Offset != c.Offset {
			t.Errorf("%s: error %q is at byte %d, want %d", name, err, se.Offset, c.Offset)
		}
		if se.Pattern != c.Pattern {
			t.Errorf("%s: error names pattern %.60q", name, se.Pattern)
		}
		if p.String() != "" || p.Match("/") {
			t.Errorf("%s: a failed Parse returned a usable Pattern", name)
		}
	}
}

func TestSyntaxErrorMessage(t *testing.T) {
	tests := map[string]struct {
		pattern string
		want    string
	}{
		"an empty component names its offset": {
			pattern: "/a//b",
			want:    `pattern "/a//b": empty path component at byte 3`,
		},
		"a reserved character says how to escape it": {
			pattern: "/a/b[0]",
			want:    `pattern "/a/b[0]": reserved character '[' (write \[ for a literal '[') at byte 4`,
		},
		"an unprintable escaped byte is spelled in hex": {
			pattern: "/a\\\x7f",
			want:    `pattern "/a\\\x7f": invalid escape \x7f (only \\, \*, \?, \[, \], \{ and \} are escapes) at byte 2`,
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := Parse(tt.pattern)
			if err == nil || err.Error() != tt.want {
				t.Errorf("Parse(%q) error = %v, want %s", tt.pattern, err, tt.want)
			}
		})
	}
}

func TestStringRoundTrips(t *testing.T) {
	for _, c := range Cases() {
		p, err := Parse(c.Pattern)
		if err != nil {
			t.Fatalf("Parse(%q): %v", c.Pattern, err)
		}
		if p.String() != c.Pattern {
			t.Errorf("Parse(%q).String() = %q", c.Pattern, p.String())
		}
		if got := joinSegments(p.Segments()); got != c.Pattern {
			t.Errorf("the segments of %q print as %q", c.Pattern, got)
		}
		if w := witness(p); !p.Match(w) {
			t.Errorf("%q does not match its witness %q", c.Pattern, w)
		}
	}
}

// joinSegments writes segments back as pattern text.
func joinSegments(segs []Segment) string {
	if len(segs) == 0 {
		return "/"
	}
	var b strings.Builder
	for _, s := range segs {
		b.WriteString("/" + s.String())
	}
	return b.String()
}

func TestSegments(t *testing.T) {
	tests := map[string]struct {
		pattern string
		want    []Segment
	}{
		"the root has no segments": {
			pattern: "/",
			want:    nil,
		},
		"a literal path is one Literal per component": {
			pattern: "/etc/passwd",
			want:    []Segment{{Literal, []string{"etc"}}, {Literal, []string{"passwd"}}},
		},
		"escapes are removed from literal bytes": {
			pattern: `/a\*b/\\/\?\[\]\{\}`,
			want:    []Segment{{Literal, []string{"a*b"}}, {Literal, []string{`\`}}, {Literal, []string{"?[]{}"}}},
		},
		"a glob keeps the text around each star, empty at the ends": {
			pattern: "/etc/*.conf",
			want:    []Segment{{Literal, []string{"etc"}}, {Glob, []string{"", ".conf"}}},
		},
		"a lone star is a glob of two empty parts": {
			pattern: "/*",
			want:    []Segment{{Glob, []string{"", ""}}},
		},
		"several stars give several parts": {
			pattern: "/a*b*c",
			want:    []Segment{{Glob, []string{"a", "b", "c"}}},
		},
		"an escaped star stays inside a glob part": {
			pattern: `/x\**`,
			want:    []Segment{{Glob, []string{"x*", ""}}},
		},
		"'**' is AnyDepth without parts": {
			pattern: "/a/**/b",
			want:    []Segment{{Literal, []string{"a"}}, {AnyDepth, nil}, {Literal, []string{"b"}}},
		},
		"an escaped '**' is a literal name": {
			pattern: `/\*\*`,
			want:    []Segment{{Literal, []string{"**"}}},
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			p, err := Parse(tt.pattern)
			if err != nil {
				t.Fatal(err)
			}
			if got := p.Segments(); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Parse(%q).Segments() = %v, want %v", tt.pattern, got, tt.want)
			}
		})
	}
}

func TestSegmentsAreACopy(t *testing.T) {
	p, err := Parse("/a/b*c")
	if err != nil {
		t.Fatal(err)
	}
	segs := p.Segments()
	segs[0].Parts[0] = "x"
	segs[1].Parts[1] = "x"
	segs[1].Kind = AnyDepth
	if !p.Match("/a/bc") || p.Match("/x/bx") {
		t.Errorf("changing the result of Segments changed the pattern")
	}
}

func TestLiteralPrefixAndIsLiteral(t *testing.T) {
	tests := map[string]struct {
		pattern string
		prefix  string
		literal bool
	}{
		"the root is literal":                             {"/", "/", true},
		"an exact path is its own prefix":                 {"/etc/passwd", "/etc/passwd", true},
		"an escaped star is literal, unescaped":           {`/a\*b`, "/a*b", true},
		"the prefix stops at '**'":                        {"/etc/ssh/**/k*", "/etc/ssh", false},
		"the prefix holds whole components, not a glob's": {"/etc/pass*", "/etc", false},
		"a leading '**' leaves the root":                  {"/**", "/", false},
		"a leading glob leaves the root":                  {"/*/x", "/", false},
		"a trailing '**' leaves its directory":            {"/a/**", "/a", false},
		"the prefix is unescaped":                         {`/a\*b/c*`, "/a*b", false},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			p, err := Parse(tt.pattern)
			if err != nil {
				t.Fatal(err)
			}
			if got := p.LiteralPrefix(); got != tt.prefix {
				t.Errorf("Parse(%q).LiteralPrefix() = %q, want %q", tt.pattern, got, tt.prefix)
			}
			if got := p.IsLiteral(); got != tt.literal {
				t.Errorf("Parse(%q).IsLiteral() = %v, want %v", tt.pattern, got, tt.literal)
			}
		})
	}
}

func TestZeroPattern(t *testing.T) {
	var p Pattern
	if p.Match("/") || p.Match("/a") || p.IsLiteral() || p.String() != "" || p.LiteralPrefix() != "" || p.Segments() != nil {
		t.Errorf("the zero Pattern is usable: it should match nothing and describe nothing")
	}
}

func TestMatchRejectsRelativePaths(t *testing.T) {
	tests := map[string]struct {
		pattern string
		path    string
	}{
		"an empty path matches nothing, not even '/**'":    {"/**", ""},
		"a relative path matches nothing, not even '/**'":  {"/**", "etc/passwd"},
		"a relative path does not match its absolute form": {"/etc/passwd", "etc/passwd"},
		"a lone star does not match a relative name":       {"/*", "a"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			p, err := Parse(tt.pattern)
			if err != nil {
				t.Fatal(err)
			}
			if p.Match(tt.path) {
				t.Errorf("Parse(%q).Match(%q) = true", tt.pattern, tt.path)
			}
		})
	}
}

// TestSegmentsGolden records the structural view backends translate, for every pattern in
// the table short enough to read. Run with -update to rewrite it.
func TestSegmentsGolden(t *testing.T) {
	var b strings.Builder
	seen := map[string]bool{}
	for _, c := range Cases() {
		if seen[c.Pattern] || len(c.Pattern) > 100 {
			continue
		}
		seen[c.Pattern] = true
		p, err := Parse(c.Pattern)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%q literal=%v prefix=%q\n", p.String(), p.IsLiteral(), p.LiteralPrefix())
		for _, s := range p.Segments() {
			fmt.Fprintf(&b, "\t%v", s.Kind)
			for _, part := range s.Parts {
				fmt.Fprintf(&b, " %q", part)
			}
			b.WriteString("\n")
		}
	}
	golden.Check(t, filepath.Join("testdata", "segments.golden"), []byte(b.String()))
}

// Pieces for random patterns and paths. They overlap so that matches are common, and they
// include bytes that are not UTF-8, escapes and regexp metacharacters.
var (
	patternPieces = []string{"a", "b", "ab", "*", "*", "**", "**", "a*", "*a", "*a*", "a*b", "*b*a*", `\*`, `\\`, `\?`, "\xff", ".", "+", "(", "x\xffy*"}
	pathPieces    = []string{"a", "b", "ab", "ba", "aab", "bab", "*", "**", `\`, "?", "\xff", "x\xffy", ".a", "+", "(", "..."}
)

// randomPattern returns a valid pattern of up to 6 components from patternPieces.
func randomPattern(r *rand.Rand) string {
	var b strings.Builder
	for range r.IntN(7) {
		b.WriteString("/")
		comp := patternPieces[r.IntN(len(patternPieces))]
		if r.IntN(3) == 0 && comp != "**" {
			comp += patternPieces[r.IntN(len(patternPieces))]
		}
		b.WriteString(comp)
	}
	if b.Len() == 0 {
		return "/"
	}
	return b.String()
}

// randomPath returns a canonical path of up to 8 components from pathPieces.
func randomPath(r *rand.Rand) string {
	var b strings.Builder
	for range r.IntN(9) {
		b.WriteString("/" + pathPieces[r.IntN(len(pathPieces))])
		if r.IntN(4) == 0 {
			b.WriteString(pathPieces[r.IntN(len(pathPieces))])
		}
	}
	if b.Len() == 0 {
		return "/"
	}
	return b.String()
}

func TestMatchAgreesWithReferenceOnRandomCases(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var matched, rejected, total int
	for range 3000 {
		pattern := randomPattern(r)
		p, err := Parse(pattern)
		if err != nil {
			// Pieces such as "*" next to "**" can make "***"; such patterns are skipped.
			rejected++
			continue
		}
		paths := []string{witness(p)}
		for range 10 {
			paths = append(paths, randomPath(r))
		}
		for _, path := range paths {
			if !isCanonical(path) {
				continue
			}
			total++
			got, want := p.Match(path), referenceMatch(pattern, path)
			if got != want {
				t.Errorf("Parse(%q).Match(%q) = %v, the reference says %v", pattern, path, got, want)
			}
			if got {
				matched++
			}
		}
	}
	// Guard the generator: a test where nearly everything fails to parse, or nothing
	// matches, checks little.
	if rejected > 1000 || matched < total/10 {
		t.Errorf("weak random cases: %d patterns rejected, %d of %d cases matched", rejected, matched, total)
	}
	t.Logf("%d cases, %d matched, %d patterns rejected", total, matched, rejected)
}

func BenchmarkMatch(b *testing.B) {
	deep := strings.Repeat("/a", 2000)
	benchmarks := map[string]struct {
		pattern string
		path    string
	}{
		"a literal path": {
			pattern: "/etc/passwd",
			path:    "/etc/passwd",
		},
		"a typical pattern": {
			pattern: "/root/**/.ssh/**",
			path:    "/root/x/y/.ssh/authorized_keys",
		},
		"many stars in one component that almost matches": {
			pattern: "/*a*a*a*a*a*a*a*a*a*a*b",
			path:    "/" + strings.Repeat("a", 254) + "b",
		},
		"many stars in one component that fails late": {
			pattern: "/*a*a*a*a*a*a*a*a*a*a*bc",
			path:    "/" + strings.Repeat("a", 250) + "bbbc",
		},
		"many any-depths against a deep path that fails": {
			pattern: "/**/**/**/**/x",
			path:    deep + "/y",
		},
		"any-depth then literals that almost match everywhere": {
			pattern: "/**" + strings.Repeat("/a", 20) + "/b",
			path:    deep,
		},
		"alternating any-depths and globs": {
			pattern: "/**/a*/**/*a/**/*a*/**/b",
			path:    deep,
		},
	}
	for name, bm := range benchmarks {
		p, err := Parse(bm.pattern)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				p.Match(bm.path)
			}
		})
	}
}
